"""33522B emulator against its programming reference: forms, queries, blocks, errors, outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from physlearn.simulators.clock import VirtualClock
from physlearn.simulators.instruments.keysight33500b import (
    ARB_MEMORY_POINTS,
    SYNC_HIGH_V,
    Keysight33500BEmulator,
)
from physlearn.simulators.instruments.scpi import format_nr3

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def gen(clock: VirtualClock) -> Keysight33500BEmulator:
    return Keysight33500BEmulator(clock)


def q(emu: Keysight33500BEmulator, text: str | bytes) -> str:
    reply = emu.process(text.encode() if isinstance(text, str) else text)
    assert reply.endswith(b"\n") and not reply.endswith(b"\n\n")
    return reply[:-1].decode()


def err(emu: Keysight33500BEmulator) -> str:
    return q(emu, "SYST:ERR?")


def block(payload: bytes) -> bytes:
    return b"#" + str(len(str(len(payload)))).encode() + str(len(payload)).encode() + payload


def test_identity_and_error_queue_format(gen: Keysight33500BEmulator) -> None:
    assert q(gen, "*IDN?") == "Agilent Technologies,33522B,MY53000042,2.09-1.19-2.00-52-00"
    assert err(gen) == '+0,"No error"'
    gen.process(b"SOUR1:BOGUS 1")
    gen.process(b"sour1:freq 1e9")
    assert q(gen, "SYST:ERR:COUN?") == "2"
    assert err(gen) == '-113,"Undefined header"'
    assert err(gen) == '-222,"Data out of range;value clipped to upper limit"'
    assert err(gen) == '+0,"No error"'
    assert q(gen, "*OPC?") == "1"


def test_reset_defaults_every_setting_queryable(gen: Keysight33500BEmulator) -> None:
    gen.process(b"sour1:freq 5;volt 1;:outp1 on;:outp1:load inf;:sour2:comb:feed ch1;:*RST")
    reply = q(
        gen,
        "SOUR1:FUNC?;:SOUR1:FREQ?;:SOUR1:VOLT?;:SOUR1:VOLT:OFFS?;:SOUR1:VOLT:UNIT?;"
        ":SOUR1:PHAS?;:OUTP1?;:OUTP1:LOAD?;:SOUR2:COMB:FEED?;:SOUR1:FUNC:ARB?;"
        ":SOUR1:FUNC:ARB:SRAT?;:SOUR1:FUNC:ARB:POIN?;:SOUR1:FUNC:ARB:FILT?;:OUTP:SYNC?;"
        ":OUTP:SYNC:SOUR?;:ROSC:SOUR?;:ROSC:SOUR:CURR?;:ROSC:OUTP?;:FORM:BORD?",
    )
    assert reply.split(";") == [
        "SIN",
        "+1.000000000000000E+03",
        "+1.000000000000000E-01",
        "+0.000000000000000E+00",
        "VPP",
        "+0.000000000000000E+00",
        "0",
        "+5.000000000000000E+01",
        "NONE",
        '"INT:\\BUILTIN\\EXP_RISE.ARB"',
        "+4.000000000000000E+04",
        "+8192",
        "NORM",
        "1",
        "CH1",
        "INT",
        "INT",
        "1",
        "NORM",
    ]
    assert err(gen) == '+0,"No error"'


@pytest.mark.parametrize(
    "command",
    [
        "SOUR1:FREQ 2500",
        "SOURCE1:FREQUENCY 2500",
        ":sour1:freq:cw 2.5 kHz",
        "Source:Frequency:Fixed 2.5E3",
        "FREQ 2500.0000001",  # rounded to the 1 µHz grid
        "sour1:func sin;freq 2500",  # relative path after a compound separator
        "sour2:freq 1;:sour1:freq 2500",
    ],
)
def test_frequency_forms(gen: Keysight33500BEmulator, command: str) -> None:
    gen.process(command.encode())
    assert q(gen, "sour1:freq?") == "+2.500000000000000E+03"
    assert err(gen) == '+0,"No error"'


def test_settings_round_trip(gen: Keysight33500BEmulator) -> None:
    gen.process(
        b"sour2:func dc;volt:offs -1.5;:sour2:func sin;:sour2:volt 500 mV;phas 45;"
        b":outp2 1;:outp2:load 75;:outp:sync off;:outp:sync:sour ch2;:rosc:sour ext;"
        b":rosc:outp off;:form:bord swap;:sour2:func:arb:filt step;srat 1000 KSA/S"
    )
    assert err(gen) == '+0,"No error"'
    # The load change keeps the output: displayed values scale by 75/125 ÷ 50/100.
    assert q(gen, "sour2:volt?;volt:offs?;:sour2:phas?") == (
        "+6.000000000000000E-01;-1.800000000000000E+00;+4.500000000000000E+01"
    )
    assert q(gen, "outp2?;:outp2:load?;:outp:sync?;:outp:sync:sour?") == (
        "1;+7.500000000000000E+01;0;CH2"
    )
    assert q(gen, "rosc:sour?;:rosc:sour:curr?;:rosc:outp?;:form:bord?") == "EXT;INT;0;SWAP"
    assert q(gen, "sour2:func:arb:filt?;srat?") == "STEP;+1.000000000000000E+06"
    gen.set_timebase(external_present=True)
    assert q(gen, "rosc:sour:curr?") == "EXT"


@pytest.mark.parametrize(
    ("command", "entry"),
    [
        ("sour3:freq 1", '-114,"Header suffix out of range"'),
        ("outp0 on", '-114,"Header suffix out of range"'),
        ("sour1:frequ 1", '-113,"Undefined header"'),
        ("sour1:func squ", '-224,"Illegal parameter value;SQUARE is not emulated"'),
        ("sour1:func bogus", '-224,"Illegal parameter value"'),
        ("sour1:freq", '-109,"Missing parameter"'),
        ("sour1:freq 1,2", '-108,"Parameter not allowed"'),
        ("sour1:freq abc", '-104,"Data type error"'),
        ("sour1:freq 1 V", '-131,"Invalid suffix"'),
        ("sour1:volt:unit vrms", '-224,"Illegal parameter value;VRMS is not emulated"'),
        (
            "sour1:comb:feed ch1",
            '-224,"Illegal parameter value;a channel cannot be combined with itself"',
        ),
        ("sour1:func:arb nothere", '+785,"Specified arb waveform does not exist"'),
        ("sour1:volt 0.0001", '-222,"Data out of range;value clipped to lower limit"'),
        ("sour1:phas 400", '-222,"Data out of range;value clipped to upper limit"'),
        ("outp1:load 20000", '-222,"Data out of range;value clipped to upper limit"'),
        ("sour1:func:arb:srat 1e9", '-222,"Data out of range;value clipped to upper limit"'),
    ],
)
def test_error_codes(gen: Keysight33500BEmulator, command: str, entry: str) -> None:
    gen.process(command.encode())
    assert err(gen) == entry
    assert err(gen) == '+0,"No error"'


def test_clipping_keeps_the_limit_value(gen: Keysight33500BEmulator) -> None:
    gen.process(b"sour1:freq 40e6;:sour1:volt 0.0001;:sour1:phas -400")
    assert q(gen, "sour1:freq?;volt?;:sour1:phas?") == (
        "+3.000000000000000E+07;+1.000000000000000E-03;-3.600000000000000E+02"
    )
    gen.process(b"outp1:load 0.1")  # 1 Ω: the same output now shows 1/51 of its EMF
    assert q(gen, "outp1:load?;:sour1:volt?") == "+1.000000000000000E+00;" + (
        format_nr3(2e-3 / 51, 15)
    )


def test_amplitude_offset_conflicts_and_load(gen: Keysight33500BEmulator) -> None:
    gen.process(b"sour1:volt 10")  # 10 Vpp into 50 Ω is the maximum
    assert err(gen) == '+0,"No error"'
    gen.process(b"sour1:volt:offs 1")
    assert err(gen) == '-221,"Settings conflict;amplitude changed due to offset"'
    assert q(gen, "sour1:volt?;volt:offs?") == "+8.000000000000000E+00;+1.000000000000000E+00"
    gen.process(b"sour1:volt 9")
    assert err(gen) == '-221,"Settings conflict;offset changed due to amplitude"'
    assert q(gen, "sour1:volt:offs?") == "+5.000000000000000E-01"
    gen.process(b"outp1:load inf;:sour1:volt?")
    assert q(gen, "sour1:volt?;volt:offs?") == "+1.800000000000000E+01;+1.000000000000000E+00"
    gen.process(b"sour1:volt 20.5")
    assert err(gen) == '-222,"Data out of range;value clipped to upper limit"'
    assert err(gen) == '-221,"Settings conflict;offset changed due to amplitude"'
    assert q(gen, "sour1:volt?;volt:offs?") == "+2.000000000000000E+01;+0.000000000000000E+00"
    gen.process(b"sour1:func dc;volt:offs 10")  # DC: the whole range is the offset
    assert err(gen) == '+0,"No error"'
    gen.process(b"sour1:func sin")
    assert err(gen) == '-221,"Settings conflict;offset changed on exit from DC function"'


def _dac(codes: list[int], order: str) -> bytes:
    return np.asarray(codes, dtype=f"{order}i2").tobytes()


def test_dac_block_byte_orders_and_newline_bytes(gen: Keysight33500BEmulator) -> None:
    codes = [0, 10, 2560, 2570, 32767, -32767, 13, -1]  # 10 = 0x000A, 2570 = 0x0A0A
    big = _dac(codes, ">")
    assert big.count(b"\n") >= 4
    stream = b"SOUR1:DATA:ARB:DAC BIG," + block(big) + b"\n"
    stream += b"FORM:BORD SWAP;:SOUR1:DATA:ARB:DAC LITTLE," + block(_dac(codes, "<")) + b"\r\n"
    stream += b"SOUR1:DATA:ARB:DAC ascii, " + ", ".join(map(str, codes)).encode() + b"\n"
    splitter = gen.message_splitter()
    messages = [m for i in range(len(stream)) for m in splitter.feed(stream[i : i + 1])]
    assert len(messages) == 3
    for message in messages:
        assert gen.process(message) == b""
    assert err(gen) == '+0,"No error"'
    ch = gen.channels[0]
    for name in ("BIG", "LITTLE", "ASCII"):
        assert ch.arbs[name].tolist() == codes
    assert q(gen, "sour1:data:vol:cat?") == ('"INT:\\BUILTIN\\EXP_RISE.ARB","BIG","LITTLE","ASCII"')
    assert q(gen, "sour1:data:vol:free?") == f"+{ARB_MEMORY_POINTS - 24}"


def test_float_block_is_quantised_to_dac_codes(gen: Keysight33500BEmulator) -> None:
    values = np.array([0.0, 1.0, -1.0, 0.5, 1e-5, 2e-5, -0.25, 0.123456], dtype=">f4")
    gen.process(b"sour2:data:arb wave," + block(values.tobytes()))
    gen.process(b"form:bord swap;:sour2:data:arb wave2," + block(values.astype("<f4").tobytes()))
    gen.process(b"sour2:data:arb wave3," + ",".join(str(float(v)) for v in values).encode())
    assert err(gen) == '+0,"No error"'
    expected = np.rint(values.astype(np.float64) * 32767).astype(int).tolist()
    assert expected[4:6] == [0, 1]
    for name in ("WAVE", "WAVE2", "WAVE3"):
        assert gen.channels[1].arbs[name].tolist() == expected


@pytest.mark.parametrize(
    ("command", "entry"),
    [
        (b"sour1:data:arb:dac odd," + block(b"\x00" * 17), "-161,"),
        (b"sour1:data:arb:dac low," + block(_dac([-32768] + [0] * 7, ">")), "-222,"),
        (b"sour1:data:arb:dac short," + block(_dac([1] * 7, ">")), "-222,"),
        (b"sour1:data:arb big, 1.5, 0, 0, 0, 0, 0, 0, 0", "-222,"),
        (b"sour1:data:arb:dac frac, 1.5, 0, 0, 0, 0, 0, 0, 0", "-222,"),
        (b"sour1:data:arb:dac abcdefghijklm," + block(_dac([0] * 8, ">")), "+784,"),
        (b"sour1:data:arb:dac '1abc'," + block(_dac([0] * 8, ">")), "-151,"),
        (b"sour1:data:arb:dac trunc,#3100" + b"\x00" * 8, "-161,"),
        (b"sour1:data:arb nan," + block(np.full(8, np.nan, ">f4").tobytes()), "-222,"),
    ],
)
def test_arb_upload_errors(gen: Keysight33500BEmulator, command: bytes, entry: str) -> None:
    gen.process(command)
    assert err(gen).startswith(entry)
    assert gen.channels[0].arbs == {}


def test_arb_memory_names_and_clear(gen: Keysight33500BEmulator) -> None:
    half = _dac([1] * (ARB_MEMORY_POINTS // 2 + 1), "<")
    gen.process(b"form:bord swap;:sour1:data:arb:dac a1," + block(half))
    gen.process(b"sour1:data:arb:dac a1," + block(_dac([0] * 8, "<")))
    assert err(gen) == '-221,"Settings conflict;arb waveform name already in volatile memory"'
    gen.process(b"sour1:data:arb:dac a2," + block(half))
    assert err(gen) == (
        '+781,"Not enough memory to store new arb waveform; use DATA:VOLatile:CLEar"'
    )
    gen.process(b"sour2:data:arb:dac a2," + block(half))  # each channel has its own memory
    gen.process(b"sour1:func:arb a1;:sour1:func arb")
    assert q(gen, "sour1:func:arb?;arb:poin?") == f'"A1";+{ARB_MEMORY_POINTS // 2 + 1}'
    gen.process(b"sour1:data:vol:cle")
    assert q(gen, "sour1:func:arb?;:sour1:data:vol:free?") == (
        f'"INT:\\BUILTIN\\EXP_RISE.ARB";+{ARB_MEMORY_POINTS}'
    )
    gen.process(b"*RST")
    assert list(gen.channels[1].arbs) == ["A2"]  # *RST keeps volatile arbs
    assert err(gen) == '+0,"No error"'


# -- output model ------------------------------------------------------------------------------


def test_sine_amplitude_offset_phase_and_load(
    gen: Keysight33500BEmulator, clock: VirtualClock
) -> None:
    clock.advance(0.123)
    gen.process(b"sour1:freq 1000;volt 1;volt:offs 0.25;:sour1:phas 30;:outp1 on;:phas:sync")
    t0 = gen.sync_phase_origin_s(1)
    assert t0 == pytest.approx(0.123, abs=1e-12)
    t = t0 + np.linspace(0.0, 3e-3, 301)
    expected = 2 * (0.25 + 0.5 * np.sin(2 * np.pi * 1000 * (t - t0) + math.pi / 6))
    np.testing.assert_allclose(gen.output_voltage(1, t), expected, atol=1e-12)  # 50 Ω: ×2
    gen.process(b"outp1:load inf")  # display changes, real output does not
    np.testing.assert_allclose(gen.output_voltage(1, t), expected, atol=1e-12)
    gen.process(b"sour1:volt 1;volt:offs 0.25")  # now the displayed value is the real one
    np.testing.assert_allclose(gen.output_voltage(1, t), expected / 2, atol=1e-12)
    gen.process(b"outp1 off")
    assert not np.any(gen.output_voltage(1, t))


def test_phase_continuity_and_synchronisation(
    gen: Keysight33500BEmulator, clock: VirtualClock
) -> None:
    gen.process(b"outp1 on;:outp2 on;:sour2:freq 1000")
    clock.advance(0.25e-3)
    before = gen.output_voltage(1, clock.now())
    gen.process(b"sour1:freq 3000")  # phase-continuous: no jump at the change
    assert gen.output_voltage(1, clock.now()) == pytest.approx(before, abs=1e-12)
    clock.advance(1.1e-4)
    gen.process(b"sour1:freq 1000")
    assert gen.sync_phase_origin_s(1) % 1e-3 != pytest.approx(gen.sync_phase_origin_s(2) % 1e-3)
    gen.process(b"phas:sync")
    assert gen.sync_phase_origin_s(1) == gen.sync_phase_origin_s(2) == clock.now()
    t = clock.now() + np.linspace(0, 2e-3, 50)
    np.testing.assert_array_equal(gen.output_voltage(1, t), gen.output_voltage(2, t))


def test_arb_zero_order_hold_exact_period_and_phase(
    gen: Keysight33500BEmulator, clock: VirtualClock
) -> None:
    codes = np.array([0, 32767, -32767, 16384, -100, 5, 7, 20000, -20000, 1, 2, 3], dtype=">i2")
    n, rate = len(codes), 12e3  # period 1 ms
    clock.advance(0.5)
    gen.process(b"outp2:load inf;:sour2:data:arb:dac nudge," + block(codes.tobytes()))
    gen.process(b"sour2:func:arb nudge;arb:srat 12000;:sour2:volt 2;volt:offs 0.1;:sour2:func arb")
    gen.process(b"outp2 on;:phas:sync")
    t0 = gen.sync_phase_origin_s(2)
    assert gen.cycle_rate_hz(2) == 1000.0
    mid = t0 + (np.arange(3 * n) + 0.5) / rate
    expected = 0.1 + codes.astype(float)[np.arange(3 * n) % n] / 32767
    np.testing.assert_allclose(gen.output_voltage(2, mid), expected, atol=1e-12)
    early = t0 + (np.arange(n) + 0.01) / rate  # hold: flat across each sample
    np.testing.assert_allclose(gen.output_voltage(2, early), expected[:n], atol=1e-12)
    np.testing.assert_allclose(
        gen.output_voltage(2, mid[:n] + 1000 * n / rate), expected[:n], atol=1e-12
    )
    gen.process(b"sour2:phas 90")  # a quarter period: three samples
    np.testing.assert_allclose(
        gen.output_voltage(2, mid[:n]), np.roll(expected[:n], -3), atol=1e-12
    )


def test_combine_sync_and_timebase(gen: Keysight33500BEmulator, clock: VirtualClock) -> None:
    gen.process(b"outp1:load inf;:outp2:load inf;:sour1:freq 100;volt 2;:sour2:func dc")
    gen.process(b"sour2:volt:offs 0.5;:sour1:comb:feed ch2;:outp1 on;:phas:sync")
    assert q(gen, "sour1:comb:feed?;:syst:err?") == 'CH2;+0,"No error"'
    t = np.linspace(0.0, 0.02, 101)
    sine = np.sin(2 * np.pi * 100 * t)
    np.testing.assert_allclose(gen.output_voltage(1, t), sine + 0.5, atol=1e-12)
    assert not np.any(gen.output_voltage(2, t))  # output 2 is off; its signal still feeds 1
    gen.process(b"sour2:volt:offs 9.5")  # 9.5 + 1 (sine peak) > 10 V: refused
    assert err(gen) == '-221,"Settings conflict;combined output would exceed the output range"'
    assert q(gen, "sour2:volt:offs?") == "+5.000000000000000E-01"
    sync = gen.sync_output(t[:-1] + 1e-6)
    np.testing.assert_array_equal(sync, np.where((t[:-1] * 100) % 1 < 0.5, SYNC_HIGH_V, 0.0))
    gen.process(b"outp:sync off")
    assert not np.any(gen.sync_output(t))
    gen.set_timebase(internal_error=2e-6)
    assert gen.cycle_rate_hz(1) == pytest.approx(100 * (1 + 2e-6), rel=1e-15)
    gen.process(b"rosc:sour ext")
    assert gen.cycle_rate_hz(1) == pytest.approx(100 * (1 + 2e-6), rel=1e-15)  # no ext ref
    gen.set_timebase(external_present=True, external_error=0.0)
    assert gen.cycle_rate_hz(1) == 100.0
