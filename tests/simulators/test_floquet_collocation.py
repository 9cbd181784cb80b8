"""Issue 16: Floquet multipliers from the collocated periodic eigenproblem agree with the full
RK4 monodromy (dominant modulus to 1e-8 relative) — lossy, conservative, directed couplings,
springs with clamped inputs, a learning phase's feedback gain — and
`solve_periodic(floquet="collocation")` uses them."""

from __future__ import annotations

import numpy as np
import pytest

from physlearn.simulators import ensemble
from physlearn.simulators.floquet import floquet_multipliers
from physlearn.simulators.floquet_collocation import collocation_multipliers
from physlearn.simulators.periodic import solve_periodic
from physlearn.simulators.problem import PeriodicProblem
from physlearn.spec.network import NetworkSpec


def _agree(spec: NetworkSpec, batch: int = 2, clamp: bool = False, exact: bool = True) -> None:
    rng = np.random.default_rng(3)
    prob = PeriodicProblem.from_spec(spec, 33, inputs=rng.uniform(0.5, 1.0, (batch, 2)))
    exc = prob.exc
    if clamp:
        w = np.zeros_like(exc.clamp_weight)
        w[:, :, 0] = 0.5
        exc = type(exc)(exc.force, w, exc.clamp_target, exc.cost_weight, exc.target)
    theta = np.broadcast_to(prob.theta(), (batch, prob.theta().shape[-1])).copy()
    sol = solve_periodic(prob.model, theta, exc, prob.grid, floquet="none")
    full = floquet_multipliers(prob.model, theta, exc, prob.grid, sol.x)
    dom = collocation_multipliers(prob.model, theta, exc, prob.grid, sol.x)
    # ``exact``: every sample solved on the collocation grid (no fallback to the RK4 monodromy)
    assert not (exact and dom.fallback.any())
    ref = np.abs(full[:, 0])
    np.testing.assert_allclose(dom.modulus, ref, rtol=1e-8, atol=0)
    # the whole spectrum, not only its modulus
    for b in range(batch):
        gaps = np.abs(dom.multipliers[b][:, None] - full[b][None, :]).min(axis=1)
        assert gaps.max() < 1e-7


@pytest.mark.parametrize("q", [20.0, 0.0])
def test_lossy_and_conservative_orbits_agree_with_the_full_monodromy(q: float) -> None:
    spec = ensemble.random_network(5, np.random.default_rng(1), damping=1 / q if q else 0.0)
    _agree(spec)


def test_springs_and_clamped_inputs_agree() -> None:
    rng = np.random.default_rng(2)
    spec = ensemble.random_network(5, rng, damping=0.05, kinds=("product", "difference"))
    # the clamp puts a mode at 3ω/2: two real multipliers collide near −0.855 (period doubling),
    # the refined candidates coincide and that sample falls back to the RK4 monodromy
    _agree(spec, clamp=True)


def test_directed_couplings_agree() -> None:
    spec = ensemble.random_nonreciprocal_network(
        5, np.random.default_rng(4), damping=0.1, asymmetry=0.5, family="tanh_active"
    )
    _agree(spec)


def test_solve_periodic_collocation_option() -> None:
    spec = ensemble.random_network(4, np.random.default_rng(5), damping=0.05)
    prob = PeriodicProblem.from_spec(spec, 33)
    full = prob.solve()
    theta = prob.theta()
    dom = solve_periodic(prob.model, theta, prob.exc, prob.grid, floquet="collocation")
    assert dom.multipliers is not None and full.multipliers is not None
    np.testing.assert_allclose(dom.max_multiplier, full.max_multiplier, rtol=1e-8)


def test_feedback_gain_agrees() -> None:
    from physlearn.simulators.feedback import Feedback

    spec = ensemble.random_network(4, np.random.default_rng(6), damping=0.1)
    prob = PeriodicProblem.from_spec(spec, 33)
    theta = prob.theta()
    x = solve_periodic(prob.model, theta, prob.exc, prob.grid, floquet="none").x
    B, N, d = x.shape
    cos = np.cos(prob.grid.omega * prob.grid.t)[None, :, None, None]
    gain = 0.05 * np.random.default_rng(7).normal(size=(B, 1, d, d)) * (1.0 + cos)
    fb = Feedback(np.ascontiguousarray(np.broadcast_to(gain, (B, N, d, d))), x.copy())
    full = floquet_multipliers(prob.model, theta, prob.exc, prob.grid, x, feedback=fb)
    dom = collocation_multipliers(prob.model, theta, prob.exc, prob.grid, x, feedback=fb)
    assert not dom.fallback.any()
    np.testing.assert_allclose(dom.modulus, np.abs(full[:, 0]), rtol=1e-8, atol=0)
