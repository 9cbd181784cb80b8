"""Must-show 3: a sweep killed (the whole job: command, LocalCluster, workers — SIGKILL to its
process group) and restarted with the same command skips the finished points, resumes the
interrupted ones from their run directories, and completes: one row per point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from sweep_helpers import ENV, physlearn, read_records, result_values, xor_sweep

from physlearn.sweeps import SerialExecutor, load_sweep, run_tasks, training_tasks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_a_killed_sweep_restarted_with_the_same_command_completes(tmp_path: Path) -> None:
    f = xor_sweep(tmp_path, seeds=(0, 1, 2), estimators=("adjoint",), epochs=20)
    root = tmp_path / "runs"
    cmd = ["sweep", "--config", str(f), "--workers", "2", "--quiet"]
    job = subprocess.Popen(
        [sys.executable, "-m", "physlearn.cli", *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
        start_new_session=True,  # its own process group: the job, its cluster, its workers
    )
    records_dir = root / "_sweep" / "points"
    deadline = time.monotonic() + 400
    try:
        # kill once a point has finished and another is part-way (checkpointed, no summary)
        while time.monotonic() < deadline and job.poll() is None:
            done = list(records_dir.glob("*.json")) if records_dir.is_dir() else []
            partial = [
                d
                for d in root.glob("adjoint-s*")
                if (d / "checkpoint.npz").is_file() and not (d / "summary.json").is_file()
            ]
            if done and partial:
                break
            time.sleep(0.05)
        assert job.poll() is None, "the sweep ended before it could be killed"
        os.killpg(job.pid, signal.SIGKILL)
    finally:
        job.wait(timeout=30)
    before = {p.stem: p.read_bytes() for p in records_dir.glob("*.json")}
    assert 0 < len(before) < 3
    time.sleep(1.0)  # the killed workers' files settle (nothing of theirs runs any more)

    again = physlearn(*cmd, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    after = read_records(root)
    assert sorted(after) == ["adjoint-s0", "adjoint-s1", "adjoint-s2"]
    for name, data in before.items():  # finished points were skipped, not run again
        assert (records_dir / f"{name}.json").read_bytes() == data
    table = pd.read_csv(root / "results.csv")
    assert list(table["point"]) == ["adjoint-s0", "adjoint-s1", "adjoint-s2"]
    assert (table["status"] == "done").all()
    resumed = [n for n, r in after.items() if r["resumed"]]
    assert resumed, "the interrupted point started over instead of resuming"
    ref = tmp_path / "ref"
    tasks = [t for t in training_tasks(load_sweep(f, root=ref)) if t.name in resumed]
    run_tasks(tasks, SerialExecutor(), ref)
    got, want = result_values(root), result_values(ref)
    assert all(got[n] == want[n] for n in resumed)
