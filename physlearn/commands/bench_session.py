"""`physlearn train` on a bench (``[system] kind = "bench"``): the dry run, the arm step, and a
training run through `BenchSystem` with retries and the safe state on every exit path.

* ``--dry-run``: every planned setting is checked — DAC volts of the initial parameters and of
  every corner of the parameter bounds through the calibration against the DAC limits, the drive
  of every data-set input (with a nudge of up to β × the drive peak on the outputs) against the
  generator limits — and the calibration file is checked against the connected instruments'
  identities. Nothing is switched on; exit 0 if everything passes.
* without ``--arm`` the command refuses to enable outputs (exit 2, with a message);
* ``--arm``: connect, arm (outputs enabled), train; transient instrument faults are retried
  (the measurement is repeated, never skipped); a persistent fault, an interlock trip, an
  exception or SIGINT/SIGTERM put the bench in its safe state before the process exits.

Per-step records (`physlearn.training.records`): ``records.h5`` in the run directory, one row per
training step — parameters the gradient was measured at, gradient, loss, the raw scope volts of
every measurement of the step, the conjugate quantities, settle times and decay estimates,
faults, the instrument settings, the calibration version, units as attributes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np

from physlearn.calibration.schema import CalibrationFile
from physlearn.errors import ConfigError
from physlearn.estimators import make_estimator
from physlearn.estimators.base import Estimator, GradientEstimate
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.bench import BenchConfig
from physlearn.spec.clock import Clock, TwinClock, WallClock
from physlearn.spec.system import Level, PhysicalSystem
from physlearn.spec.task import Task
from physlearn.systems.bench.journal import MeasurementRecord
from physlearn.systems.bench.system import BenchSystem
from physlearn.systems.safety import RetryingSystem, RetryPolicy, run_with_safe_exit
from physlearn.training.config import BenchSessionConfig, TrainConfig
from physlearn.training.loop import (
    ProgressEvent,
    ProgressFn,
    Trainer,
    TrainResult,
    TrainSetup,
    prepare,
)
from physlearn.training.records import StepRecorder, next_records_path

log = logging.getLogger(__name__)
_memory_names = count()

__all__ = ["BenchSession", "open_session", "run_bench"]


@dataclass
class BenchSession:
    """A bench system ready to connect, with what keeps its emulated bench alive (if any)."""

    system: BenchSystem
    setup: TrainSetup


def _resolve(base: Path, p: Path) -> Path:
    return p if p.is_absolute() else (base / p)


@asynccontextmanager
async def open_session(cfg: TrainConfig, config_dir: Path) -> AsyncIterator[BenchSession]:
    """Build the `BenchSystem` of ``[system.bench]`` (nothing connected yet). ``twin_control =
    "memory"`` serves the bench file's emulated bench in this process for the session."""
    b: BenchSessionConfig | None = cfg.system.bench
    if b is None:
        raise ConfigError('[system.bench] is required with kind = "bench"')
    setup = prepare(cfg)
    bench_path = _resolve(config_dir, b.config)
    config = BenchConfig.load(bench_path)
    cal = CalibrationFile.read(_resolve(config_dir, b.calibration))
    # on a bench, what the estimator may know (masses, damping rates) comes from the calibration
    knowledge = ModelKnowledge.from_calibration(setup.spec, cal)
    try:
        estimator = make_estimator(cfg.estimator.name, knowledge, **cfg.estimator.kwargs())
    except ConfigError as exc:
        raise ConfigError(f"estimator: {exc}") from None
    setup = dataclasses.replace(setup, knowledge=knowledge, estimator=estimator)
    options = b.options
    resources = dict(b.resources)
    emulated: Any = None
    client: Any = None
    clock: Clock
    level = Level.BENCH
    try:
        if b.twin_control == "memory":
            from physlearn.simulators.bench_twin import EmulatedBench

            emulated = EmulatedBench.from_file(bench_path, virtual=True)
            resources = {
                **emulated.serve(memory_prefix=f"train{next(_memory_names)}-", control=False),
                **resources,
            }
            clock = TwinClock(emulated.control)
            level = Level.EMULATED_MEMORY
        elif b.twin_control is not None:
            from physlearn.simulators.twin_control import TwinControlClient

            client = TwinControlClient(b.twin_control)
            await client.connect()
            clock = TwinClock(client)
            level = Level.EMULATED_SERVED
        else:
            clock = WallClock()
        system: BenchSystem
        if b.readout == "lockin":
            from physlearn.systems.bench.lockin import LockinBenchSystem

            system = LockinBenchSystem(
                config,
                cal,
                setup.spec,
                clock,
                options,
                lockin=b.lockin,
                resources=resources,
                level=level,
            )
        else:
            system = BenchSystem(
                config, cal, setup.spec, clock, options, resources=resources, level=level
            )
        yield BenchSession(system, setup)
    finally:
        if client is not None:
            await client.close()
        if emulated is not None:
            emulated.stop()


class StepRecords(Estimator):
    """The configured estimator, recording each training step: `estimate` keeps what the step
    measured (journal of the bench, gradient, loss, settings snapshot), the trainer's "step"
    progress event (after the update) writes the row."""

    def __init__(
        self, inner: Estimator, bench: BenchSystem, retrying: RetryingSystem, run_dir: Path
    ):
        super().__init__(inner.knowledge)
        self.inner, self.bench, self.retrying = inner, bench, retrying
        self.name = inner.name
        self.path = next_records_path(run_dir)
        self.recorder: StepRecorder | None = None
        self._pending: dict[str, Any] | None = None
        self._epoch, self._batch = -1, -1

    async def estimate(
        self, system: PhysicalSystem, alpha: np.ndarray, u: np.ndarray, task: Task
    ) -> GradientEstimate:
        self.bench.drain_journal()  # evaluation measurements since the last step
        self._pending = None
        g = await self.inner.estimate(system, alpha, u, task)
        grid, dt = self.bench.grid_t, self.bench.period_s / self.bench.grid_t.size
        journal = [
            replace(entry, conjugates=self.knowledge.conjugates(entry.x, grid, dt))
            for entry in self.bench.drain_journal()
        ]
        self._pending = {
            "params": np.array(alpha, dtype=float),
            "gradient": np.mean(g.grad, axis=0),
            "loss": float(np.mean(g.cost)),
            "journal": journal,
            "settings": await self.bench.settings_snapshot(),
        }
        return g

    def _open(self, journal: list[MeasurementRecord]) -> StepRecorder:
        channels = sorted({k for e in journal for r in e.volts for k in r if "/ch" in k})
        samples = max(
            (np.asarray(r[k]).size for e in journal for r in e.volts for k in channels),
            default=0,
        )
        return StepRecorder(
            self.path,
            parameter_names=self.bench.spec.parameter_names(),
            max_phases=max(len(journal), 1),
            max_batch=max((len(e.volts) for e in journal), default=1),
            waveform_channels=channels,
            waveform_samples=samples,
            calibration_version=self.bench.calibration_version,
        )

    def on_progress(self, ev: ProgressEvent) -> None:
        if ev.kind != "step" or self._pending is None:
            return
        p, self._pending = self._pending, None
        if self.recorder is None:
            self.recorder = self._open(p["journal"])
        self._batch = (
            ev.batch if ev.batch >= 0 else self._batch + 1 if ev.epoch == self._epoch else 0
        )
        self._epoch = ev.epoch
        self.recorder.append(
            step=ev.step,
            epoch=ev.epoch,
            batch=self._batch,
            params=p["params"],
            gradient=p["gradient"],
            loss=p["loss"],
            journal=p["journal"],
            faults=self.retrying.faults.drain(),
            settings=p["settings"],
        )

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()


def dry_run(session: BenchSession) -> dict[str, Any]:
    """Check every planned setting (no connection, nothing written)."""
    s = session.setup
    spec, ds = s.spec, s.dataset
    lo, hi = spec.parameter_bounds()
    beta = float(s.config.estimator.kwargs().get("beta", 0.0) or 0.0)
    inputs = np.concatenate([ds.x_train, ds.x_test], axis=0)
    return session.system.plan_check([spec.initial_parameters(), lo, hi], inputs, beta)


async def run_bench(
    cfg: TrainConfig,
    config_path: Path,
    args: argparse.Namespace,
    store_factory: Any,
    progress: ProgressFn | None,
) -> TrainResult | None:
    """The bench branch of `physlearn train`; None after a dry run."""
    async with open_session(cfg, config_path.parent) as session:
        sysb = session.system
        report = dry_run(session)
        await sysb.connect()  # identities: the calibration is checked against the serials
        print(
            f"dry run: {report['dac_settings']} DAC settings and {report['arb_waveforms']} "
            f"drive waveforms for {report['inputs']} inputs within the limits and the calibrated "
            f"range; calibration {sysb.calibration_version} matches the connected instruments"
        )
        if args.dry_run:
            await sysb.disconnect()
            return None
        if not args.arm:
            await sysb.disconnect()
            print(
                "refusing to enable the bench outputs without --arm: check the dry run above "
                "(physlearn train --dry-run), then run again with --arm",
                file=sys.stderr,
            )
            raise SystemExit(2)
        b = cfg.system.bench
        assert b is not None
        wrapped = RetryingSystem(sysb, RetryPolicy(attempts=b.retries), on_fault=sysb.reconnect)
        store = store_factory(session.setup)
        records = StepRecords(session.setup.estimator, sysb, wrapped, Path(store.run_dir))
        setup = replace(session.setup, estimator=records)
        trainer = Trainer(setup, system=wrapped, eval_system=wrapped)

        def on_progress(ev: ProgressEvent) -> None:
            records.on_progress(ev)
            if progress is not None:
                progress(ev)

        async def main() -> TrainResult:
            await sysb.arm()
            return await trainer.run(store, on_progress)

        try:
            return await run_with_safe_exit(main(), sysb)
        finally:
            records.close()


def run_bench_sync(
    cfg: TrainConfig,
    config_path: Path,
    args: argparse.Namespace,
    store_factory: Any,
    progress: ProgressFn | None,
) -> TrainResult | None:
    return asyncio.run(run_bench(cfg, config_path, args, store_factory, progress))
