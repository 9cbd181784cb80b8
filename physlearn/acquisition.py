"""Scope acquisition for the bench: one triggered :SINGle per group, coherent resampling.

A *group* is every sensed channel of one oscilloscope: all of them come from ONE triggered
acquisition (same trigger instant), triggered on the drive generator's sync, whose rising edge
is the drive's phase origin (t = 0). The screen is set to cover ``n_periods`` whole drive periods
from the trigger (trigger at the left edge). Each period of each channel is fitted by least
squares with a truncated Fourier series (harmonics 0..H) — coherent resampling: the fit uses the
sample times exactly, so the scope's sample rate need not be commensurate with the period — and
evaluated on the controller's period grid t_m = m T / M, shifted by the sensing delay τ_s and
converted to node coordinates through the sensing calibration: x(t) = (v(t + τ_s) − O_s) / G_s.

Resolution. The ±β responses differ at order β, so the needed resolution is β × the response
amplitude; when one ADC step (scale/25) is coarser than that, `choose_mode` selects high-res
acquisition (oversampling; free when the sample rate allows) or averaging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

AcquisitionMode = Literal["NORMal", "HRESolution", "AVERages"]
H_DIVISIONS = 12
V_DIVISIONS = 8
CODES_PER_DIVISION = 25.0
_STEPS_125 = (1.0, 2.0, 5.0)

__all__ = [
    "PeriodFit",
    "choose_mode",
    "fit_periods",
    "scale_125_at_least",
]


def scale_125_at_least(value: float) -> float:
    """The smallest 1-2-5 step ≥ ``value`` (> 0)."""
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"scale must be positive and finite, got {value!r}")
    e = math.floor(math.log10(value))
    for k in (e - 1, e, e + 1):
        for m in _STEPS_125:
            s = m * 10.0**k
            if s >= value * (1 - 1e-12):
                return float(s)
    return float(10.0 ** (e + 1))


def choose_mode(lsb_v: float, needed_v: float, oversampling: int) -> tuple[AcquisitionMode, int]:
    """Acquisition mode and averages for a needed voltage resolution ``needed_v``.

    One ADC step has rms quantisation error lsb/√12; normal mode suffices below ``needed_v``;
    otherwise high-res (noise reduced by √oversampling, no time cost) when oversampling ≥ 4,
    else averaging with N = the power of two making (lsb/√12)/√N ≤ needed (2..1024).
    """
    q = lsb_v / math.sqrt(12.0)
    if needed_v <= 0 or q <= needed_v:
        return "NORMal", 2
    if oversampling >= 4:
        return "HRESolution", 2
    n = 2 ** max(1, math.ceil(math.log2((q / needed_v) ** 2)))
    return "AVERages", int(min(n, 1024))


@dataclass(frozen=True)
class PeriodFit:
    """Per-period fits of one channel: values on the grid (K, M), residual rms (V), points/period."""

    values: Array
    residual_rms_v: float
    points_per_period: int


def fit_periods(
    t_s: Array,
    v: Array,
    period_s: float,
    n_periods: int,
    grid_t_s: Array,
    harmonics: int,
    shift_s: float = 0.0,
) -> PeriodFit:
    """Least-squares Fourier fits of ``v`` (times ``t_s`` from the trigger) over each of the first
    ``n_periods`` periods, evaluated at ``grid_t_s + shift_s`` (shape (K, M))."""
    t = np.asarray(t_s, dtype=float)
    y = np.asarray(v, dtype=float)
    w = 2.0 * math.pi / period_s
    h = np.arange(1, harmonics + 1)
    tg = np.asarray(grid_t_s, dtype=float) + shift_s
    eval_basis = np.concatenate(
        [np.ones((tg.size, 1)), np.cos(np.outer(tg, h) * w), np.sin(np.outer(tg, h) * w)], axis=1
    )
    out = np.empty((n_periods, tg.size))
    res2, count, per = 0.0, 0, []
    for k in range(n_periods):
        sel = (t >= k * period_s) & (t < (k + 1) * period_s)
        tk, yk = t[sel], y[sel]
        if tk.size < 2 * harmonics + 1:
            raise ValueError(
                f"period {k}: {tk.size} samples cannot determine {2 * harmonics + 1} coefficients"
            )
        basis = np.concatenate(
            [np.ones((tk.size, 1)), np.cos(np.outer(tk, h) * w), np.sin(np.outer(tk, h) * w)],
            axis=1,
        )
        coef, *_ = np.linalg.lstsq(basis, yk, rcond=None)
        out[k] = eval_basis @ coef
        r = yk - basis @ coef
        res2 += float(r @ r)
        count += tk.size - basis.shape[1]
        per.append(tk.size)
    return PeriodFit(out, math.sqrt(res2 / max(count, 1)), int(min(per)))
