"""The emulated bench applies a delayed zero-order-hold force at the true actuator delay.

A generator arb is a zero-order hold; the actuator delay moves its jumps off the integration
grid. The twin must integrate the delayed step where it really is (plain RK4 sampling the force
at a step's start, middle and end made any delay below half a step act as ≈ dt/6, and the
calibration then measured the twin's artefact instead of the truth)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from test_bench_twin_helpers import example_configs

from physlearn.simulators.bench_twin import BenchTwin
from physlearn.simulators.clock import VirtualClock

pytestmark = pytest.mark.timeout(120)

STEP_V = 0.5


def _twin_with_step(delay_s: float, t_jump_s: float) -> tuple[BenchTwin, VirtualClock]:
    cfg, tw = example_configs()
    clock = VirtualClock()
    twin = BenchTwin(tw, cfg.wiring, clock, seed=3)
    tr = twin.truth
    twin._truth = dataclasses.replace(  # the delay under test, on every actuator
        tr, actuator_delay_s=np.full(tr.actuator_delay_s.shape, delay_s)
    )

    def generator(channel: int, t: np.ndarray) -> np.ndarray:  # channel 1: a ZOH step
        t = np.asarray(t, dtype=np.float64)
        return np.where((channel == 1) & (t >= t_jump_s), STEP_V, 0.0)

    twin.connect_generator("fgen", generator)
    return twin, clock


def _reference(twin: BenchTwin, t_on: float, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x(t), ẋ(t) at `times` from rest, force switched on at exactly `t_on` (DOP853, tight)."""
    model = twin.model
    coef = twin._coefficients(np.zeros(len(twin.wiring.edges)))
    d = model.d
    force = np.zeros(d)
    force[twin.wiring.drives[0].node] = twin.truth.actuator_gain_n_per_v[0] * STEP_V

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        x, v = y[:d], y[d:]
        g = model.grad_potential(x[None, None, :], np.array([t]), coef)[0, 0]
        return np.concatenate([v, (force - g) / model.mass - model.damping * v])

    sol = solve_ivp(
        rhs,
        (t_on, float(times[-1])),
        np.zeros(2 * d),
        method="DOP853",
        rtol=1e-12,
        atol=1e-15,
        t_eval=times,
        dense_output=False,
    )
    assert sol.success
    return sol.y[:d].T, sol.y[d:].T


@pytest.mark.parametrize("delay_steps", [0.05, 0.32, 0.49, 0.8, 1.37])
def test_delayed_arb_step_responds_at_the_true_actuator_delay(delay_steps: float) -> None:
    twin, clock = _twin_with_step(0.0, 0.0)
    h = twin.step_s
    t_jump = 32 * h  # an arb sample boundary on the integration grid
    delay = delay_steps * h
    twin, clock = _twin_with_step(delay, t_jump)
    t_end = t_jump + 128 * h
    clock.set(t_end + 2 * h)
    n = np.arange(33 + math.floor(delay_steps), 161)
    times = n * h  # grid states (Hermite interpolation is not under test)
    times = times[times > t_jump + delay]
    x_twin = twin.positions(times)
    x_ref, v_ref = _reference(twin, t_jump + delay, times)
    # the twin's response as a time shift of the exact one: x_twin(t) ≈ x_ref(t + δ)
    diff = x_twin - x_ref
    shift = float(np.sum(diff * v_ref) / np.sum(v_ref * v_ref))
    resid = diff - shift * v_ref
    scale = float(np.max(np.abs(x_ref)))
    print(f"delay {delay_steps:.2f} dt: effective delay error {shift / h:+.4f} dt")
    assert abs(shift) < 0.02 * h  # plain RK4 gave (delay − dt/6) for delays < dt/2
    assert float(np.max(np.abs(resid))) < 1e-3 * scale


def test_smooth_drive_is_still_integrated_to_rk4_accuracy() -> None:
    """A sine drive (no jumps) agrees with a tight DOP853 reference to RK4 accuracy."""
    cfg, tw = example_configs()
    clock = VirtualClock()
    twin = BenchTwin(tw, cfg.wiring, clock, seed=3)
    w = 2 * math.pi * 25.0
    twin.connect_generator("fgen", lambda ch, t: (0.5 if ch == 1 else 0.0) * np.sin(w * t))
    h = twin.step_s
    tau = float(twin.truth.actuator_delay_s[0])
    g = float(twin.truth.actuator_gain_n_per_v[0])
    model = twin.model
    coef = twin._coefficients(np.zeros(len(twin.wiring.edges)))
    d = model.d
    node = twin.wiring.drives[0].node

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        x, v = y[:d], y[d:]
        f = np.zeros(d)
        f[node] = g * 0.5 * math.sin(w * (t - tau)) if t >= tau else 0.0
        gr = model.grad_potential(x[None, None, :], np.array([t]), coef)[0, 0]
        return np.concatenate([v, (f - gr) / model.mass - model.damping * v])

    times = h * np.arange(1, 321)
    clock.set(times[-1] + h)
    sol = solve_ivp(
        rhs,
        (tau, times[-1]),
        np.zeros(2 * d),
        method="DOP853",
        rtol=1e-12,
        atol=1e-15,
        t_eval=times[times >= tau],
    )
    x_twin = twin.positions(times[times >= tau])
    err = np.max(np.abs(x_twin - sol.y[:d].T)) / np.max(np.abs(sol.y[:d]))
    assert err < 1e-4
