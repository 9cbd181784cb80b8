"""The QDAC-II driver against its emulator over every transport; limits; identity; errors."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from instrument_helpers import TRANSPORTS, qdac_driver

from physlearn.errors import InstrumentCommandError, InstrumentConnectionError, LimitError
from physlearn.simulators.clock import VirtualClock
from physlearn.simulators.instruments.qdac2 import Qdac2Emulator
from physlearn.simulators.instruments.transports import InMemoryServer
from physlearn.spec.limits import OutputLimits, VoltageLimit

pytestmark = pytest.mark.timeout(60)


def record_replies(emulator: Qdac2Emulator) -> list[tuple[bytes, bytes]]:
    """Wrap `process` so that every (message, reply) pair is recorded."""
    log: list[tuple[bytes, bytes]] = []
    original = emulator.process

    def process(message: bytes) -> bytes:
        reply = original(message)
        log.append((message, reply))
        return reply

    emulator.process = process
    return log


async def _sequence(driver: Any, clock: VirtualClock) -> list[Any]:
    out: list[Any] = []
    async with driver:
        out.append(driver.identity)
        await driver.set_range(3, "low")
        await driver.set_filter(3, "med")
        await driver.set_slew_rate(3, 2.0)
        await driver.set_voltage(3, -1.234567891)
        await driver.set_voltages({1: 0.1, 2: 1e-6, 24: -1.5})
        out.append(await driver.get_voltage(3))
        out.append(await driver.get_output_voltage(3))
        clock.advance(0.3)
        out.append(await driver.get_output_voltage(3))
        out.append((await driver.get_voltages()).tolist())
        out.append(await driver.get_range(3))
        out.append(await driver.get_filter(3))
        out.append(await driver.get_slew_rate(3))
        await driver.safe_state()
        out.append((await driver.get_voltages([1, 3, 24])).tolist())
    return out


@pytest.mark.timeout(30)
def test_same_sequence_same_bytes_and_numbers_over_every_transport(serve: Any) -> None:
    results = {}
    for kind in TRANSPORTS:
        clock = VirtualClock()
        emulator = Qdac2Emulator(clock)
        log = record_replies(emulator)
        served = serve(emulator, kind)
        numbers = asyncio.run(_sequence(qdac_driver(served), clock))
        results[kind] = (numbers, log)
    reference_numbers, reference_log = results["memory"]
    assert reference_numbers[1] == pytest.approx(-1.234567891, abs=1e-6)
    assert reference_numbers[3] == pytest.approx(-0.6, abs=1e-6)  # 2 V/s for 0.3 s
    assert reference_numbers[-1] == [0.0, 0.0, 0.0]
    for kind in TRANSPORTS:
        assert results[kind][0] == reference_numbers, kind
        assert results[kind][1] == reference_log, kind


def test_identity_mismatch_names_the_resource(serve: Any, qdac_emulator: Qdac2Emulator) -> None:
    served = serve(qdac_emulator, "memory")
    driver = qdac_driver(served, idn_pattern=r"^Keysight")

    with pytest.raises(InstrumentConnectionError, match=r"MEM::test\d+::INSTR.*QDevil, QDAC-II"):
        asyncio.run(driver.connect())


def test_instrument_error_after_write_carries_code_and_command(
    serve: Any, qdac_emulator: Qdac2Emulator
) -> None:
    served = serve(qdac_emulator, "memory")
    driver = qdac_driver(served, limit_v=5.0)

    async def go() -> None:
        async with driver:
            await driver.set_range(1, "low")
            await driver.set_voltage(1, 1.9)
            await driver.set_voltage(1, 2.5)  # inside our limit, outside the low range

    with pytest.raises(InstrumentCommandError) as info:
        asyncio.run(go())
    assert info.value.code == -222
    assert info.value.error_message == "Data out of range"
    assert "sour1:volt 2.5" in info.value.command
    assert info.value.resource == served.resource


def test_injected_error_queue_entry_is_reported(serve: Any, qdac_emulator: Qdac2Emulator) -> None:
    served = serve(qdac_emulator, "memory")

    async def go() -> None:
        async with qdac_driver(served) as driver:
            qdac_emulator.push_error(-300, "injected")
            await driver.set_voltage(1, 0.5)

    with pytest.raises(InstrumentCommandError, match="-300") as info:
        asyncio.run(go())
    assert info.value.error_message == "Device-specific error;injected"


def test_errors_not_checked_when_disabled(serve: Any, qdac_emulator: Qdac2Emulator) -> None:
    served = serve(qdac_emulator, "memory")

    async def go() -> list[tuple[int, str]]:
        async with qdac_driver(served, check_errors=False, limit_v=5.0) as driver:
            await driver.set_voltage(1, 2.5)
            await driver.set_range(1, "low")  # conflicts with 2.5 V: -221
            return await driver.read_errors()

    assert asyncio.run(go()) == [
        (-221, "Settings conflict;output voltage outside the requested range")
    ]


# -- limits -------------------------------------------------------------------------------------


def test_limit_model_validation() -> None:
    with pytest.raises(ValueError):
        VoltageLimit(min_v=1.0, max_v=-1.0)
    with pytest.raises(ValueError):
        VoltageLimit(min_v=-math.inf, max_v=1.0)
    limits = OutputLimits(instrument="dac", channels={"2": {"min_v": 0, "max_v": 1}})
    assert limits.check(2, 0.5) == 0.5
    with pytest.raises(LimitError, match="channel 3 has no configured limit"):
        limits.check(3, 0.0)
    with pytest.raises(
        LimitError, match=r"dac: channel 2: value 1.5 V outside the limit \[0.0, 1.0\]"
    ):
        limits.check(2, 1.5)
    with pytest.raises(LimitError, match="not finite"):
        limits.check(2, math.nan)


_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([1.5000000000000002, -1.5000000000000002, 1.5, -1.5, 0.0, -0.0]),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(channel=st.integers(min_value=1, max_value=24), value=_values)
def test_property_out_of_range_values_never_reach_the_instrument(
    channel: int, value: float
) -> None:
    emulator = Qdac2Emulator(VirtualClock())
    server = InMemoryServer(emulator, name=f"limits-{channel}-{id(emulator)}")
    with server:
        driver = qdac_driver(
            type("S", (), {"resource": server.resource_string, "backend": "pyvisa"})(),
            limit_v=1.5,
        )

        async def go() -> None:
            async with driver:
                await driver.set_voltage(channel, value)

        allowed = math.isfinite(value) and -1.5 <= value <= 1.5
        if allowed:
            asyncio.run(go())
            assert any(b":volt " in m for m in emulator.received)
            assert emulator.channels[channel - 1].setpoint_v == pytest.approx(value, abs=1e-6)
        else:
            with pytest.raises(LimitError, match=f"qdac: channel {channel}"):
                asyncio.run(go())
            assert not any(b"volt " in m for m in emulator.received)
            assert all(ch.setpoint_v == 0.0 for ch in emulator.channels)


def test_set_voltages_checks_all_before_writing_any(
    serve: Any, qdac_emulator: Qdac2Emulator
) -> None:
    served = serve(qdac_emulator, "memory")

    async def go() -> None:
        async with qdac_driver(served) as driver:
            await driver.set_voltages({1: 0.5, 2: 0.7, 3: 9.0})

    with pytest.raises(LimitError, match="channel 3"):
        asyncio.run(go())
    assert not any(b"volt " in m for m in qdac_emulator.received)


def test_bad_channel_and_slew_are_refused(serve: Any, qdac_emulator: Qdac2Emulator) -> None:
    served = serve(qdac_emulator, "memory")

    async def go(coro_name: str, *args: Any) -> None:
        async with qdac_driver(served) as driver:
            await getattr(driver, coro_name)(*args)

    with pytest.raises(LimitError, match=r"channels 1\.\.24"):
        asyncio.run(go("set_voltage", 25, 0.0))
    with pytest.raises(LimitError, match="slew rate"):
        asyncio.run(go("set_slew_rate", 1, math.inf))
    assert list(qdac_emulator.received).count(b"*IDN?") == 2
    assert len(qdac_emulator.received) == 2
