"""SR830 driver over a real pty (pyvisa ASRL and pyserial) and SR860 driver over TCP, each also
in memory: identical bytes and numbers; limits refused before any write; error reporting."""

from __future__ import annotations

import asyncio
import cmath
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from physlearn.drivers.link import TransportSettings
from physlearn.drivers.srs_lockin import (
    SR830_SENSITIVITIES_V,
    Sr830,
    Sr830Config,
    Sr860,
    Sr860Config,
    SrsLockin,
    settle_multiple,
    smallest_at_least,
)
from physlearn.errors import InstrumentCommandError, LimitError
from physlearn.simulators.clock import VirtualClock
from physlearn.simulators.instruments.srs_lockin import (
    Sr830Emulator,
    Sr860Emulator,
    SrsLockinEmulator,
)
from physlearn.simulators.instruments.transports import InMemoryServer

pytestmark = pytest.mark.timeout(60)

F_HZ = 1000.0
AMPLITUDE_V = 3e-3
THETA_S = 0.9


def source(t: NDArray[np.float64]) -> NDArray[np.float64]:
    return AMPLITUDE_V * np.sin(2 * np.pi * F_HZ * t + THETA_S)


def make_emulator(model: str, clock: VirtualClock, seed: int = 7) -> SrsLockinEmulator:
    cls = Sr830Emulator if model == "sr830" else Sr860Emulator
    return cls(
        clock,
        source=source,
        reference=lambda: (F_HZ, 0.0),
        rng=np.random.default_rng(seed),
        input_noise_v_per_rthz=2e-8,
    )


def make_driver(model: str, resource: str, backend: str = "pyvisa") -> SrsLockin:
    if model == "sr830":
        return Sr830(
            Sr830Config(
                name="lockin1",
                transport=TransportSettings(
                    resource=resource,
                    backend=backend,
                    baud_rate=9600,
                    read_termination="\r",
                    write_termination="\r",
                    timeout_s=2.0,
                ),
            )
        )
    return Sr860(
        Sr860Config(
            name="lockin2",
            transport=TransportSettings(resource=resource, backend=backend, timeout_s=2.0),
        )
    )


def record(emulator: SrsLockinEmulator) -> list[tuple[bytes, bytes]]:
    log: list[tuple[bytes, bytes]] = []
    original = emulator.process

    def process(message: bytes) -> bytes:
        reply = original(message)
        log.append((message, reply))
        return reply

    emulator.process = process
    return log


async def sequence(driver: SrsLockin, clock: VirtualClock) -> list[Any]:
    out: list[Any] = []
    async with driver:
        out.append(driver.identity)
        await driver.reset()
        await driver.set_reference_external()
        await driver.set_harmonic(1)
        await driver.set_phase(0.5)
        out.append(await driver.set_sensitivity(3e-3))
        out.append(await driver.set_time_constant(0.02, slope_db_per_oct=24))
        await driver.set_input_coupling("dc")
        await driver.set_sync_filter(False)
        if isinstance(driver, Sr830):
            await driver.set_reserve("low_noise")
            out.append(await driver.get_reserve())
        else:
            out.append(await driver.set_input_range(0.01))
            out.append(await driver.get_input_range_v())
        out.append(await driver.is_reference_external())
        out.append(await driver.get_reference_frequency_hz())
        out.append(await driver.get_harmonic())
        out.append(await driver.get_phase_rad())
        out.append(await driver.get_sensitivity_v())
        out.append(await driver.get_sensitivity_index())
        out.append(await driver.get_time_constant_s())
        out.append(await driver.get_filter_slope_db_per_oct())
        out.append(await driver.get_input_coupling())
        out.append(await driver.get_input_config())
        out.append(await driver.get_sync_filter())
        settle_s = await driver.auto_settle_time_s()
        out.append(settle_s)
        out.append(await driver.read_xy())  # unsettled: right after the changes
        clock.advance(settle_s)
        out.append(await driver.read_xy())
        out.append(await driver.snap("x", "y", "theta"))
        out.append(await driver.read("r"))
        out.append(await driver.read("frequency"))
        out.append(await driver.status())
        out.append(await driver.overloaded())
    return out


def run_on(model: str, serve: Any, kind: str) -> tuple[list[Any], list[tuple[bytes, bytes]]]:
    clock = VirtualClock()
    emulator = make_emulator(model, clock)
    log = record(emulator)
    served = serve(emulator, kind)
    numbers = asyncio.run(sequence(make_driver(model, served.resource, served.backend), clock))
    return numbers, log


@pytest.mark.timeout(40)
@pytest.mark.parametrize(
    ("model", "kinds"),
    [("sr830", ("memory", "pty-visa", "pty-serial")), ("sr860", ("memory", "tcp"))],
)
def test_same_sequence_gives_identical_bytes_and_numbers(
    serve: Any, model: str, kinds: tuple[str, ...]
) -> None:
    results = {kind: run_on(model, serve, kind) for kind in kinds}
    numbers, log = results["memory"]
    for kind in kinds:
        assert results[kind][0] == numbers, kind
        assert results[kind][1] == log, kind
    term = b"\r" if model == "sr830" else b"\n"
    assert all(reply.endswith(term) for _, reply in log if reply)
    assert numbers[1] == 5e-3 and numbers[2] == 0.03  # smallest table entries ≥ the request
    settled = numbers[-6]
    expected = AMPLITUDE_V / math.sqrt(2) * cmath.exp(1j * (THETA_S - 0.5))
    sigma = 2e-8 * math.sqrt(5 / (64 * 0.03))  # e_n·√ENBW at 24 dB/oct
    assert abs(settled - expected) < 6 * sigma + 1e-4 * abs(expected)
    assert abs(numbers[-7] - expected) > 0.1 * abs(expected)  # read before settling
    x, y, theta = numbers[-5]
    assert theta == pytest.approx(cmath.phase(complex(x, y)), abs=1e-4)
    assert numbers[-4] == pytest.approx(abs(expected), rel=1e-3)
    assert numbers[-3] == F_HZ
    assert numbers[-8] == pytest.approx(settle_multiple(4) * 0.03)
    assert numbers[-2].raw == 0 and numbers[-1] is False


def test_sr830_connect_selects_rs232_replies(serve: Any) -> None:
    emulator = make_emulator("sr830", VirtualClock())
    emulator.process(b"OUTX 1")  # left on GPIB by someone else
    served = serve(emulator, "memory")
    driver = make_driver("sr830", served.resource)

    async def go() -> str:
        async with driver:
            return driver.identity

    assert asyncio.run(go()).startswith("Stanford_Research_Systems,SR830,s/n")
    assert list(emulator.received)[-2:] == [b"OUTX 0", b"*IDN?"]


@pytest.mark.parametrize("model", ["sr830", "sr860"])
def test_out_of_table_and_non_finite_values_never_reach_the_instrument(
    serve: Any, model: str
) -> None:
    emulator = make_emulator(model, VirtualClock())
    served = serve(emulator, "memory")
    driver = make_driver(model, served.resource)
    bad_calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("set_sensitivity", (math.nan,), {}),
        ("set_sensitivity", (2.0,), {}),
        ("set_sensitivity", (-1e-3,), {}),
        ("set_sensitivity", (3e-3,), {"exact": True}),
        ("set_time_constant", (math.inf,), {}),
        ("set_time_constant", (1e5,), {}),
        ("set_time_constant", (0.1,), {"slope_db_per_oct": 9}),
        ("set_phase", (math.nan,), {}),
        ("set_harmonic", (0,), {}),
        ("set_harmonic", (2.0,), {}),
        ("set_reference_internal", (math.inf,), {}),
        ("set_reference_internal", (1e6,), {}),
        ("set_filter_slope", (30,), {}),
        ("set_input_coupling", ("gnd",), {}),
        ("set_input_config", ("b",), {}),
        ("snap", ("x",), {}),
    ]

    async def go() -> int:
        async with driver:
            before = len(emulator.received)
            for name, args, kwargs in bad_calls:
                with pytest.raises(LimitError):
                    await getattr(driver, name)(*args, **kwargs)
            return len(emulator.received) - before

    assert asyncio.run(go()) == 0


def test_instrument_refusal_is_reported_with_the_status_bit(serve: Any) -> None:
    emulator = make_emulator("sr830", VirtualClock())
    served = serve(emulator, "memory")

    async def go() -> None:
        async with make_driver("sr830", served.resource) as driver:
            assert isinstance(driver, Sr830)
            await driver.set_reference_internal(1000.0)
            await driver.set_harmonic(200)  # 200 kHz > 102 kHz: the instrument refuses

    with pytest.raises(InstrumentCommandError, match="execution error") as info:
        asyncio.run(go())
    assert info.value.code == 16 and "HARM 200" in info.value.command


def test_overload_is_reported_and_cleared(serve: Any) -> None:
    clock = VirtualClock()
    emulator = make_emulator("sr860", clock)
    served = serve(emulator, "memory")

    async def go() -> tuple[bool, bool, complex]:
        async with make_driver("sr860", served.resource) as driver:
            await driver.set_reference_external()
            await driver.set_sensitivity(1e-3)  # 2.1 mV rms signal: X saturates at 1 mV
            await driver.set_time_constant(0.01)
            clock.advance(0.2)
            z = await driver.read_xy()
            first = await driver.overloaded()
            await driver.set_sensitivity(1e-2)
            clock.advance(0.2)
            return first, await driver.overloaded(), z

    first, second, z = asyncio.run(go())
    assert first and not second
    assert max(abs(z.real), abs(z.imag)) == pytest.approx(1e-3, rel=1e-6)


def test_settle_multiple_and_table_choice() -> None:
    for n, multiple in ((1, 9.21), (2, 11.76), (3, 13.93), (4, 15.91)):
        assert settle_multiple(n) == pytest.approx(multiple, abs=0.05)
    assert settle_multiple(2, 1e-2) < settle_multiple(2, 1e-4)
    with pytest.raises(LimitError):
        settle_multiple(5)
    assert smallest_at_least(1e-3, SR830_SENSITIVITIES_V, "s") == 17
    assert smallest_at_least(1.0000000001e-3, SR830_SENSITIVITIES_V, "s") == 17
    assert smallest_at_least(1.01e-3, SR830_SENSITIVITIES_V, "s") == 18


_requests = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([*SR830_SENSITIVITIES_V, 1e-9, 1.0000001, 0.0, -0.0]),
)


@settings(max_examples=60, deadline=None)
@given(request=_requests)
def test_property_sensitivity_requests(request: float) -> None:
    emulator = Sr830Emulator(VirtualClock())
    server = InMemoryServer(emulator, name=f"srs-sens-{id(emulator)}")
    with server:
        driver = make_driver("sr830", server.resource_string)

        async def go() -> float:
            async with driver:
                return await driver.set_sensitivity(request)

        allowed = math.isfinite(request) and 0.0 < request <= 1.0 * (1 + 1e-9)
        if allowed:
            chosen = asyncio.run(go())
            assert chosen >= request * (1 - 1e-9)
            assert all(s < request * (1 - 1e-9) for s in SR830_SENSITIVITIES_V if s < chosen)
            assert emulator.full_scale == chosen
        else:
            with pytest.raises(LimitError, match="sensitivity"):
                asyncio.run(go())
            assert not any(m.startswith(b"SENS") for m in emulator.received)
