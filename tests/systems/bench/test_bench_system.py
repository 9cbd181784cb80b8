"""BenchSystem through the in-memory emulated bench (virtual clock): the measured steady state
agrees with the ideal twin under the same couplings, settling is judged from the fitted decay,
and an EP gradient measured through the instruments points where the ideal twin's does."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from test_safety_bench import make

from physlearn.estimators import make_estimator
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.task import Task
from physlearn.systems.ideal import IdealSystem

pytestmark = pytest.mark.timeout(600)


def test_bench_measurement_and_ep_gradient_agree_with_the_ideal_twin() -> None:
    bench, sysb = make()
    spec = sysb.spec
    u = np.array([[1.0, 0.0]])
    task = Task.from_spec(spec, np.array([[0.0]]))
    est = make_estimator("ep_symmetric", ModelKnowledge.from_spec(spec), beta=0.05)
    alpha = spec.initial_parameters()
    try:

        async def run() -> tuple[np.ndarray, np.ndarray, object]:
            await sysb.connect()
            await sysb.arm()
            await sysb.set_parameters(alpha)
            await sysb.set_input(u)
            obs = await sysb.measure()
            g = await est.estimate(sysb, alpha, u, task)
            await sysb.close()
            return obs.x, g.grad, obs.settle

        x_bench, g_bench, settle = asyncio.run(run())
    finally:
        bench.stop()
    ideal = IdealSystem(spec, 33)

    async def ref() -> tuple[np.ndarray, np.ndarray]:
        await ideal.set_parameters(alpha)
        await ideal.set_input(u)
        obs = await ideal.measure()
        g = await est.estimate(ideal, alpha, u, task)
        return obs.x, g.grad

    x_ideal, g_ideal = asyncio.run(ref())
    amp = np.abs(x_ideal).max(axis=1)  # per node
    err = np.abs(x_bench - x_ideal).max(axis=1)
    print("per-node error / amplitude:", (err / amp).round(4), "settle", settle)
    assert np.all(err <= 0.02 * amp + 2e-3)  # 8-bit scope, auto-ranged, noise off
    assert settle is not None and bool(np.all(settle.periodic))  # type: ignore[attr-defined]
    cos = float(np.dot(g_bench[0], g_ideal[0]) / np.linalg.norm(g_bench) / np.linalg.norm(g_ideal))
    print("cosine(bench EP, ideal EP) =", cos)
    assert cos > 0.95
