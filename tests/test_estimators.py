"""Issue 3, acceptance 1: every gradient estimator against the exact adjoint on the twin's
ensemble networks (stable orbits), their experiment counts, and their refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest
from twin_helpers import rel_err

from physlearn.errors import ConfigError, GradientError
from physlearn.estimators import GradientEstimate, known_estimators, make_estimator
from physlearn.ideal import IdealSystem
from physlearn.knowledge import ModelKnowledge
from physlearn.network import NetworkSpec
from physlearn.simulators.ensemble import random_network
from physlearn.system import ForceWaveform, Observation, PhysicalSystem
from physlearn.task import Task

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


class _NotTheTwin(PhysicalSystem):
    """A system that is not the ideal twin (delegates to one, so EP still works on it)."""

    def __init__(self, inner: IdealSystem):
        self.inner = inner

    @property
    def experiments(self) -> int:  # type: ignore[override]
        return self.inner.experiments

    @property
    def n_nodes(self) -> int:
        return self.inner.n_nodes

    @property
    def n_params(self) -> int:
        return self.inner.n_params

    @property
    def period_s(self) -> float:
        return self.inner.period_s

    @property
    def actuated_nodes(self) -> list[int]:
        return [0, 1]

    async def set_parameters(self, alpha: np.ndarray) -> None:
        await self.inner.set_parameters(alpha)

    async def set_input(self, u: np.ndarray) -> None:
        await self.inner.set_input(u)

    async def set_forces(self, forces: ForceWaveform | None) -> None:
        await self.inner.set_forces(forces)

    async def drive_peak(self) -> np.ndarray:
        return await self.inner.drive_peak()

    async def measure(self) -> Observation:
        return await self.inner.measure()


def test_adjoint_refuses_other_systems_and_ep_refuses_unactuated_outputs() -> None:
    spec = random_network(4, np.random.default_rng(7), damping=0.0, kinds=KINDS)
    system, knowledge, alpha, u, task = _setup(spec, 1, 0)
    other = _NotTheTwin(system)

    async def run() -> None:
        with pytest.raises(GradientError, match="IdealSystem"):
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
    assert {"ep_symmetric", "ep_one_sided", "adjoint"} <= set(known_estimators())


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
