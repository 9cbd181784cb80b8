"""Helpers of the telemetry tests: train configs with ``[telemetry]``, ``physlearn train`` and
``physlearn control`` subprocesses with the test broker's credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from mqtt_broker import PASSWORDS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
RUN_PW_ENV = "PL_TEST_RUN_PASSWORD"


def telemetry_table(url: str, **extra: Any) -> str:
    fields = {"broker": url, "username": "run", "password_env": RUN_PW_ENV, **extra}
    return "\n[telemetry]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())


def xor_config(tmp: Path, name: str, extra: str = "") -> Path:
    """examples/xor.toml (ideal twin) without the adjoint cosine and the Floquet checks (a
    step ~4.5× faster; the telemetry does not depend on them) and without the target stop (it
    would end a run after ~77 epochs), plus ``extra`` TOML."""
    text = (EXAMPLES / "xor.toml").read_text()
    for key, value in (
        ("log_cosine_to_adjoint", "false"),
        ("floquet", '"none"'),
        ("target_accuracy", None),
        ("target_loss", None),
    ):
        lines = [ln for ln in text.splitlines() if ln.startswith(f"{key} = ")]
        assert len(lines) == 1, key
        text = text.replace(lines[0], "" if value is None else f"{key} = {value}")
    path = tmp / name
    path.write_text(text + extra)
    return path


def env(**more: str) -> dict[str, str]:
    return {**os.environ, RUN_PW_ENV: PASSWORDS["run"], "PYTHONUNBUFFERED": "1", **more}


def train_cmd(
    cfg: Path, root: Path, name: str, *more: str, script: Path | None = None
) -> list[str]:
    head = (
        [sys.executable, str(script)]
        if script
        else [sys.executable, "-m", "physlearn.cli", "train"]
    )
    return [
        *head,
        "--config",
        str(cfg),
        "--run-dir",
        str(root),
        "--name",
        name,
        "--quiet",
        "--no-report",
        *more,
    ]


def train(
    cfg: Path, root: Path, name: str, *more: str, **kw: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        train_cmd(cfg, root, name, *more, script=kw.pop("script", None)),
        env=kw.pop("env", None) or env(),
        capture_output=True,
        text=True,
        timeout=kw.pop("timeout", 600),
        **kw,
    )


def start_train(cfg: Path, root: Path, name: str, *more: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        train_cmd(cfg, root, name, *more, script=kw.pop("script", None)),
        env=kw.pop("env", None) or env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def control(
    url: str,
    command: str,
    run: str,
    *more: str,
    user: str = "operator",
    ca: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``physlearn control COMMAND RUN`` as ``user``."""
    args = [
        sys.executable,
        "-m",
        "physlearn.cli",
        "control",
        command,
        run,
        "--broker",
        url,
        "--username",
        user,
        "--timeout",
        str(timeout),
        *more,
    ]
    if ca is not None:
        args += ["--ca-file", str(ca)]
    return subprocess.run(
        args,
        env={**os.environ, "PHYSLEARN_MQTT_PASSWORD": PASSWORDS.get(user, "wrong")},
        capture_output=True,
        text=True,
        timeout=timeout + 30,
    )


def params_of(run: Path) -> list[np.ndarray]:
    return [np.load(p) for p in sorted((run / "params").glob("epoch_*.npy"))]


def final_params(run: Path) -> np.ndarray:
    return np.asarray(json.loads((run / "summary.json").read_text())["final_params"])


def local_log(run: Path, suffix: str) -> list[dict[str, Any]]:
    out = []
    for line in (run / "telemetry.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["topic"] == suffix:
            out.append(rec["payload"])
    return out


def wait_for(
    pred: Any, timeout_s: float = 120.0, proc: subprocess.Popen[str] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"the run ended ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}"
            )
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
