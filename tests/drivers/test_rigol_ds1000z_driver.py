"""The DS1000Z driver against its emulator over TCP and in memory; scaling, clipping, limits."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from instrument_helpers import Served
from numpy.typing import NDArray

from physlearn.drivers.link import TransportSettings
from physlearn.drivers.rigol_ds1000z import Preamble, RigolDs1000z, RigolDs1000zConfig
from physlearn.errors import InstrumentCommandError, InstrumentTimeoutError, LimitError
from physlearn.simulators.clock import VirtualClock
from physlearn.simulators.instruments.rigol_ds1000z import RigolDs1000zEmulator

pytestmark = pytest.mark.timeout(60)


def source(channel: int, t_s: NDArray[np.float64]) -> NDArray[np.float64]:
    """CH1 0.3 V sine, CH2 the same delayed by 100 µs, CH3 a 2 V sine; EXT a 1 V sync sine."""
    w = 2 * np.pi * 1e3
    if channel == 1:
        return 0.3 * np.sin(w * t_s)
    if channel == 2:
        return 0.3 * np.sin(w * (t_s - 1e-4))
    if channel == 3:
        return 2.0 * np.sin(w * t_s)
    return np.sin(w * t_s)


def driver(served: Served, *, check_errors: bool = True) -> RigolDs1000z:
    return RigolDs1000z(
        RigolDs1000zConfig(
            name="scope",
            transport=TransportSettings(resource=served.resource, timeout_s=2.0),
            check_errors=check_errors,
        )
    )


def make_emulator(clock: VirtualClock) -> RigolDs1000zEmulator:
    return RigolDs1000zEmulator(
        clock, source=source, rng=np.random.default_rng(11), adc_noise_v=2e-3
    )


def record(emulator: RigolDs1000zEmulator) -> list[tuple[bytes, bytes]]:
    log: list[tuple[bytes, bytes]] = []
    original = emulator.process

    def process(message: bytes) -> bytes:
        reply = original(message)
        log.append((message, reply))
        return reply

    emulator.process = process
    return log


async def _sequence(scope: RigolDs1000z, clock: VirtualClock) -> list[Any]:
    async def sleep(dt_s: float) -> None:
        clock.advance(dt_s)

    out: list[Any] = []
    async with scope:
        out.append(scope.identity)
        for ch in (1, 2):
            out.append(await scope.configure_channel(ch, 0.1, 0.0, "DC", probe=1))
        out.append(await scope.configure_channel(3, 0.2, 0.05, "DC", probe=1))
        out.append(await scope.set_timebase(100e-6, 0.0))
        out.append(await scope.set_acquisition("AVERages", averages=4))
        out.append(await scope.set_trigger_edge("EXT", level_v=0.0, slope="POS"))
        await scope.single()
        assert await scope.trigger_status() == "WAIT"
        await scope.wait_triggered(timeout_s=0.1, poll_s=1e-3, sleep=sleep)
        waves = await scope.read_channels([1, 2, 3])
        for fmt in ("WORD", "ASCii"):
            waves_fmt = await scope.read_channels([1], fmt=fmt)
            out.append(waves_fmt[1].volts.tolist())
        for w in waves.values():
            out.append((w.t_s.tolist(), w.volts.tolist(), w.clipped, w.preamble))
        out.append(await scope.get_channel(3))
        out.append(await scope.get_acquisition())
        out.append(await scope.get_trigger())
        out.append(await scope.get_timebase())
    return out


@pytest.mark.timeout(60)
def test_same_sequence_same_bytes_and_numbers_over_tcp_and_memory(serve: Any) -> None:
    results = {}
    for kind in ("memory", "tcp"):
        clock = VirtualClock()
        emulator = make_emulator(clock)
        log = record(emulator)
        results[kind] = (asyncio.run(_sequence(driver(serve(emulator, kind)), clock)), log)
    assert results["tcp"][0] == results["memory"][0]
    assert results["tcp"][1] == results["memory"][1]
    out = results["memory"][0]
    assert out[6].source == "EXT" and out[6].slope == "POS" and out[6].sweep == "AUTO"
    word_volts, ascii_volts = out[7], out[8]
    (t1, v1, clip1, pre1), (_, v2, clip2, _), (_, v3, clip3, _) = out[9], out[10], out[11]
    assert out[1].scale_v_per_div == 0.1 and out[3].offset_v == 0.05
    assert out[4] == (1e-4, 0.0)
    assert out[5].kind == "AVER" and out[5].averages == 4
    assert pre1.count == 4 and pre1.points == 1200
    np.testing.assert_allclose(word_volts, v1, atol=1e-12)
    np.testing.assert_allclose(ascii_volts, v1, atol=1e-9)
    t = np.asarray(t1)
    assert t[600] == pytest.approx(0.0, abs=1e-12) and t[1] - t[0] == pytest.approx(1e-6)
    # The trigger is the EXT sine's rising zero crossing: CH1 ≈ 0.3 sin(ωt), CH2 100 µs later.
    lsb = 0.1 / 25
    noise = 2e-3 / 2  # σ/√4
    assert np.max(np.abs(np.asarray(v1) - 0.3 * np.sin(2e3 * np.pi * t))) < lsb + 5 * noise
    assert np.max(np.abs(np.asarray(v2) - 0.3 * np.sin(2e3 * np.pi * (t - 1e-4)))) < lsb + 5 * noise
    assert not clip1 and not clip2 and clip3  # CH3: 2 V on 0.2 V/div clips
    assert min(v3) == pytest.approx((0 - round(0.05 / 0.008) - 127) * 0.008)


def test_next_query_after_a_block_is_in_sync_over_tcp(serve: Any, clock: VirtualClock) -> None:
    served = serve(make_emulator(clock), "tcp")

    async def go() -> list[str]:
        async with driver(served) as scope:
            await scope.set_trigger_edge("EXT", 0.0)
            await scope.single()
            clock.advance(0.01)
            replies = []
            for fmt in ("BYTE", "WORD", "ASCii"):
                await scope.read_waveform(1, fmt)
                replies.append(await scope.query("*IDN?"))
            return replies

    assert all(r.startswith("RIGOL TECHNOLOGIES,DS1054Z") for r in asyncio.run(go()))


def test_wait_triggered_times_out_on_the_controller_clock(serve: Any, clock: VirtualClock) -> None:
    served = serve(make_emulator(clock), "memory")
    sleeps: list[float] = []

    async def sleep(dt_s: float) -> None:
        sleeps.append(dt_s)
        clock.advance(dt_s)

    async def go() -> None:
        async with driver(served) as scope:
            await scope.set_trigger_edge("EXT", level_v=4.5)  # the 1 V sync never gets there
            await scope.single()
            await scope.wait_triggered(timeout_s=0.05, poll_s=0.01, sleep=sleep)

    with pytest.raises(InstrumentTimeoutError, match="trigger status WAIT"):
        asyncio.run(go())
    assert sum(sleeps) == pytest.approx(0.05)


def test_instrument_range_errors_are_reported(serve: Any, clock: VirtualClock) -> None:
    served = serve(make_emulator(clock), "memory")

    async def go() -> None:
        async with driver(served) as scope:
            await scope.set_timebase(1e3)

    with pytest.raises(InstrumentCommandError) as info:
        asyncio.run(go())
    assert info.value.code == -222


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("configure_channel", (1, math.nan)),
        ("configure_channel", (1, 0.1, math.inf)),
        ("configure_channel", (1, 0.1, 0.0, "DC", math.nan)),
        ("set_timebase", (math.inf,)),
        ("set_timebase", (1e-3, math.nan)),
        ("set_trigger_edge", (1, math.nan)),
        ("configure_channel", (5, 0.1)),
        ("set_acquisition", ("AVERages", 4096)),
    ],
)
def test_non_finite_and_bad_settings_never_reach_the_instrument(
    serve: Any, clock: VirtualClock, method: str, args: tuple[Any, ...]
) -> None:
    emulator = make_emulator(clock)
    served = serve(emulator, "memory")

    async def go() -> None:
        async with driver(served) as scope:
            await getattr(scope, method)(*args)

    with pytest.raises(LimitError):
        asyncio.run(go())
    assert list(emulator.received) == [b"*IDN?"]


@settings(max_examples=200, deadline=None)
@given(
    codes=st.lists(st.integers(0, 255), min_size=1, max_size=50),
    yinc=st.floats(1e-6, 10.0),
    yorg=st.integers(-10_000, 10_000),
    xinc=st.floats(1e-10, 1.0),
    xorg=st.floats(-100.0, 100.0),
)
def test_property_preamble_scaling_round_trip(
    codes: list[int], yinc: float, yorg: int, xinc: float, xorg: float
) -> None:
    text = f"0,0,{len(codes)},1,{xinc:e},{xorg:e},0,{yinc:e},{yorg},127"
    pre = Preamble.parse(text)
    c = np.asarray(codes, dtype=np.float64)
    volts = pre.volts(c)
    np.testing.assert_array_equal(pre.codes(volts), c)
    # What ASCii transfers (%e, 7 significant digits) still maps back to the exact codes.
    sent = np.array([float(f"{v:e}") for v in volts])
    np.testing.assert_array_equal(pre.codes(sent), c)
    t = pre.times(0, len(codes))
    assert t[0] == float(f"{xorg:e}")
    if len(codes) > 1:
        assert t[1] - t[0] == pytest.approx(float(f"{xinc:e}"), rel=1e-9, abs=1e-12)
