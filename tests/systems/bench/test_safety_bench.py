"""Safety of the bench loop on the in-memory emulated bench: limits before any write, arming,
the interlock, the safe state on every exit path (read back from the emulated instruments), and
a hypothesis property: wild gradients and learning rates never drive an output outside its limits."""

from __future__ import annotations

import asyncio
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from physlearn.calibration.schema import CalibrationFile
from physlearn.errors import (
    InstrumentProtocolError,
    InstrumentTimeoutError,
    LimitError,
    SafetyError,
)
from physlearn.simulators.bench_twin import EmulatedBench
from physlearn.spec.clock import TwinClock
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import Observation
from physlearn.spec.topology import layered
from physlearn.systems.bench.options import BenchOptions
from physlearn.systems.bench.system import BenchSystem
from physlearn.systems.safety import (
    PersistentFault,
    RetryingSystem,
    RetryPolicy,
    run_with_safe_exit,
)
from physlearn.training.optimizers import make_optimizer

pytestmark = pytest.mark.timeout(300)

BENCH = Path(__file__).resolve().parents[3] / "examples" / "bench-xor-bench.toml"
CALIBRATION = BENCH.with_name("bench-xor-calibration.json")
_names = itertools.count()


def xor_spec() -> NetworkSpec:
    w = math.pi / 2
    spec = layered(
        [2, 2, 1],
        mass=1 / w**2,
        omega_rad_s=w,
        stiffness=2.4,
        damping=0.3 * w,
        coupling_bound=0.9,
        seed=1,
        check_modes=False,
    )
    raw = spec.model_dump(mode="json", exclude_none=True)
    raw["biases"] = []
    return NetworkSpec.model_validate(raw)


def make(max_response: float = 3.0) -> tuple[EmulatedBench, BenchSystem]:
    bench = EmulatedBench.from_file(BENCH, virtual=True)
    res = bench.serve(memory_prefix=f"safety{next(_names)}-", control=False)
    cal = CalibrationFile.read(CALIBRATION)
    opts = BenchOptions(
        safety={"max_response": max_response},
        settle={"first_wait_periods": 12},
        calibration_max_age_days=None,
    )
    return bench, BenchSystem(
        bench.config, cal, xor_spec(), TwinClock(bench.control), opts, resources=res
    )


def outputs_state(bench: EmulatedBench) -> tuple[list[bool], list[float]]:
    gens = [bench.emulators[n] for n in ("fgen1", "fgen2")]
    on = [ch.output_on for g in gens for ch in g.channels]
    t = np.array([bench.clock.now()])
    dac = bench.emulators["qdac"].output_voltages(t)[0, :9]
    return on, [float(v) for v in dac]


def test_nothing_is_written_before_arm_and_limits_refuse_before_any_write() -> None:
    bench, sysb = make()
    try:

        async def run() -> None:
            await sysb.connect()
            with pytest.raises(SafetyError, match="not armed"):
                await sysb.set_parameters(sysb.spec.initial_parameters())
            on, dac = outputs_state(bench)
            assert not any(on) and all(v == 0.0 for v in dac)
            await sysb.arm()
            await sysb.set_parameters(sysb.spec.initial_parameters())
            bench.control.advance_blocking(10.0)  # the DAC slews to its setpoints
            before = outputs_state(bench)[1]
            planned = sysb.dac_plan(sysb.spec.initial_parameters())
            assert before == pytest.approx([planned[("qdac", c)] for c in range(1, 10)], abs=1e-4)
            bad = sysb.spec.initial_parameters()
            bad[3] = 5.0  # beyond the calibrated range
            with pytest.raises(LimitError, match="outside the calibrated range"):
                await sysb.set_parameters(bad)
            bad[3] = math.nan
            with pytest.raises(LimitError, match="non-finite"):
                await sysb.set_parameters(bad)
            bench.control.advance_blocking(10.0)
            assert outputs_state(bench)[1] == pytest.approx(before, abs=1e-5)
            await sysb.close()

        asyncio.run(run())
        on, dac = outputs_state(bench)
        assert not any(on)
        assert dac == pytest.approx([0.0] * 9, abs=1e-9)
    finally:
        bench.stop()


def test_dry_run_checks_every_planned_setting_without_writing() -> None:
    bench, sysb = make()
    try:
        lo, hi = sysb.spec.parameter_bounds()
        u = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
        report = sysb.plan_check([lo, hi, sysb.spec.initial_parameters()], u, 0.1)
        assert report == {"dac_settings": 27, "arb_waveforms": 16, "inputs": 4}
        assert sysb.drivers == {}  # nothing connected
        with pytest.raises(LimitError):
            sysb.plan_check([sysb.spec.initial_parameters()], 10.0 * u)  # drive beyond ±3 V
    finally:
        bench.stop()


def test_interlock_on_measured_response_stops_in_safe_state() -> None:
    bench, sysb = make(max_response=0.5)  # inputs ring to |x| ≈ 1: trips
    try:

        async def run() -> None:
            await sysb.connect()
            await sysb.arm()
            await sysb.set_parameters(sysb.spec.initial_parameters())
            await sysb.set_input(np.array([[1.0, 0.0]]))
            await sysb.measure()

        with pytest.raises(SafetyError, match="interlock"):
            asyncio.run(run_with_safe_exit(run(), sysb))
        on, dac = outputs_state(bench)
        assert not any(on) and dac == pytest.approx([0.0] * 9, abs=1e-9)
    finally:
        bench.stop()


def test_cancellation_mid_measurement_leaves_safe_state() -> None:
    bench, sysb = make()
    try:

        async def run() -> None:
            await sysb.connect()
            await sysb.arm()
            await sysb.set_parameters(sysb.spec.initial_parameters())
            await sysb.set_input(np.array([[1.0, 1.0]]))
            t_start = bench.clock.now()
            task = asyncio.ensure_future(run_with_safe_exit(sysb.measure(), sysb))
            # cancel once the measurement is under way (the twin's clock has moved) — and
            # before it can end: the first settle wait alone is ~10 periods
            for _ in range(2000):
                if bench.clock.now() > t_start:
                    break
                await asyncio.sleep(0.001)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(run())
        on, dac = outputs_state(bench)
        assert not any(on) and dac == pytest.approx([0.0] * 9, abs=1e-9)
    finally:
        bench.stop()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    grads=st.lists(
        st.lists(st.floats(-1e12, 1e12, allow_nan=False), min_size=9, max_size=9),
        min_size=1,
        max_size=5,
    ),
    lr=st.floats(1e-6, 1e6),
    opt=st.sampled_from(["sgd", "adam"]),
)
def test_property_wild_updates_never_leave_the_limits(
    grads: list[list[float]], lr: float, opt: str
) -> None:
    sysb = _PLAN_SYSTEM
    lo, hi = sysb.spec.parameter_bounds()
    o = make_optimizer(opt, lr=lr, bounds=(lo, hi))
    a = sysb.spec.initial_parameters()
    for g in grads:
        a = o.step(a, np.asarray(g))
        plan = sysb.dac_plan(a)  # raises if anything is outside a limit: must not
        for (inst, ch), v in plan.items():
            lim = sysb.config.output_limits(inst).limit_for(ch)
            assert lim.min_v <= v <= lim.max_v and math.isfinite(v)


def _plan_system() -> BenchSystem:
    bench = EmulatedBench.from_file(BENCH, virtual=True)
    cal = CalibrationFile.read(CALIBRATION)
    opts = BenchOptions(safety={"max_response": 3.0})
    return BenchSystem(bench.config, cal, xor_spec(), TwinClock(bench.control), opts)


_PLAN_SYSTEM = _plan_system()


def test_transient_faults_retried_bit_identical_and_persistent_fault_named() -> None:
    from physlearn.spec.system import PhysicalSystem
    from physlearn.systems.ideal import IdealSystem

    spec = xor_spec()

    class Faulty(IdealSystem):
        calls = 0

        async def measure(self) -> Observation:
            Faulty.calls += 1
            if Faulty.calls % 3 == 0:
                raise InstrumentTimeoutError("scope1: no reply within 2.0 s")
            return await super().measure()

    async def grads(system: PhysicalSystem) -> np.ndarray:
        from physlearn.estimators import make_estimator
        from physlearn.estimators.knowledge import ModelKnowledge
        from physlearn.spec.task import Task

        est = make_estimator("ep_symmetric", ModelKnowledge.from_spec(spec), beta=0.01)
        u = np.array([[0.0, 1.0], [1.0, 1.0]])
        task = Task.from_spec(spec, np.array([[0.2], [0.0]]))
        g = await est.estimate(system, spec.initial_parameters(), u, task)
        return g.grad

    clean = asyncio.run(grads(IdealSystem(spec, 33, cache_size=0)))
    wrapped = RetryingSystem(Faulty(spec, 33, cache_size=0), RetryPolicy(3, 0.0))
    faulty = asyncio.run(grads(wrapped))
    assert np.array_equal(clean, faulty)
    assert len(wrapped.faults.entries) >= 1 and wrapped.faults.entries[0]["instrument"] == "scope1"

    class Dead(IdealSystem):
        async def measure(self) -> Observation:
            raise InstrumentTimeoutError("scope2: no reply within 2.0 s")

    with pytest.raises(PersistentFault, match="scope2") as err:
        asyncio.run(grads(RetryingSystem(Dead(spec, 33), RetryPolicy(2, 0.0))))
    assert err.value.instrument == "scope2" and err.value.fault == "InstrumentTimeoutError"


def test_a_dac_write_swallowed_by_a_dropped_link_is_detected_and_rewritten() -> None:
    """A DAC write has no reply: when the link drops on it, the transport reconnects on the next
    command and the setpoint is silently missing. `set_parameters` reads the setpoints back and
    raises naming the DAC and channel; the retry wrapper reconnects (the cache takes what the DAC
    holds) and writes it again."""
    bench, sysb = make()
    qdac = bench.emulators["qdac"]
    wrapped = RetryingSystem(sysb, RetryPolicy(3, 0.0), on_fault=sysb.reconnect)
    try:

        async def run() -> None:
            await sysb.connect()
            await sysb.arm()
            a0 = sysb.spec.initial_parameters()
            await sysb.set_parameters(a0)
            a1 = a0 + 0.05
            plan = sysb.dac_plan(a1)
            qdac.faults.drop_connection_after(0)  # the next message is swallowed, link closed
            with pytest.raises(InstrumentProtocolError, match="qdac: DAC setpoints lost"):
                await sysb.set_parameters(a1)
            held = {ch: qdac.channels[ch - 1].setpoint_v for (_, ch) in plan}
            assert any(abs(held[ch] - v) > 1e-4 for (_, ch), v in plan.items())  # one missing
            qdac.faults.drop_connection_after(0)
            await wrapped.set_parameters(a1)  # detected, reconnected, written again
            for (_, ch), v in plan.items():
                assert abs(qdac.channels[ch - 1].setpoint_v - v) < 1e-5
            assert [e["instrument"] for e in wrapped.faults.entries] == ["qdac"]

        asyncio.run(run())
    finally:
        asyncio.run(sysb.close())
        bench.stop()


def test_committed_example_calibration_is_the_truth_answer_key() -> None:
    from bench_system_helpers import truth_calibration

    bench = EmulatedBench.from_file(BENCH, virtual=True)
    fresh = truth_calibration(bench).model_dump()
    assert CalibrationFile.read(CALIBRATION).model_dump() == fresh


def test_calibration_of_other_instruments_is_refused_and_old_file_warned() -> None:
    from physlearn.calibration.schema import StaleCalibrationWarning
    from physlearn.errors import CalibrationError

    bench, sysb = make()
    try:

        async def connect(s: BenchSystem) -> None:
            await s.connect()

        sysb.options = BenchOptions(safety={"max_response": 3.0}, calibration_max_age_days=30.0)
        with pytest.warns(StaleCalibrationWarning):
            asyncio.run(connect(sysb))
        cal = CalibrationFile.read(CALIBRATION)
        ident = cal.instruments["scope2"].model_copy(update={"serial": "DS1ZA999"})
        other = cal.model_copy(update={"instruments": {**cal.instruments, "scope2": ident}})
        s2 = BenchSystem(
            bench.config,
            other,
            xor_spec(),
            TwinClock(bench.control),
            BenchOptions(safety={"max_response": 3.0}, calibration_max_age_days=None),
            resources=bench.resources(),
        )
        with pytest.raises(CalibrationError, match=r"scope2.*DS1ZA999"):
            asyncio.run(connect(s2))

        async def close_both() -> None:
            await sysb.close()
            await s2.close()

        asyncio.run(close_both())
    finally:
        bench.stop()
