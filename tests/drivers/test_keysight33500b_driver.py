"""The 33500B driver against its emulator over TCP and in memory; limits; arbs; real voltages."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from physlearn.drivers.keysight33500b import (
    Keysight33500B,
    Keysight33500BConfig,
    plan_arb,
    quantise_frequency,
)
from physlearn.drivers.link import TransportSettings
from physlearn.errors import ConfigError, InstrumentCommandError, LimitError
from physlearn.simulators.clock import VirtualClock
from physlearn.simulators.instruments.keysight33500b import Keysight33500BEmulator
from physlearn.simulators.instruments.transports import InMemoryServer
from physlearn.spec.limits import OutputLimits, VoltageLimit

pytestmark = pytest.mark.timeout(60)


def driver(resource: str, *, limit_v: float = 3.0, backend: str = "pyvisa") -> Keysight33500B:
    return Keysight33500B(
        Keysight33500BConfig(
            name="awg",
            transport=TransportSettings(
                resource=resource, backend=backend, timeout_s=1.0, reconnect_backoff_s=0.01
            ),
            limits=OutputLimits(
                instrument="awg", default=VoltageLimit(min_v=-limit_v, max_v=limit_v)
            ),
        )
    )


def record_replies(emulator: Keysight33500BEmulator) -> list[tuple[bytes, bytes]]:
    log: list[tuple[bytes, bytes]] = []
    original = emulator.process

    def process(message: bytes) -> bytes:
        reply = original(message)
        log.append((message, reply))
        return reply

    emulator.process = process
    return log


def nudge_samples(n: int) -> np.ndarray:
    x = np.arange(n) / n
    # 0.3 + ... puts DAC codes such as 10 (0x000A) into the block: newline bytes in the payload.
    return 0.3 * np.sin(2 * np.pi * x) ** 3 + 0.05 * np.cos(6 * np.pi * x) + 0.01


async def _sequence(gen: Keysight33500B, clock: VirtualClock) -> list[Any]:
    out: list[Any] = []
    async with gen:
        out.append(gen.identity)
        await gen.set_load(2, math.inf)
        f_hz = await gen.set_sine(1, 1234.5678901, amplitude_v=0.7, offset_v=0.1, phase_rad=0.3)
        out.append(f_hz)
        timing = plan_arb(f_hz, n_periods=2, points_per_period=64)
        info = await gen.upload_arb(
            2, "nudge", nudge_samples(timing.n_points), timing.sample_rate_hz
        )
        out.append((info.n_points, info.amplitude_v, info.offset_v, info.codes.tolist()))
        await gen.play_arb(2, "NUDGE")
        await gen.combine(1, 2)
        clock.advance(0.01)
        await gen.sync_phases()
        await gen.set_sync(True, 1)
        await gen.set_reference("EXT", output_on=False)
        await gen.output(1, True)
        for channel in (1, 2):
            out.append(vars(await gen.get_settings(channel)))
        out.append(
            [
                await gen.get_frequency(1),
                await gen.get_amplitude(1),
                await gen.get_offset(1),
                await gen.get_phase(1),
                await gen.get_function(2),
                await gen.get_output(1),
                await gen.get_load(2),
                await gen.get_combine(1),
                await gen.get_arb(2),
                await gen.get_sample_rate(2),
                await gen.get_sync(),
                await gen.get_reference(),
            ]
        )
        await gen.safe_state()
        out.append([await gen.get_output(1), await gen.get_output(2)])
    return out


@pytest.mark.timeout(30)
def test_same_sequence_same_bytes_and_numbers_over_tcp_and_memory(serve: Any) -> None:
    results = {}
    emulators = {}
    for kind in ("memory", "tcp"):
        clock = VirtualClock()
        emulator = Keysight33500BEmulator(clock)
        log = record_replies(emulator)
        served = serve(emulator, kind)
        numbers = asyncio.run(_sequence(driver(served.resource, backend=served.backend), clock))
        results[kind] = (numbers, log)
        emulators[kind] = emulator
    numbers, log = results["memory"]
    assert results["tcp"][0] == numbers
    assert results["tcp"][1] == log
    assert any(b"\n" in message for message, _ in log)  # a block carried newline bytes
    assert numbers[1] == quantise_frequency(1234.5678901) == pytest.approx(1234.56789)
    settings1, settings2 = numbers[3], numbers[4]
    assert settings1["amplitude_v"] == pytest.approx(0.7, rel=1e-12)
    assert settings1["offset_v"] == pytest.approx(0.1, rel=1e-12)
    assert settings1["phase_rad"] == pytest.approx(0.3, rel=1e-12)
    assert settings1["combine_feed"] == 2 and settings1["output_on"] is True
    assert settings2["function"] == "ARB" and settings2["arb_name"] == "NUDGE"
    assert settings2["load_ohm"] == math.inf and settings2["arb_filter"] == "OFF"
    assert settings2["sample_rate_hz"] == pytest.approx(64 * numbers[1], rel=1e-15)
    assert numbers[5][10] == (True, 1) and numbers[5][11] == ("EXT", "INT", False)
    assert numbers[-1] == [False, False]
    checks = [reply for message, reply in log if message.upper().startswith(b"SYST:ERR")]
    assert checks and all(reply == b'+0,"No error"\n' for reply in checks)


def test_real_voltages_sine_plus_arb_on_one_output() -> None:
    clock = VirtualClock()
    emulator = Keysight33500BEmulator(clock)

    async def go() -> tuple[float, Any]:
        with InMemoryServer(emulator, name="awg-real") as server:
            async with driver(server.resource_string) as gen:
                f_hz = await gen.set_sine(1, 1000.0, amplitude_v=1.2, offset_v=-0.2, phase_rad=1.0)
                timing = plan_arb(f_hz, n_periods=3, points_per_period=50)
                samples = nudge_samples(timing.n_points)
                info = await gen.upload_arb(2, "n1", samples, timing.sample_rate_hz)
                await gen.play_arb(2, "n1")
                await gen.combine(1, 2)
                clock.advance(0.37)
                await gen.sync_phases()
                await gen.output(1, True)
                return f_hz, (timing, info, samples)

    f_hz, (timing, info, samples) = asyncio.run(go())
    assert timing.period_s == pytest.approx(3 / f_hz, rel=1e-15)
    assert np.max(np.abs(info.samples_v - samples)) <= info.step_v / 2 + 1e-15
    assert np.max(np.abs(info.codes)) == 32767
    t0 = emulator.sync_phase_origin_s()
    t = t0 + (np.arange(2 * timing.n_points) + 0.5) / timing.sample_rate_hz
    sine = -0.2 + 1.2 * np.sin(2 * np.pi * f_hz * (t - t0) + 1.0)
    expected = sine + info.samples_v[np.arange(t.size) % timing.n_points]
    np.testing.assert_allclose(emulator.output_voltage(1, t), expected, atol=1e-9)
    assert not np.any(emulator.output_voltage(2, t))  # output 2 stayed off


def test_plan_arb_fits_whole_periods_and_hardware_limits() -> None:
    timing = plan_arb(1e3 / 3, n_periods=7, points_per_period=100)
    assert timing.n_points == 700
    assert timing.period_s == pytest.approx(7 / quantise_frequency(1e3 / 3), rel=1e-15)
    fast = plan_arb(20e6, n_periods=1, points_per_period=1000)
    assert fast.points_per_period == 12 and fast.sample_rate_hz <= 250e6
    assert plan_arb(1.0, n_periods=3, points_per_period=1).n_points == 9  # at least 8 points
    with pytest.raises(LimitError):
        plan_arb(math.nan)
    with pytest.raises(LimitError, match="no arb"):
        plan_arb(1.0, n_periods=2_000_000)


def _received_levels(emulator: Keysight33500BEmulator) -> list[bytes]:
    """Setting commands that carry a level or arb data (queries excluded)."""
    return [m for m in emulator.received if b"VOLT " in m.upper() or b"DATA:ARB" in m.upper()]


def test_limits_refuse_before_any_write() -> None:
    emulator = Keysight33500BEmulator(VirtualClock())

    async def attempt(method: str, *args: Any, **kwargs: Any) -> None:
        async with driver(server.resource_string, limit_v=2.0) as gen:
            await getattr(gen, method)(*args, **kwargs)

    with InMemoryServer(emulator, name="awg-limits") as server:
        asyncio.run(attempt("set_sine", 1, 1e3, amplitude_v=1.4, offset_v=0.6))
        assert len(_received_levels(emulator)) == 1
        cases: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
            ("set_sine", (1, 1e3), {"amplitude_v": 1.4, "offset_v": 0.6000001}),
            ("set_sine", (1, 1e3), {"amplitude_v": math.nan}),
            ("set_sine", (1, math.inf), {"amplitude_v": 0.1}),
            ("set_sine", (1, 31e6), {"amplitude_v": 0.1}),
            ("set_sine", (1, 1e3), {"amplitude_v": 1e-4}),
            ("set_sine", (3, 1e3), {"amplitude_v": 0.1}),
            ("set_dc", (2, -2.5), {}),
            ("upload_arb", (2, "x", np.linspace(-2.1, 0.0, 16), 1e3), {}),
            ("upload_arb", (2, "x", np.full(16, np.inf), 1e3), {}),
            ("upload_arb", (2, "x", np.zeros(4), 1e3), {}),
            ("upload_arb", (2, "x", np.zeros(16), 1e12), {}),
            ("combine", (2, 1), {}),  # ch1 reaches 2.0 V, ch2's own sine adds 0.1 V
            ("combine", (1, 1), {}),
            ("set_load", (1, 0.5), {}),
        ]
        for method, args, kwargs in cases:
            with pytest.raises(LimitError):
                asyncio.run(attempt(method, *args, **kwargs))
        assert len(_received_levels(emulator)) == 1
        assert not any(b"COMB:FEED " in m or b"LOAD " in m for m in emulator.received)
        assert emulator.errors.pop() == (0, "No error")


def test_output_on_rechecks_state_left_by_someone_else() -> None:
    emulator = Keysight33500BEmulator(VirtualClock())
    emulator.process(b"sour1:volt 4")  # 8 Vpp real, outside ±2 V

    async def go() -> None:
        async with driver(server.resource_string, limit_v=2.0) as gen:
            await gen.output(2, True)
            await gen.output(1, True)

    with InMemoryServer(emulator, name="awg-recheck") as server:
        with pytest.raises(LimitError, match="channel 1"):
            asyncio.run(go())
    assert not emulator.channels[0].output_on and emulator.channels[1].output_on


def test_instrument_errors_and_arb_registry() -> None:
    emulator = Keysight33500BEmulator(VirtualClock())

    async def go() -> None:
        async with driver(server.resource_string) as gen:
            await gen.upload_arb(1, "a", np.linspace(0, 1, 8), 1e3)
            with pytest.raises(ConfigError, match="exists"):
                await gen.upload_arb(1, "A", np.linspace(0, 1, 8), 1e3)
            with pytest.raises(ConfigError, match="no arb"):
                await gen.play_arb(2, "a")
            await gen.clear_arbs(1)
            flat = await gen.upload_arb(1, "a", np.full(8, 0.25), 1e3)
            assert flat.offset_v == 0.25 and not np.any(flat.codes)
            with pytest.raises(InstrumentCommandError) as info:
                await gen.write("sour1:freq 40e6")
            assert info.value.code == -222
            assert info.value.error_message == "Data out of range;value clipped to upper limit"

    with InMemoryServer(emulator, name="awg-errors") as server:
        asyncio.run(go())


_volts = st.one_of(
    st.floats(min_value=-4.0, max_value=4.0),
    st.sampled_from([math.nan, math.inf, -math.inf, 1.0, 1.0000000000000002, 0.0]),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(amplitude_v=_volts, offset_v=_volts, load=st.sampled_from([50.0, 1e3, math.inf]))
def test_property_out_of_range_values_never_reach_the_instrument(
    amplitude_v: float, offset_v: float, load: float
) -> None:
    emulator = Keysight33500BEmulator(VirtualClock())
    emulator.process(b"outp1:load " + (b"inf" if math.isinf(load) else repr(load).encode()))
    server = InMemoryServer(emulator, name=f"awg-prop-{id(emulator)}")

    async def go() -> None:
        async with driver(server.resource_string, limit_v=2.0) as gen:
            await gen.set_sine(1, 1e3, amplitude_v=amplitude_v, offset_v=offset_v)

    allowed = (
        math.isfinite(amplitude_v)
        and math.isfinite(offset_v)
        and 1e-3 <= amplitude_v
        and abs(offset_v) + amplitude_v <= 2.0
    )
    with server:
        if allowed:
            asyncio.run(go())
            t = np.linspace(0.0, 1e-3, 41)
            emulator.process(b"outp1 on;:phas:sync")
            v = emulator.output_voltage(1, t)
            expected = offset_v + amplitude_v * np.sin(2 * np.pi * 1e3 * t)
            np.testing.assert_allclose(v, expected, atol=1e-12)
        else:
            with pytest.raises(LimitError):
                asyncio.run(go())
            assert not _received_levels(emulator)
            assert emulator.channels[0].amplitude_emf_vpp == 0.2
