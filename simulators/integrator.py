"""Deterministic time integration of the network: classical RK4, vectorised over a batch.

    m ẍ + m Γ ẋ = −∂V/∂x + F(t) − δ(t)(x − u(t)) + β γ(t)(x − y(t))

The state (t, x (B,d), v (B,d)) is a plain value that can be saved and advanced step by step;
the term values θ and the excitation can be replaced between advances (parameter changes at given
times). Forces are any functions of time — analytic drives or `SampledWaveform`s (zero-order hold
as an AWG outputs them: choose dt dividing the sample period so steps never straddle a jump).

Error estimate (step halving): `advance_with_error` runs the same interval with dt and dt/2; for a
4th-order method the error of the finer run is ≈ |x_dt − x_dt/2| / 15 (Richardson).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from physlearn.simulators.excitation import Excitation
from physlearn.spec.model import NetworkModel

Array = NDArray[np.float64]


@dataclass(frozen=True)
class State:
    """Time t (s), positions x (B,d), velocities v (B,d)."""

    t: float
    x: Array
    v: Array


class Integrator:
    """RK4 integrator for one network under one excitation (both replaceable)."""

    def __init__(
        self,
        model: NetworkModel,
        theta: Array,
        excitation: Excitation,
        dt: float,
        beta: float = 0.0,
    ):
        if not dt > 0:
            raise ValueError(f"time step must be positive, got {dt}")
        self.model, self.dt, self.beta = model, float(dt), float(beta)
        self.excitation = excitation
        self.set_theta(theta)

    def set_theta(self, theta: Array) -> None:
        """Replace the term values (B, n_terms) from the next step on."""
        self.theta = np.atleast_2d(theta)
        self.coef = self.model.coefficients(self.theta)

    def set_excitation(self, excitation: Excitation) -> None:
        self.excitation = excitation

    def rest(self, batch: int, t: float = 0.0) -> State:
        d = self.model.d
        return State(t, np.zeros((batch, d)), np.zeros((batch, d)))

    def accel(self, t: float, x: Array, v: Array) -> Array:
        """ẍ at time t for state (x, v) of shape (B,d)."""
        ta = np.array([t])
        e = self.excitation
        x3 = x[:, None, :]
        f = self.model.grad_potential(x3, ta, self.coef)[:, 0, :]
        ext = e.force(ta)[:, 0, :] - e.clamp_weight(ta)[:, 0, :] * (x - e.clamp_target(ta)[:, 0, :])
        if self.beta != 0.0:
            ext = ext + self.beta * e.cost_weight(ta)[:, 0, :] * (x - e.target(ta)[:, 0, :])
        m = self.model.mass
        return (ext - f) / m - self.model.damping * v

    def step(self, s: State, dt: float | None = None) -> State:
        h = self.dt if dt is None else dt
        t, x, v = s.t, s.x, s.v
        a1 = self.accel(t, x, v)
        x2, v2 = x + 0.5 * h * v, v + 0.5 * h * a1
        a2 = self.accel(t + 0.5 * h, x2, v2)
        x3, v3 = x + 0.5 * h * v2, v + 0.5 * h * a2
        a3 = self.accel(t + 0.5 * h, x3, v3)
        x4, v4 = x + h * v3, v + h * a3
        a4 = self.accel(t + h, x4, v4)
        return State(
            t + h,
            x + h / 6.0 * (v + 2 * v2 + 2 * v3 + v4),
            v + h / 6.0 * (a1 + 2 * a2 + 2 * a3 + a4),
        )

    def advance(self, s: State, duration: float, dt: float | None = None) -> State:
        """Advance by ``duration`` seconds in whole steps (duration must be a multiple of dt)."""
        h = self.dt if dt is None else dt
        n = round(duration / h)
        if n < 0 or abs(n * h - duration) > 1e-9 * max(h, abs(duration)):
            raise ValueError(f"duration {duration} s is not a whole number of steps of {h} s")
        t0 = s.t
        for i in range(n):
            s = self.step(s, h)
            s = State(t0 + (i + 1) * h, s.x, s.v)  # no drift of t by accumulated rounding
        return s

    def sample(self, s: State, duration: float, n_samples: int) -> tuple[State, Array, Array]:
        """Advance by ``duration`` recording x at n_samples equispaced instants [t, t+duration).

        Returns (final state, times (n_samples,), x samples (B, n_samples, d)); the step size is
        duration / n_samples / k with the smallest k making it ≤ dt.
        """
        k = max(1, int(np.ceil(duration / n_samples / self.dt - 1e-12)))
        h = duration / n_samples / k
        xs = np.empty((s.x.shape[0], n_samples, s.x.shape[1]))
        ts = s.t + duration * np.arange(n_samples) / n_samples
        for i in range(n_samples):
            xs[:, i, :] = s.x
            s = self.advance(s, k * h, h)
        return s, ts, xs

    def advance_with_error(self, s: State, duration: float) -> tuple[State, float]:
        """Advance with dt and dt/2; returns (finer result, error estimate max|Δx|/15)."""
        coarse = self.advance(s, duration, self.dt)
        fine = self.advance(s, duration, 0.5 * self.dt)
        err = float(np.max(np.abs(coarse.x - fine.x))) / 15.0
        return fine, err
