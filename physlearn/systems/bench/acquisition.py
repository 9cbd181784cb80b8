"""Scope acquisition for the bench: one triggered :SINGle per group, coherent resampling.

A *group* is every sensed channel of one oscilloscope: all of them come from ONE triggered
acquisition (same trigger instant), triggered on the drive generator's sync, whose rising edge
is the drive's phase origin (t = 0). The record (a 1-2-5 screen of ≥ ``n_periods`` drive periods)
may start before the trigger (pre-trigger) or after it: the ``n_periods`` fitted periods are
placed anywhere in it (``fit_periods(start_s=…)``, times relative to the trigger), and the part
of the record before them checks that the response repeats. Each period of each channel is
fitted by least squares with a truncated Fourier series (harmonics 0..H) — coherent resampling:
the fit uses the sample times exactly, so the scope's sample rate need not be commensurate with
the period — and evaluated on the controller's period grid t_m = m T / M, shifted by the sensing delay τ_s and
converted to node coordinates through the sensing calibration: x(t) = (v(t + τ_s) − O_s) / G_s.

Resolution. The ±β responses differ at order β, so the needed resolution is β × the response
amplitude; when one ADC step (scale/25) is coarser than that, `choose_mode` selects high-res
acquisition (oversampling; free when the sample rate allows) or averaging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

AcquisitionMode = Literal["NORMal", "HRESolution", "AVERages"]
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
    """Per-period fits of one channel: values on the grid (K, M), residual rms (V), points/period.

    white_rms_v: rms (V) of the residual's sample-to-sample white part, √(Σ Δr² / 2n): white
    noise (input noise, dithered quantisation) counts fully, slow content that the harmonic
    fit cannot follow (a subharmonic, an incommensurate tone) hardly at all; dof: the fit's
    degrees of freedom (samples − coefficients). repeat_rms_v, repeat_n: rms (V) of the record
    *before* the first fitted period (at most one period of it) minus the first period's fit
    extended periodically, and its sample count (0: the record starts with the fit) — a
    repeated-period comparison that a subharmonic or an incommensurate tone fails at once.
    """

    values: Array
    residual_rms_v: float
    points_per_period: int
    white_rms_v: float = 0.0
    dof: int = 0
    repeat_rms_v: float = 0.0
    repeat_n: int = 0

    def unexplained_rms_v(self, lsb_v: float = 0.0) -> float:
        """Residual rms (V) that noise cannot explain: √max(0, r² − σ²(1 + 3√(2/dof))), with
        the noise variance σ² = max(white², lsb²/12) (undithered quantisation is not white,
        so its lsb²/12 is the floor) and a 3-standard-deviation allowance for the scatter of
        a variance estimated from dof samples. ≈ 0 for a T-periodic response however noisy;
        the rms of the subharmonic or quasi-periodic part otherwise."""
        var = max(self.white_rms_v**2, lsb_v**2 / 12.0)
        allow = 1.0 + 3.0 * math.sqrt(2.0 / max(self.dof, 1))
        out = math.sqrt(max(0.0, self.residual_rms_v**2 - var * allow))
        if self.repeat_n >= 8:
            # the extension carries the fit's own error too (≈ σ² p/n, p/n ≤ 1/2 by design)
            allow = (1.5 + 3.0 * math.sqrt(2.0 / self.repeat_n)) * (
                1.0 + 3.0 * math.sqrt(2.0 / max(self.dof, 1))
            )
            out = max(out, math.sqrt(max(0.0, self.repeat_rms_v**2 - var * allow)))
        return out


def _basis(t: Array, h: NDArray[np.int64], w: float) -> Array:
    """Truncated Fourier basis at times t (n,): columns 1, cos(h ω t), sin(h ω t) (n, 2H+1)."""
    return np.concatenate(
        [np.ones((t.size, 1)), np.cos(np.outer(t, h) * w), np.sin(np.outer(t, h) * w)], axis=1
    )


def _period_samples(
    t: Array, y: Array, k: int, t_lo: float, period_s: float, harmonics: int, gap: float
) -> tuple[Array, Array]:
    """The samples of period ``k`` [t_lo, t_lo + T); ValueError when they cannot determine the
    fit or do not cover the period (a gap wider than ``gap`` at either end)."""
    sel = (t >= t_lo - 1e-9 * period_s) & (t < t_lo + period_s - 1e-9 * period_s)
    tk, yk = t[sel], y[sel]
    if tk.size < 2 * harmonics + 1:
        raise ValueError(
            f"period {k}: {tk.size} samples cannot determine {2 * harmonics + 1} coefficients"
        )
    if tk[0] - t_lo > gap or t_lo + period_s - tk[-1] > gap:
        raise ValueError(
            f"period {k} [{t_lo:.6g}, {t_lo + period_s:.6g}) s is not inside the record "
            f"[{t[0]:.6g}, {t[-1]:.6g}] s"
        )
    return tk, yk


def _repeat_rms(
    t: Array,
    y: Array,
    start_s: float,
    period_s: float,
    coef0: NDArray[np.floating[Any]] | None,
    h: NDArray[np.int64],
    w: float,
) -> tuple[float, int]:
    """The record before the fitted periods (≤ one period) against the first period's fit
    (coefficients ``coef0``) extended periodically: rms (V) and sample count (0: the record
    starts with the fit)."""
    pre = (t >= start_s - period_s) & (t < start_s - 1e-9 * period_s)
    rep_n = int(np.count_nonzero(pre))
    if not rep_n or coef0 is None:
        return 0.0, rep_n
    rp = y[pre] - _basis(t[pre], h, w) @ coef0
    return math.sqrt(float(rp @ rp) / rep_n), rep_n


def fit_periods(
    t_s: Array,
    v: Array,
    period_s: float,
    n_periods: int,
    grid_t_s: Array,
    harmonics: int,
    shift_s: float = 0.0,
    start_s: float = 0.0,
    lattice_s: float | None = None,
) -> PeriodFit:
    """Least-squares Fourier fits of ``v`` (times ``t_s`` from the trigger, which is the drive's
    phase origin) over each of the ``n_periods`` periods [start_s + k T, start_s + (k+1) T),
    evaluated at ``grid_t_s + shift_s`` (shape (K, M)). ``start_s`` (s, ≤ 0 for a record that
    begins before the trigger) positions the periods anywhere in the record: the fit's basis
    is in the drive's phase, so any whole period determines the coefficients.

    ``lattice_s``: the sample interval of a record whose samples lie on the lattice n·dt from
    the trigger, with a whole number of samples per period: each period's samples are then fitted
    by their phase on the lattice, (n mod N)·dt, in phase order — the same samples of the same
    periodic response give the same fit to the last bit wherever the period starts."""
    t = np.asarray(t_s, dtype=float)
    y = np.asarray(v, dtype=float)
    w = 2.0 * math.pi / period_s
    h = np.arange(1, harmonics + 1)
    eval_basis = _basis(np.asarray(grid_t_s, dtype=float) + shift_s, h, w)
    out = np.empty((n_periods, eval_basis.shape[0]))
    res2, count, per = 0.0, 0, []
    d2, nd = 0.0, 0
    coef0: NDArray[np.floating[Any]] | None = None
    per_period = period_s / lattice_s if lattice_s else 0.0
    lattice = (
        lattice_s is not None and per_period >= 1 and abs(per_period - round(per_period)) < 1e-6
    )
    # a whole period must be sampled: no gap wider than two sample intervals at either end
    gap = 2.0 * float(np.median(np.diff(t))) + 1e-9 * period_s if t.size > 1 else period_s
    for k in range(n_periods):
        tk, yk = _period_samples(t, y, k, start_s + k * period_s, period_s, harmonics, gap)
        if lattice:
            assert lattice_s is not None
            phase = np.mod(np.rint(tk / lattice_s).astype(np.int64), round(per_period))
            order = np.argsort(phase, kind="stable")
            tk, yk = phase[order] * lattice_s, yk[order]
        basis = _basis(tk, h, w)
        coef, *_ = np.linalg.lstsq(basis, yk, rcond=None)
        if coef0 is None:
            coef0 = coef
        out[k] = eval_basis @ coef
        r = yk - basis @ coef
        res2 += float(r @ r)
        dr = np.diff(r)
        d2 += float(dr @ dr)
        nd += dr.size
        count += tk.size - basis.shape[1]
        per.append(tk.size)
    # E Σ Δr² = 2σ²(n − 1) for white noise: the fit removes smooth components, which barely
    # change sample-to-sample differences
    white = math.sqrt(d2 / max(2 * nd, 1))
    # the record before the fitted periods (≤ one period): the periodic extension must fit it
    rep_rms, rep_n = _repeat_rms(t, y, start_s, period_s, coef0, h, w)
    return PeriodFit(
        out, math.sqrt(res2 / max(count, 1)), int(min(per)), white, count, rep_rms, rep_n
    )
