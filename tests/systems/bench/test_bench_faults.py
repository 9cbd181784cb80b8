"""Fault injection and bad input on every instrument of the emulated reference bench, through the
real drivers over the transport each instrument really uses (33522B, DS1054Z, SR860: TCP; SR830,
QDAC-II: pty), plus invalid/overload readings, lost DAC setpoints, vanished ports, and a
third-party pyvisa client of the free-running bench.

Every fault is armed on `bench.emulators[name].faults` (transport-level: delay, no reply,
dropped connection, garbled/truncated replies) or by the emulator's own hooks (`push_error`,
`inject_invalid_readings`, `inject_lia_status`, `lose_setpoints`). Each case asserts a clear
driver error within the configured timeout, and that the next exchange works again.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import pytest
import pyvisa
from bench_drivers import make_driver

from physlearn.drivers.keysight33500b import Keysight33500B
from physlearn.drivers.qdac2 import Qdac2
from physlearn.drivers.rigol_ds1000z import RigolDs1000z
from physlearn.drivers.scpi_instrument import ScpiInstrument
from physlearn.drivers.srs_lockin import SrsLockin
from physlearn.errors import (
    ConnectionLostError,
    InstrumentCommandError,
    InstrumentError,
    InstrumentProtocolError,
    InstrumentTimeoutError,
)
from physlearn.simulators.bench_twin import EmulatedBench, load_twin_config
from physlearn.simulators.instruments.qdac2 import quantise
from physlearn.spec.bench import BenchConfig

from test_bench_twin_helpers import EXAMPLE  # isort: skip

pytestmark = pytest.mark.timeout(60)

TIMEOUT_S = 0.25
SLACK_S = 1.0  # scheduling slack on a loaded CI machine: "nothing hangs past its timeout"
INSTRUMENTS = ("fgen", "scope", "lockin1", "lockin2", "qdac")
Probe = Callable[[Any], Awaitable[Any]]


def make_bench(**kwargs: Any) -> EmulatedBench:
    config = BenchConfig.load(EXAMPLE)
    return EmulatedBench(config, load_twin_config(config, str(EXAMPLE)), **kwargs)


@pytest.fixture(scope="module")
def served() -> Iterator[EmulatedBench]:
    bench = make_bench(virtual=True, seed=5)
    try:
        bench.serve(control=False)
        yield bench
    finally:
        bench.stop()


async def probe(driver: ScpiInstrument) -> Any:
    """One typed query of each instrument."""
    if isinstance(driver, Keysight33500B):
        return await driver.get_frequency(1)
    if isinstance(driver, RigolDs1000z):
        return await driver.trigger_status()
    if isinstance(driver, SrsLockin):
        return await driver.get_phase_rad()
    assert isinstance(driver, Qdac2)
    return await driver.get_voltage(1)


async def checked_write(driver: ScpiInstrument) -> None:
    """One typed setting of each instrument (each checks the instrument's error report)."""
    if isinstance(driver, Keysight33500B):
        await driver.set_sync(True, 1)
    elif isinstance(driver, RigolDs1000z):
        await driver.set_channel_display(2, True)
    elif isinstance(driver, SrsLockin):
        await driver.set_phase(0.0)
    else:
        assert isinstance(driver, Qdac2)
        await driver.set_voltage(5, 0.1)


async def timed(coro: Awaitable[Any]) -> float:
    start = time.monotonic()
    await coro
    return time.monotonic() - start


async def expect_error(
    exc: type[BaseException] | tuple[type[BaseException], ...], coro: Awaitable[Any], match: str
) -> BaseException:
    start = time.monotonic()
    with pytest.raises(exc, match=match) as info:
        await coro
    assert time.monotonic() - start < TIMEOUT_S + SLACK_S
    return info.value


@pytest.mark.parametrize("name", INSTRUMENTS)
def test_every_fault_on_every_instrument_gives_a_clear_error_within_the_timeout(
    served: EmulatedBench, name: str
) -> None:
    emulator = served.emulators[name]
    faults = emulator.faults
    resource = served.resources()[name]
    pty = resource.startswith("ASRL")
    scpi_error = emulator.model not in ("SR830", "SR860")

    async def go() -> None:
        async with make_driver(served.config, name, resource, timeout_s=TIMEOUT_S) as d:
            good = await probe(d)
            try:
                # delayed reply (late beyond the timeout): a timeout, then back in sync
                faults.delay_replies(3 * TIMEOUT_S, count=1)
                await expect_error(InstrumentTimeoutError, probe(d), f"no reply within {TIMEOUT_S}")
                await asyncio.sleep(3 * TIMEOUT_S)  # the late reply is discarded with the link
                assert await probe(d) == good
                # a short delay is only a delay
                faults.delay_replies(0.05, count=1)
                assert await probe(d) == good
                # no reply at all
                faults.suppress_replies(1)
                await expect_error(InstrumentTimeoutError, probe(d), "no reply")
                assert await probe(d) == good
                # dropped connection: TCP reconnects and retries; a serial line loses the message
                faults.drop_connection_after(0)
                if pty:
                    await expect_error(InstrumentTimeoutError, probe(d), "no reply")
                else:
                    before = d.transport.reconnects
                    assert await probe(d) == good
                    assert d.transport.reconnects == before + 1
                faults.drop_connection_after(2)  # after N answered messages
                for _ in range(4):
                    assert await probe(d) == good
                # garbled and truncated replies
                faults.garble_replies(1)
                await expect_error(InstrumentProtocolError, probe(d), "garbled reply")
                assert await probe(d) == good
                faults.truncate_replies(1)
                await expect_error(
                    (InstrumentProtocolError, InstrumentTimeoutError),
                    probe(d),
                    "truncated|no reply",
                )
                assert await probe(d) == good
                # an error-queue entry the commands did not cause
                if scpi_error:
                    emulator.push_error(-350)
                    err = await expect_error(InstrumentCommandError, checked_write(d), "-350")
                    assert isinstance(err, InstrumentCommandError) and err.code == -350
                else:
                    emulator.push_error(-200)  # the SRS lock-ins: the ESR execution-error bit
                    err = await expect_error(InstrumentCommandError, checked_write(d), "execution")
                    assert isinstance(err, InstrumentCommandError) and err.code == 16
                assert name in str(err)
                await checked_write(d)
                # malformed commands: the instrument's own error report, raised by the driver
                err = await expect_error(
                    InstrumentCommandError, d.write("FOO:BAR 1;*IDN"), "FOO:BAR"
                )
                assert isinstance(err, InstrumentCommandError)
                assert err.code == (-113 if scpi_error else 32)
                assert await probe(d) == good
            finally:
                faults.clear()

    asyncio.run(go())


def test_generator_blocks_with_wrong_length_headers(served: EmulatedBench) -> None:
    """Binary blocks whose header does not match the bytes sent, over the generator's TCP link.
    Too short: the bytes after the block are junk — the 33522B queues command errors, the
    driver raises them, the next command is in sync. Too long: the block swallows the next
    command, whose reply never comes — a clear timeout; the reconnect resynchronises."""
    resource = served.resources()["fgen"]
    payload = np.arange(8, dtype=">i2").tobytes()

    async def go() -> None:
        async with make_driver(served.config, "fgen", resource, timeout_s=TIMEOUT_S) as d:
            assert isinstance(d, Keysight33500B)
            await d.transport.write_raw(b"SOUR1:DATA:ARB:DAC BAD,#18" + payload + b"\n")
            errors = await d.read_errors()
            assert errors and all(-199 <= code <= -100 for code, _ in errors), errors
            assert await d.get_frequency(1) > 0
            await d.transport.write_raw(b"SOUR1:DATA:ARB:DAC BAD,#3100" + payload + b"\n")
            await expect_error(InstrumentTimeoutError, d.get_frequency(1), "no reply")
            assert await d.get_frequency(1) > 0
            assert await d.read_errors() == []
            assert "BAD" not in await d.query("SOUR1:DATA:VOL:CAT?")  # nothing half-stored

    asyncio.run(go())


def test_invalid_and_overloaded_readings_are_refused_naming_instrument_and_channel() -> None:
    bench = make_bench(virtual=True, seed=9)
    resources = bench.serve(memory_prefix="faults-invalid-", control=False)
    config = bench.config

    async def go() -> None:
        gen = make_driver(config, "fgen", resources["fgen"])
        scope = make_driver(config, "scope", resources["scope"])
        li1 = make_driver(config, "lockin1", resources["lockin1"])
        li2 = make_driver(config, "lockin2", resources["lockin2"])
        assert isinstance(gen, Keysight33500B) and isinstance(scope, RigolDs1000z)
        assert isinstance(li1, SrsLockin) and isinstance(li2, SrsLockin)
        async with gen, scope, li1, li2:
            await gen.set_sine(1, 25.0, 0.5)
            await gen.set_sine(2, 25.0, 0.4)
            await gen.output(1, True)
            await gen.output(2, True)
            for li in (li1, li2):
                await li.set_reference_external()
                await li.set_sensitivity(0.5)
                await li.set_time_constant(0.01, slope_db_per_oct=24)
                await li.set_sync_filter(True)
            for ch in (1, 2, 3):
                await scope.configure_channel(ch, 0.2, 0.0, "DC", probe=1)
            await scope.set_timebase(4e-3)
            await scope.set_trigger_edge("EXT", level_v=1.5, slope="POS")
            await bench.control.advance(1.0)
            await scope.single()

            async def sleep(dt: float) -> None:
                await bench.control.advance(dt)

            await scope.wait_triggered(timeout_s=0.5, poll_s=0.01, sleep=sleep)
            emu_scope = bench.emulators["scope"]
            # NaN scaling in the preamble (BYTE readout) and NaN / 9.9E37 ASCii points
            emu_scope.inject_invalid_readings(1, data=False)
            with pytest.raises(InstrumentProtocolError, match=r"scope .*channel 2: invalid"):
                await scope.read_channels([2])
            emu_scope.inject_invalid_readings(1, scale=False)
            with pytest.raises(InstrumentProtocolError, match=r"scope .*channel 3: 1200 of 1200"):
                await scope.read_channels([3], fmt="ASCii")
            emu_scope.inject_invalid_readings(1, value=9.9e37, scale=False)
            with pytest.raises(InstrumentProtocolError, match=r"channel 1: .*9\.9e\+37"):
                await scope.read_channels([1], fmt="ASCii")
            waves = await scope.read_channels([1, 2, 3], fmt="ASCii")
            assert all(np.all(np.isfinite(w.volts)) for w in waves.values())
            # overload: a clipped channel is refused on request
            await scope.configure_channel(1, 0.01, 0.0, "DC", probe=1)
            await scope.single()
            await scope.wait_triggered(timeout_s=0.5, poll_s=0.01, sleep=sleep)
            with pytest.raises(InstrumentError, match=r"scope .*channel\(s\) \[1\] clipped"):
                await scope.read_channels([1, 2], allow_clipped=False)
            assert (await scope.read_channels([1]))[1].clipped
            # lock-ins: NaN outputs in SNAP? and OUTP?, then overloads
            for name, li in (("lockin1", li1), ("lockin2", li2)):
                emu = bench.emulators[name]
                assert math.isfinite(abs(await li.read_xy(check_overload=True)))
                emu.inject_invalid_readings(1)
                with pytest.raises(InstrumentProtocolError, match=rf"{name} .*x reading 'nan'"):
                    await li.read_xy()
                emu.inject_invalid_readings(1, value=math.inf)
                with pytest.raises(InstrumentProtocolError, match=rf"{name} .*r reading 'inf'"):
                    await li.read("r")
                assert math.isfinite(await li.read("theta"))
                emu.inject_lia_status(1)
                with pytest.raises(InstrumentError, match=rf"{name} .*input overload"):
                    await li.read_xy(check_overload=True)
                await li.set_sensitivity(1e-3)  # far below the signal: X/Y saturate
                await bench.control.advance(0.2)
                with pytest.raises(InstrumentError, match=rf"{name} .*output overload"):
                    await li.read_xy(check_overload=True)

    try:
        asyncio.run(go())
    finally:
        bench.stop()


def test_dac_that_loses_its_setpoints_is_seen_in_readback_and_in_the_couplings() -> None:
    bench = make_bench(virtual=True, seed=4)
    resources = bench.serve(memory_prefix="faults-dac-", control=False)
    volts = {1: 0.4, 2: -0.3, 3: 0.8, 4: 0.1}

    async def go() -> tuple[list[float], list[float]]:
        async with make_driver(bench.config, "qdac", resources["qdac"]) as qdac:
            assert isinstance(qdac, Qdac2)
            await qdac.set_voltages(volts)
            await bench.control.advance(0.5)
            before = (await qdac.get_voltages([1, 2, 3, 4])).tolist()
            theta_before = bench.twin.theta_at(bench.clock.now())
            bench.emulators["qdac"].lose_setpoints()
            await bench.control.advance(0.5)
            after = (await qdac.get_voltages([1, 2, 3, 4])).tolist()
            theta_after = bench.twin.theta_at(bench.clock.now())
            truth_at_zero = bench.twin.truth.coupling(np.zeros(4))
            assert np.allclose(theta_after[:4], truth_at_zero, rtol=0, atol=1e-9)
            assert np.all(np.abs(theta_after[:4] - theta_before[:4]) > 1e-3)
            return before, after

    try:
        before, after = asyncio.run(go())
    finally:
        bench.stop()
    assert before == pytest.approx([quantise(v, "HIGH") for v in volts.values()])
    assert after == [0.0, 0.0, 0.0, 0.0]


def test_closed_port_and_vanished_pty_mid_session_are_connection_lost_errors() -> None:
    """The scope's TCP server stops and the SR830's USB-serial pty disappears while the drivers
    are connected: ConnectionLostError naming the resource, after bounded reconnect attempts."""
    bench = make_bench(virtual=True, seed=6)
    resources = bench.serve(control=False)

    async def go() -> None:
        scope = make_driver(bench.config, "scope", resources["scope"], timeout_s=TIMEOUT_S)
        li1 = make_driver(bench.config, "lockin1", resources["lockin1"], timeout_s=TIMEOUT_S)
        async with scope, li1:
            assert isinstance(scope, RigolDs1000z) and isinstance(li1, SrsLockin)
            assert await scope.trigger_status() in ("AUTO", "RUN", "WAIT", "TD")
            assert await li1.get_harmonic() == 1
            bench.servers["scope"].stop()
            bench.servers["lockin1"].vanish()
            for driver, resource in ((scope, resources["scope"]), (li1, resources["lockin1"])):
                start = time.monotonic()
                with pytest.raises(ConnectionLostError) as info:
                    await probe(driver)
                assert resource in str(info.value)
                assert time.monotonic() - start < 2 * TIMEOUT_S + SLACK_S

    try:
        asyncio.run(go())
    finally:
        bench.stop()


@pytest.mark.timeout(60)
def test_free_running_bench_serves_a_third_party_pyvisa_client() -> None:
    """Plain pyvisa, no twin clock: in free-running mode (speed 2) the scope's :SINGle completes
    and the SR860 settles on the sensed sine, because twin time follows the wall clock."""
    bench = make_bench(virtual=False, speed=2.0, seed=8)
    resources = bench.serve(control=False)
    rm = pyvisa.ResourceManager("@py")
    opened: list[Any] = []

    def open_(name: str) -> Any:
        res = rm.open_resource(
            resources[name], read_termination="\n", write_termination="\n", timeout=2000
        )
        opened.append(res)
        return res

    try:
        gen, scope, lockin = open_("fgen"), open_("scope"), open_("lockin2")
        gen.write("SOUR1:FUNC SIN;:SOUR1:FREQ 25;:SOUR1:VOLT 1;:OUTP1 ON;:OUTP:SYNC ON")
        assert gen.query("SYST:ERR?").startswith("+0,")
        lockin.write("RSRC EXT;SCAL 0;OFLT 10;OFSL 3;SYNC 1")  # 1 V full scale, τ = 0.1 s
        t_start = bench.clock.now()
        r_early = float(lockin.query("OUTP? 2"))
        lockin.query("LIAS?")  # clear the latched status
        scope.write(":CHAN1:DISP ON;:CHAN1:PROB 1;:CHAN1:SCAL 0.2;:TIM:SCAL 0.004")
        scope.write(":TRIG:EDG:SOUR EXT;:TRIG:EDG:LEV 1.5;:SING")
        deadline = time.monotonic() + 5.0
        status = scope.query(":TRIG:STAT?")
        while status != "STOP" and time.monotonic() < deadline:
            time.sleep(0.02)
            status = scope.query(":TRIG:STAT?")
        assert status == "STOP"
        scope.write(":WAV:SOUR CHAN1;:WAV:MODE NORM;:WAV:FORM BYTE")
        codes = np.frombuffer(
            scope.query_binary_values(":WAV:DATA?", datatype="B", container=bytes), dtype=np.uint8
        )
        assert codes.size == 1200 and np.ptp(codes) > 10  # a sine, not a flat line
        time.sleep(1.0)  # ≈ 2 s of twin time: many lock-in time constants (τ = 0.1 s)
        r1 = float(lockin.query("OUTP? 2"))
        time.sleep(0.3)
        r2 = float(lockin.query("OUTP? 2"))
        assert bench.clock.now() - t_start > 2.0
        assert r1 > 10 * max(abs(r_early), 1e-4)
        assert abs(r2 - r1) < 0.02 * r1  # settled
        assert int(lockin.query("LIAS?")) & 0b1101 == 0  # no overload, locked
    finally:
        for res in opened:
            res.close()
        bench.stop()
