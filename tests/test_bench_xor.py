"""Issue-6 acceptance 1: XOR trains to 100 % through the emulated XOR bench, and the same run
through `physlearn twin serve --virtual` in another process (generators and scopes over TCP, the
QDAC on a pty, the virtual clock on the twin-control socket) gives bit-identical parameters.

In CI the in-memory run trains examples/bench-xor.toml as shipped to 100 % train and test
accuracy (27 epochs, ~3 minutes on one core) while, concurrently, the served run trains its first
``SERVED_EPOCHS`` epochs; the served parameters must equal the in-memory run's after the same
epoch bit for bit (Adam at a constant rate: the first epochs do not depend on the budget). The
served path is I/O-latency-bound (~50 s per epoch against ~6 s in memory on 2 cores), so the full
served run is not repeated in CI; run it with ``PHYSLEARN_FULL_SERVED_XOR=1`` (measured: 100 % at epoch
27 over TCP + pty, bit-identical to the in-memory run at every epoch, 23 minutes on a loaded
2-core machine)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Empty, Queue

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MAX_EPOCHS = 60  # the example stops at 100 % (27 epochs when written)
FULL = bool(os.environ.get("PHYSLEARN_FULL_SERVED_XOR"))
SERVED_EPOCHS = MAX_EPOCHS if FULL else 3

pytestmark = [pytest.mark.slow, pytest.mark.timeout(4000 if FULL else 1000)]

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


def _train(config: Path, run_dir: Path, epochs: int = MAX_EPOCHS) -> dict[str, object]:
    r = subprocess.run(
        [
            *(sys.executable, "-m", "physlearn.cli", "train", "--config", str(config), "--arm"),
            *("--quiet", "--epochs", str(epochs), "--run-dir", str(run_dir), "--name", "run"),
        ],
        capture_output=True,
        text=True,
        timeout=3600 if FULL else 900,
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
    in_memory = ThreadPoolExecutor(1)
    memory_run = in_memory.submit(_train, _config(mem_dir, "memory", {}), mem_dir / "runs")

    (tcp_dir / "bench-xor-bench.toml").write_text((EXAMPLES / "bench-xor-bench.toml").read_text())
    served = Served(tcp_dir / "bench-xor-bench.toml")
    try:
        lines = served.until_ready(60.0)
        resources = {m[1]: m[3] for m in map(_LINE.match, lines) if m}
        assert any(v.startswith("TCPIP0::") for v in resources.values())
        assert any(v.startswith("ASRL/dev/pts/") for v in resources.values())
        control = next(ln.split()[1] for ln in lines if ln.startswith("twin-control "))
        over_tcp = _train(_config(tcp_dir, control, resources), tcp_dir / "runs", SERVED_EPOCHS)
    finally:
        served.stop()
        memory = memory_run.result()
        in_memory.shutdown()
    assert served.proc.returncode == 0

    from physlearn.runstore import RunStore

    final = memory["final"]
    assert isinstance(final, dict)
    assert final["train_accuracy"] == 1.0 and final["test_accuracy"] == 1.0, final
    mem_store = RunStore.open(mem_dir / "runs" / "run")
    tcp_store = RunStore.open(tcp_dir / "runs" / "run")
    epochs = tcp_store.param_epochs()
    assert len(epochs) == min(SERVED_EPOCHS, len(mem_store.param_epochs())) and epochs
    for e in epochs:  # every epoch the served run made, bit for bit
        assert np.array_equal(mem_store.load_params(e), tcp_store.load_params(e)), e
    timing = ("wall_time_s", "train_time_s", "eval_time_s")
    rows = [
        [{k: v for k, v in m.items() if k not in timing} for m in st.read_metrics()]
        for st in (mem_store, tcp_store)
    ]
    assert rows[0][: len(rows[1])] == rows[1]
    p_tcp = np.asarray(over_tcp["final_params"], dtype=float)
    text = (EXAMPLES / "bench-xor.toml").read_text()
    p0 = np.array([float(v) for v in re.findall(r"^value = (\S+)", text, re.M)])
    assert p0.shape == p_tcp.shape and not np.allclose(p0, p_tcp)  # the runs did train
    ck = np.load(tcp_dir / "runs" / "run" / "checkpoint.npz")
    assert any(np.array_equal(ck[k], p_tcp) for k in ck.files if ck[k].shape == p_tcp.shape)
