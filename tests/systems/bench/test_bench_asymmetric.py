"""`ep_asymmetric` on the emulated bench.

The active bench (examples/bench-active.toml: the echo bench — an actuator on every node, 2 mV
scope noise before the 8-bit ADC, sensing drift — with two active coupling elements 1 <- 2 and
3 <- 0, each an amplifier whose gain is set by a QDAC channel with a reversing switch on another;
hidden truth: gain-map spread 10 %, zero offset 0.05 V, input offset 2e-3, bandwidth delay
≈ 20 µs) is calibrated by the whole pipeline (`run_all`, blind to the truth but for what an
experimenter declares: mass, reference-sensor gains, the delay gauge), its `active` step
included; `ep_asymmetric` then measures the batch gradient through `BenchSystem` with the
elements reversed in the learning phases, and it is compared with the exact adjoint gradient of
the designed network on the ideal twin. Measured (twin seed 20240611, β = 0.05, batch 2):
ep_asymmetric cosine 0.9955 (0.9753 on an AMD EPYC with AVX2: round-off moves samples across the
8-bit ADC's steps, so the seeded noise is quantised differently; hence ≥ 0.97 below), relative
error 9.6 % (0.9997 / 5.8 % with the answer key for every term but the active elements);
Vector-Field EP through the same bench cosine 0.86, relative error 137 %. Calibrated gains k
within 2.4 % and 1.3 % of the truth, zeros within 0.003 and 0.033 V, reversed gains +2.1 % and
−3.4 %.

A bench without feedback elements (the reference bench: its couplings are DAC-tuned reciprocal
elements) is refused before anything is measured, naming the directed couplings it cannot
transpose; so is a feedback the elements cannot realise."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

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

from physlearn.calibration.schema import ActiveMap, CalibrationFile, val
from physlearn.errors import ConfigError, GradientError
from physlearn.estimators import GradientEstimate, make_estimator
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.simulators.bench_twin import EmulatedBench, load_twin_config
from physlearn.spec.bench import BenchConfig
from physlearn.spec.clock import TwinClock
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import LinearFeedback
from physlearn.spec.task import Task
from physlearn.spec.tomlconfig import read_toml
from physlearn.systems.bench.options import BenchOptions
from physlearn.systems.bench.system import BenchSystem
from physlearn.systems.ideal import IdealSystem

ROOT = Path(__file__).resolve().parents[3]
REFERENCE_BENCH = ROOT / "examples" / "bench.toml"
ACTIVE_BENCH = ROOT / "examples" / "bench-active.toml"
U = np.array([[1.0], [0.5]])
TARGETS = np.array([[0.0], [0.1]])
BETA = 0.05
DIRECTED = [
    {"target": 1, "source": 2, "value": 0.08, "trainable": True},
    {"target": 3, "source": 0, "value": -0.05, "trainable": True},
]


OPTIONS = BenchOptions(safety={"max_response": 1.0})


def active_bench(seed: int = 20240611) -> EmulatedBench:
    config = BenchConfig.load(ACTIVE_BENCH)
    return EmulatedBench(
        config, load_twin_config(config, str(ACTIVE_BENCH)), virtual=True, seed=seed
    )


def designed(bench: EmulatedBench) -> NetworkSpec:
    """The bench's network as designed, with the two active elements as trainable directed
    couplings."""
    data = controller_spec(bench).model_dump()
    data["directed"] = DIRECTED
    return NetworkSpec.model_validate(data)


def answer_key_active(bench: EmulatedBench, cal: CalibrationFile) -> CalibrationFile:
    """``cal`` with the active elements' hidden truth as their calibration (σ = 0)."""
    tr = bench.twin.truth
    maps = [
        ActiveMap(
            target=a.target,
            source=a.source,
            instrument=a.instrument,
            channel=a.channel,
            switch_channel=a.switch_channel,
            k_per_v=float(tr.active_gain_per_v[i]),
            z_v=float(tr.active_zero_v[i]),
            cov=[[0.0, 0.0], [0.0, 0.0]],
            v_min=-1.0,
            v_max=1.0,
            delay_s=val(float(tr.active_delay_s[i]), 0.0, "s"),
            chi2_per_dof=1.0,
            reverse_rel_diff=0.0,
        )
        for i, a in enumerate(bench.config.wiring.active)
    ]
    return cal.model_copy(update={"active": maps})


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ep_asymmetric_through_the_calibrated_active_bench_matches_adjoint(
    tmp_path: Path,
) -> None:
    bench = active_bench()
    res = bench.serve(memory_prefix="asym-active-", control=False)
    spec = designed(bench)
    tr = bench.twin.truth
    opts = declared_options(bench)
    out: dict[str, GradientEstimate] = {}
    try:
        cal = calibrate_blind(bench, res, tmp_path, opts)
        assert "active" in cal.steps
        assert (tmp_path / "active.png").exists()
        maps = cal.active
        for i, m in enumerate(maps):
            assert m.k_per_v == pytest.approx(tr.active_gain_per_v[i], rel=0.05)
            assert m.z_v == pytest.approx(tr.active_zero_v[i], abs=0.05)
            assert abs(m.reverse_rel_diff) < 0.1  # the same amplifier, reversed
        knowledge = ModelKnowledge.from_calibration(spec, cal)
        for name in ("ep_asymmetric", "ep_vector_field"):
            system = noisy_bench_system(bench, cal, spec, res)

            async def run(s: BenchSystem = system, n: str = name) -> GradientEstimate:
                try:
                    await s.connect()
                    await s.arm()
                    assert s.feedback_pairs == {(1, 2), (2, 1), (3, 0), (0, 3)}
                    est = make_estimator(n, knowledge, beta=BETA)
                    task = Task.from_spec(spec, TARGETS)
                    return await est.estimate(s, spec.initial_parameters(), U, task)
                finally:
                    await s.close()

            out[name] = asyncio.run(run())
    finally:
        bench.stop()
    ideal = IdealSystem(spec, 33, cache_size=0)
    exact_est = make_estimator("adjoint", ModelKnowledge.from_spec(spec))
    exact_g = asyncio.run(
        exact_est.estimate(ideal, spec.initial_parameters(), U, Task.from_spec(spec, TARGETS))
    )
    exact = np.asarray(exact_g.grad).mean(axis=0)
    asym = np.asarray(out["ep_asymmetric"].grad).mean(axis=0)
    vf = np.asarray(out["ep_vector_field"].grad).mean(axis=0)
    print(
        f"ep_asymmetric cos {cosine(asym, exact):.4f}, ep_vector_field cos {cosine(vf, exact):.4f}"
    )
    assert cosine(asym, exact) >= 0.97
    assert cosine(vf, exact) < cosine(asym, exact)  # the biased baseline, on the same bench
    assert out["ep_asymmetric"].experiments == 4 * U.shape[0]  # free, echo, ±β per sample
    assert np.all(np.asarray(out["ep_asymmetric"].info["echo_mismatch"]) < 0.1)


def test_active_bench_refuses_a_feedback_its_elements_cannot_realise() -> None:
    bench = active_bench()
    res = bench.serve(memory_prefix="asym-fb-", control=False)
    spec = designed(bench)
    cal = answer_key_active(
        bench, truth_calibration(bench, created_utc=datetime.now(UTC).isoformat())
    )
    system = noisy_bench_system(bench, cal, spec, res)
    alpha = spec.initial_parameters()
    m, d = system.grid_t.size, spec.nodes.count

    def feedback(pairs: dict[tuple[int, int], float]) -> LinearFeedback:
        g = np.zeros((1, m, d, d))
        for (i, j), v in pairs.items():
            g[:, :, i, j] = v
        return LinearFeedback(g, np.zeros((1, m, d)), spec.period_s)

    async def run() -> None:
        try:
            await system.connect()
            await system.arm()
            await system.set_parameters(alpha)
            await system.set_input(U)
            with pytest.raises(GradientError, match=r"pairs \[\(0, 1\)\]"):
                await system.set_feedback(feedback({(0, 1): 0.1}))  # no element 0 <- 1
            with pytest.raises(GradientError, match=r"active element 1<-2 at gain 0.08"):
                await system.set_feedback(feedback({(1, 2): 0.1, (2, 1): -0.1}))  # other gain
            n0 = system.experiments
            ok = feedback({(1, 2): 0.08, (2, 1): -0.08, (3, 0): -0.05, (0, 3): 0.05})
            await system.set_feedback(ok)  # the elements' own transposition: accepted
            assert system.outputs.dac_v[("qdac", 6)] == 1.0  # switch reversed
            assert system.outputs.dac_v[("qdac", 8)] == 1.0
            await system.set_feedback(None)
            assert system.outputs.dac_v[("qdac", 6)] == 0.0
            assert system.experiments == n0
        finally:
            await system.close()

    try:
        asyncio.run(run())
    finally:
        bench.stop()


def test_active_wiring_and_layout_refusals() -> None:
    raw = read_toml(ACTIVE_BENCH)
    raw["wiring"]["active"][1]["switch_channel"] = 5  # the gain channel of element 0
    with pytest.raises(ValueError, match=r"wiring.active\[1\]: qdac channel 5 is already used"):
        BenchConfig.model_validate(raw)
    bench = active_bench()
    try:
        cal = answer_key_active(bench, truth_calibration(bench))
        spec = controller_spec(bench)  # no directed couplings: the elements would be unmodelled
        with pytest.raises(ConfigError, match=r"elements 1<-2, 3<-0 are not directed couplings"):
            BenchSystem(bench.config, cal, spec, TwinClock(bench.control), OPTIONS)
        data = designed(bench).model_dump()
        data["directed"][0]["kind"] = "rho"
        with pytest.raises(ConfigError, match=r"directed\[0\]:rho:1<-2: a bench's active elements"):
            BenchSystem(
                bench.config,
                cal,
                NetworkSpec.model_validate(data),
                TwinClock(bench.control),
                OPTIONS,
            )
    finally:
        bench.stop()


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


def test_twin_active_element_force_gain_offset_delay_and_switch() -> None:
    """The emulated element: −k (V − z)(x_in − τ ẋ_in + o) on its output node; the switch
    channel above 0.5 V swaps input and output (the same amplifier reversed)."""
    bench = active_bench()
    try:
        twin, tr = bench.twin, bench.twin.truth
        volts = np.zeros(24)
        volts[[4, 6]] = [0.7, -0.4]  # gain channels 5 and 7
        twin.connect_dac("qdac", lambda t: np.tile(volts, (np.size(t), 1)))
        x, v = np.array([0.1, -0.2, 0.3, 0.05]), np.array([2.0, 1.0, -3.0, 0.5])
        k = tr.active_gain_per_v * (np.array([0.7, -0.4]) - tr.active_zero_v)
        assert np.all(tr.active_offset != 0) and np.all(tr.active_delay_s > 0)

        def expected(out: list[int], inp: list[int]) -> np.ndarray:
            q = np.zeros(4)
            for i in range(2):
                drive = x[inp[i]] - tr.active_delay_s[i] * v[inp[i]] + tr.active_offset[i]
                q[out[i]] += k[i] * drive
            return q

        elements = twin._active_elements(0, 1)
        assert elements is not None
        np.testing.assert_allclose(
            twin.active_force(x, v, elements[0]), expected([1, 3], [2, 0]), rtol=1e-12
        )
        volts[[5, 7]] = 1.0  # switch channels 6 and 8: reversed
        elements = twin._active_elements(0, 1)
        assert elements is not None
        np.testing.assert_allclose(
            twin.active_force(x, v, elements[0]), expected([2, 0], [1, 3]), rtol=1e-12
        )
    finally:
        bench.stop()
