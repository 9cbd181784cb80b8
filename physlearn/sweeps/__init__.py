"""Sweeps: grids and lists of independent runs on Dask (docs/sweeps.md).

* `physlearn.sweeps.plan`: the sweep file and the points it expands to (validated, named);
* `physlearn.sweeps.engine`: where points run — a Dask ``LocalCluster`` (default), an existing
  Dask cluster (``tcp://HOST:PORT``) or one process (the serial baseline);
* `physlearn.sweeps.records`: one record per finished point, the tidy table (CSV) and its
  Markdown rendering;
* `physlearn.sweeps.runner`: skip the finished points, run the rest, rewrite the table;
* `physlearn.sweeps.training`: a training point — a normal run directory per point.

`run_sweep` runs a plan's training points: ``physlearn sweep --config FILE`` in one call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from physlearn.sweeps.engine import (
    DaskExecutor,
    Executor,
    Outcome,
    SerialExecutor,
    SweepError,
    Task,
    execute,
    open_executor,
)
from physlearn.sweeps.plan import Point, SweepPlan, load_sweep
from physlearn.sweeps.records import PointRecord, RecordStore
from physlearn.sweeps.runner import run_tasks
from physlearn.sweeps.training import has_summary, train_point, training_tasks

__all__ = [
    "DaskExecutor",
    "Executor",
    "Outcome",
    "Point",
    "PointRecord",
    "RecordStore",
    "SerialExecutor",
    "SweepError",
    "SweepPlan",
    "Task",
    "execute",
    "load_sweep",
    "open_executor",
    "run_sweep",
    "run_tasks",
    "train_point",
    "training_tasks",
]


def run_sweep(
    plan: SweepPlan,
    executor: Executor,
    *,
    arm: bool = False,
    retry_failed: bool = False,
    on_record: Callable[[PointRecord, bool], None] | None = None,
) -> list[PointRecord]:
    """Train every unfinished point of ``plan`` on ``executor`` into ``plan.root``; the records
    of all finished points, in plan order (tables in ``plan.root``: results.csv, results.md)."""
    root = Path(plan.root)
    title = f"Sweep {plan.source.name if plan.source else root.name}"
    return run_tasks(
        training_tasks(plan, arm),
        executor,
        root,
        retry_failed=retry_failed,
        is_done=has_summary(root),
        on_record=on_record,
        title=title,
    )
