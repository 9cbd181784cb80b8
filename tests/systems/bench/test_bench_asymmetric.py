"""`ep_asymmetric` on the emulated bench: a bench without learning-phase feedback elements (every
bench today: its couplings are DAC-tuned reciprocal elements) is refused before anything is
measured, naming the directed couplings it cannot transpose."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from bench_system_helpers import controller_spec, truth_calibration

from physlearn.errors import GradientError
from physlearn.estimators import make_estimator
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.simulators.bench_twin import EmulatedBench, load_twin_config
from physlearn.spec.bench import BenchConfig
from physlearn.spec.clock import TwinClock
from physlearn.spec.network import NetworkSpec
from physlearn.spec.task import Task
from physlearn.systems.bench.options import BenchOptions
from physlearn.systems.bench.system import BenchSystem

ROOT = Path(__file__).resolve().parents[3]
REFERENCE_BENCH = ROOT / "examples" / "bench.toml"


def test_ep_asymmetric_refused_on_a_bench_without_feedback_elements() -> None:
    config = BenchConfig.load(REFERENCE_BENCH)
    bench = EmulatedBench(
        config, load_twin_config(config, str(REFERENCE_BENCH)), virtual=True, seed=3
    )
    res = bench.serve(memory_prefix="asym-refuse-", control=False)
    spec = controller_spec(bench)
    cal = truth_calibration(bench, created_utc=datetime.now(UTC).isoformat())
    system = BenchSystem(
        bench.config,
        cal,
        spec,
        TwinClock(bench.control),
        BenchOptions(safety={"max_response": 1.0}),
        resources=res,
    )
    # the network as designed declares an active element 3 <- 1 (fixed gain)
    data = spec.model_dump()
    data["directed"] = [{"target": 3, "source": 1, "value": 0.1, "trainable": False}]
    designed = NetworkSpec.model_validate(data)
    knowledge = ModelKnowledge.from_calibration(designed, cal)
    est = make_estimator("ep_asymmetric", knowledge, beta=0.05)

    async def run() -> None:
        try:
            await system.connect()
            await system.arm()
            assert system.feedback_pairs == frozenset()
            with pytest.raises(GradientError, match=r"directed\[0\] 3<-1") as err:
                await est.estimate(
                    system,
                    spec.initial_parameters(),
                    np.array([[1.0]]),
                    Task.from_spec(spec, np.array([[0.1]])),
                )
            assert "feedback element" in str(err.value)
            assert system.experiments == 0  # refused before any steady state was measured
        finally:
            await system.close()

    try:
        asyncio.run(run())
    finally:
        bench.stop()
