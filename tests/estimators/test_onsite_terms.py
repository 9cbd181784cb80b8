"""Issue 16: trainable on-site stiffness ½ κ_j x_j² (the node's natural frequency) on the twin.

The exact adjoint gradient against Richardson-extrapolated finite differences in each κ_j, and
every EP estimator against the adjoint on the κ columns (whose EP conjugate is −∫ ½ x_j² dt), in
the regimes where each estimator is exact for couplings and biases (tests/estimators/
test_estimators.py, test_ep_echo.py, test_ep_asymmetric.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from twin_helpers import cosine, rel_err, richardson_directional

from physlearn.estimators import GradientEstimate, make_estimator
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.simulators.ensemble import random_network, random_nonreciprocal_network
from physlearn.simulators.problem import PeriodicProblem
from physlearn.spec.model import NetworkModel, linear_mode_frequencies
from physlearn.spec.network import NetworkSpec
from physlearn.spec.task import Task
from physlearn.systems.ideal import IdealSystem

KINDS = ("product", "difference")


def with_onsite(spec: NetworkSpec, seed: int, scale: float = 0.2) -> NetworkSpec:
    """``spec`` with a trainable on-site spring κ_j ~ U(−scale, scale) N/m on every node."""
    rng = np.random.default_rng(seed)
    data = spec.model_dump()
    data["onsite"] = [
        {"node": j, "value": float(rng.uniform(-scale, scale)), "lower": -1.0, "upper": 1.0}
        for j in range(spec.nodes.count)
    ]
    return NetworkSpec.model_validate(data)


def onsite_columns(spec: NetworkSpec) -> np.ndarray:
    return np.array([i for i, n in enumerate(spec.parameter_names()) if n.startswith("onsite")])


def estimates(
    spec: NetworkSpec, names: dict[str, dict[str, Any]], batch: int = 2, seed: int = 0
) -> dict[str, GradientEstimate]:
    rng = np.random.default_rng(seed)
    u = rng.uniform(0.5, 1.0, (batch, len(spec.inputs.nodes)))
    y = rng.uniform(-0.5, 0.5, (batch, len(spec.outputs.nodes)))
    system, knowledge = IdealSystem(spec), ModelKnowledge.from_spec(spec)
    task, alpha = Task.from_spec(spec, values=y), spec.initial_parameters()

    async def run() -> dict[str, GradientEstimate]:
        return {
            name: await make_estimator(name, knowledge, **cfg).estimate(system, alpha, u, task)
            for name, cfg in names.items()
        }

    return asyncio.run(run())


def test_onsite_terms_are_parameters_in_the_documented_order() -> None:
    base = random_network(4, np.random.default_rng(0), kinds=KINDS)
    spec = with_onsite(base, 1)
    names = spec.parameter_names()
    assert names[: len(base.parameter_names())] == base.parameter_names()
    assert names[-4:] == [f"onsite[{j}]:{j}" for j in range(4)]
    assert spec.parameter_units()[-4:] == ["N/m"] * 4
    # κ adds to the fixed stiffness: the linear modes at rest are those of k + κ.
    data = base.model_dump()
    k = np.asarray(spec.nodes.arrays()[1]) + spec.initial_parameters()[-4:]
    data["nodes"]["stiffness"] = k.tolist()
    np.testing.assert_allclose(
        linear_mode_frequencies(spec),
        linear_mode_frequencies(NetworkSpec.model_validate(data)),
        rtol=1e-12,
    )


def test_model_derivatives_of_onsite_terms() -> None:
    """∂V/∂κ_j = ½ x_j², and the force/Hessian terms κ_j x_j, κ_j v_j."""
    spec = with_onsite(random_network(3, np.random.default_rng(2), kinds=KINDS), 3)
    model = NetworkModel.from_spec(spec)
    rng = np.random.default_rng(4)
    x, v, t = rng.normal(size=(1, 5, 3)), rng.normal(size=(1, 5, 3)), np.linspace(0, 6, 5)
    theta = model.full_theta(spec.initial_parameters())
    kappa = spec.initial_parameters()[-3:]
    dens = model.dV_dtheta(x, t)
    np.testing.assert_allclose(dens[..., model.ons_idx], 0.5 * x**2, rtol=1e-15)
    # V = V(κ = 0) + Σ ½ κ x²: the gradient, energy and Hessian-vector product each shift by it.
    zero = theta.copy()
    zero[:, model.ons_idx] = 0.0
    c, c0 = model.coefficients(theta), model.coefficients(zero)
    np.testing.assert_allclose(
        model.grad_potential(x, t, c) - model.grad_potential(x, t, c0), kappa * x, atol=1e-14
    )
    np.testing.assert_allclose(
        model.energy(x, t, c) - model.energy(x, t, c0),
        0.5 * np.sum(kappa * x**2, axis=-1),
        atol=1e-14,
    )
    np.testing.assert_allclose(
        model.hess_vec(x, t, c, v) - model.hess_vec(x, t, c0, v), kappa * v, atol=1e-14
    )
    H = model.hessian(x, t, c) - model.hessian(x, t, c0)
    np.testing.assert_allclose(H, np.broadcast_to(np.diag(kappa), H.shape), atol=1e-14)


@pytest.mark.parametrize("damping", [0.0, 0.05])
def test_adjoint_matches_finite_differences_in_each_kappa(damping: float) -> None:
    rng = np.random.default_rng(31)
    spec = with_onsite(random_network(5, rng, damping=damping, kinds=KINDS), 5, scale=0.1)
    prob = PeriodicProblem.from_spec(spec)
    a0 = spec.initial_parameters()
    sol = prob.solve(a0)
    grad = prob.gradient(sol, a0)[0]

    def cost(a: np.ndarray) -> float:
        return float(prob.cost(prob.solve(a, x0=sol.x, floquet="none"))[0])

    cols = onsite_columns(spec)
    assert np.max(np.abs(grad[cols])) > 1e-3  # the κ gradients are not trivially zero
    for p in cols:
        e = np.zeros(a0.size)
        e[p] = 1.0
        ref = richardson_directional(cost, a0, e, 1e-3)
        assert abs(grad[p] - ref) <= 1e-7 * max(abs(ref), 1e-6), (p, grad[p], ref)


@pytest.mark.parametrize(("d", "seed"), [(4, 1), (6, 2)])
def test_ep_symmetric_is_exact_for_kappa_without_damping(d: int, seed: int) -> None:
    spec = with_onsite(random_network(d, np.random.default_rng(seed), kinds=KINDS), seed)
    res = estimates(spec, {"adjoint": {}, "ep_symmetric": {}, "ep_one_sided": {"beta": 1e-3}})
    cols = onsite_columns(spec)
    ref = res["adjoint"].grad
    for i in range(2):
        assert rel_err(res["ep_symmetric"].grad[i], ref[i]) <= 1e-5
        assert rel_err(res["ep_symmetric"].grad[i, cols], ref[i, cols]) <= 1e-5
        # one-sided: first order in β, still close
        assert rel_err(res["ep_one_sided"].grad[i, cols], ref[i, cols]) <= 1e-2


def test_time_reversed_nudge_is_exact_for_kappa_on_a_linear_damped_network_at_resonance() -> None:
    base = random_network(
        4,
        np.random.default_rng(3),
        damping=0.05,
        kinds=KINDS,
        nonlinearity="identity",
        resonant=True,
    )
    spec = with_onsite(base, 7, scale=0.05)
    modes = linear_mode_frequencies(spec)
    data = spec.model_dump()
    data["drive"]["omega_rad_s"] = float(modes[np.argmin(np.abs(modes - 1.0))])
    spec = NetworkSpec.model_validate(data)
    res = estimates(spec, {"adjoint": {}, "ep_symmetric": {}, "ep_time_reversed": {}})
    cols = onsite_columns(spec)
    ref = res["adjoint"].grad
    for i in range(2):
        assert rel_err(res["ep_time_reversed"].grad[i, cols], ref[i, cols]) <= 1e-6
    # Plain EP is visibly biased there (so the check above can fail).
    assert rel_err(res["ep_symmetric"].grad[:, cols], ref[:, cols]) > 1e-2


def test_ep_echo_is_exact_for_kappa_on_a_damped_nonlinear_network() -> None:
    base = random_network(6, np.random.default_rng(1), damping=0.05, resonant=True)
    spec = with_onsite(base, 11, scale=0.05)
    res = estimates(spec, {"adjoint": {}, "ep_echo": {}, "ep_symmetric": {}})
    cols = onsite_columns(spec)
    ref = res["adjoint"].grad
    for i in range(2):
        assert rel_err(res["ep_echo"].grad[i, cols], ref[i, cols]) <= 1e-4
        assert cosine(res["ep_echo"].grad[i], ref[i]) >= 0.99999
    assert rel_err(res["ep_symmetric"].grad[:, cols], ref[:, cols]) > 1e-2


def test_ep_asymmetric_is_exact_for_kappa_on_a_non_reciprocal_network() -> None:
    base = random_nonreciprocal_network(
        6, np.random.default_rng(8), family="tanh_active", damping=0.2, asymmetry=0.8
    )
    spec = with_onsite(base, 13, scale=0.05)
    res = estimates(spec, {"adjoint": {}, "ep_asymmetric": {}})
    cols = onsite_columns(spec)
    ref = res["adjoint"].grad
    assert rel_err(res["ep_asymmetric"].grad[:, cols], ref[:, cols]) <= 1e-4


@pytest.mark.parametrize("constraint", ["energy", "action"])
def test_autonomous_ep_is_exact_for_kappa(constraint: str) -> None:
    """ep_fixed_energy / ep_fixed_action against the autonomous twin's adjoint on κ (the
    regime and tolerance of tests/estimators/test_ep_autonomous.py)."""
    from autonomous_helpers import network

    from physlearn.spec.autonomous import AutonomousOptions, OrbitTask
    from physlearn.systems.autonomous import AutonomousTwin

    spec = with_onsite(network(4, "tanh"), 17, scale=0.1)
    setpoint = {"energy": 0.4, "action": 2.0}[constraint]
    norm = {"energy": "integrated", "action": "averaged"}[constraint]
    twin = AutonomousTwin(spec, AutonomousOptions(constraint=constraint, value=setpoint))
    u = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    task = OrbitTask.from_values(spec, np.array([[0.3], [0.0], [0.1]]), norm)  # type: ignore[arg-type]
    a0 = spec.initial_parameters()
    grad, _ = twin.exact_gradient(a0, u, task)
    est = asyncio.run(
        make_estimator(
            f"ep_fixed_{constraint}", ModelKnowledge.from_spec(spec), beta=1e-3
        ).estimate(twin, a0, u, task)
    )
    cols = onsite_columns(spec)
    assert np.max(np.abs(grad[..., cols])) > 1e-4
    err = np.max(np.abs(est.grad[..., cols] - grad[..., cols])) / np.max(np.abs(grad[..., cols]))
    assert err <= 1e-5, err
