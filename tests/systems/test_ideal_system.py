"""`IdealSystem`: the ideal twin behind the async `PhysicalSystem` interface (issue 3)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from twin_helpers import rel_err, with_trainable_everything

from physlearn.errors import ConfigError, LimitError, SteadyStateError
from physlearn.simulators.ensemble import random_network
from physlearn.simulators.problem import PeriodicProblem
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import ForceWaveform
from physlearn.spec.task import Task
from physlearn.systems import ideal
from physlearn.systems.ideal import IdealSystem


@pytest.fixture(scope="module")
def spec() -> NetworkSpec:
    return random_network(
        5, np.random.default_rng(11), damping=0.05, kinds=("product", "difference")
    )


def _inputs(seed: int, b: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.5, 1.0, (b, 2))


def test_measure_matches_the_solver_and_counts_experiments(spec: NetworkSpec) -> None:
    u = _inputs(1)
    system = IdealSystem(spec, points_per_period=33)

    async def run() -> np.ndarray:
        await system.set_parameters(spec.initial_parameters())
        await system.set_input(u)
        obs = await system.measure()
        assert obs.x.shape == (3, 33, 5)
        assert obs.period_s == pytest.approx(spec.period_s)
        np.testing.assert_allclose(obs.t_s, spec.period_s * np.arange(33) / 33)
        assert obs.settle is not None and np.all(obs.settle.remaining <= 1e-12)
        assert np.all(np.asarray(obs.meta["max_floquet_multiplier"]) < 1.0)
        return obs.x

    x = asyncio.run(run())
    assert system.experiments == 3
    ref = PeriodicProblem.from_spec(spec, 33, inputs=u).solve(spec.initial_parameters())
    np.testing.assert_allclose(x, ref.x, atol=1e-10)


def test_warm_started_measurements_equal_cold_ones(spec: NetworkSpec) -> None:
    """History must not change a measurement: warm starts from other parameters and batches
    give the same orbit as a fresh system."""
    u = _inputs(2, 4)
    a0 = spec.initial_parameters()
    a1 = a0 + 0.05 * np.random.default_rng(3).normal(size=a0.size)
    warm = IdealSystem(spec)

    async def measure(system: IdealSystem, alpha: np.ndarray, uu: np.ndarray) -> np.ndarray:
        await system.set_parameters(alpha)
        await system.set_input(uu)
        return (await system.measure()).x

    async def run() -> tuple[np.ndarray, np.ndarray]:
        await measure(warm, a0, u[:3])
        x_warm = await measure(warm, a1, u[1:])  # three samples warm, one cold
        x_cold = await measure(IdealSystem(spec), a1, u[1:])
        return x_warm, x_cold

    x_warm, x_cold = asyncio.run(run())
    assert warm.experiments == 6
    np.testing.assert_allclose(x_warm, x_cold, atol=1e-10)


def test_force_waveforms_are_resampled_spectrally(spec: NetworkSpec) -> None:
    """A band-limited force given on 128 samples acts exactly as the same force on the grid."""
    u = _inputs(4, 2)
    n = 65
    T = spec.period_s

    def force(m: int) -> ForceWaveform:
        t = T * np.arange(m) / m
        f = np.zeros((2, m, 5))
        f[:, :, 4] = 0.1 * np.cos(2 * np.pi * t / T + 0.3)[None] * np.array([[1.0], [-2.0]])
        f[:, :, 3] = 0.05 * np.sin(4 * np.pi * t / T)[None]
        return ForceWaveform(f, T)

    async def run(m: int) -> np.ndarray:
        system = IdealSystem(spec, points_per_period=n)
        await system.set_input(u)
        await system.set_forces(force(m))
        x = (await system.measure()).x
        await system.set_forces(None)
        x_free = (await system.measure()).x
        assert np.max(np.abs(x - x_free)) > 1e-3  # the force did act
        return x

    np.testing.assert_allclose(asyncio.run(run(128)), asyncio.run(run(n)), atol=1e-10)


def test_exact_gradient_uses_the_task_cost(spec: NetworkSpec) -> None:
    u = _inputs(5)
    y = np.random.default_rng(6).uniform(-0.5, 0.5, (3, 1))
    a0 = spec.initial_parameters()
    system = IdealSystem(spec)
    grad, cost = system.exact_gradient(a0, u, Task.from_spec(spec, values=y))
    prob = PeriodicProblem.from_spec(spec, 65, inputs=u, targets=y)
    sol = prob.solve(a0)
    assert rel_err(grad, prob.gradient(sol, a0)) < 1e-9
    assert rel_err(cost, prob.cost(sol)) < 1e-12
    # Another task (other targets) gives another gradient.
    grad2, _ = system.exact_gradient(a0, u, Task.from_spec(spec, values=-y))
    assert rel_err(grad2, grad) > 1e-2


def test_drive_peak_is_the_input_force_peak(spec: NetworkSpec) -> None:
    u = _inputs(7)
    system = IdealSystem(spec)

    async def run() -> np.ndarray:
        await system.set_input(u)
        return await system.drive_peak()

    peak = asyncio.run(run())
    np.testing.assert_allclose(peak, spec.inputs.gain * np.max(np.abs(u), axis=1), rtol=1e-12)


def test_bad_inputs_are_refused(spec: NetworkSpec) -> None:
    system = IdealSystem(spec)
    a0 = spec.initial_parameters()

    async def run() -> None:
        with pytest.raises(ConfigError, match="no input set"):
            await system.measure()
        with pytest.raises(ConfigError, match="inputs"):
            await system.set_input(np.ones((2, 3)))
        with pytest.raises(ConfigError, match="inputs"):
            await system.set_input(np.ones(2))
        with pytest.raises(LimitError, match="NaN"):
            await system.set_input(np.array([[1.0, np.nan]]))
        with pytest.raises(ConfigError, match="parameters"):
            await system.set_parameters(a0[:-1])
        with pytest.raises(LimitError, match="non-finite"):
            await system.set_parameters(np.where(np.arange(a0.size) == 0, np.inf, a0))
        await system.set_input(np.ones((2, 2)))
        with pytest.raises(ConfigError, match="forces"):
            await system.set_forces(ForceWaveform(np.zeros((3, 65, 5)), spec.period_s))
        with pytest.raises(ConfigError, match="forces"):
            await system.set_forces(ForceWaveform(np.zeros((2, 65, 4)), spec.period_s))
        with pytest.raises(ConfigError, match="period"):
            await system.set_forces(ForceWaveform(np.zeros((2, 65, 5)), 2 * spec.period_s))

    asyncio.run(run())
    with pytest.raises(ValueError, match="NaN"):
        ForceWaveform(np.full((1, 65, 5), np.nan), spec.period_s)
    with pytest.raises(ConfigError, match="points_per_period"):
        IdealSystem(spec, points_per_period=64)
    data = spec.model_dump()
    data["boundary"] = {"kind": "fixed_endpoints", "t_final_s": 1.0}
    with pytest.raises(ConfigError, match="periodic"):
        IdealSystem(NetworkSpec.model_validate(data))


def test_parameters_outside_their_bounds_are_refused() -> None:
    data = random_network(3, np.random.default_rng(8)).model_dump()
    data["couplings"][0]["lower"] = -1.0
    data["couplings"][0]["upper"] = 1.0
    spec = NetworkSpec.model_validate(data)
    system = IdealSystem(spec)
    a = spec.initial_parameters()
    a[0] = 1.5

    async def run() -> None:
        with pytest.raises(LimitError, match="outside its bounds"):
            await system.set_parameters(a)

    asyncio.run(run())
    np.testing.assert_array_equal(system.parameters, spec.initial_parameters())


def _duffing(seed: int) -> NetworkSpec:
    return with_trainable_everything(
        random_network(
            6, np.random.default_rng(seed), damping=0.01, kinds=("product", "difference")
        ),
        quartic=1.0,
    )


async def _measure_at(system: IdealSystem, alpha: np.ndarray, scales: list[float]) -> np.ndarray:
    await system.set_parameters(alpha)
    await system.set_input(np.ones((len(scales), 2)) * np.array(scales)[:, None])
    return (await system.measure()).x


def test_samples_stalled_from_a_warm_start_are_retried_from_rest_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When the warm-started batch stalls on some samples, only those are solved again from rest
    (by themselves), then the batch from the warm start with their new orbits: the result is the
    cold system's."""
    spec = _duffing(3)
    a0 = spec.initial_parameters()
    a1 = a0 + 1e-3
    system = IdealSystem(spec, floquet="none")
    asyncio.run(_measure_at(system, a0, [1.0, 4.0, 8.0]))  # the cache: warm starts for all three
    calls: list[tuple[int, bool]] = []
    real = ideal.solve_periodic

    def flaky(model: Any, theta: np.ndarray, exc: Any, grid: Any, **kw: Any) -> Any:
        calls.append((theta.shape[0], kw.get("x0") is not None))
        if len(calls) == 1:  # the warm-started batch: sample 1 "stalls"
            raise SteadyStateError("synthetic stall", sample=1, samples=(1,))
        return real(model, theta, exc, grid, **kw)

    monkeypatch.setattr(ideal, "solve_periodic", flaky)
    x = asyncio.run(_measure_at(system, a1, [1.0, 4.0, 8.0]))
    monkeypatch.undo()
    assert calls == [(3, True), (1, False), (3, True)]
    x_cold = asyncio.run(_measure_at(IdealSystem(spec, floquet="none"), a1, [1.0, 4.0, 8.0]))
    np.testing.assert_allclose(x, x_cold, atol=1e-10)


def test_samples_without_a_steady_state_are_all_named_in_batch_indices() -> None:
    """A batch whose samples 1 and 3 have no steady state (drive 2×: Newton and amplitude
    continuation stall, warm-started and from rest) raises one `SteadyStateError` naming both,
    in the batch's indices."""
    spec = _duffing(3)
    a0 = spec.initial_parameters()
    system = IdealSystem(spec, floquet="none")
    asyncio.run(_measure_at(system, a0, [1.0, 4.0]))
    with pytest.raises(SteadyStateError, match="neither warm-started nor from rest") as info:
        asyncio.run(_measure_at(system, a0 + 1e-3, [1.0, 2.0, 4.0, 2.0]))
    assert info.value.samples == (1, 3) and info.value.sample == 1
