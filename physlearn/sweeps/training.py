"""Training points: each point of a `SweepPlan` is a normal run directory ``<root>/<name>``,
trained as ``physlearn train`` would (`physlearn.training.session.run_session`; no report).

`train_point` is idempotent: a run directory that already has its summary (with the same config)
is read, not retrained; a partial one — left by a killed worker or sweep — is resumed from its
checkpoint (``physlearn train --resume``: bit-identical on the twin) or, if it never got as far
as its config, started over. A run directory holding another config is the point's failure.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from physlearn.errors import ConfigError
from physlearn.sweeps.engine import Outcome, Task
from physlearn.sweeps.plan import Point, SweepPlan
from physlearn.sweeps.records import PointRecord
from physlearn.training.config import TrainConfig
from physlearn.training.runstore import CONFIG_FILE, SUMMARY_FILE, RunStore
from physlearn.training.state import COUNTERS

__all__ = ["summary_metrics", "train_point", "training_tasks"]


def summary_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The scalar facts of a run's summary.json that a sweep table keeps: the selected epoch's
    accuracies and losses (its validation ones too when the run holds out a validation split:
    what a recipe screen chooses on), epochs, steps, failure counters, the final stability
    check."""
    final = summary.get("final") or {}
    stab = summary.get("stability") or {}
    modes = stab.get("linear_modes_at_rest") or {}
    out: dict[str, Any] = {
        k: final.get(k) for k in ("test_accuracy", "test_loss", "train_accuracy", "train_loss")
    }
    if final.get("validation_accuracy") is not None:
        out.update(
            validation_accuracy=final["validation_accuracy"],
            validation_loss=final.get("validation_loss"),
        )
    out.update(
        epochs_run=summary.get("epochs_run"),
        selected_epoch=summary.get("selected_epoch"),
        steps=summary.get("steps"),
        experiments=summary.get("experiments"),
        stopped_early=summary.get("stopped_early"),
        stop_reason=summary.get("stop_reason"),
        **{k: summary.get(k) for k in COUNTERS},
        stable=stab.get("stable"),
        stability_orbits=stab.get("orbits", "cold start"),
        stability_split=stab.get("split", "train" if stab.get("orbits") == "evaluated" else None),
        stability_samples=stab.get("samples_checked"),
        unstable_samples=stab.get("unstable_samples"),
        final_detuning_linewidths=modes.get("detuning_linewidths"),
        level=summary.get("level"),
        run_wall_s=summary.get("wall_time_s"),
    )
    return out


async def _train(
    cfg: TrainConfig, config_dir: Path, root: Path, name: str, resume: bool, arm: bool
) -> dict[str, Any]:
    from physlearn.systems.bench.system import BenchSystem
    from physlearn.systems.factory import make_system
    from physlearn.training.session import run_session
    from physlearn.training.setup import PARAMETERS_FILE, prepare, write_network

    setup = prepare(cfg, config_dir)
    async with make_system(cfg, config_dir, spec=setup.spec) as system:
        if isinstance(system, BenchSystem):
            from physlearn.commands.bench_session import dry_run

            dry_run(setup, system)  # every planned setting within the limits, or ConfigError
            if not arm:
                raise ConfigError("a bench point enables the bench outputs: sweep with --arm")
            await system.connect()
        store = RunStore.create(root, name, cfg.resolved(), resume=resume)
        if not (store.run_dir / PARAMETERS_FILE).is_file():
            write_network(store, setup.spec)
        result = await run_session(setup, system, store, [], None)
    return result.summary


def train_point(point: Point, root: str, arm: bool = False) -> Outcome:
    """Train (or finish, or read) the point's run directory ``root/point.name``; its summary's
    metrics (`summary_metrics`). Raises for the point's failure."""
    cfg = point.config()
    run_dir = Path(root) / point.name
    summary_path = run_dir / SUMMARY_FILE
    if summary_path.is_file():
        RunStore.create(root, point.name, cfg.resolved(), resume=True)  # same config, or refused
        return Outcome(summary_metrics(json.loads(summary_path.read_text())))
    resume = run_dir.is_dir()
    if resume and not (run_dir / CONFIG_FILE).is_file():
        # killed while the directory was being created: nothing trained yet
        shutil.rmtree(run_dir)
        resume = False
    summary = asyncio.run(_train(cfg, point.base.parent, Path(root), point.name, resume, arm))
    return Outcome(summary_metrics(summary), resumed=resume)


def training_tasks(plan: SweepPlan, arm: bool = False) -> list[Task]:
    """One `train_point` task per point; a bench point is pinned to its bench's worker and
    holds the bench's lock while it runs."""
    return [
        Task(
            p.name,
            train_point,
            {"point": p, "root": str(plan.root), "arm": arm},
            labels=dict(p.labels),
            worker=plan.worker_of(p),
            lock=p.bench,
        )
        for p in plan.points
    ]


def has_summary(root: Path) -> Any:
    """``is_done`` of a training sweep: a done point whose run directory lost its summary (a
    run directory deleted by hand) runs again."""

    def check(rec: PointRecord) -> bool:
        return (root / rec.point / SUMMARY_FILE).is_file()

    return check
