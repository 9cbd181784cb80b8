"""The bench journal: typed records of every measurement since the last drain, for the per-step
records (`physlearn.training.records.StepRecorder`).

One `MeasurementRecord` per ``measure()`` (one phase of an estimator: free, ±β, echo …), with
one `SampleRecord` per batch sample: the raw scope volts of the accepted acquisition and how the
settle loop got there (bench clock times, transient estimates, acquisition counts)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from physlearn.spec.system import Level

Array = NDArray[np.float64]

__all__ = ["Journal", "LockinReading", "LockinRecord", "MeasurementRecord", "SampleRecord"]


@dataclass(frozen=True)
class LockinReading:
    """One lock-in's reading of its node: X + iY (V rms), the node's phasor X_j (node units,
    x_j(t) = Im(X_j e^{iωt})), the sensitivity (V full scale) it was read at."""

    node: int
    xy_v: complex
    phasor: complex
    sensitivity_v: float


@dataclass(frozen=True)
class LockinRecord:
    """The lock-in readout of one sample: when it was read and from when the network had
    settled (bench clock, s), per lock-in its reading."""

    t_read: float
    t_settled: float
    readings: dict[str, LockinReading]


@dataclass(frozen=True)
class SampleRecord:
    """How one batch sample's steady state was measured.

    volts: the accepted acquisition's raw volts per channel (``"<scope>/ch<n>"``, float32);
    fit_residual_rel: the largest channel's rms the noise cannot explain, relative to its
    swing; stitch_rel: the reference node's relative difference between scope groups (0 with
    one group). Bench clock (s): t_change (last change of the settings), t_trigger (the
    acquisition's trigger edge), t_window (its first fitted sample), t_settle (the settle
    decision: no fitted sample before it). settle_s = t_window − t_change; remaining: the
    estimated relative transient left. rho_predicted, rho_measured: the relative transient
    planned and measured (margin included); predicted_from_memory: the plan came from a
    remembered response; decay_rate_per_s: the settle rule's σ (NaN: none); contraction: the
    per-period contraction used. Counts: acquisitions (measurement records fitted), reranges,
    previews, records (every scope acquisition, previews included). Lock-in readout: x_scope
    (M, d), the scopes' reading of the same steady state, and the lock-ins' record."""

    volts: dict[str, NDArray[np.float32]]
    fit_residual_rel: float
    stitch_rel: float
    t_change: float
    t_trigger: float
    t_window: float
    t_settle: float
    settle_s: float
    remaining: float
    rho_predicted: float
    predicted_from_memory: bool
    rho_measured: float
    decay_rate_per_s: float
    contraction: float
    acquisitions: int
    reranges: int
    previews: int
    records: int
    x_scope: Array | None = None
    lockin: LockinRecord | None = None


@dataclass(frozen=True)
class MeasurementRecord:
    """One ``measure()`` of a batch: the fidelity level that produced it, the node coordinates
    x (B, M, d) it returned, whether a nudge force was on, one `SampleRecord` per sample, and
    (added by the step recorder's caller) the conjugate quantities (B, P). The per-sample
    fields are also given as arrays (B,)."""

    level: Level
    x: Array
    nudged: bool
    samples: list[SampleRecord]
    conjugates: Array | None = None

    @property
    def volts(self) -> list[dict[str, NDArray[np.float32]]]:
        """Raw scope volts per channel, per sample."""
        return [s.volts for s in self.samples]

    def _per_sample(self, values: list[float]) -> Array:
        return np.array(values, dtype=float)

    @property
    def settle_s(self) -> Array:
        return self._per_sample([s.settle_s for s in self.samples])

    @property
    def remaining(self) -> Array:
        return self._per_sample([s.remaining for s in self.samples])

    @property
    def decay_rate_per_s(self) -> Array:
        return self._per_sample([s.decay_rate_per_s for s in self.samples])

    @property
    def initial_transient(self) -> Array:
        """The measured relative transient the settling started from (rho_measured)."""
        return self._per_sample([s.rho_measured for s in self.samples])

    @property
    def t_change(self) -> Array:
        return self._per_sample([s.t_change for s in self.samples])

    @property
    def t_trigger(self) -> Array:
        return self._per_sample([s.t_trigger for s in self.samples])

    @property
    def t_window(self) -> Array:
        return self._per_sample([s.t_window for s in self.samples])

    @property
    def t_settle(self) -> Array:
        return self._per_sample([s.t_settle for s in self.samples])

    @property
    def acquisitions(self) -> NDArray[np.int64]:
        """Scope records per sample, previews included."""
        return np.array([s.records for s in self.samples], dtype=np.int64)


@dataclass
class Journal:
    """The measurement records since the last drain."""

    records: list[MeasurementRecord] = field(default_factory=list)

    def append(self, record: MeasurementRecord) -> None:
        self.records.append(record)

    def drain(self) -> list[MeasurementRecord]:
        out, self.records = self.records, []
        return out
