"""Autonomous orbits (docs/physics.md §8, docs/estimators.md "Autonomous orbits"):

* adjoint gradients with the constraint held vs Richardson finite differences (≤ 1e-7 relative),
  d ∈ {2, 4, 8}, tanh and quartic networks, fixed energy and fixed action, both cost
  normalisations (must-show 1);
* the EP identities exactly (β → 0 limits by tangent solves): fixed E ↔ ∮ c dt, fixed S₀ ↔ ⟨c⟩,
  the crossed pairings with their chain-rule term, the fixed-period control's limit equal to the
  fixed-T gradient and far from the fixed-E one;
* the unfolding parameter at round-off; the Floquet trivial pair separated; a turning point of
  T(E) found and the fixed-period constraint reported singular there.
"""

from __future__ import annotations

import numpy as np
import pytest
from autonomous_helpers import model_of, network
from twin_helpers import richardson_directional

from physlearn.simulators.autonomous import (
    AutonomousProblem,
    OrbitConstraint,
    OrbitCost,
    SingularConstraintError,
    StaticLoad,
    solve_orbit,
    with_constraint,
)
from physlearn.simulators.autonomous_family import continue_orbit, orbit_from_mode, scan_family
from physlearn.simulators.autonomous_floquet import orbit_floquet
from physlearn.simulators.autonomous_gradients import OrbitSensitivity, orbit_cost
from physlearn.spec.network import NetworkSpec
from physlearn.systems.autonomous import input_load

VALUES = {"energy": 0.4, "action": 2.0}


def _setup(d: int, kind: str, constraint: str, seed: int = 0):
    spec = network(d, kind, seed)  # type: ignore[arg-type]
    model = model_of(spec)
    load = input_load(spec, np.array([[1.0, -0.5]]))
    w = np.zeros((1, d))
    w[0, d - 1] = 1.0
    y = np.full((1, d), 0.3)
    a0 = spec.initial_parameters()

    def problem(a: np.ndarray) -> AutonomousProblem:
        return AutonomousProblem(model, model.full_theta(a), load, 33)

    con = OrbitConstraint(constraint, np.array([VALUES[constraint]]))
    sol = orbit_from_mode(problem(a0), con, tol=1e-13)
    return spec, problem, a0, sol, OrbitCost(w, y)


@pytest.mark.parametrize("d", [2, 4, 8])
@pytest.mark.parametrize("kind", ["tanh", "quartic"])
@pytest.mark.parametrize("constraint", ["energy", "action"])
def test_adjoint_matches_richardson(d: int, kind: str, constraint: str) -> None:
    _, problem, a0, sol, cost = _setup(d, kind, constraint)
    sens = OrbitSensitivity(problem(a0), sol, cost)
    rng = np.random.default_rng(d)
    for norm in ("averaged", "integrated"):
        grad = sens.adjoint_gradient(norm)[0]

        def f(a: np.ndarray, norm: str = norm) -> float:
            s = solve_orbit(problem(a), sol.x, sol.omega, sol.constraint, tol=1e-14)
            return float(orbit_cost(s, cost, norm)[0])

        for _ in range(2):
            v = rng.normal(size=a0.size)
            ref = richardson_directional(f, a0, v, 1e-3)
            assert abs(grad @ v - ref) <= 1e-7 * abs(ref), (norm, grad @ v, ref)


@pytest.mark.parametrize("kind", ["tanh", "quartic"])
def test_ep_identities_are_exact(kind: str) -> None:
    """The β → 0 limit of symmetric EP with the constraint held equals the gradient of the paired
    cost; the crossed pairings need the chain-rule term through dT/dα; a fixed period measures
    the fixed-T gradient, not the fixed-E one."""
    _, problem, a0, solE, cost = _setup(4, kind, "energy")
    pr = problem(a0)
    sE = OrbitSensitivity(pr, solE, cost)
    sS = OrbitSensitivity(pr, with_constraint(solE, "action", pr), cost)
    sT = OrbitSensitivity(pr, with_constraint(solE, "period", pr), cost)

    def rel(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

    gE, gS = sE.adjoint_gradient("integrated"), sS.adjoint_gradient("averaged")
    assert rel(sE.ep_limit("integrated"), gE) < 1e-10
    assert rel(sS.ep_limit("averaged"), gS) < 1e-10
    # crossed pairings without the chain-rule term are wrong …
    assert rel(sE.ep_limit("averaged"), sE.adjoint_gradient("averaged")) > 1e-2
    assert rel(sS.ep_limit("integrated"), sS.adjoint_gradient("integrated")) > 1e-2
    # … and right with it: dT/dα = ∂A/∂E at fixed E, T² ∂⟨∂L/∂α⟩/∂S at fixed S
    T, c = solE.period_s[:, None], sE.cost_value()[:, None]
    dT_E = sE.constraint_limit("integrated")
    assert rel(dT_E, sE.dperiod_dalpha()) < 1e-10
    chain_E = (sE.ep_limit("integrated") - c * dT_E) / T
    assert rel(chain_E, sE.adjoint_gradient("averaged")) < 1e-10
    dT_S = T**2 * sS.constraint_limit("averaged")
    chain_S = T * sS.ep_limit("averaged") + c * dT_S
    assert rel(chain_S, sS.adjoint_gradient("integrated")) < 1e-10
    # fixed period: its own gradient, far from the fixed-energy one
    assert rel(sT.ep_limit("integrated"), sT.adjoint_gradient("integrated")) < 1e-10
    assert rel(sT.ep_limit("integrated"), gE) > 0.1


def test_harmonic_oscillator_exact() -> None:
    """E = ω S / 2π for a linear oscillator, at fixed action; the unfolding parameter vanishes."""
    spec = NetworkSpec.model_validate({"nodes": {"count": 1, "stiffness": 2.0, "mass": 0.5}})
    model = model_of(spec)
    pr = AutonomousProblem(
        model, model.full_theta(spec.initial_parameters()), StaticLoad.zeros(1, 1), 17
    )
    for n in range(4):
        sol = orbit_from_mode(pr, OrbitConstraint("action", np.array([2 * np.pi * (n + 0.5)])))
        assert sol.energy[0] == pytest.approx(2.0 * (n + 0.5), rel=1e-12)
        assert sol.omega[0] == pytest.approx(2.0, rel=1e-12)
        assert abs(sol.eps[0]) < 1e-12


def test_floquet_trivial_pair_separated() -> None:
    _, problem, a0, sol, _ = _setup(4, "tanh", "energy")
    fl = orbit_floquet(problem(a0), sol)
    assert np.allclose(fl.trivial, 1.0, atol=1e-7)
    # the raw Jordan block splits by ~√(integration error); the reduced monodromy does not see it
    assert 1e-7 < fl.raw_split[0] < 1e-3
    assert fl.nontrivial.shape == (1, 6)
    # conservative: nontrivial multipliers in reciprocal pairs (here on the unit circle)
    assert np.allclose(np.abs(fl.nontrivial), 1.0, atol=1e-6)
    assert fl.stable()[0]


def _softening_hardening_pair() -> AutonomousProblem:
    """Two nodes, α tanh(x₀) tanh(x₁) (α = 0.5) and quartic hardening: the in-phase family
    (mode 1) softens (tanh² saturates) then hardens — its period has a maximum."""
    spec = NetworkSpec.model_validate(
        {
            "nodes": {"count": 2, "stiffness": 1.0},
            "couplings": [{"nodes": [0, 1], "value": 0.5}],
            "quartic": [{"node": 0, "value": 0.1}, {"node": 1, "value": 0.1}],
        }
    )
    model = model_of(spec)
    return AutonomousProblem(
        model, model.full_theta(spec.initial_parameters()), StaticLoad.zeros(1, 2), 33
    )


def test_period_extremum_detected_and_fixed_period_singular() -> None:
    pr = _softening_hardening_pair()
    sol = orbit_from_mode(pr, OrbitConstraint("energy", np.array([0.3])), mode=1)
    scan = scan_family(pr, sol, 80, 0.6)
    assert len(scan.period_extrema) == 1 and not scan.energy_folds
    i = scan.period_extrema[0]
    t_max = scan.period_s[i]
    assert 2.0 < scan.energy[i] < 2.6 and 5.5 < t_max < 5.7
    assert "fixed period is singular" in scan.report()[0]
    # dT/dE changes sign across the extremum (fixed energy is regular there) …
    sens = [
        OrbitSensitivity(
            pr,
            orbit_from_mode(pr, OrbitConstraint("energy", np.array([e])), mode=1),
            OrbitCost(np.ones((1, 2)), np.zeros((1, 2))),
        ).dperiod_dvalue()[0]
        for e in (1.5, 3.5)
    ]
    assert sens[0] > 0 > sens[1]
    # … while no orbit of this family has a period above the maximum
    with pytest.raises(SingularConstraintError):
        continue_orbit(pr, sol, "period", np.array([t_max * 1.01]))
