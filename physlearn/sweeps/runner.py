"""Running a list of points to one table: skip the finished ones, run the rest on an executor,
rewrite the table after every point.

Resumption: a point with a record (``<root>/_sweep/points/<name>.json``) is finished — done or
failed — and is not run again (``retry_failed`` runs the failed ones again; ``is_done`` may
demand more of a done point, e.g. that its run directory still has its summary). Killing the
sweep loses at most the points that were running; the same command continues.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from physlearn.sweeps.engine import Executor, Task
from physlearn.sweeps.records import PointRecord, RecordStore, write_tables

log = logging.getLogger(__name__)

__all__ = ["pending", "run_tasks"]


def pending(
    tasks: Sequence[Task],
    root: Path,
    *,
    retry_failed: bool = False,
    is_done: Callable[[PointRecord], bool] | None = None,
) -> tuple[list[Task], dict[str, PointRecord]]:
    """(tasks still to run, records of the finished points kept)."""
    store = RecordStore(root)
    kept = store.read_all(t.name for t in tasks)
    for name, rec in list(kept.items()):
        stale = rec.status == "done" and is_done is not None and not is_done(rec)
        if stale or (rec.status != "done" and retry_failed):
            store.forget(name)
            del kept[name]
    return [t for t in tasks if t.name not in kept], kept


def run_tasks(
    tasks: Sequence[Task],
    executor: Executor,
    root: Path,
    *,
    retry_failed: bool = False,
    is_done: Callable[[PointRecord], bool] | None = None,
    on_record: Callable[[PointRecord, bool], None] | None = None,
    title: str = "Sweep results",
    tables: bool = True,
) -> list[PointRecord]:
    """Run the unfinished ``tasks`` on ``executor``; return every finished point's record in
    task order. ``on_record(record, fresh)`` sees each kept record (``fresh`` False) and then
    each new one as it finishes; the tables (``results.csv``, ``results.md``) are rewritten
    after each new record when ``tables``."""
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"two points share a name (a run directory): {', '.join(dup)}")
    todo, records = pending(tasks, root, retry_failed=retry_failed, is_done=is_done)
    order = {n: i for i, n in enumerate(names)}

    def ordered() -> list[PointRecord]:
        return sorted(records.values(), key=lambda r: order[r.point])

    for rec in ordered():
        if on_record is not None:
            on_record(rec, False)
    log.info(
        "sweep %s: %d points, %d finished, %d to run", root, len(tasks), len(records), len(todo)
    )
    if tables:
        write_tables(root, ordered(), title)
    for rec in executor.run(todo, root):
        records[rec.point] = rec
        if tables:
            write_tables(root, ordered(), title)
        if on_record is not None:
            on_record(rec, True)
    return ordered()
