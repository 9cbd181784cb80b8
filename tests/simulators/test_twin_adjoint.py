"""Issue 2, acceptance 1: adjoint gradients against Richardson-extrapolated finite differences
(relative error ≤ 1e-7) and a Taylor test (first-order remainder falls as h²), for d ∈ {4, 8, 16},
periodic (Γ = 0 and Γ > 0), fixed endpoints and fixed velocities, every coupling kind."""

from __future__ import annotations

import numpy as np
import pytest
from twin_helpers import richardson_directional, with_trainable_everything

from physlearn.simulators.bvp import BoundaryValueProblem
from physlearn.simulators.ensemble import random_network
from physlearn.simulators.excitation import build_excitation
from physlearn.simulators.problem import PeriodicProblem
from physlearn.spec.model import NetworkModel
from physlearn.spec.network import NetworkSpec

KINDS = ("product", "difference")


@pytest.mark.parametrize("d", [4, 8, 16])
@pytest.mark.parametrize("damping", [0.0, 0.05])
def test_periodic_adjoint_matches_finite_differences(d: int, damping: float) -> None:
    rng = np.random.default_rng(100 + d)
    spec = with_trainable_everything(random_network(d, rng, damping=damping, kinds=KINDS))
    prob = PeriodicProblem.from_spec(spec)
    a0 = spec.initial_parameters()
    sol = prob.solve(a0)
    grad = prob.gradient(sol, a0)[0]

    def cost(a: np.ndarray) -> float:
        return float(prob.cost(prob.solve(a, x0=sol.x, floquet="none"))[0])

    for _ in range(2):
        v = rng.normal(size=a0.size)
        ref = richardson_directional(cost, a0, v, 1e-3)
        assert abs(grad @ v - ref) <= 1e-7 * abs(ref), (grad @ v, ref)


def test_taylor_remainder_falls_as_h_squared() -> None:
    rng = np.random.default_rng(7)
    spec = with_trainable_everything(random_network(6, rng, damping=0.02, kinds=KINDS))
    prob = PeriodicProblem.from_spec(spec)
    a0 = spec.initial_parameters()
    sol = prob.solve(a0)
    c0 = float(prob.cost(sol)[0])
    g = prob.gradient(sol, a0)[0]
    v = rng.normal(size=a0.size)
    hs = np.array([1e-2, 5e-3, 2.5e-3, 1.25e-3])
    rem = []
    for h in hs:
        c = float(prob.cost(prob.solve(a0 + h * v, x0=sol.x, floquet="none"))[0])
        rem.append(abs(c - c0 - h * (g @ v)))
    slopes = np.diff(np.log(rem)) / np.diff(np.log(hs))
    assert np.all(np.abs(slopes - 2.0) < 0.1), slopes


def _bvp_spec(kind: str, d: int, damping: float, rng: np.random.Generator) -> NetworkSpec:
    """A BVP on [0, 1.5 s]: shorter than half the fastest mode's period (modes ≤ ~2 rad/s), so
    no conjugate point lies inside and the problem is well conditioned."""
    base = random_network(d, rng, damping=damping, kinds=KINDS)
    data = with_trainable_everything(base).model_dump()
    data["inputs"]["gain"] *= 0.5  # the periodic-orbit drive folds some short BVPs
    data["boundary"] = {
        "kind": kind,
        "t_final_s": 1.5,
        "steps": 200,
        "x_initial": rng.uniform(-0.2, 0.2, d).tolist(),
        "x_final": rng.uniform(-0.2, 0.2, d).tolist(),
        "v_initial": rng.uniform(-0.2, 0.2, d).tolist(),
        "v_final": rng.uniform(-0.2, 0.2, d).tolist(),
    }
    return NetworkSpec.model_validate(data)


@pytest.mark.parametrize("kind", ["fixed_endpoints", "fixed_velocities", "initial_value"])
@pytest.mark.parametrize("d", [4, 8, 16])
@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_bvp_adjoint_matches_finite_differences(kind: str, d: int, damping: float) -> None:
    rng = np.random.default_rng(200 + d)
    spec = _bvp_spec(kind, d, damping, rng)
    model = NetworkModel.from_spec(spec)
    prob = BoundaryValueProblem(spec, model, build_excitation(spec))
    a0 = spec.initial_parameters()
    th = model.full_theta(a0)
    sol = prob.solve(th)
    grad = prob.adjoint_gradient(sol, th)[0]

    def cost(a: np.ndarray) -> float:
        return float(prob.cost(prob.solve(model.full_theta(a), x0=sol.x).x)[0])

    v = rng.normal(size=a0.size)
    ref = richardson_directional(cost, a0, v, 1e-3)
    assert abs(grad @ v - ref) <= 1e-7 * abs(ref), (grad @ v, ref)
