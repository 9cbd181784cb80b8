"""Must-show 1 (the bit-identity half; the speed-up is benchmarks/sweep_speed.py): the training
table's points on the embedded LocalCluster (2 workers) give per-point results bit-identical to
the same points run serially in one process, and to train_table's direct path (`run_one`, no
run directory). Also: BLAS pinned on every worker, bench points pinned to their named worker."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sweep_helpers import ROOT, result_values

from physlearn.spec.tomlconfig import validate
from physlearn.sweeps import DaskExecutor, SerialExecutor, Task, run_sweep
from physlearn.sweeps.engine import worker_name
from physlearn.sweeps.plan import SweepFile, plan_from
from physlearn.sweeps.runner import run_tasks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: train_table --quick-sized points: XOR both regimes, Iris folds, three estimators
ROWS = [
    ("xor", "conservative", "ep_symmetric", 0, 6),
    ("xor", "lossy_resonant", "adjoint", 1, 6),
    ("xor", "lossy_resonant", "ep_echo", 0, 6),
    ("iris", "conservative", "ep_time_reversed", 1, 1),
    ("xor", "conservative", "adjoint", 1, 6),
]


def _train_table() -> ModuleType:
    path = ROOT / "benchmarks" / "train_table.py"
    spec = importlib.util.spec_from_file_location("bench_train_table", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cluster() -> Any:
    ex = DaskExecutor.local(2)
    yield ex
    ex.close()


def _pinning() -> dict[str, Any]:
    import os

    from threadpoolctl import threadpool_info

    return {
        "env": os.environ.get("OMP_NUM_THREADS"),
        "blas": sorted({p["num_threads"] for p in threadpool_info()}),
        "worker": worker_name(),
    }


def test_table_points_on_two_workers_equal_serial_and_direct(tmp_path: Path, cluster: Any) -> None:
    tt = _train_table()
    entries = [tt.point_entry(t, r, e, s, n) for t, r, e, s, n in ROWS]
    plans = {}
    for kind in ("serial", "dask"):
        f = tmp_path / kind / "sweep.toml"
        sf = validate(SweepFile, {"sweep": {"root": "."}, "points": entries}, str(f))
        plans[kind] = plan_from(sf, f)
    ser = run_sweep(plans["serial"], SerialExecutor())
    par = run_sweep(plans["dask"], cluster)
    assert {r.worker for r in par} == {"0", "1"}  # both workers ran points
    assert all(r.status == "done" for r in ser + par)
    assert result_values(tmp_path / "serial") == result_values(tmp_path / "dask")
    # ... and the rows equal train_table's direct path (no sweep, no run directory)
    for rec, (t, r, e, s, n) in zip(par, ROWS, strict=True):
        p = next(p for p in plans["dask"].points if p.name == rec.point)
        got = asdict(tt.row_of(rec, tt._layers(p)))
        ref = asdict(tt.run_one(t, r, e, s, n))
        got.pop("wall_s"), ref.pop("wall_s")
        assert got == ref, rec.point


def test_workers_are_pinned_and_bench_points_run_on_their_worker(
    tmp_path: Path, cluster: Any
) -> None:
    tasks = [Task(f"p{i}", _pinning, worker="1" if i < 3 else None) for i in range(5)]
    tasks.append(Task("lost", _pinning, worker="no-such-worker"))
    recs = {r.point: r for r in run_tasks(tasks, cluster, tmp_path)}
    for i in range(5):
        m = recs[f"p{i}"].metrics
        assert m["env"] == "1" and m["blas"] == [1]
        if i < 3:
            assert m["worker"] == "1"
    assert recs["lost"].status == "failed"
    assert "no worker named 'no-such-worker'" in recs["lost"].error
