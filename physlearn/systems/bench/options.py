"""How the bench system runs: typed options of ``[system.bench]`` (``options``, ``lockin``),
validated when the train config is loaded."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BenchOptions", "LockinOptions", "SafetyOptions", "SettleOptions"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SettleOptions(_Model):
    """tol: relative transient accepted; acquire_periods: K periods per acquisition (1: the
    calibrated decay rate judges settling; ≥ 3: the decay is also fitted from the periods);
    first_wait_periods: a fixed first wait instead of the predicted one; transient_margin: the
    factor c on a measured or predicted initial transient (position and velocity, modal
    mixing); periodic_residual: a response is refused as not T-periodic when the rms that the
    channel's noise cannot explain — of the harmonic fit's residual, or of the record before
    the fitted periods against their periodic extension — exceeds this fraction of the
    channel's swing (`physlearn.systems.bench.acquisition.PeriodFit.unexplained_rms_v`); max_wait_s: give
    up (SteadyStateError) after waiting this long."""

    tol: float = Field(1e-4, gt=0, lt=1)
    acquire_periods: int = Field(1, ge=1, le=16)
    first_wait_periods: float | None = Field(None, ge=0)
    transient_margin: float = Field(2.0, ge=1.0)
    periodic_residual: float = Field(0.1, gt=0)
    max_wait_s: float = Field(600.0, gt=0)


class SafetyOptions(_Model):
    """max_response: interlock on the measured |x| (node units); dac_slew_v_per_s: DAC ramp
    rate; safe_dac_v: DAC value of the safe state."""

    max_response: float = Field(gt=0)
    dac_slew_v_per_s: float = Field(1.0, gt=0)
    safe_dac_v: float = 0.0


class BenchOptions(_Model):
    """How the controller runs the bench (the ``[system.bench]`` table of a train config).

    ranging: how a scope channel's V/div follows the response — ``hysteretic`` (default: up
    when clipped, down below 0.2 of full scale; never oscillates on a noisy signal, but the
    scale a measurement ends at depends on the transient before it) or ``canonical`` (the
    scale is a function of the fitted waveform's peak alone, 1-2-5 ≥ 1.4 × peak, and the
    record's samples sit on one lattice relative to the sync and are fitted by lattice phase: a
    history-free quantisation, so a resumed run measures as the uninterrupted one, bit for bit,
    on a noise-free bench; it plans the settle wait from the present change alone — not from the
    response memory nor from which input was measured last, which depend on what the session
    (and its retries) has seen; on a noisy bench a peak at a scale boundary can flip the scale and cost
    re-acquisitions, up to the 4 re-ranges allowed per measurement). In both modes a channel
    never goes back down to a V/div the same measurement left (a peak on a scale boundary)."""

    points_per_period: int = Field(33, ge=5)
    arb_points_per_period: int = Field(64, ge=8)
    harmonics: int | None = Field(None, ge=1)
    beta_resolution: float = Field(1e-2, gt=0, le=1)
    settle: SettleOptions = Field(default_factory=SettleOptions)
    safety: SafetyOptions
    reference_node: int | None = None
    stitch_tol: float = Field(0.05, gt=0)
    ranging: Literal["hysteretic", "canonical"] = "hysteretic"
    #: warn (StaleCalibrationWarning) when the calibration file is older; None: no age check
    calibration_max_age_days: float | None = Field(7.0, gt=0)


class LockinOptions(_Model):
    """How the lock-in readout runs (``[system.bench] lockin = {...}``).

    accuracy: relative accuracy the lock-in reading is settled and filtered to (ripple at the
    fundamental, filter memory); None: the bench's ``settle.tol``. slope_db_per_oct: output
    filter slope (6, 12, 18, 24 → 1..4 RC stages). time_constant_s: a minimum τ (the smallest
    table entry ≥ max(this, the computed τ)), e.g. for more averaging. headroom: full scale ≥
    headroom × the expected |X + iY|. max_harmonic_fraction: a force waveform whose rms outside
    the fundamental (DC and harmonics ≥ 2) exceeds this fraction of its rms is refused."""

    accuracy: float | None = Field(None, gt=0, lt=1)
    slope_db_per_oct: Literal[6, 12, 18, 24] = 24
    time_constant_s: float | None = Field(None, gt=0)
    headroom: float = Field(2.0, ge=1.25)
    max_harmonic_fraction: float = Field(1e-3, gt=0, lt=1)
