"""The learning-phase feedback of `ep_asymmetric` realised by the bench's active elements (no
I/O).

For a linear element target t ← source s of gain n (set by its DAC), the feedback
G = N − Nᵀ (G[t, s] = n, G[s, t] = −n) on top of the element turns the force on t into
−n x_ref,s(t) (the element's free-orbit output, held) and adds −n (x_t − x_ref,t) on s (the
element reversed). The bench does exactly that: the element's switch reverses it (the same
amplifier, fed by x_t, pushes s) and two open-loop waveforms go to the actuators of t and s,

    on t:  −n (r_s − τ ṙ_s),      on s:  +n (r_t − τ ṙ_t),

r the replayed reference orbit and τ the element's calibrated bandwidth delay (so that the
reference orbit stays a solution of the learning-phase dynamics). Any other feedback —
time-varying, on other pairs, not antisymmetric, or of another gain than the element's present
one — is refused (`GradientError`): these elements cannot realise it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import GradientError
from physlearn.spec.bench import SWITCH_REVERSED_V
from physlearn.spec.system import ForceWaveform, LinearFeedback
from physlearn.systems.bench.layout import BenchLayout
from physlearn.systems.bench.planner import Planner

Array = NDArray[np.float64]

__all__ = ["FeedbackPlan", "bench_feedback_pairs", "plan_feedback"]


@dataclass(frozen=True)
class FeedbackPlan:
    """Switch volts per DAC (instrument, channel) and the open-loop forces (B, M, d)."""

    switches: dict[tuple[str, int], float]
    forces: Array


def bench_feedback_pairs(layout: BenchLayout) -> frozenset[tuple[int, int]]:
    """(i, j) and (j, i) of every active element whose two nodes have force actuators."""
    drive = set(layout.drive_nodes)
    out: set[tuple[int, int]] = set()
    for a in layout.active:
        if a.target in drive and a.source in drive:
            out |= {(a.target, a.source), (a.source, a.target)}
    return frozenset(out)


def plan_feedback(
    planner: Planner, fb: LinearFeedback, alpha: Array | None, batch: int
) -> FeedbackPlan:
    """The switch settings and open-loop forces realising ``fb`` (module docstring) with the
    elements at the present parameters ``alpha``; GradientError when they cannot."""
    lay = planner.layout
    if alpha is None:
        raise GradientError("set_feedback: no parameters written yet (set_parameters first)")
    g = np.asarray(fb.gain, dtype=float)
    scale = float(np.max(np.abs(g))) if g.size else 0.0
    tol = 1e-9 * max(scale, 1e-300)
    if np.any(np.abs(g - g[:, :1]) > tol):
        raise GradientError(
            "set_feedback: the bench's active elements have a constant gain; "
            "the requested feedback varies over the period"
        )
    g0 = g[0, 0] if np.all(np.abs(g - g[:1]) <= tol) else None
    if g0 is None:
        raise GradientError("set_feedback: the requested feedback differs between samples")
    pairs = bench_feedback_pairs(lay)
    extra = [
        (int(i), int(j))
        for i, j in zip(*np.nonzero(np.abs(g0) > tol), strict=True)
        if (int(i), int(j)) not in pairs
    ]
    if extra:
        raise GradientError(
            f"set_feedback: no active element with actuators on both nodes for pairs {extra}"
        )
    r = planner.on_grid(ForceWaveform(np.asarray(fb.reference, float), fb.period_s), batch)
    h = np.fft.rfftfreq(r.shape[1], d=1.0 / r.shape[1])
    rdot = np.fft.irfft(
        np.fft.rfft(r, axis=1) * (2j * math.pi * h / planner.period_s)[None, :, None],
        n=r.shape[1],
        axis=1,
    )
    forces = np.zeros_like(r)
    switches: dict[tuple[str, int], float] = {}
    index = {id(e): p for p, e in enumerate(lay.param_edges)}
    for a in lay.active:
        t, s = a.target, a.source
        n = float(alpha[index[id(a)]])
        if abs(g0[t, s] - n) > tol + 1e-9 * abs(n) or abs(g0[s, t] + n) > tol + 1e-9 * abs(n):
            raise GradientError(
                f"set_feedback: active element {t}<-{s} at gain {n:.6g} N/m realises "
                f"G[{t},{s}] = {n:.6g}, G[{s},{t}] = {-n:.6g}; requested "
                f"{g0[t, s]:.6g}, {g0[s, t]:.6g}"
            )
        if n == 0.0:
            continue
        amap = lay.maps[index[id(a)]]
        tau = float(amap.delay_s.value) if hasattr(amap, "delay_s") else 0.0
        forces[:, :, t] -= n * (r[:, :, s] - tau * rdot[:, :, s])
        forces[:, :, s] += n * (r[:, :, t] - tau * rdot[:, :, t])
        switches[(a.instrument, a.switch_channel)] = SWITCH_REVERSED_V
    return FeedbackPlan(switches, forces)
