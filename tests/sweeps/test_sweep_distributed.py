"""Must-show 2: real distribution. A ``dask scheduler`` and two ``dask worker`` processes on
localhost (separate processes, as on a cluster; the workers started the way a cluster's are),
``physlearn sweep --scheduler tcp://…``; one worker is SIGKILLed in the middle of a point: that
point is rescheduled on the other worker, resumes the run directory the dead worker left, and
the table has every point exactly once, with the values of a serial run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sweep_helpers import ENV, read_records, result_values, xor_sweep

from physlearn.sweeps import SerialExecutor, load_sweep, run_tasks, training_tasks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
DASK = [sys.executable, "-c", "from dask.cli import run_cli; run_cli()"]


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        DASK + args, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=ENV, cwd=log.parent
    )


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[tuple[str, dict[str, subprocess.Popen[bytes]]]]:
    """(scheduler address, worker name → process) of a scheduler and two workers."""
    sfile = tmp_path / "scheduler.json"
    procs = [
        _start(
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                ":0",
                "--scheduler-file",
                str(sfile),
            ],
            tmp_path / "scheduler.log",
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not sfile.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(sfile.read_text())["address"]
        workers = {}
        for name in ("w1", "w2"):
            workers[name] = _start(
                [
                    "worker",
                    "--scheduler-file",
                    str(sfile),
                    "--name",
                    name,
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--dashboard-address",
                    ":0",
                    "--host",
                    "127.0.0.1",
                ],
                tmp_path / f"{name}.log",
            )
            procs.append(workers[name])
        yield address, workers
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait_for_workers(address: str, n: int) -> None:
    from distributed import Client

    with Client(address, timeout=30, set_as_default=False) as c:
        c.wait_for_workers(n, timeout=60)


def _running_on(client, address: str, worker: str, root: Path) -> str | None:  # type: ignore[no-untyped-def]
    """The point the named worker is training, once its run has a checkpoint."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    addr = next((a for a, w in info.items() if w.get("name") == worker), None)
    for key in client.processing().get(addr, ()) if addr else ():
        name = str(key).split("-", 2)[2]  # sweep-<token>-<point>
        run = root / name
        if (run / "checkpoint.npz").is_file() and not (run / "summary.json").is_file():
            return name
    return None


def test_a_worker_killed_mid_point_loses_and_duplicates_nothing(
    tmp_path: Path, dask_cluster: tuple[str, dict[str, subprocess.Popen[bytes]]]
) -> None:
    from distributed import Client

    address, workers = dask_cluster
    _wait_for_workers(address, 2)
    f = xor_sweep(tmp_path / "s", seeds=(0, 1), estimators=("ep_symmetric", "adjoint"), epochs=20)
    root = tmp_path / "s" / "runs"
    sweep = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "physlearn.cli",
            "sweep",
            "--config",
            str(f),
            "--scheduler",
            address,
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    killed = None
    with Client(address, timeout=30, set_as_default=False) as client:
        deadline = time.monotonic() + 300
        while killed is None and time.monotonic() < deadline and sweep.poll() is None:
            killed = _running_on(client, address, "w1", root)
            time.sleep(0.05)
    assert killed is not None, "w1 never got a point to kill it in"
    os.kill(workers["w1"].pid, signal.SIGKILL)
    _, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err[-3000:]
    assert workers["w1"].wait(timeout=10) == -signal.SIGKILL

    table = pd.read_csv(root / "results.csv")
    names = ["ep_symmetric-s0", "ep_symmetric-s1", "adjoint-s0", "adjoint-s1"]
    assert list(table["point"]) == names  # every point, once, in plan order
    assert (table["status"] == "done").all()
    recs = read_records(root)
    assert sorted(recs) == sorted(names)
    assert recs[killed]["worker"] == "w2" and recs[killed]["resumed"] is True
    # the killed point's values do not depend on the kill nor on the worker
    ref = tmp_path / "ref"
    tasks = [t for t in training_tasks(load_sweep(f, root=ref)) if t.name == killed]
    run_tasks(tasks, SerialExecutor(), ref)
    assert result_values(root)[killed] == result_values(ref)[killed]
