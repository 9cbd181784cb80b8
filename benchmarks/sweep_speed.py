"""Sweep speed-up (issue "Sweeps beyond one machine", must-show 1): the same training points
run serially in one process and on the embedded Dask LocalCluster (2 worker processes × 1
thread), side by side in one run; per-point results compared bit for bit.

Both sides run the same per-point function (`physlearn.sweeps.execute` → `train_point`: a run
directory per point) with BLAS/OpenMP pinned to one thread (threadpoolctl in every point, and
the workers' environment), so the comparison is fair: the serial side is not slowed by
oversubscription, the parallel side not helped by it. The Dask wall time includes starting and
stopping the cluster. The load average (1 min, from /proc/loadavg) is read before and after each
side: a speed-up measured while other processes share the cores is smaller than the machine's.

Points: XOR with `ep_symmetric` at the example's recipe, fixed epochs (no early stop), the
first N/2 seeds both regimes accept, both regimes — equal work per point.

    python benchmarks/sweep_speed.py            # 8 points × 150 epochs; writes docs/benchmarks.md
    python benchmarks/sweep_speed.py --quick    # 4 points × 10 epochs; prints only

Prints the table; a full run rewrites its section of docs/benchmarks.md (never in --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import doc_sections  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"


def valid_seeds(n: int) -> list[int]:
    """The first ``n`` seeds whose initial network both regimes accept (a conservative draw with
    a linear mode near ω or 2ω is refused by the topology: such a point would only fail)."""
    from physlearn.errors import ConfigError
    from physlearn.spec.tomlconfig import read_toml, validate
    from physlearn.sweeps.plan import apply_overrides
    from physlearn.training.config import TrainConfig

    base = read_toml(ROOT / "examples" / "xor.toml")
    out: list[int] = []
    seed = 0
    while len(out) < n:
        try:
            for regime in ("conservative", "lossy_resonant"):
                sets = [("network.topology.seed", seed), ("network.topology.regime", regime)]
                validate(TrainConfig, apply_overrides(base, sets), "xor").network.build()
        except ConfigError:
            pass
        else:
            out.append(seed)
        seed += 1
    return out


def sweep_file(folder: Path, n_points: int, epochs: int) -> Path:
    """The benchmark's sweep: seeds × regimes of XOR, ep_symmetric, ``epochs`` each."""
    seeds = valid_seeds(n_points // 2)
    text = (
        "[sweep]\n"
        f'base = "{ROOT / "examples" / "xor.toml"}"\n'
        'name = "{network.topology.regime}-s{training.seed}"\n'
        f'set = {{ "training.epochs" = {epochs}, "training.log_cosine_to_adjoint" = false }}\n'
        'unset = ["training.target_accuracy", "training.target_loss"]\n'
        '[grid]\n"network.topology.regime" = ["conservative", "lossy_resonant"]\n'
    ) + "".join(
        f'[[points]]\nset = {{ "training.seed" = {s}, "network.topology.seed" = {s} }}\n'
        for s in seeds
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sweep.toml"
    path.write_text(text)
    return path


def _values(root: Path, names: list[str]) -> dict[str, Any]:
    """Per point: status, metrics but the run's wall time, selected parameters."""
    out = {}
    for n in names:
        rec = json.loads((root / "_sweep" / "points" / f"{n}.json").read_text())
        summary = root / n / "summary.json"
        params = json.loads(summary.read_text())["final_params"] if summary.is_file() else None
        metrics = {k: v for k, v in rec["metrics"].items() if k != "run_wall_s"}
        out[n] = (rec["status"], metrics, params, rec["error"])
    return out


def _side(path: Path, root: Path, scheduler: str | None) -> dict[str, Any]:
    from physlearn.sweeps import load_sweep, open_executor, run_sweep

    plan = load_sweep(path, root=root)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open_executor(scheduler, 2) as ex:
        recs = run_sweep(plan, ex)
        desc = ex.description
    wall = time.perf_counter() - t0
    return {
        "description": desc,
        "wall_s": wall,
        "point_s": sum(r.wall_s for r in recs),
        "load": (load0, os.getloadavg()[0]),
        "failed": sum(r.status != "done" for r in recs),
        "values": _values(root, [p.name for p in plan.points]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4 points × 10 epochs; docs untouched")
    ap.add_argument("--points", type=int, default=None, help="even number of points (default 8)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per point (default 150)")
    ap.add_argument("--docs", type=Path, default=None, help="markdown file of the section")
    args = ap.parse_args(argv)
    command = " ".join(
        ["python benchmarks/sweep_speed.py", *(sys.argv[1:] if argv is None else argv)]
    )
    n = args.points or (4 if args.quick else 8)
    epochs = args.epochs or (10 if args.quick else 150)
    work = Path(tempfile.mkdtemp(prefix="sweep-speed-"))
    path = sweep_file(work, n, epochs)
    cores = len(os.sched_getaffinity(0))
    serial = _side(path, work / "serial", "serial")
    dask = _side(path, work / "dask", None)
    shutil.rmtree(work, ignore_errors=True)
    same = serial["values"] == dask["values"]
    speedup = serial["wall_s"] / dask["wall_s"]
    rows = [
        "| run | points | wall s | Σ point s | load before → after (1 min) | failed |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for side in (serial, dask):
        rows.append(
            f"| {side['description']} | {n} | {side['wall_s']:.1f} | {side['point_s']:.1f} | "
            f"{side['load'][0]:.2f} → {side['load'][1]:.2f} | {side['failed']} |"
        )
    text = "\n".join(
        [
            f"Generated by `{command}` ({time.strftime('%Y-%m-%d %H:%M')}; {platform.processor() or platform.machine()}, "
            f"{cores} cores, Python {platform.python_version()}). {n} XOR points "
            f"(ep_symmetric, {epochs} epochs each, both regimes), the same per-point function "
            "on both sides, BLAS pinned to 1 thread per point; the Dask wall time includes "
            "starting and stopping the LocalCluster.",
            "",
            *rows,
            "",
            f"**Speed-up {speedup:.2f}×** (serial wall / LocalCluster wall). Per-point results "
            f"(metrics and selected parameters) bit-identical: **{'yes' if same else 'NO'}**.",
        ]
    )
    print(text)
    out = doc_sections.docs_target(args.docs, DOCS, args.quick)
    if out is not None:
        doc_sections.write_section(
            out, "sweep_speed", "## Sweep speed-up (Dask LocalCluster)", text
        )
    return 0 if same and not serial["failed"] and not dask["failed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
