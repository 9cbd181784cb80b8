"""`BenchStepRecords`: the per-step records writer of a bench run, a listener of the trainer's
event stream (`physlearn.training.events`).

One row of ``records.h5`` (`physlearn.training.records.StepRecorder`; a resumed session writes
the next ``records-<n>.h5``) per applied step: parameters the gradient was measured at,
gradient, loss, the bench journal of the step's measurements (raw scope volts, settle times,
decay estimates) with their conjugate quantities, the faults the retry wrapper saw since the
previous row, the instrument settings, the calibration version.

What a row holds is what the step measured: the bench journal is drained — and dropped — at
every event that follows measurements belonging to no applied step (the initial and epoch-end
evaluations, a failed step), so on `StepDone` it holds exactly the step's measurements. A
failed step writes no row.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.systems.bench.journal import MeasurementRecord
from physlearn.systems.bench.system import BenchSystem
from physlearn.systems.safety import RetryingSystem
from physlearn.training.events import (
    EpochDone,
    Fault,
    RunEvent,
    RunResumed,
    RunStarted,
    StepDone,
)
from physlearn.training.records import StepRecorder, next_records_path

log = logging.getLogger(__name__)

__all__ = ["BenchStepRecords"]


class BenchStepRecords:
    """Listener writing a bench run's per-step records (see the module docstring).

    Args:
        bench: the bench trained on (its journal and settings).
        retrying: the retry wrapper around it (its fault log).
        knowledge: what the estimator knows (conjugate quantities of the measured orbits).
        run_dir: the run directory (the records file goes there).
    """

    def __init__(
        self,
        bench: BenchSystem,
        retrying: RetryingSystem,
        knowledge: ModelKnowledge,
        run_dir: Path,
    ):
        self.bench, self.retrying, self.knowledge = bench, retrying, knowledge
        self.path = next_records_path(run_dir)
        self.recorder: StepRecorder | None = None
        #: the last step's measurements (telemetry's ``waveforms``)
        self.last_journal: list[MeasurementRecord] = []

    async def __call__(self, event: RunEvent) -> None:
        if isinstance(event, StepDone):
            await self._record(event)
        elif isinstance(event, RunStarted | RunResumed | EpochDone | Fault):
            # measurements of an evaluation or a failed step: not a step's record
            self.bench.drain_journal()

    async def _record(self, ev: StepDone) -> None:
        grid, dt = self.bench.grid_t, self.bench.period_s / self.bench.grid_t.size
        journal = [
            replace(entry, conjugates=self.knowledge.conjugates(entry.x, grid, dt))
            for entry in self.bench.drain_journal()
        ]
        self.last_journal = journal
        settings = await self.bench.settings_snapshot()
        if self.recorder is None:
            self.recorder = self._open(journal)
        self.recorder.append(
            step=ev.step,
            epoch=ev.epoch,
            batch=ev.batch,
            params=ev.params,
            gradient=ev.gradient,
            loss=ev.loss,
            journal=journal,
            faults=self.retrying.faults.drain(),
            settings=settings,
            inputs=ev.inputs,
        )

    def _open(self, journal: list[MeasurementRecord]) -> StepRecorder:
        """The records file, sized by the first step's journal."""
        channels = sorted({k for e in journal for r in e.volts for k in r if "/ch" in k})
        samples = max(
            (np.asarray(r[k]).size for e in journal for r in e.volts for k in channels),
            default=0,
        )
        return StepRecorder(
            self.path,
            parameter_names=self.knowledge.spec.parameter_names(),
            max_phases=max(len(journal), 1),
            max_batch=max((len(e.volts) for e in journal), default=1),
            waveform_channels=channels,
            waveform_samples=samples,
            calibration_version=self.bench.calibration_version,
            grid_t_s=self.bench.grid_t,
            n_nodes=self.bench.n_nodes,
            n_inputs=len(self.knowledge.spec.inputs.nodes),
        )

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
