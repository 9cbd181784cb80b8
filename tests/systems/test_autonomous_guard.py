"""The orbit guard of autonomous networks (systems/autonomous_guard.py, training.min_orbit_stiffness)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from physlearn.errors import ConfigError
from physlearn.spec.tomlconfig import read_toml, validate
from physlearn.systems.autonomous_guard import OrbitGuard, shrink_to_margin
from physlearn.training.config import TrainConfig
from physlearn.training.loop import make_guard
from physlearn.training.rules import guarded_update
from physlearn.training.setup import TrainSetup, prepare

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
XOR = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])


def _data(constraint: str, seed: int) -> dict[str, Any]:
    """The example's network as it was before the issue-18 recipe (inputs u ∈ {0, 1} at 2 N, a
    readout as stiff as the other nodes, E₀ = 0.2 J, S₀ = 0.8 J·s): the draws and trained
    parameters these tests pin were measured on it."""
    data = copy.deepcopy(read_toml(EXAMPLES / f"autonomous-xor-{constraint}.toml"))
    top = data["network"]["topology"]
    top.update(seed=seed, input_gain=2.0, input_offset=0.0)
    top.pop("output_stiffness", None)
    data["system"]["autonomous"]["value"] = 0.2 if constraint == "energy" else 0.8
    return data


def _setup(constraint: str = "energy", seed: int = 3) -> TrainSetup:
    return prepare(validate(TrainConfig, _data(constraint, seed), "guard"))


def _guard(s: TrainSetup) -> OrbitGuard:
    assert s.config.system.autonomous is not None
    return OrbitGuard(s.spec, s.config.system.autonomous, XOR)


@pytest.mark.parametrize("constraint", ["energy", "action"])
def test_margin_is_one_without_couplings_and_falls_with_them(constraint: str) -> None:
    s = _setup(constraint)
    g = _guard(s)
    p = np.asarray(s.spec.initial_parameters(), dtype=float)
    assert g.margin(np.zeros_like(p)) == pytest.approx(1.0, abs=1e-12)
    # seed 3's draw softens some input's equilibrium below zero curvature (no small orbit)
    assert g.margin(p) < 0.0
    assert g.margin(0.5 * p) > g.margin(p)


def test_shrink_keeps_the_direction_and_reaches_the_margin() -> None:
    s = _setup()
    g = _guard(s)
    p = np.asarray(s.spec.initial_parameters(), dtype=float)
    q, n = shrink_to_margin(g, p, 0.2)
    assert n >= 1
    np.testing.assert_allclose(q, p * 0.5**n)
    assert g.margin(q) >= 0.2
    assert g.margin(p * 0.5 ** (n - 1)) < 0.2
    good, m = shrink_to_margin(g, q, 0.2)
    assert m == 0
    np.testing.assert_array_equal(good, q)


def test_energy_at_or_below_the_equilibrium_is_refused() -> None:
    s = _setup("energy", 0)
    assert s.config.system.autonomous is not None
    p = np.asarray(s.spec.initial_parameters(), dtype=float)
    opts = s.config.system.autonomous
    assert OrbitGuard(s.spec, opts, XOR).margin(p) > 0.2
    low = opts.model_copy(update={"value": -10.0})  # below every input's V(x_eq)
    assert OrbitGuard(s.spec, low, XOR).margin(p) == -math.inf
    action = opts.model_copy(update={"constraint": "action", "value": 0.8})
    assert OrbitGuard(s.spec, action, XOR).margin(p) == OrbitGuard(s.spec, opts, XOR).margin(p)


def test_guarded_update_shortens_or_refuses_steps_that_soften_an_equilibrium() -> None:
    s = _setup()
    g = _guard(s)
    p = np.asarray(s.spec.initial_parameters(), dtype=float)
    safe, _ = shrink_to_margin(g, p, 0.2)
    new, ok = guarded_update(g, 0.2, safe, p)  # the full step goes back to the bad draw
    assert ok and g.margin(new) >= 0.2
    assert np.linalg.norm(new - safe) < np.linalg.norm(p - safe)
    _, ok = guarded_update(g, 0.2, safe, safe + 50.0 * (p - safe))
    assert not ok


def test_make_guard_picks_the_orbit_guard_and_needs_an_autonomous_system() -> None:
    s = _setup()
    guard, margin = make_guard(s.config, s.spec, XOR)
    assert isinstance(guard, OrbitGuard) and margin == 0.05
    data = read_toml(EXAMPLES / "xor.toml")
    data["training"]["min_orbit_stiffness"] = 0.2
    cfg = validate(TrainConfig, data, "xor")
    with pytest.raises(ConfigError, match="min_orbit_stiffness"):
        make_guard(cfg, None, XOR)


def test_the_trainer_starts_from_the_shrunk_draw() -> None:
    """Seed 3's draw has no orbit for some input; with the guard the run starts from ½ⁿ of it
    and trains without solver failures."""
    import asyncio

    from physlearn.training.loop import Trainer

    data = _data("energy", 3)
    data["estimator"] = {"name": "adjoint"}
    data["training"].update(epochs=2, log_cosine_to_adjoint=False)
    s = prepare(validate(TrainConfig, data, "guard"))
    res = asyncio.run(Trainer(s).run(None))
    assert res.summary["solver_failures"] == 0
    assert res.summary["epochs_run"] == 2


def _trained_energy_guard() -> tuple[OrbitGuard, np.ndarray]:
    """The guard of the energy example (seed 6, stiff readout) and trained parameters of a run
    that froze when its equilibria were solved from rest."""
    data = _data("energy", 6)
    data["network"]["topology"]["output_stiffness"] = 4.8
    g = _guard(prepare(validate(TrainConfig, data, "guard")))
    couplings = [-0.483, 0.441, -1.0, -0.594, 1.0, 0.324, 0.726, 0.199, 0.316, -0.174]
    return g, np.array([*couplings, -0.488, 0.455, 0.205, 0.722, -0.014, -0.682, -0.645])


def test_margin_follows_the_branch_of_the_last_equilibria_not_newton_from_rest() -> None:
    """Parameters met in training (energy, seed 6, stiff readout, after 30 epochs) whose static
    Newton from rest fails for small changes of α although the equilibria move continuously:
    measured from rest, the margin read −inf for 4 of 10 steps of size 0.01 and froze the run
    (every later update refused). Newton from the last measured equilibria finds them."""
    from physlearn.errors import SolverError
    from physlearn.simulators.autonomous import AutonomousProblem
    from physlearn.simulators.autonomous_family import static_equilibrium

    g, p = _trained_energy_guard()
    m0 = g.margin(p)
    assert 0.5 < m0 < 0.6
    rng = np.random.default_rng(0)
    from_rest_fails = 0
    for _ in range(10):
        q = np.clip(p + 0.01 * rng.normal(size=p.size), -1.0, 1.0)
        theta = g.model.full_theta(q, batch=4)
        try:
            static_equilibrium(AutonomousProblem(g.model, theta, g.load, 3))
        except SolverError:
            from_rest_fails += 1
        g.margin(p)  # the network sits at p
        assert abs(g.margin(q) - m0) < 0.05
    assert from_rest_fails >= 2


def test_orbit_from_mode_retries_the_equilibrium_from_a_guess_when_newton_from_rest_fails() -> None:
    """The twin's cold start (`orbit_from_mode`, after a failed warm start) solved the static
    equilibrium from rest only, and a training run (action, S₀ = 0.01 J·s, seed 5) stopped on
    'static equilibrium: Newton did not converge' at every step: with ``x_guess`` (the twin
    passes the mean of the last orbit of the input) the equilibrium and the orbit are found; and
    without it by the descent fallback, on the same orbits."""
    from physlearn.errors import SolverError
    from physlearn.simulators.autonomous import AutonomousProblem, OrbitConstraint
    from physlearn.simulators.autonomous_family import orbit_from_mode, static_equilibrium

    g, p = _trained_energy_guard()
    x_p = g.equilibria(p)
    assert x_p is not None
    rng = np.random.default_rng(0)
    tried = 0
    for _ in range(10):
        q = np.clip(p + 0.01 * rng.normal(size=p.size), -1.0, 1.0)
        problem = AutonomousProblem(g.model, g.model.full_theta(q, batch=4), g.load, 33)
        try:
            static_equilibrium(problem)
            continue
        except SolverError:
            tried += 1
        con = OrbitConstraint("action", np.full(4, 0.01))
        sol = orbit_from_mode(problem, con, x_guess=x_p)
        np.testing.assert_allclose(problem.action(sol.x, sol.omega), 0.01, rtol=1e-8)
        # without a guess, the descent from rest (`minimum_by_descent`) finds the equilibria
        cold = orbit_from_mode(problem, con)
        np.testing.assert_allclose(problem.action(cold.x, cold.omega), 0.01, rtol=1e-8)
        np.testing.assert_allclose(cold.omega, sol.omega, rtol=1e-6)
    assert tried >= 2


def test_initial_shrink_also_needs_every_free_orbit_at_the_set_point() -> None:
    """Energy, seed 8, stiff readout: every equilibrium keeps its margin, but the family of the
    input (1, 1) folds below E₀ (the run failed at its first steps); ``orbits=True`` scales the
    draw until every input's free orbit exists."""
    data = _data("energy", 8)
    data["network"]["topology"]["output_stiffness"] = 4.8
    s = prepare(validate(TrainConfig, data, "guard"))
    g = _guard(s)
    p = np.asarray(s.spec.initial_parameters(), dtype=float)
    q, n = shrink_to_margin(g, p, 0.05)
    assert not g.orbits_exist(q)
    r, m = shrink_to_margin(g, p, 0.05, orbits=True)
    assert m > n and g.orbits_exist(r) and g.margin(r) >= 0.05
    np.testing.assert_allclose(r, p * 0.5**m)
