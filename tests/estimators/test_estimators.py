"""Issue 3, acceptance 1: every gradient estimator against the exact adjoint on the twin's
ensemble networks (stable orbits), their experiment counts, and their refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest
from twin_helpers import cosine, rel_err

from physlearn.errors import ConfigError, GradientError
from physlearn.estimators import GradientEstimate, known_estimators, make_estimator
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.simulators.ensemble import random_network
from physlearn.spec.delegating import DelegatingSystem
from physlearn.spec.model import linear_mode_frequencies
from physlearn.spec.network import NetworkSpec
from physlearn.spec.task import Task
from physlearn.systems.ideal import IdealSystem

KINDS = ("product", "difference")


def _setup(
    spec: NetworkSpec, batch: int, seed: int
) -> tuple[IdealSystem, ModelKnowledge, np.ndarray, np.ndarray, Task]:
    rng = np.random.default_rng(seed)
    u = rng.uniform(0.5, 1.0, (batch, len(spec.inputs.nodes)))
    y = rng.uniform(-0.5, 0.5, (batch, len(spec.outputs.nodes)))
    return (
        IdealSystem(spec),
        ModelKnowledge.from_spec(spec),
        spec.initial_parameters(),
        u,
        Task.from_spec(spec, values=y),
    )


def _run(
    names: Sequence[str], spec: NetworkSpec, batch: int = 2, seed: int = 0, **cfg: object
) -> dict[str, GradientEstimate]:
    system, knowledge, alpha, u, task = _setup(spec, batch, seed)

    async def run() -> dict[str, GradientEstimate]:
        out = {}
        for name in names:
            est = make_estimator(name, knowledge, **cfg.get(name, {}))  # type: ignore[arg-type]
            out[name] = await est.estimate(system, alpha, u, task)
        return out

    return asyncio.run(run())


@pytest.mark.parametrize(("d", "seed"), [(4, 1), (6, 2), (8, 3)])
def test_ep_symmetric_is_exact_without_damping(d: int, seed: int) -> None:
    spec = random_network(d, np.random.default_rng(seed), damping=0.0, kinds=KINDS)
    res = _run(["adjoint", "ep_symmetric"], spec, batch=3, seed=seed)
    ref, ep = res["adjoint"], res["ep_symmetric"]
    for i in range(3):
        assert rel_err(ep.grad[i], ref.grad[i]) <= 1e-5
    np.testing.assert_allclose(ep.cost, ref.cost, rtol=1e-12)
    assert ep.experiments == 3 * 3
    assert ref.experiments == 3


def test_ep_symmetric_error_falls_as_beta_squared() -> None:
    spec = random_network(5, np.random.default_rng(4), damping=0.0, kinds=KINDS)
    errs = []
    for beta in (4e-2, 2e-2, 1e-2):
        res = _run(["adjoint", "ep_symmetric"], spec, batch=1, ep_symmetric={"beta": beta})
        errs.append(rel_err(res["ep_symmetric"].grad, res["adjoint"].grad))
    slopes = np.diff(np.log(errs)) / np.diff(np.log([4e-2, 2e-2, 1e-2]))
    assert np.all(np.abs(slopes - 2.0) < 0.15), (errs, slopes)


def test_drift_cancelling_order_uses_five_steady_states() -> None:
    spec = random_network(4, np.random.default_rng(5), damping=0.0, kinds=KINDS)
    res = _run(["adjoint", "ep_symmetric"], spec, batch=2, ep_symmetric={"drift_cancel": True})
    assert res["ep_symmetric"].experiments == 2 * 5
    assert rel_err(res["ep_symmetric"].grad, res["adjoint"].grad) <= 1e-5


def test_ep_one_sided_is_first_order_in_beta() -> None:
    spec = random_network(4, np.random.default_rng(6), damping=0.0, kinds=KINDS)
    errs = []
    for beta in (2e-2, 1e-2):
        res = _run(["adjoint", "ep_one_sided"], spec, batch=2, ep_one_sided={"beta": beta})
        assert res["ep_one_sided"].experiments == 2 * 2
        errs.append(rel_err(res["ep_one_sided"].grad, res["adjoint"].grad))
    assert errs[1] < 1e-2
    assert 1.8 < errs[0] / errs[1] < 2.2, errs


def _linear_at_resonance(seed: int, damping: float, kinds: tuple[str, ...]) -> NetworkSpec:
    """A linear (ρ = identity) damped ensemble network, driven exactly at its mode nearest 1 rad/s."""
    spec = random_network(
        4,
        np.random.default_rng(seed),
        damping=damping,
        kinds=kinds,
        nonlinearity="identity",
        resonant=True,
    )
    modes = linear_mode_frequencies(spec)
    data = spec.model_dump()
    data["drive"]["omega_rad_s"] = float(modes[np.argmin(np.abs(modes - 1.0))])
    return NetworkSpec.model_validate(data)


@pytest.mark.parametrize("damping", [0.01, 0.05, 0.2])
@pytest.mark.parametrize(
    ("seed", "kinds"), [(2, KINDS), (3, KINDS), (4, ("difference",)), (0, ("product",))]
)
def test_time_reversed_nudge_is_exact_on_linear_damped_networks_at_resonance(
    damping: float, seed: int, kinds: tuple[str, ...]
) -> None:
    """Where plain EP fails (cosine < 0.5), the time-reversed nudge is exact (docs/physics.md).

    Draws chosen where plain EP fails at every Γ (the acceptance case); the time-reversed
    nudge is exact on every linear draw (see docs/fidelity.md for the sweep)."""
    spec = _linear_at_resonance(seed, damping, kinds)
    res = _run(["adjoint", "ep_symmetric", "ep_time_reversed"], spec, batch=2, seed=seed)
    ref = res["adjoint"].grad
    for i in range(2):
        assert cosine(res["ep_symmetric"].grad[i], ref[i]) < 0.5
        assert rel_err(res["ep_time_reversed"].grad[i], ref[i]) <= 1e-6
    assert res["ep_time_reversed"].experiments == 2 * 3


def test_time_reversed_one_sided_uses_two_steady_states() -> None:
    spec = _linear_at_resonance(3, 0.05, KINDS)
    res = _run(
        ["adjoint", "ep_time_reversed"], spec, batch=2, ep_time_reversed={"symmetric": False}
    )
    assert res["ep_time_reversed"].experiments == 2 * 2
    # Linear network: the response is exactly linear in β, so one side is exact too.
    assert rel_err(res["ep_time_reversed"].grad, res["adjoint"].grad) <= 1e-6


def test_time_reversed_nudge_repairs_damped_ep_off_resonance_nonlinear() -> None:
    """tanh network, off resonance, Γ = 0.2: approximate (K(t) ≠ K(−t)) but far better than EP."""
    spec = random_network(5, np.random.default_rng(12), damping=0.2, kinds=KINDS)
    res = _run(["adjoint", "ep_symmetric", "ep_time_reversed"], spec, batch=2, seed=1)
    ref = res["adjoint"].grad
    err_ep = rel_err(res["ep_symmetric"].grad, ref)
    err_tr = rel_err(res["ep_time_reversed"].grad, ref)
    assert cosine(res["ep_time_reversed"].grad.ravel(), ref.ravel()) > 0.999
    assert err_tr < 0.1 * err_ep, (err_tr, err_ep)


@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_finite_differences_match_the_adjoint(damping: float) -> None:
    spec = random_network(4, np.random.default_rng(13), damping=damping, kinds=KINDS)
    res = _run(["adjoint", "finite_difference"], spec, batch=2, seed=2)
    P = spec.initial_parameters().size
    fd = res["finite_difference"]
    assert fd.experiments == 2 * (2 * P + 1)
    for i in range(2):
        assert rel_err(fd.grad[i], res["adjoint"].grad[i]) <= 1e-5
    np.testing.assert_allclose(fd.cost, res["adjoint"].cost, rtol=1e-12)


def test_finite_differences_stay_inside_parameter_bounds() -> None:
    """Parameters sitting on a bound are differenced one-sided (second order), never outside."""
    data = random_network(3, np.random.default_rng(14), damping=0.05, kinds=KINDS).model_dump()
    c0, c1 = data["couplings"][0], data["couplings"][1]
    c0["upper"] = c0["value"]
    c1["lower"] = c1["value"]
    spec = NetworkSpec.model_validate(data)
    res = _run(["adjoint", "finite_difference"], spec, batch=1, seed=3)
    assert rel_err(res["finite_difference"].grad, res["adjoint"].grad) <= 1e-5


def test_spsa_counts_and_is_reproducible_with_a_seeded_generator() -> None:
    spec = random_network(3, np.random.default_rng(15), damping=0.05, kinds=KINDS)
    a = _run(["spsa"], spec, batch=2, spsa={"n_draws": 3, "rng": np.random.default_rng(1)})
    b = _run(["spsa"], spec, batch=2, spsa={"n_draws": 3, "seed": 1})
    c = _run(["spsa"], spec, batch=2, spsa={"n_draws": 3, "seed": 2})
    assert a["spsa"].experiments == 2 * 2 * 3
    np.testing.assert_array_equal(a["spsa"].grad, b["spsa"].grad)
    assert not np.array_equal(a["spsa"].grad, c["spsa"].grad)


def test_spsa_is_unbiased() -> None:
    """The mean of many one-draw estimates converges on the gradient: every component within
    4.5 standard errors, and the mean's cosine with the adjoint close to 1."""
    spec = random_network(3, np.random.default_rng(16), damping=0.05, kinds=("difference",))
    system, knowledge, alpha, u, task = _setup(spec, 1, 4)
    system.floquet = "none"  # free phases only; stability is not the point here
    spsa = make_estimator("spsa", knowledge, n_draws=1, rng=np.random.default_rng(5))
    n = 600

    async def run() -> tuple[np.ndarray, np.ndarray]:
        ref = await make_estimator("adjoint", knowledge).estimate(system, alpha, u, task)
        draws = [(await spsa.estimate(system, alpha, u, task)).grad[0] for _ in range(n)]
        return ref.grad[0], np.array(draws)

    ref, draws = asyncio.run(run())
    mean, se = draws.mean(axis=0), draws.std(axis=0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(mean - ref) <= 4.5 * se), (mean, ref, se)
    assert cosine(mean, ref) > 0.98
    # A single draw is far from the gradient: the test is about the mean.
    assert np.median([cosine(g, ref) for g in draws]) < 0.95


class _NotTheTwin(DelegatingSystem):
    """A system that is not the ideal twin (delegates to one, so EP still works on it)."""

    @property
    def actuated_nodes(self) -> list[int]:
        return [0, 1]


def test_adjoint_refuses_other_systems_and_ep_refuses_unactuated_outputs() -> None:
    spec = random_network(4, np.random.default_rng(7), damping=0.0, kinds=KINDS)
    system, knowledge, alpha, u, task = _setup(spec, 1, 0)
    other = _NotTheTwin(system)

    async def run() -> None:
        with pytest.raises(GradientError, match="does not compute them"):
            await make_estimator("adjoint", knowledge).estimate(other, alpha, u, task)
        with pytest.raises(GradientError, match="not actuated"):
            await make_estimator("ep_symmetric", knowledge).estimate(other, alpha, u, task)

    asyncio.run(run())


def test_registry_refuses_unknown_names_and_options() -> None:
    spec = random_network(3, np.random.default_rng(8))
    knowledge = ModelKnowledge.from_spec(spec)
    with pytest.raises(ConfigError, match=r"known: .*ep_symmetric"):
        make_estimator("ep_symetric", knowledge)
    with pytest.raises(ConfigError, match="unknown option"):
        make_estimator("ep_symmetric", knowledge, bta=0.1)
    for bad in (0.0, -1.0, float("nan"), "0.1", True):
        with pytest.raises(ConfigError, match="beta"):
            make_estimator("ep_symmetric", knowledge, beta=bad)
    with pytest.raises(ConfigError, match="seed"):
        make_estimator("spsa", knowledge)
    with pytest.raises(ConfigError, match="n_draws"):
        make_estimator("spsa", knowledge, seed=1, n_draws=0)
    with pytest.raises(ConfigError, match="step"):
        make_estimator("finite_difference", knowledge, step=-1e-3)
    assert set(known_estimators()) == {
        "ep_symmetric",
        "ep_one_sided",
        "ep_time_reversed",
        "ep_echo",
        "ep_asymmetric",
        "ep_vector_field",
        "finite_difference",
        "spsa",
        "adjoint",
        "ep_fixed_energy",
        "ep_fixed_action",
        "ep_fixed_period",
        "gp_near_ep",
        "gp_phase_conjugate",
    }


def test_task_that_does_not_fit_the_system_is_refused() -> None:
    spec = random_network(4, np.random.default_rng(9), damping=0.0, kinds=KINDS)
    system, knowledge, alpha, u, _ = _setup(spec, 2, 0)
    other = random_network(5, np.random.default_rng(9), damping=0.0, kinds=KINDS)
    y3 = np.zeros((3, 1))

    async def run() -> None:
        est = make_estimator("ep_symmetric", knowledge)
        with pytest.raises(ConfigError, match="nodes"):
            await est.estimate(system, alpha, u, Task.from_spec(other))
        with pytest.raises(ConfigError, match="batch"):
            await est.estimate(system, alpha, u, Task.from_spec(spec, values=y3))

    asyncio.run(run())
