"""The emulated energy-regulated self-oscillator (docs/physics.md §8, must-show 5): its pieces
(loop settings, quintic Hermite interpolation, folding a recording on its period), its refusals,
and — slow — that with an exact loop (τ = 0, Γ̂ = Γ) its steady orbit is the conservative
fixed-energy orbit and ``ep_fixed_energy`` through it follows the exact gradient; a loop delay
is harmless while the energy loop is stable and makes it diverge beyond."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from autonomous_helpers import network

from physlearn.errors import ConfigError, GradientError, SteadyStateError
from physlearn.estimators import make_estimator
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.simulators.self_oscillator import LoopSettings, fold_orbit, hermite5
from physlearn.spec.autonomous import AutonomousOptions, OrbitTask
from physlearn.spec.network import NetworkSpec
from physlearn.systems.autonomous import AutonomousTwin
from physlearn.systems.self_oscillator import SelfOscillatorSystem

U = np.array([[1.0, 0.0], [0.0, 1.0]])
OPTIONS = AutonomousOptions(constraint="energy", value=0.4)


def _lossy(damping: float) -> NetworkSpec:
    data = network(4, "tanh").model_dump()
    data["nodes"]["damping"] = damping
    return NetworkSpec.model_validate(data)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_hermite_is_exact_for_quintics_and_fold_finds_the_period() -> None:
    rng = np.random.default_rng(1)
    c = rng.normal(size=6)
    p = np.polynomial.Polynomial(c)
    dp, ddp = p.deriv(), p.deriv(2)
    h, t0 = 0.3, 0.7
    s = np.linspace(0, 1, 7)
    x, v = hermite5(h, p(t0), dp(t0), ddp(t0), p(t0 + h), dp(t0 + h), ddp(t0 + h), s)
    assert np.allclose(x, p(t0 + h * s), rtol=0, atol=1e-12)
    assert np.allclose(v, dp(t0 + h * s), rtol=0, atol=1e-11)
    # a recording of two nodes, period 2.5 s, folded on its own period
    T, h = 2.5, 0.01
    t = np.arange(0, 6 * T, h)
    w = 2 * np.pi / T
    x = np.stack([np.cos(w * t) + 0.2, 0.5 * np.sin(w * t)], -1)[None]
    v = np.stack([-w * np.sin(w * t), 0.5 * w * np.cos(w * t)], -1)[None]
    a = np.stack([-(w**2) * np.cos(w * t), -0.5 * w**2 * np.sin(w * t)], -1)[None]
    orbit, period = fold_orbit(h, x, v, a, 9, 4)
    assert period[0] == pytest.approx(T, rel=1e-9)
    # cycles start at the upward crossing of node 0's mean level (ωt = 3π/2)
    phase = 2 * np.pi * np.arange(9) / 9
    assert np.allclose(orbit[0, :, 0], np.sin(phase) + 0.2, atol=1e-8)
    assert np.allclose(orbit[0, :, 1], -0.5 * np.cos(phase), atol=1e-8)


def test_refusals() -> None:
    with pytest.raises(ConfigError, match="gain_per_s"):
        LoopSettings(gain_per_s=-1.0)
    with pytest.raises(ConfigError, match="energy_scale"):
        LoopSettings(energy_scale=0.0)
    with pytest.raises(ConfigError, match="regulates energy"):
        SelfOscillatorSystem(
            _lossy(0.01), AutonomousOptions(constraint="action", value=2.0), LoopSettings()
        )
    system = SelfOscillatorSystem(_lossy(0.01), OPTIONS, LoopSettings())
    asyncio.run(system.set_input(U))
    with pytest.raises(GradientError, match="holds energy"):
        asyncio.run(system.set_constraint("action", np.ones(2)))


def _estimate(loop: LoopSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(EP gradient through the self-oscillator, exact gradient, measured, conservative periods)."""
    spec = network(4, "tanh")
    task = OrbitTask.from_values(spec, np.array([[0.3], [0.0]]), "integrated")
    sens = AutonomousTwin(spec, OPTIONS).sensitivity(spec.initial_parameters(), U, task)
    system = SelfOscillatorSystem(
        _lossy(0.01), OPTIONS, loop, steps_per_period=48, ramp_periods=30, settle_periods=10
    )
    est = asyncio.run(
        make_estimator("ep_fixed_energy", ModelKnowledge.from_spec(spec), beta=0.05).estimate(
            system, spec.initial_parameters(), U, task
        )
    )
    return (
        est.grad,
        sens.adjoint_gradient("integrated"),
        np.asarray(est.info["period_s"]),
        sens.sol.period_s,
    )


@pytest.mark.slow
def test_exact_loop_gives_the_conservative_orbit_and_gradient() -> None:
    grad, exact, period, t_cons = _estimate(LoopSettings(gain_per_s=0.2))
    assert np.allclose(period, t_cons, rtol=2e-3)  # the conservative orbit's period at E₀
    cos_exact = _cos(grad, exact)
    assert np.all(cos_exact > 0.999), cos_exact
    # a delay of a tenth of a period: the energy loop (rate ≈ 2⟨K⟩g/E_ref) is stable at g = 0.2
    # (rate·τ ≈ 0.5), and the delay's only lasting effect, the mass renormalisation m(1 + Γτ)
    # (Γτ ≈ 7e-3), leaves the gradient's direction; at g = 1 (rate·τ ≈ 2.8 > π/2) it diverges
    tau = 0.1 * float(t_cons.mean())
    grad_d, _, _, _ = _estimate(LoopSettings(gain_per_s=0.2, delay_s=tau))
    assert np.all(_cos(grad_d, exact) > 0.999)
    with pytest.raises(SteadyStateError, match="diverged"):
        _estimate(LoopSettings(gain_per_s=1.0, delay_s=tau))
