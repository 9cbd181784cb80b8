"""Issue 2, acceptance 3: Massar's claims as tests, with dimensionless β (nudge/drive force ratio).

(a) periodic, Γ = 0: symmetric EP = adjoint (rel. err ≤ 1e-5 at β = 1e-3), error ∝ β²;
(b) fixed endpoints / fixed velocities, Γ > 0 with the e^{Γt} weighting: the same;
(c) periodic, Γ > 0: Eq. 31 holds to 1e-8, and plain EP's bias equals the exact bias formula.
"""

from __future__ import annotations

import numpy as np
import pytest
from twin_helpers import rel_err

from physlearn.simulators.bvp import BoundaryValueProblem
from physlearn.simulators.ensemble import random_network
from physlearn.simulators.excitation import build_excitation
from physlearn.simulators.gradients import damped_identity
from physlearn.simulators.problem import PeriodicProblem
from physlearn.spec.model import NetworkModel
from physlearn.spec.network import NetworkSpec

KINDS = ("product", "difference")


def _periodic_ep(prob: PeriodicProblem, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(symmetric EP quotient, adjoint gradient) for the first sample."""
    free = prob.solve(floquet="none")
    beta = float(prob.physical_beta(ratio, free.x)[0])
    a_plus = prob.conjugates(prob.solve(beta=beta, x0=free.x, floquet="none").x)[0]
    a_minus = prob.conjugates(prob.solve(beta=-beta, x0=free.x, floquet="none").x)[0]
    return (a_plus - a_minus) / (2 * beta), prob.gradient(free)[0]


@pytest.mark.parametrize("d", [4, 8])
def test_a_periodic_conservative_ep_is_exact_up_to_beta_squared(d: int) -> None:
    spec = random_network(d, np.random.default_rng(300 + d), damping=0.0, kinds=KINDS)
    prob = PeriodicProblem.from_spec(spec)
    ep1, adj = _periodic_ep(prob, 1e-3)
    ep2, _ = _periodic_ep(prob, 5e-4)
    e1, e2 = rel_err(ep1, adj), rel_err(ep2, adj)
    assert e1 <= 1e-5
    assert 3.0 < e1 / e2 < 5.0, (e1, e2)  # halving β quarters the error


def _bvp(
    kind: str, damping: float, seed: int
) -> tuple[BoundaryValueProblem, NetworkModel, NetworkSpec]:
    rng = np.random.default_rng(seed)
    base = random_network(4, rng, damping=damping, kinds=KINDS)
    data = base.model_dump()
    data["inputs"]["gain"] *= 0.5
    data["boundary"] = {
        "kind": kind,
        "t_final_s": 1.5,
        "steps": 200,
        "x_initial": rng.uniform(-0.2, 0.2, 4).tolist(),
        "x_final": rng.uniform(-0.2, 0.2, 4).tolist(),
        "v_initial": rng.uniform(-0.2, 0.2, 4).tolist(),
        "v_final": rng.uniform(-0.2, 0.2, 4).tolist(),
        "cost_weighting": "weighted",
    }
    spec = NetworkSpec.model_validate(data)
    model = NetworkModel.from_spec(spec)
    return BoundaryValueProblem(spec, model, build_excitation(spec)), model, spec


def _bvp_beta(prob: BoundaryValueProblem, x: np.ndarray, ratio: float) -> float:
    drive = float(np.max(np.abs(prob.exc.force)))
    err = float(np.max(np.abs(prob.exc.cost_gradient(x))))
    return ratio * drive / err


@pytest.mark.parametrize("kind", ["fixed_endpoints", "fixed_velocities"])
def test_b_bvp_damped_weighted_ep_is_exact_up_to_beta_squared(kind: str) -> None:
    prob, model, spec = _bvp(kind, damping=0.2, seed=400)
    th = model.full_theta(spec.initial_parameters())
    free = prob.solve(th)
    adj = prob.adjoint_gradient(free, th)[0]
    errs = []
    for ratio in (1e-3, 5e-4):
        beta = _bvp_beta(prob, free.x, ratio)
        ap = prob.conjugates(prob.solve(th, beta=beta, x0=free.x).x)[0]
        am = prob.conjugates(prob.solve(th, beta=-beta, x0=free.x).x)[0]
        errs.append(rel_err((ap - am) / (2 * beta), adj))
    assert errs[0] <= 1e-5
    assert 3.0 < errs[0] / errs[1] < 5.0, errs


def test_b_plain_cost_needs_the_reweighted_nudge() -> None:
    """Training the plain cost ∫ C dt: EP with the e^{−Γt}-weighted nudge matches its adjoint."""
    prob, model, spec = _bvp("fixed_endpoints", damping=0.2, seed=401)
    data = spec.model_dump()
    data["boundary"]["cost_weighting"] = "plain"
    plain_spec = NetworkSpec.model_validate(data)
    plain = BoundaryValueProblem(plain_spec, model, build_excitation(plain_spec))
    th = model.full_theta(spec.initial_parameters())
    free = plain.solve(th)
    adj_plain = plain.adjoint_gradient(free, th)[0]
    beta = _bvp_beta(plain, free.x, 1e-3)
    ap = plain.conjugates(plain.solve(th, beta=beta, x0=free.x).x)[0]
    am = plain.conjugates(plain.solve(th, beta=-beta, x0=free.x).x)[0]
    assert rel_err((ap - am) / (2 * beta), adj_plain) <= 1e-5
    # and the weighted cost's gradient is a different vector (the choice matters)
    adj_weighted = prob.adjoint_gradient(prob.solve(th), th)[0]
    assert rel_err(adj_weighted, adj_plain) > 1e-2


@pytest.mark.parametrize("damping", [0.01, 0.1])
def test_c_periodic_damped_identity_eq31_and_exact_bias(damping: float) -> None:
    spec = random_network(6, np.random.default_rng(500), damping=damping, kinds=KINDS)
    prob = PeriodicProblem.from_spec(spec, points_per_period=129)
    free = prob.solve()
    ident = damped_identity(prob.model, prob.theta(), prob.exc, free)
    scale = np.abs(ident.d_weighted_cost).max()
    assert np.abs(ident.mismatch).max() <= 1e-8 * scale
    if damping >= 0.1:  # B(t_i) is then not negligible: the identity is not trivially EP = dC̃
        assert np.abs(ident.factor * ident.boundary).max() > 1e-3 * scale

    ep, adj = _periodic_ep(prob, 1e-4)
    bias = prob.sensitivity(free).ep_bias()[0]
    assert rel_err(ep - adj, bias) <= 1e-3  # the bias formula is exact, however small the bias
    if damping >= 0.1:
        assert np.linalg.norm(bias) > 1e-3 * np.linalg.norm(adj)  # plain EP is biased here
