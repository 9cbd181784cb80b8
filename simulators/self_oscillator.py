"""An energy-regulated self-oscillator: a lossy autonomous network held on its orbit by a loop.

Physics (docs/physics.md §8, "A self-oscillator"): the network as built — masses m_j, damping
rates Γ_j > 0, potential V(x; α), static inputs U(x), the closed-loop nudge −β c(x) — plus a
feedback loop that injects power through a velocity force on every node,

    F_j(t) = m_j [Γ̂_j + I(t) + g (E_set − Ê(t − τ)) / E_ref] ẋ_j(t − τ),    İ = g_i (E_set − Ê(t − τ)) / E_ref

Γ̂_j: the loop's estimate of the losses (feedforward, `LoopSettings.loss_error` relative); g, g_i:
proportional and integral gains (1/s, 1/s²); τ: the loop's delay (sensing, computation,
actuation); Ê = Σ ½ m ẋ² + V̂(x) + U(x) − β c(x): the loop's estimate of the energy of the
Lagrangian it runs, V̂ from its model (`stiffness_error`: k̂ = k(1 + error)), the nudge term
included unless ``nudge_aware = False`` (then it regulates the unnudged energy).

With τ = 0, Γ̂ = Γ and an exact energy model the loop force cancels the losses node by node along
the orbit and Ê ≡ E_set: the steady orbit *is* the conservative fixed-energy orbit, whatever g.
Each error source breaks this differently: a delay turns the loss compensation m Γ ẋ(t − τ) into
≈ m Γ ẋ − m Γ τ ẍ (a mass renormalisation m → m(1 + Γτ) at first order: a conservative change of
the physics, of relative size Γτ); a uniform error of Γ̂ is absorbed by the integral term;
non-uniform errors leave a non-conservative residual m (Γ̂_j + I − Γ_j) ẋ_j; a wrong energy model
holds the wrong quantity. A conservative orbit does not attract in its transverse directions (its
nontrivial Floquet multipliers lie on the unit circle, and the loop's scalar gain pumps every mode
alike), so settings are changed *adiabatically* (smooth ramps over ``ramp_periods``), which keeps
the transverse modes' actions (adiabatic invariants) near zero, and each measurement averages the
last ``measure_periods`` cycles folded on the measured period.

Time stepping: classical RK4 with ``steps_per_period`` steps of the linear period; delayed values
by quintic Hermite interpolation of the stored states (x, ẋ, ẍ) (τ = 0 or τ ≥ one step). The
period comes from the upward crossings of the reference node's mean level (Hermite + Newton).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError, SteadyStateError
from physlearn.simulators.autonomous import StaticLoad
from physlearn.spec.model import Coefficients, NetworkModel

Array = NDArray[np.float64]
#: node coordinates beyond this mean the loop has lost control (checked every step)
DIVERGED = 1e3


@dataclass(frozen=True)
class LoopSettings:
    """The regulation loop's gains, delay and model errors (module docstring)."""

    gain_per_s: float = 0.2
    integral_per_s2: float = 0.01
    delay_s: float = 0.0
    loss_error: float = 0.0
    stiffness_error: float = 0.0
    nudge_aware: bool = True
    energy_scale: float = 0.1

    def __post_init__(self) -> None:
        for name in ("gain_per_s", "integral_per_s2", "delay_s", "energy_scale"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"loop.{name}: must be finite and ≥ 0, got {v}")
        if self.energy_scale <= 0:
            raise ConfigError(f"loop.energy_scale: must be positive, got {self.energy_scale}")


@dataclass
class Settings:
    """What the loop and the network run with at one time: term values θ (B, n_terms), the
    static load (inputs and nudge), the nudge's cost (β (B,), γ (B,d), y (B,d)) for the loop's
    energy estimate, and the energy set point (B,)."""

    theta: Array
    load: StaticLoad
    beta: Array
    weight: Array
    target: Array
    e_set: Array


def _blend(a: Settings, b: Settings, s: float) -> Settings:
    """(1 − s) a + s b of every setting."""

    def mix(x: Array, y: Array) -> Array:
        return (1.0 - s) * x + s * y

    load = StaticLoad(
        mix(a.load.kappa, b.load.kappa), mix(a.load.phi, b.load.phi), mix(a.load.u0, b.load.u0)
    )
    return Settings(
        mix(a.theta, b.theta), load, mix(a.beta, b.beta), b.weight, b.target, mix(a.e_set, b.e_set)
    )


def smoothstep(s: float) -> float:
    """C² ramp 0 → 1 (6s⁵ − 15s⁴ + 10s³)."""
    s = min(max(s, 0.0), 1.0)
    return s * s * s * (s * (6.0 * s - 15.0) + 10.0)


def hermite5(
    h: float, x0: Array, v0: Array, a0: Array, x1: Array, v1: Array, a1: Array, s: Array
) -> tuple[Array, Array]:
    """Quintic Hermite interpolation on a step of length h at fractions s (broadcast against the
    states' leading axes): (x, ẋ)."""
    s2, s3 = s * s, s * s * s
    s4, s5 = s3 * s, s3 * s2
    h00 = 1 - 10 * s3 + 15 * s4 - 6 * s5
    h10 = s - 6 * s3 + 8 * s4 - 3 * s5
    h20 = 0.5 * (s2 - 3 * s3 + 3 * s4 - s5)
    h01 = 10 * s3 - 15 * s4 + 6 * s5
    h11 = -4 * s3 + 7 * s4 - 3 * s5
    h21 = 0.5 * (s3 - 2 * s4 + s5)
    d00 = -30 * s2 + 60 * s3 - 30 * s4
    d10 = 1 - 18 * s2 + 32 * s3 - 15 * s4
    d20 = 0.5 * (2 * s - 9 * s2 + 12 * s3 - 5 * s4)
    d01 = 30 * s2 - 60 * s3 + 30 * s4
    d11 = -12 * s2 + 28 * s3 - 15 * s4
    d21 = 0.5 * (3 * s2 - 8 * s3 + 5 * s4)
    x = h00 * x0 + h * h10 * v0 + h * h * h20 * a0 + h01 * x1 + h * h11 * v1 + h * h * h21 * a1
    v = d00 * x0 / h + d10 * v0 + h * d20 * a0 + d01 * x1 / h + d11 * v1 + h * d21 * a1
    return x, v


class SelfOscillator:
    """A batch of B lossy networks, each with its regulation loop, integrated in time.

    Args:
        model: the compiled network (its damping rates are the physical losses).
        loop: the loop's settings.
        step_s: the RK4 step (s); a nonzero delay must be ≥ one step.
        batch: B.
    """

    def __init__(self, model: NetworkModel, loop: LoopSettings, step_s: float, batch: int):
        self.model, self.loop, self.h, self.B = model, loop, float(step_s), int(batch)
        if 0.0 < loop.delay_s < self.h:
            raise ConfigError(f"loop.delay_s: {loop.delay_s} s is below one step ({self.h:.3g} s)")
        d = model.d
        self.loss_hat = model.damping * (1.0 + loop.loss_error)
        self.k_err = model.stiffness * loop.stiffness_error
        self.lag = math.ceil(loop.delay_s / self.h) + 2
        shape = (self.B, self.lag + 1, d)
        self.hx, self.hv, self.ha = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        self.hi = np.zeros((self.B, self.lag + 1))  # loop integrator history
        self.x, self.v, self.i = np.zeros((self.B, d)), np.zeros((self.B, d)), np.zeros(self.B)
        self.t = 0.0

    # -- physics ----------------------------------------------------------------------------------
    def coefficients(self, s: Settings) -> Coefficients:
        return self.model.coefficients(s.theta)

    def energy_estimate(self, x: Array, v: Array, s: Settings, coef: Coefficients) -> Array:
        """Ê (B,) at states (B,d): kinetic + the loop's potential model + the static load, which
        holds the nudge's −β c; a loop that is not ``nudge_aware`` leaves −β c out (it regulates
        the unnudged energy)."""
        xe = x[:, None, :]
        e = 0.5 * np.sum(self.model.mass * v**2, axis=-1)
        e = (
            e
            + self.model.energy(xe, np.zeros(1), coef)[:, 0]
            + 0.5 * np.sum(self.k_err * x**2, axis=-1)
        )
        e = e + s.load.energy(xe)[:, 0]
        if not self.loop.nudge_aware:
            c = 0.5 * np.sum(s.weight * (x - s.target) ** 2, axis=-1)
            e = e + s.beta * c
        return e

    def true_energy(self, x: Array, v: Array, s: Settings) -> Array:
        """The energy of the (nudged) Lagrangian, ½ m ẋ² + V + U − βc (the load holds −βc), (B,)."""
        xe = x[:, None, :]
        return (
            0.5 * np.sum(self.model.mass * v**2, axis=-1)
            + self.model.energy(xe, np.zeros(1), self.coefficients(s))[:, 0]
            + s.load.energy(xe)[:, 0]
        )

    def _delayed(self, frac: float) -> tuple[Array, Array, Array]:
        """(x, ẋ, I) at t + frac·h − τ from the history (τ ≥ h, so within the stored steps)."""
        back = self.loop.delay_s / self.h - frac  # steps before the current one (≥ 0)
        k = math.floor(back)
        r = back - k  # fraction of the step below
        i1 = self.lag - k  # current state sits at index lag
        i0 = i1 - 1
        if r == 0.0:
            return self.hx[:, i1], self.hv[:, i1], self.hi[:, i1]
        s = np.array(1.0 - r)
        x, v = hermite5(
            self.h,
            self.hx[:, i0],
            self.hv[:, i0],
            self.ha[:, i0],
            self.hx[:, i1],
            self.hv[:, i1],
            self.ha[:, i1],
            s,
        )
        return x, v, (1.0 - s) * self.hi[:, i0] + s * self.hi[:, i1]

    def _accel(
        self, x: Array, v: Array, i: Array, s: Settings, coef: Coefficients, frac: float
    ) -> tuple[Array, Array]:
        """(ẍ (B,d), İ (B,)) at one RK4 stage."""
        m = self.model.mass
        grad = (
            self.model.grad_potential(x[:, None, :], np.zeros(1), coef)[:, 0]
            + s.load.gradient(x[:, None, :])[:, 0]
        )
        if self.loop.delay_s == 0.0:
            xd, vd, idl = x, v, i
        else:
            xd, vd, idl = self._delayed(frac)
        err = (s.e_set - self.energy_estimate(xd, vd, s, coef)) / self.loop.energy_scale
        gain = self.loss_hat[None, :] + (idl + self.loop.gain_per_s * err)[:, None]
        force = m * gain * vd
        acc = (-grad - m * self.model.damping * v + force) / m
        return acc, self.loop.integral_per_s2 * err

    def step(self, s: Settings) -> None:
        """One RK4 step of (x, ẋ, I) with the settings s (held over the step)."""
        h, coef = self.h, self.coefficients(s)
        x, v, i = self.x, self.v, self.i
        a1, j1 = self._accel(x, v, i, s, coef, 0.0)
        x2, v2, i2 = x + 0.5 * h * v, v + 0.5 * h * a1, i + 0.5 * h * j1
        a2, j2 = self._accel(x2, v2, i2, s, coef, 0.5)
        x3, v3, i3 = x + 0.5 * h * v2, v + 0.5 * h * a2, i + 0.5 * h * j2
        a3, j3 = self._accel(x3, v3, i3, s, coef, 0.5)
        x4, v4, i4 = x + h * v3, v + h * a3, i + h * j3
        a4, j4 = self._accel(x4, v4, i4, s, coef, 1.0)
        self.x = x + h / 6.0 * (v + 2 * v2 + 2 * v3 + v4)
        self.v = v + h / 6.0 * (a1 + 2 * a2 + 2 * a3 + a4)
        self.i = i + h / 6.0 * (j1 + 2 * j2 + 2 * j3 + j4)
        self.t += h
        if not np.all(np.abs(self.x) < DIVERGED):
            raise SteadyStateError(
                f"the regulation loop diverged at t = {self.t:.4g} s (|x| ≥ {DIVERGED:g}): gain "
                f"{self.loop.gain_per_s} 1/s with delay {self.loop.delay_s:.4g} s is unstable"
            )
        self._push(s, coef)

    def _push(self, s: Settings, coef: Coefficients) -> None:
        """Store the new state (and its acceleration) at the end of the history."""
        acc, _ = self._accel_now(s, coef)
        for arr, new in ((self.hx, self.x), (self.hv, self.v), (self.ha, acc)):
            arr[:, :-1] = arr[:, 1:]
            arr[:, -1] = new
        self.hi[:, :-1] = self.hi[:, 1:]
        self.hi[:, -1] = self.i

    def _accel_now(self, s: Settings, coef: Coefficients) -> tuple[Array, Array]:
        if self.loop.delay_s == 0.0:
            return self._accel(self.x, self.v, self.i, s, coef, 0.0)
        # the delayed terms at the new time t: frac = 1 relative to the step just taken, whose
        # end is now the newest stored state minus nothing: shift by one step
        m = self.model.mass
        grad = self.model.grad_potential(self.x[:, None, :], np.zeros(1), coef)[:, 0]
        grad = grad + s.load.gradient(self.x[:, None, :])[:, 0]
        xd, vd, idl = self._delayed(1.0)
        err = (s.e_set - self.energy_estimate(xd, vd, s, coef)) / self.loop.energy_scale
        force = m * (self.loss_hat[None, :] + (idl + self.loop.gain_per_s * err)[:, None]) * vd
        return (-grad - m * self.model.damping * self.v + force) / m, err

    def start(self, x: Array, v: Array, s: Settings) -> None:
        """Set the state (B,d) and fill the history as if it had always been there."""
        self.x, self.v, self.i = x.copy(), v.copy(), np.zeros(self.B)
        coef = self.coefficients(s)
        for arr, val in ((self.hx, self.x), (self.hv, self.v)):
            arr[:] = val[:, None, :]
        acc = (
            -self.model.grad_potential(x[:, None, :], np.zeros(1), coef)[:, 0]
            - s.load.gradient(x[:, None, :])[:, 0]
        ) / self.model.mass
        self.ha[:] = acc[:, None, :]
        self.hi[:] = 0.0

    # -- protocols --------------------------------------------------------------------------------
    def ramp(self, old: Settings, new: Settings, duration_s: float) -> None:
        """Change the settings smoothly (C² ramp) from ``old`` to ``new`` over ``duration_s``."""
        n = max(1, round(duration_s / self.h))
        for k in range(n):
            self.step(_blend(old, new, smoothstep((k + 0.5) / n)))

    def hold(self, s: Settings, duration_s: float) -> None:
        for _ in range(max(0, round(duration_s / self.h))):
            self.step(s)

    def record(self, s: Settings, duration_s: float) -> tuple[Array, Array, Array, Array]:
        """Integrate for ``duration_s`` storing every step: (t (K,), x, ẋ, ẍ (B,K,d))."""
        n = round(duration_s / self.h)
        ts, xs, vs, acs = [self.t], [self.x.copy()], [self.v.copy()], [self.ha[:, -1].copy()]
        for _ in range(n):
            self.step(s)
            ts.append(self.t)
            xs.append(self.x.copy())
            vs.append(self.v.copy())
            acs.append(self.ha[:, -1].copy())
        return np.array(ts), np.stack(xs, 1), np.stack(vs, 1), np.stack(acs, 1)


def fold_orbit(
    h: float, x: Array, v: Array, a: Array, n_points: int, periods: int
) -> tuple[Array, Array]:
    """One cycle on ``n_points`` phase points, averaged over the last ``periods`` cycles of a
    recording (B,K,d) with step h: (x (B,N,d), period (B,)). Cycles start at upward crossings of
    the mean level of each sample's most active node (located by Hermite interpolation + Newton)."""
    B, K, d = x.shape
    ref = np.argmax(np.std(x, axis=1), axis=1)
    out = np.zeros((B, n_points, d))
    period = np.zeros(B)
    for b in range(B):
        r = ref[b]
        s = x[b, :, r] - np.mean(x[b, :, r])
        idx = np.flatnonzero((s[:-1] < 0) & (s[1:] >= 0))
        if idx.size < periods + 1:
            raise SteadyStateError(
                f"sample {b}: fewer than {periods + 1} cycles in the recording", sample=b
            )
        times = []
        for k in idx:
            u = 0.5
            for _ in range(20):  # Newton on the quintic interpolant of the reference node
                xi, vi = hermite5(
                    h, x[b, k], v[b, k], a[b, k], x[b, k + 1], v[b, k + 1], a[b, k + 1], np.array(u)
                )
                u -= (xi[r] - np.mean(x[b, :, r])) / (vi[r] * h)
                u = min(max(u, 0.0), 1.0)
            times.append((k + u) * h)
        t0 = np.array(times[-periods - 1 :])
        period[b] = float(np.mean(np.diff(t0)))
        acc = np.zeros((n_points, d))
        for c in range(periods):
            tq = t0[c] + period[b] * np.arange(n_points) / n_points
            kk = np.minimum((tq // h).astype(int), K - 2)
            u = tq / h - kk
            xi, _ = hermite5(
                h,
                x[b, kk],
                v[b, kk],
                a[b, kk],
                x[b, kk + 1],
                v[b, kk + 1],
                a[b, kk + 1],
                u[:, None],
            )
            acc += xi
        out[b] = acc / periods
    return out, period
