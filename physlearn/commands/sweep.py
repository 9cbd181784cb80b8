"""`physlearn sweep`: a grid (or list) of overrides over a base train config, each point a normal
run directory, run on Dask — the embedded LocalCluster (one single-threaded worker process per
core) or an existing cluster (``--scheduler tcp://HOST:PORT``) — with a progress bar over the
points. The sweep file's format: physlearn.sweeps.plan and docs/sweeps.md.

Results: ``<root>/results.csv`` (one row per point: override values, status, metrics, wall time,
worker; rewritten atomically after every point) and ``<root>/results.md``. Resumable: the same
command skips the finished points and resumes the ones a kill interrupted. A point's failure is
reported and kept in the table (``--retry-failed`` runs failed points again); the exit code is 1
when some point failed, 0 when all are done.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from physlearn.sweeps.records import RESULTS_CSV, PointRecord


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="run a grid of training runs on Dask", description=__doc__)
    p.add_argument("--config", type=Path, required=True, help="the sweep file (TOML)")
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="tcp://HOST:PORT of an existing Dask scheduler; 'serial' runs every point in this "
        "process; default: an embedded LocalCluster",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="LocalCluster worker processes (default: one per core)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds to wait for --scheduler to answer (default 10)",
    )
    p.add_argument(
        "--root", type=Path, default=None, help="run root (default: [sweep] root or runs/<stem>)"
    )
    p.add_argument("--retry-failed", action="store_true", help="run failed points again")
    p.add_argument(
        "--arm", action="store_true", help="bench points: enable the bench outputs (required)"
    )
    p.add_argument("--list", action="store_true", help="print the points and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


class PointBar:
    """A tqdm bar over the sweep's points (kept ones count as done at the start)."""

    def __init__(self, total: int, quiet: bool):
        self.quiet = quiet
        self.bar: Any = None
        self.total = total
        self.failed = 0

    def __call__(self, rec: PointRecord, fresh: bool) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="point", desc="sweep", dynamic_ncols=True)
        self.failed += rec.status != "done"
        self.bar.update(1)
        self.bar.set_postfix(failed=self.failed, last=rec.point[-24:])
        if fresh and rec.status != "done":
            self.bar.write(f"point {rec.point} failed: {rec.error}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    from physlearn.sweeps import load_sweep, open_executor, run_sweep

    plan = load_sweep(args.config, args.root)
    if args.list:
        for p in plan.points:
            sets = ", ".join(f"{k}={v!r}" for k, v in p.overrides)
            unset = f" unset {list(p.unset)}" if p.unset else ""
            print(f"{p.name}: {p.base.name}" + (f" [{sets}]" if sets else "") + unset)
        print(f"{len(plan.points)} points; run root {plan.root}")
        return 0
    bar = PointBar(len(plan.points), args.quiet)
    with open_executor(args.scheduler, args.workers, args.timeout) as ex:
        print(f"sweep: {len(plan.points)} points on {ex.description}; run root {plan.root}")
        try:
            records = run_sweep(
                plan, ex, arm=args.arm, retry_failed=args.retry_failed, on_record=bar
            )
        finally:
            bar.close()
    failed = [r for r in records if r.status != "done"]
    print(
        f"sweep: {len(records) - len(failed)} done, {len(failed)} failed of "
        f"{len(plan.points)}; table: {plan.root / RESULTS_CSV}"
    )
    for r in failed:
        print(f"  failed: {r.point}: {r.error}", file=sys.stderr)
    return 1 if failed else 0
