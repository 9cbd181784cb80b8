"""Issue-6 acceptance 1: `physlearn train --arm` through the emulated XOR bench served by
`physlearn twin serve --virtual` in another process (generators and scopes over TCP, the QDAC on
a pty, the virtual clock on the twin-control socket) gives bit-identical parameters to the same
run on the in-memory emulated bench.

CI runs a fixed number of epochs (``EPOCHS``) through both paths and checks bit-identity; the
XOR-to-100 % half of the acceptance needs a recipe that reaches 100 % on this bench network,
which the example does not have yet (see the issue)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import Empty, Queue

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
EPOCHS = 2

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

_LINE = re.compile(r"^instrument (\S+) (\S+) (\S+)$")


class Served:
    """`physlearn twin serve --virtual` in a subprocess, stdout read line by line in a thread."""

    def __init__(self, bench: Path) -> None:
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "physlearn.cli", "twin", "serve"),
                *("--config", str(bench), "--virtual"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: Queue[str] = Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def until_ready(self, timeout_s: float) -> list[str]:
        out: list[str] = []
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except Empty:
                raise AssertionError(f"no 'ready' within {timeout_s} s; got {out}") from None
            out.append(line)
            if line == "ready":
                return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reader.join(5)


def _config(tmp: Path, twin_control: str, resources: dict[str, str]) -> Path:
    for name in ("bench-xor-bench.toml", "bench-xor-calibration.json"):
        (tmp / name).write_text((EXAMPLES / name).read_text())
    text = (EXAMPLES / "bench-xor.toml").read_text()
    line = '\ntwin_control = "memory"'
    assert line in text
    res = ", ".join(f'{k} = "{v}"' for k, v in sorted(resources.items()))
    new = f'\ntwin_control = "{twin_control}"' + (f"\nresources = {{ {res} }}" if res else "")
    path = tmp / "bench-xor.toml"
    path.write_text(text.replace(line, new, 1))
    return path


def _train(config: Path, run_dir: Path) -> dict[str, object]:
    r = subprocess.run(
        [
            *(sys.executable, "-m", "physlearn.cli", "train", "--config", str(config), "--arm"),
            *("--quiet", "--epochs", str(EPOCHS), "--run-dir", str(run_dir), "--name", "run"),
        ],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=config.parent,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run_dir / "run" / "records.h5").is_file()
    summary: dict[str, object] = json.loads((run_dir / "run" / "summary.json").read_text())
    return summary


def test_served_bench_and_memory_bench_give_bit_identical_parameters(tmp_path: Path) -> None:
    mem_dir, tcp_dir = tmp_path / "memory", tmp_path / "served"
    mem_dir.mkdir()
    tcp_dir.mkdir()
    memory = _train(_config(mem_dir, "memory", {}), mem_dir / "runs")

    (tcp_dir / "bench-xor-bench.toml").write_text((EXAMPLES / "bench-xor-bench.toml").read_text())
    served = Served(tcp_dir / "bench-xor-bench.toml")
    try:
        lines = served.until_ready(60.0)
        resources = {m[1]: m[3] for m in map(_LINE.match, lines) if m}
        assert any(v.startswith("TCPIP0::") for v in resources.values())
        assert any(v.startswith("ASRL/dev/pts/") for v in resources.values())
        control = next(ln.split()[1] for ln in lines if ln.startswith("twin-control "))
        over_tcp = _train(_config(tcp_dir, control, resources), tcp_dir / "runs")
    finally:
        served.stop()
    assert served.proc.returncode == 0

    p_mem = np.asarray(memory["final_params"], dtype=float)
    p_tcp = np.asarray(over_tcp["final_params"], dtype=float)
    text = (EXAMPLES / "bench-xor.toml").read_text()
    p0 = np.array([float(v) for v in re.findall(r"^value = (\S+)", text, re.M)])
    assert memory["steps"] == over_tcp["steps"] and int(str(memory["steps"])) >= EPOCHS
    assert memory["experiments"] == over_tcp["experiments"]
    assert np.array_equal(p_mem, p_tcp), (p_mem, p_tcp)
    assert p0.shape == p_mem.shape and not np.allclose(p0, p_mem)  # the runs did train
    for name in ("memory", "served"):
        ck = np.load(tmp_path / name / "runs" / "run" / "checkpoint.npz")
        assert any(np.array_equal(ck[k], p_mem) for k in ck.files if ck[k].shape == p_mem.shape)
