"""Settling: when is a driven, damped network in its periodic steady state?

The naive test — stop when two successive periods differ by less than a tolerance — is wrong
for a lightly damped network: with a per-period contraction r = e^{−ΓT/2} the transient left
after the last period is the geometric tail Σ_{k≥1} r^k ‖d‖ = ‖d‖ r/(1 − r), which for Q ≫ 1 is
≈ ‖d‖ Q/π: the period-to-period change underestimates the remaining error by ~Q/π.

`assess_periods` instead *fits* the contraction r from the approach of successive periods
p_0 … p_{K−1} (the differences d_k = p_{k+1} − p_k shrink as r^k: a least-squares line through
log ‖d_k‖) — or takes r from a measured decay rate (calibrated Q) when given — and estimates the
remaining transient as ‖d_last‖ r/(1 − r). Differences at the noise floor count as settled.

Responses that are not T-periodic are detected and reported: period doubling (p_{k+2} ≈ p_k while
p_{k+1} differs) and non-decaying, non-periodic differences (quasi-periodic or chaotic).

`settle_wait_s` converts an estimated remaining transient into the extra time to wait (whole
periods); `settle_time_s` is the settle rule with a calibrated decay rate σ: a transient of
relative size ρ₀ started at t_c is below tol from t_c + ln(ρ₀/tol)/σ on. The bench controller
predicts ρ₀ before the first acquisition and verifies it afterwards with the measured change of
the response (times a margin for the velocity part and modal mixing), acquiring again if the
first acquisition came too early.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

Verdict = Literal["settled", "settling", "period_doubling", "not_periodic"]

__all__ = [
    "PeriodAssessment",
    "assess_periods",
    "contraction_from_decay",
    "settle_time_s",
    "settle_wait_s",
]


@dataclass(frozen=True)
class PeriodAssessment:
    """The verdict on K successive periods of one response.

    remaining: estimated transient left in the last period, relative to the response amplitude.
    contraction: the per-period contraction r used (fitted, or from the decay rate).
    fitted: whether r came from the fit of the measured periods.
    step: ‖p_last − p_prev‖ relative to the amplitude (the naive criterion, for the record).
    """

    verdict: Verdict
    remaining: float
    contraction: float
    fitted: bool
    step: float
    amplitude: float

    @property
    def periodic(self) -> bool:
        return self.verdict in ("settled", "settling")


def contraction_from_decay(decay_rate_per_s: float, period_s: float) -> float:
    """Per-period contraction r = e^{−σT} of a transient decaying as e^{−σt} (σ = Γ/2)."""
    return math.exp(-float(decay_rate_per_s) * float(period_s))


def assess_periods(
    periods: Array,
    *,
    tol: float,
    noise_floor: float = 0.0,
    contraction: float | None = None,
) -> PeriodAssessment:
    """Judge successive periods ``periods`` (K, N, ...) of one response (K ≥ 2).

    tol: relative remaining transient accepted as settled. noise_floor: expected norm of the
    difference of two periods from measurement noise alone (same units as ``periods``).
    contraction: a known per-period contraction (from a calibrated decay rate) used when the
    fit is not possible (fewer than three periods, or differences at the noise floor).
    """
    p = np.asarray(periods, dtype=float)
    k = p.shape[0]
    if k < 2:
        raise ValueError("assess_periods needs at least two periods")
    flat = p.reshape(k, -1)
    amp = float(np.max(np.abs(flat[-1]))) * math.sqrt(flat.shape[1])
    amp = max(amp, 1e-300)
    d = np.linalg.norm(np.diff(flat, axis=0), axis=1)
    step = float(d[-1]) / amp
    floor = 2.0 * float(noise_floor)
    # period doubling: every other period agrees, neighbours do not
    if k >= 3:
        d2 = float(np.linalg.norm(flat[-1] - flat[-3]))
        if d[-1] > max(floor, tol * amp) * 10 and d2 < 0.1 * d[-1]:
            return PeriodAssessment("period_doubling", step, 1.0, False, step, amp)
    above = d > floor
    r: float | None = None
    fitted = False
    if k >= 3 and np.count_nonzero(above) >= 2:
        idx = np.flatnonzero(above)
        slope = np.polyfit(idx.astype(float), np.log(d[idx]), 1)[0]
        r = float(math.exp(slope))
        fitted = True
    if r is None or (contraction is not None and not (0.0 < r < 1.0)):
        r = contraction if contraction is not None else r
    if d[-1] <= floor:
        # at the noise floor: what is left is below what the noise lets us see
        return PeriodAssessment(
            "settled", floor / amp, r if r is not None else 0.0, fitted, step, amp
        )
    if r is None:
        # two periods and no known decay: the naive bound is all we have; be conservative
        return PeriodAssessment("settling", math.inf, math.nan, False, step, amp)
    if not r < 0.999:
        verdict: Verdict = "not_periodic" if fitted and k >= 4 else "settling"
        return PeriodAssessment(verdict, math.inf, r, fitted, step, amp)
    remaining = float(d[-1]) * r / (1.0 - r) / amp
    return PeriodAssessment(
        "settled" if remaining <= tol else "settling", remaining, r, fitted, step, amp
    )


def settle_wait_s(remaining: float, tol: float, contraction: float, period_s: float) -> float:
    """Extra time (s) for a transient at ``remaining`` to fall below ``tol`` (geometric decay)."""
    if remaining <= tol:
        return 0.0
    if not (0.0 < contraction < 1.0) or not math.isfinite(remaining):
        return float(period_s)
    n = math.log(tol / remaining) / math.log(contraction)
    return float(math.ceil(n) * period_s)


def settle_time_s(initial: float, tol: float, decay_rate_per_s: float) -> float:
    """Time (s) for a transient of relative size ``initial`` decaying as e^{−σt} (σ the
    calibrated decay rate Γ/2 of the slowest mode) to fall to ``tol``: ln(initial/tol)/σ."""
    if initial <= tol:
        return 0.0
    if not decay_rate_per_s > 0:
        raise ValueError(f"decay rate must be positive, got {decay_rate_per_s!r}")
    return math.log(initial / tol) / float(decay_rate_per_s)
