"""A batch of autonomous orbits in which one sample has none: the error names that sample by its
index in the *batch*, so the evaluation sets aside that sample only. And a static equilibrium
that Newton from rest misses is found by descent (`minimum_by_descent`).

Regression: the samples without a warm orbit were solved as a sub-batch whose error indexed the
sub-batch; the evaluation then set aside the wrong sample, re-solved, and so on, until every
sample of the batch counted as unsolved (a fixed-energy XOR run reported 0 % with 8 unsolved
samples where one input's orbit was missing).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from physlearn.errors import SolverError, SteadyStateError, in_batch
from physlearn.simulators.autonomous_family import (
    equilibrium_near,
    linear_modes,
    minimum_by_descent,
    static_equilibrium,
)
from physlearn.spec.tomlconfig import read_toml, validate
from physlearn.systems.autonomous import AutonomousTwin, input_load
from physlearn.systems.factory import make_twin
from physlearn.training.config import TrainConfig
from physlearn.training.evaluation import evaluate_split
from physlearn.training.setup import TrainSetup, prepare

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "autonomous-xor-energy.toml"
XOR = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
# u = (0.5, 0.5) puts no force on the inputs (force 4·(u − 0.5)): its equilibrium is x = 0 at
# V = 0 J, above the example's E₀ = −3 J, so it has no orbit at that energy.
NO_ORBIT = np.array([0.5, 0.5])


def test_in_batch_names_the_batch_samples() -> None:
    err = SteadyStateError("no orbit for sample 0", sample=0, samples=(0, 1))
    out = in_batch(err, (3, 5, 7))
    assert type(out) is SteadyStateError
    assert out.samples == (3, 5) and out.sample == 3
    assert "batch sample(s) 3, 5" in str(out)
    # a one-sample sub-batch whose error names no sample: that sample
    lone = in_batch(SolverError("Newton did not converge"), (4,))
    assert lone.samples == (4,)


def _twin() -> tuple[AutonomousTwin, TrainSetup]:
    cfg = validate(TrainConfig, read_toml(EXAMPLE), str(EXAMPLE))
    setup = prepare(cfg)
    twin = make_twin(cfg, setup.spec)
    assert isinstance(twin, AutonomousTwin)
    return twin, setup


def test_a_cold_sample_without_orbit_is_named_by_its_batch_index() -> None:
    twin, setup = _twin()
    params = setup.initial_parameters()

    async def run() -> None:
        await twin.set_parameters(params)
        await twin.set_input(XOR)
        await twin.measure()  # the four XOR orbits are now warm
        batch = np.vstack([XOR[:2], NO_ORBIT, XOR[2:]])  # the orbitless sample is cold, at 2
        await twin.set_input(batch)
        with pytest.raises(SolverError) as info:
            await twin.measure()
        assert info.value.samples == (2,)

    asyncio.run(run())


def test_the_evaluation_sets_aside_only_the_sample_without_orbit() -> None:
    twin, setup = _twin()
    params = setup.initial_parameters()
    spec, targets = setup.spec, setup.targets
    y = np.array([0, 1, 1, 0], dtype=np.int64)

    async def run() -> None:
        ref = await evaluate_split(twin, spec, targets, params, XOR, y)
        assert ref.unsolved == 0
        x = np.vstack([XOR[:2], NO_ORBIT, XOR[2:]])
        out = await evaluate_split(twin, spec, targets, params, x, np.insert(y, 2, 1))
        assert out.unsolved == 1
        # the four solvable samples give what they gave alone
        assert out.loss == pytest.approx(ref.loss, rel=1e-9)
        assert out.accuracy == pytest.approx(ref.accuracy * 4 / 5, abs=1e-12)

    asyncio.run(run())


# Parameters a fixed-energy XOR run (examples/autonomous-xor-energy.toml, EP, seed 5, 150 epochs)
# ended on. For input (0, 1) Newton from rest does not converge to the static equilibrium.
TRAINED = np.array(
    [
        0.8046925995412202, -0.777574565149106, -0.9627158764374424, -0.8680265195194449,
        -0.847959958682971, -0.924647333492424, -0.45602889830040283, 0.25299836601245906,
        -1.0, 1.0, -0.5487913535688673, -0.6401816265673732, 0.8996718309715863,
        0.6351268759889616, 1.0, -1.0, -0.431117577268892,
    ]
)  # fmt: skip


def test_descent_finds_the_equilibrium_where_newton_from_rest_fails() -> None:
    twin, _ = _twin()
    problem = twin.problem(TRAINED, input_load(twin.spec, XOR))
    stuck = problem.take(np.array([1]))
    with pytest.raises(SteadyStateError, match="Newton did not converge"):
        static_equilibrium(stuck)
    x = minimum_by_descent(stuck)
    assert np.max(np.abs(problem.take(np.array([1])).force_gradient(x[:, None, :]))) < 1e-10
    lam, _ = linear_modes(stuck, x)
    assert lam.min() > 0.5  # a minimum (ω² in (N/m)/kg), not a saddle
    assert equilibrium_near(stuck).tobytes() == x.tobytes()
    with pytest.raises(SteadyStateError, match="descent did not reach") as info:
        minimum_by_descent(problem.take(np.array([0, 1])), max_iter=2)
    assert 1 in info.value.samples
    # where Newton converges to a minimum, the descent reaches the same point
    for i in (2, 3):
        one = problem.take(np.array([i]))
        np.testing.assert_allclose(minimum_by_descent(one), static_equilibrium(one), atol=1e-9)


def test_a_cold_start_at_trained_parameters_misses_the_orbit_training_held() -> None:
    """docs/physics.md §8 (multistability): at the parameters the run ended on at 100 %, a fresh
    twin finds the orbits of three inputs; from the well nearest rest, the family of (0, 0)
    ends at −3.727 J, below E₀ = −3 J (the run's orbit lies on another branch)."""
    from physlearn.simulators.autonomous import SingularConstraintError

    twin, _ = _twin()

    async def run() -> None:
        await twin.set_parameters(TRAINED)
        for u in XOR[1:]:
            await twin.set_input(u[None, :])
            obs = await twin.measure()
            np.testing.assert_allclose(obs.energy, -3.0, rtol=1e-9)
        await twin.set_input(XOR[:1])
        with pytest.raises(SingularConstraintError, match=r"stalled for sample 0 at -3\.7269"):
            await twin.measure()

    asyncio.run(run())


def test_the_orbit_guard_measures_an_equilibrium_only_descent_finds() -> None:
    """`OrbitGuard` falls back to descent too: at TRAINED (Newton from rest misses input (0, 1))
    the margin is that of the stiff minimum there, not −inf (which refused every step)."""
    from physlearn.systems.autonomous_guard import OrbitGuard

    twin, _ = _twin()
    guard = OrbitGuard(twin.spec, twin.options, XOR)
    margin = guard.margin(TRAINED)
    assert guard.descents == 1 and 0.0 < margin < 1.0, margin
    problem = twin.problem(TRAINED, input_load(twin.spec, XOR))
    lam, _ = linear_modes(problem, minimum_by_descent(problem))
    assert margin == pytest.approx(float(np.min(lam[:, 0])) / guard.bare, rel=1e-9)
    # where Newton converges (the initial parameters) descent is not used
    fresh = OrbitGuard(twin.spec, twin.options, XOR)
    assert np.isfinite(fresh.margin(twin.spec.initial_parameters())) and fresh.descents == 0
