"""A training session: a prepared setup trained on the system of its level, into a run
directory, with listeners on the event stream.

* `run_session`: on the ideal twin the trainer runs as it is; on a bench (a `BenchSystem` from
  `physlearn.systems.factory.make_system`, connected) measurements are retried on transient
  instrument faults (`RetryingSystem`: the whole measurement again, never skipped), evaluation
  runs on the bench too, the per-step records are written (`BenchStepRecords`, the first
  listener), the bench is armed, and every exit path — normal end, exception, persistent
  fault, SIGINT/SIGTERM — puts it in its safe state (`run_with_safe_exit`); ``[suspenders]``
  turn interlock trips, persistent faults and calibration drift into pauses
  (`physlearn.training.suspenders`).
* `train`: config → run directory on the ideal twin (or a given system), synchronously.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from physlearn.errors import ConfigError
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.system import PhysicalSystem
from physlearn.systems.bench.system import BenchSystem
from physlearn.systems.safety import RetryingSystem, RetryPolicy, run_with_safe_exit
from physlearn.training.bench_records import BenchStepRecords
from physlearn.training.config import TrainConfig
from physlearn.training.control import RunControl
from physlearn.training.events import EventStream, Listener
from physlearn.training.loop import Trainer, TrainResult
from physlearn.training.runstore import RunStore
from physlearn.training.setup import TrainSetup, default_run_name, prepare, write_network
from physlearn.training.suspenders import Suspenders

log = logging.getLogger(__name__)

__all__ = ["SessionParts", "run_session", "train"]


@dataclass(frozen=True)
class SessionParts:
    """What a session is made of, for the ``attach`` hooks of `run_session` (telemetry): the
    trainer, and on a bench the bench, its retry wrapper and its per-step records writer."""

    trainer: Trainer
    bench: BenchSystem | None = None
    retrying: RetryingSystem | None = None
    records: BenchStepRecords | None = None


async def run_session(
    setup: TrainSetup,
    system: PhysicalSystem,
    store: RunStore | None,
    listeners: Sequence[Listener] = (),
    control: RunControl | None = None,
    attach: Sequence[Callable[[SessionParts], None]] = (),
) -> TrainResult:
    """Train ``setup`` on ``system`` into ``store`` (resumed if the store was opened so);
    ``listeners`` subscribe to the run's events in order; ``control`` takes stop, pause,
    resume and abort requests (`physlearn.training.control`); each of ``attach`` is called with
    the session's parts before it starts. See the module docstring."""
    if isinstance(system, BenchSystem):
        return await _bench_session(setup, system, store, listeners, control, attach)
    trainer = Trainer(setup, system=system, events=EventStream(list(listeners)), control=control)
    for hook in attach:
        hook(SessionParts(trainer))
    return await trainer.run(store)


async def _bench_session(
    setup: TrainSetup,
    bench: BenchSystem,
    store: RunStore | None,
    listeners: Sequence[Listener],
    control: RunControl | None,
    attach: Sequence[Callable[[SessionParts], None]] = (),
) -> TrainResult:
    b = setup.config.system.bench
    if b is None:
        raise ConfigError('[system.bench] is required with kind = "bench"')
    if store is None:
        raise ConfigError("a bench run needs a run directory (its per-step records go there)")
    wrapped = RetryingSystem(bench, RetryPolicy(attempts=b.retries), on_fault=bench.reconnect)
    if not isinstance(setup.knowledge, ModelKnowledge):
        raise ConfigError("a bench session trains an oscillator network (no GP bench class yet)")
    records = BenchStepRecords(bench, wrapped, setup.knowledge, Path(store.run_dir))
    events = EventStream([records, *listeners])
    control = control if control is not None else RunControl()
    trainer = Trainer(setup, system=wrapped, eval_system=wrapped, events=events, control=control)
    if setup.config.suspenders is not None:
        reference = (setup.initial_parameters(), trainer.x_fit[:1])
        trainer.suspenders = Suspenders(
            setup.config.suspenders,
            control,
            events,
            wrapped,
            reconnect=bench.reconnect,
            reference=reference,
            forget=bench.drain_journal,
        )
        events.subscribe(trainer.suspenders)
    for hook in attach:
        hook(SessionParts(trainer, bench, wrapped, records))

    async def main() -> TrainResult:
        await bench.arm()
        return await trainer.run(store)

    try:
        return await run_with_safe_exit(main(), bench)
    finally:
        records.close()


def train(
    cfg: TrainConfig,
    *,
    root: Path | None = None,
    name: str | None = None,
    listeners: Sequence[Listener] = (),
    system: PhysicalSystem | None = None,
    write: bool = True,
    resume: bool = False,
) -> TrainResult:
    """Prepare, create the run directory (``root/name``; defaults from ``[output]``), train on
    ``system`` (default: the ideal twin of ``[system]``).

    Everything that can be checked is checked before the directory is created. With ``resume``
    the run directory must exist with the same resolved config; training continues from its
    checkpoint (bit-identical to the uninterrupted run on the ideal twin). A bench config
    trains through ``physlearn train --arm`` (dry run, connection, arming), not here.
    """
    if system is None and cfg.system.kind == "bench":
        raise ConfigError(
            'train(): [system] kind = "bench" trains through `physlearn train --arm` '
            "(or run_session with a connected bench)"
        )
    setup = prepare(cfg)
    store = None
    if write:
        root_dir = Path(root) if root is not None else cfg.output.root
        run_name = name or cfg.output.name or default_run_name(cfg)
        store = RunStore.create(root_dir, run_name, cfg.resolved(), resume=resume)
        if not resume:
            write_network(store, setup.spec)
    elif resume:
        raise ConfigError("resume: needs a run directory (write=True)")
    trainer = Trainer(setup, system=system, events=EventStream(list(listeners)))
    return asyncio.run(trainer.run(store))
