"""Issue 2, acceptance 4: the initial-value problem is a negative control for EP.

EP's quotient misses the gradient; EP plus the boundary term B of Eq. 17 recovers it; in the
causal ordering (parameters act only before the cost window) the quotient is identically zero."""

from __future__ import annotations

import numpy as np
from twin_helpers import rel_err

from physlearn.simulators.bvp import BoundaryValueProblem
from physlearn.simulators.ensemble import random_network
from physlearn.simulators.excitation import build_excitation
from physlearn.spec.model import NetworkModel
from physlearn.spec.network import NetworkSpec


def _ivp(modulations: dict | None = None, t_final: float = 6.0, damping: float = 0.1):
    rng = np.random.default_rng(600)
    base = random_network(4, rng, damping=damping, kinds=("product", "difference"))
    data = base.model_dump()
    data["boundary"] = {
        "kind": "initial_value",
        "t_final_s": t_final,
        "steps": 600,
        "x_initial": [0.1, 0.0, -0.1, 0.0],
        "v_initial": [0.0, 0.2, 0.0, 0.0],
    }
    if modulations:
        data["modulations"] = modulations
    spec = NetworkSpec.model_validate(data)
    model = NetworkModel.from_spec(spec)
    return BoundaryValueProblem(spec, model, build_excitation(spec)), model, spec


def _ep(prob: BoundaryValueProblem, th: np.ndarray, beta: float) -> np.ndarray:
    ap = prob.conjugates(prob.solve(th, beta=beta).x)[0]
    am = prob.conjugates(prob.solve(th, beta=-beta).x)[0]
    return (ap - am) / (2 * beta)


def test_ivp_ep_misses_and_boundary_term_recovers() -> None:
    prob, model, spec = _ivp()
    th = model.full_theta(spec.initial_parameters())
    free = prob.solve(th)
    adj = prob.adjoint_gradient(free, th)[0]
    ep = _ep(prob, th, 1e-4)
    assert rel_err(ep, adj) > 0.3  # EP alone is wrong
    b = prob.boundary_term(free, th)[0]
    assert rel_err(ep + b, adj) <= 1e-6


def test_causal_ordering_makes_ep_identically_zero() -> None:
    # μ(t) (product couplings) acts on [0, 2 s); the cost weight γ(t) on [3 s, 6 s]. A causal
    # nudge changes x only after 3 s, where ∂L/∂α_product = −μ ρρ = 0: the quotient is exactly 0.
    mods = {
        "mu": {"kind": "square", "low": 0.0, "high": 1.0, "start_s": 0.0, "width_s": 2.0},
        "gamma": {"kind": "square", "low": 0.0, "high": 1.0, "start_s": 3.0, "width_s": 3.5},
    }
    prob, model, spec = _ivp(mods)
    th = model.full_theta(spec.initial_parameters())
    free = prob.solve(th)
    adj = prob.adjoint_gradient(free, th)[0]
    ep = _ep(prob, th, 1e-3)
    product = [i for i, n in enumerate(spec.parameter_names()) if ":product:" in n]
    assert np.all(ep[product] == 0.0)
    assert np.linalg.norm(adj[product]) > 1e-3
    b = prob.boundary_term(free, th)[0]
    assert rel_err(ep[product] + b[product], adj[product]) <= 1e-6
