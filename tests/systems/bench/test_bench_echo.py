"""Issue 7 acceptance 5: `ep_echo` through the emulated bench with its fitted calibration.

The echo bench (examples/bench-echo.toml: the reference bench with a force actuator on every node,
same network, truth seed and modelled noise — 2 mV scope input noise before the 8-bit ADC, sensing
drift) is calibrated by the pipeline (`run_all`, blind to the truth; the test declares the
non-identifiable mass, reference-sensor gains and delay gauge as an experimenter would), and the
estimator's knowledge (m_j, Γ_j) comes from that calibration file
(`ModelKnowledge.from_calibration`), never from the twin. Then the batch gradient measured by
`ep_echo` through `BenchSystem` (real drivers, in-memory transports, virtual clock) is compared
with the exact adjoint gradient of the designed network on the ideal twin.

Measured (twin seeds 20240611, 7, 11; β = 0.05; batch of 2 samples): ep_echo cosine 0.994 /
0.990 / 0.997 to the exact gradient (relative error 14 / 17 / 8 %), echo-orbit mismatch 1.7–3.6 %
(noise: the answer-key calibration gives the same 1.7–2.8 % and 10 %); ep_symmetric through the
same bench 0.984 / 0.975 / 0.968 (relative error 41–47 %: EP's damping bias at Q ≈ 7 on top).

The refusal: the reference bench (examples/bench.toml) actuates nodes 0 and 1 only; ep_echo on it
is refused before anything is measured, naming the damped nodes 2 and 3 that lack an actuator.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_system_helpers import (
    calibrate_blind,
    controller_spec,
    cosine,
    declared_options,
    noisy_bench_system,
    truth_calibration,
)

from physlearn.calibration.schema import CalibrationFile
from physlearn.errors import GradientError
from physlearn.estimators import GradientEstimate, make_estimator
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.simulators.bench_twin import EmulatedBench, load_twin_config
from physlearn.spec.bench import BenchConfig
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import PhysicalSystem
from physlearn.spec.task import Task
from physlearn.systems.bench.system import BenchSystem
from physlearn.systems.ideal import IdealSystem

ROOT = Path(__file__).resolve().parents[3]
ECHO_BENCH = ROOT / "examples" / "bench-echo.toml"
REFERENCE_BENCH = ROOT / "examples" / "bench.toml"
U = np.array([[1.0], [0.5]])
TARGETS = np.array([[0.0], [0.1]])
BETA = 0.05
_names = itertools.count()


def emulated(path: Path, seed: int) -> EmulatedBench:
    config = BenchConfig.load(path)
    return EmulatedBench(config, load_twin_config(config, str(path)), virtual=True, seed=seed)


async def batch_gradient(
    system: PhysicalSystem, knowledge: ModelKnowledge, name: str, spec: NetworkSpec
) -> tuple[np.ndarray, GradientEstimate]:
    kw: dict[str, Any] = {} if name == "adjoint" else {"beta": BETA}
    est = make_estimator(name, knowledge, **kw)
    g = await est.estimate(system, spec.initial_parameters(), U, Task.from_spec(spec, TARGETS))
    return np.asarray(g.grad, dtype=float).mean(axis=0), g


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [20240611, 7])
def test_ep_echo_through_calibrated_bench_matches_adjoint(seed: int, tmp_path: Path) -> None:
    bench = emulated(ECHO_BENCH, seed)
    res = bench.serve(memory_prefix=f"echo{next(_names)}-", control=False)
    spec = controller_spec(bench)
    opts = declared_options(bench)
    out: dict[str, Any] = {}
    try:
        cal = calibrate_blind(bench, res, tmp_path, opts)
        assert {a.node for a in cal.actuators} == {0, 1, 2, 3}
        knowledge = ModelKnowledge.from_calibration(spec, cal)
        assert knowledge.source.startswith("calibration")
        for name in ("ep_echo", "ep_symmetric"):
            system = noisy_bench_system(bench, cal, spec, res)

            async def run(s: BenchSystem = system, n: str = name) -> Any:
                try:
                    await s.connect()
                    await s.arm()
                    return await batch_gradient(s, knowledge, n, spec)
                finally:
                    await s.close()

            out[name] = asyncio.run(run())
    finally:
        bench.stop()
    exact, _ = asyncio.run(
        batch_gradient(
            IdealSystem(spec, 33, cache_size=0), ModelKnowledge.from_spec(spec), "adjoint", spec
        )
    )
    echo, est = out["ep_echo"]
    sym, _ = out["ep_symmetric"]
    cos_echo, cos_sym = cosine(echo, exact), cosine(sym, exact)
    rel_echo = float(np.linalg.norm(echo - exact) / np.linalg.norm(exact))
    mismatch = np.asarray(est.info["echo_mismatch"])
    print(
        f"seed {seed}: ep_echo cos {cos_echo:.4f} rel {rel_echo:.3f} mismatch {mismatch}; "
        f"ep_symmetric cos {cos_sym:.4f}"
    )
    assert cos_echo >= 0.98
    assert est.experiments == 4 * U.shape[0]  # free, echo, +β, −β per sample
    assert np.all(mismatch < 0.1)  # the echo retraced the reversed free orbit (noise-limited)
    assert np.all(mismatch > 0)  # a real, noisy measurement


def _with_scope_delays(cal: CalibrationFile, shift_s: dict[int, float]) -> CalibrationFile:
    """``cal`` with the scope paths' sensing delays of the given nodes off by ``shift_s`` (s)."""
    sensing = []
    for s in cal.sensing:
        if s.node in shift_s and s.instrument == "scope":
            value = s.delay_s.value + shift_s[s.node]
            s = s.model_copy(update={"delay_s": s.delay_s.model_copy(update={"value": value})})
        sensing.append(s)
    return cal.model_copy(update={"sensing": sensing})


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_echo_self_calibration_runs_on_the_noisy_bench_down_to_its_mismatch_floor() -> None:
    """The calibration's scope delays are off by +1 % (node 1) and −0.7 % (node 3) of the period
    and m·Γ by 5 %. `ep_echo(self_calibrate, calibrate_delays)` fits both from echo mismatches;
    finite-difference steps of 20 % in m·Γ and 2 % of a period move the echo beyond the noise.
    The fit brings the echo residual down to the bench's floor (rms 9.5e-3 → 2.7e-3; the exact
    calibration leaves echo mismatches of 1.5–3.5 % too) and the gradient stays within the
    acceptance. What it does not do here is identify the delays: at that floor the corrections
    (measured −0.29 % / +0.58 % of the period for the expected −1 % / +0.7 %) are not resolved,
    unlike on the noise-free twin (tests/estimators/test_ep_echo.py, to 1e-6 of a period) — the floor, not
    the method, limits it (docs/estimators.md)."""
    bench = emulated(ECHO_BENCH, 20240611)
    res = bench.serve(memory_prefix=f"echo-delay{next(_names)}-", control=False)
    spec = controller_spec(bench)
    cal = truth_calibration(bench, created_utc=datetime.now(UTC).isoformat())
    period = spec.period_s
    shift = {1: 0.01 * period, 3: -0.007 * period}
    knowledge = ModelKnowledge.from_calibration(spec, cal)
    wrong = knowledge.with_damping(knowledge.damping * 1.05)
    system = noisy_bench_system(bench, _with_scope_delays(cal, shift), spec, res)
    est = make_estimator(
        "ep_echo",
        wrong,
        beta=BETA,
        self_calibrate=True,
        calibrate_delays=True,
        calibration_rel_step=0.2,
        calibration_delay_step=0.02,
    )

    async def run() -> GradientEstimate:
        try:
            await system.connect()
            await system.arm()
            task = Task.from_spec(spec, TARGETS)
            return await est.estimate(system, spec.initial_parameters(), U, task)
        finally:
            await system.close()

    try:
        g = asyncio.run(run())
    finally:
        bench.stop()
    fit = est.last_calibration
    assert fit is not None
    tau = fit.delays_s / period
    print(f"delay corrections / T {tau}, m·Γ / true {fit.m_gamma / (fit.initial / 1.05)}")
    print(f"residual rms {fit.residual_rms}, mismatch {fit.mismatch}")
    assert fit.residual_rms[-1] < 0.5 * fit.residual_rms[0]  # down to the floor
    assert np.all(np.abs(tau) < 0.02)  # bounded: no runaway along unresolved directions
    exact, _ = asyncio.run(
        batch_gradient(
            IdealSystem(spec, 33, cache_size=0), ModelKnowledge.from_spec(spec), "adjoint", spec
        )
    )
    assert cosine(np.asarray(g.grad).mean(axis=0), exact) >= 0.98
    assert g.experiments == U.shape[0] * (4 + 1 + 4 + 4 + 3)


def test_ep_echo_refused_on_a_bench_without_actuators_on_damped_nodes() -> None:
    bench = emulated(REFERENCE_BENCH, 20240611)
    res = bench.serve(memory_prefix=f"echo-refuse{next(_names)}-", control=False)
    spec = controller_spec(bench)
    cal = truth_calibration(bench, created_utc=datetime.now(UTC).isoformat())
    system = noisy_bench_system(bench, cal, spec, res)

    async def run() -> None:
        try:
            await system.connect()
            await system.arm()
            with pytest.raises(GradientError, match=r"nodes \[2, 3\]") as err:
                await batch_gradient(
                    system, ModelKnowledge.from_calibration(spec, cal), "ep_echo", spec
                )
            assert "actuat" in str(err.value)
            assert system.experiments == 0  # refused before any steady state was measured
        finally:
            await system.close()

    try:
        asyncio.run(run())
    finally:
        bench.stop()
