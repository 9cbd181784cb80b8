"""Shared helpers of the sweep tests (tests/sweeps): small XOR sweeps and the CLI in a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
XOR = ROOT / "examples" / "xor.toml"
#: a physlearn process whose BLAS is pinned as on a sweep worker
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def xor_sweep(
    folder: Path,
    *,
    seeds: tuple[int, ...] = (0, 1),
    epochs: int = 4,
    estimators: tuple[str, ...] = ("ep_symmetric", "adjoint"),
    extra: str = "",
) -> Path:
    """A sweep file of XOR points (seeds × estimators, ``epochs`` each) in ``folder``; run
    directories under ``folder/runs``."""
    points = "".join(
        f'[[points]]\nset = {{ "estimator" = {{ name = "{e}"'
        + (", beta = 0.001" if e.startswith("ep_") else "")
        + " } }\n"
        for e in estimators
    )
    text = (
        "[sweep]\n"
        f'base = "{XOR}"\n'
        'root = "runs"\n'
        'name = "{estimator.name}-s{training.seed}"\n'
        f'set = {{ "training.epochs" = {epochs}, "training.log_cosine_to_adjoint" = false, '
        '"training.target_accuracy" = 1.0, "training.target_loss" = 1e-9 }\n'
        f'[grid]\n"training.seed" = {list(seeds)}\n' + points + extra
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sweep.toml"
    path.write_text(text)
    return path


def physlearn(*args: str, timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``physlearn ARGS`` in a fresh interpreter (its output captured)."""
    return subprocess.run(
        [sys.executable, "-m", "physlearn.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        **kw,
    )


def read_records(root: Path) -> dict[str, dict[str, Any]]:
    """Every point record of a sweep root, by point name."""
    return {p.stem: json.loads(p.read_text()) for p in (root / "_sweep" / "points").glob("*.json")}


def result_values(root: Path) -> dict[str, Any]:
    """What must not depend on where or when a point ran: each point's status, metrics but the
    run's own wall time, and its selected parameters."""
    out = {}
    for name, rec in read_records(root).items():
        metrics = {k: v for k, v in rec["metrics"].items() if k != "run_wall_s"}
        summary = root / name / "summary.json"
        params = json.loads(summary.read_text())["final_params"] if summary.is_file() else None
        out[name] = (rec["status"], metrics, params)
    return out
