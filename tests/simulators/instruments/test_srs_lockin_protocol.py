"""SR830 and SR860 emulators against their manuals: syntax, settings, tables, status, formats."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest
from numpy.typing import NDArray

from physlearn.simulators.clock import VirtualClock
from physlearn.simulators.instruments.srs_lockin import (
    SR830_SENSITIVITIES_V,
    SR830_TIME_CONSTANTS_S,
    SR860_SENSITIVITIES_V,
    SR860_TIME_CONSTANTS_S,
    Sr830Emulator,
    Sr860Emulator,
    SrsLockinEmulator,
    quantise_mantissa,
)

pytestmark = pytest.mark.timeout(60)

F_HZ = 1000.0


def sine_source(
    amplitude_v: float, phase_rad: float = 0.0
) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    """A sine at the reference frequency, in phase with the reference at phase_rad = 0."""
    return lambda t: amplitude_v * np.sin(2 * np.pi * F_HZ * t + phase_rad)


@pytest.fixture
def sr830() -> Sr830Emulator:
    return Sr830Emulator(VirtualClock(), reference=lambda: (F_HZ, 0.0))


@pytest.fixture
def sr860() -> Sr860Emulator:
    return Sr860Emulator(VirtualClock(), reference=lambda: (F_HZ, 0.0))


def q(emu: SrsLockinEmulator, text: str) -> str:
    """Send one query line; return the single reply without its terminator."""
    reply = emu.process(text.encode())
    term = emu.response_terminator
    assert reply.endswith(term) and reply.count(term) == 1, reply
    return reply[: -len(term)].decode()


def esr(emu: SrsLockinEmulator) -> int:
    return int(q(emu, "*ESR?"))


# -- SR830 -------------------------------------------------------------------------------------


def test_sr830_identity_and_cr_termination(sr830: Sr830Emulator) -> None:
    assert sr830.process(b"*IDN?") == b"Stanford_Research_Systems,SR830,s/n86021,ver1.07\r"


@pytest.mark.parametrize(
    "line", ["SENS 5", "SENS5", "sens 5", " S E N S 5 ", "SENS 5.0", "SENS .5E1"]
)
def test_sr830_embedded_spaces_case_and_number_forms(sr830: Sr830Emulator, line: str) -> None:
    sr830.process(line.encode())
    assert q(sr830, "SENS?") == "5"
    assert esr(sr830) == 0


def test_sr830_several_queries_each_carry_a_terminator(sr830: Sr830Emulator) -> None:
    assert sr830.process(b"SENS 7;OFLT 3;SENS?;OFLT?;*IDN?") == (
        b"7\r3\rStanford_Research_Systems,SR830,s/n86021,ver1.07\r"
    )
    assert sr830.process(b"OUTP?1;OUTP? 2").count(b"\r") == 2


SR830_INDEX = {
    "FMOD": 2, "RSLP": 3, "ISRC": 4, "IGND": 2, "ICPL": 2, "ILIN": 4,
    "SENS": 27, "RMOD": 3, "OFLT": 20, "OFSL": 4, "SYNC": 2,
}  # fmt: skip


@pytest.mark.parametrize(("name", "count"), SR830_INDEX.items())
def test_sr830_every_index_setting_round_trips_and_refuses_out_of_range(
    sr830: Sr830Emulator, name: str, count: int
) -> None:
    for i in range(count):
        sr830.process(f"{name} {i}".encode())
        assert q(sr830, f"{name}?") == str(i)
    assert esr(sr830) == 0
    sr830.process(f"{name} {count}".encode())
    assert esr(sr830) == 16  # EXE: parameter out of range, setting unchanged
    assert q(sr830, f"{name}?") == str(count - 1)
    sr830.process(f"{name} -1".encode())
    assert esr(sr830) == 16
    sr830.process(f"{name} abc".encode())
    assert esr(sr830) == 32  # CMD: not a number


def test_sr830_tables_follow_the_manual(sr830: Sr830Emulator) -> None:
    sr830.process(b"SENS 0")
    assert sr830.full_scale == 2e-9
    sr830.process(b"SENS 26;OFLT 0")
    assert sr830.full_scale == 1.0 and sr830.time_constant_s == 1e-5
    sr830.process(b"SENS 17;OFLT 19")
    assert sr830.full_scale == 1e-3 and sr830.time_constant_s == 3e4
    assert len(SR830_SENSITIVITIES_V) == 27 and len(SR830_TIME_CONSTANTS_S) == 20
    for n, slope in enumerate((0, 1, 2, 3), start=1):
        sr830.process(f"OFSL {slope}".encode())
        assert sr830.n_stages == n


def test_sr830_reset_defaults_keep_the_interface(sr830: Sr830Emulator) -> None:
    sr830.process(b"FMOD 0;SENS 3;OFLT 2;OFSL 3;RMOD 0;PHAS 10;HARM 3;SLVL 2;ICPL 1;SYNC 1")
    sr830.process(b"*RST")
    assert sr830.process(b"FMOD?;SENS?;OFLT?;OFSL?;RMOD?;HARM?;ICPL?;SYNC?;ISRC?") == (
        b"1\r26\r8\r1\r1\r1\r0\r0\r0\r"
    )
    assert q(sr830, "PHAS?") == "0" and q(sr830, "SLVL?") == "1" and q(sr830, "FREQ?") == "1000"
    sr830.process(b"OUTX 1;*RST")
    assert sr830.settings["OUTX"] == 1


def test_sr830_real_settings_resolution_wrap_and_limits(sr830: Sr830Emulator) -> None:
    sr830.process(b"FREQ 1234.567;PHAS12.345;SLVL 0.1234")
    assert q(sr830, "FREQ?") == "1234.6"  # 5 digits
    assert q(sr830, "PHAS?") == "12.35"  # 0.01 degree (12.345 is 12.3449… in binary)
    assert q(sr830, "SLVL?") == "0.124"  # 2 mV steps
    sr830.process(b"PHAS 270")
    assert q(sr830, "PHAS?") == "-90"
    sr830.process(b"PHAS 729.99")
    assert q(sr830, "PHAS?") == "9.99"
    assert esr(sr830) == 0
    for bad in ("PHAS 730", "PHAS -360.01", "SLVL 5.1", "FREQ 0.0009", "FREQ 102001", "HARM 0"):
        sr830.process(bad.encode())
        assert esr(sr830) == 16, bad
    sr830.process(b"FREQ 1000;HARM 102")
    assert q(sr830, "HARM?") == "102" and esr(sr830) == 0
    sr830.process(b"HARM 103")  # 103 kHz > 102 kHz
    assert esr(sr830) == 16 and q(sr830, "HARM?") == "102"
    sr830.process(b"HARM 1;FMOD 0;FREQ 500")  # FREQ only with the internal reference
    assert esr(sr830) == 16
    assert q(sr830, "FREQ?") == "1000"  # the measured external reference


def test_sr830_unknown_and_malformed_commands_set_cmd(sr830: Sr830Emulator) -> None:
    for bad in ("BOGUS 1", "OUTP?", "SNAP? 1", "SNAP? 1,2,3,4,5,6,7", "SENS? 3", "FMOD 1,2", "12"):
        assert sr830.process(bad.encode()) == b""
        assert esr(sr830) == 32, bad
    for bad in ("OUTP? 5", "OUTP? 0", "SNAP? 1,12", "SNAP? 0,1"):
        assert sr830.process(bad.encode()) == b""  # a refused query sends nothing
        assert esr(sr830) == 16, bad
    sr830.process(b"BOGUS;SENS 4")  # the rest of the line still executes
    assert q(sr830, "SENS?") == "4"


def test_sr830_status_bytes_read_clear_and_bits(sr830: Sr830Emulator) -> None:
    sr830.process(b"BOGUS;SENS 99")
    assert q(sr830, "*ESR? 5") == "1"
    assert q(sr830, "*ESR?") == "16"  # only bit 5 was cleared
    sr830.inject_lia_status(0b101)
    sr830.inject_error_status(0b100)
    sr830.process(b"LIAE 4;ERRE 4;*ESE 16")
    assert sr830.process(b"LIAE?;ERRE?;*ESE?") == b"4\r4\r16\r"
    stb = int(q(sr830, "*STB?"))
    assert stb & 0b1100 == 0b1100 and stb & 3 == 3
    assert q(sr830, "LIAS? 2") == "1"
    assert q(sr830, "LIAS?") == "1"  # bit 0 stays until read
    assert q(sr830, "LIAS?") == "0"
    assert q(sr830, "ERRS? 2") == "1" and q(sr830, "ERRS?") == "0"
    sr830.inject_lia_status(8)
    sr830.process(b"*CLS")
    assert q(sr830, "LIAS?") == "0" and q(sr830, "*ESR?") == "0"


def test_sr830_outx_selects_the_answering_interface(sr830: Sr830Emulator) -> None:
    sr830.process(b"OUTX 1")
    assert sr830.process(b"*IDN?") == b""  # replies now go to GPIB
    sr830.process(b"OUTX 0")
    assert q(sr830, "OUTX?") == "0"


def test_sr830_numbers_are_sent_with_six_significant_digits() -> None:
    clock = VirtualClock()
    emu = Sr830Emulator(clock, source=sine_source(0.0123456789, 0.4))
    emu.process(b"FMOD 1;SENS 24;OFLT 4;OFSL 3")
    clock.advance(0.1)
    x, y, r, theta = emu.outputs()
    assert q(emu, "OUTP? 1") == f"{x:.6g}" and q(emu, "OUTP?2") == f"{y:.6g}"
    assert q(emu, "SNAP?3,4,9") == f"{r:.6g},{theta:.6g},1000"
    assert x == quantise_mantissa(x, 15)  # 16-bit signed mantissa
    assert re.fullmatch(r"-?\d\.\d{5}e-0\d|-?0\.\d{3,8}|-?\d+(\.\d+)?", q(emu, "OUTP?1"))
    assert q(emu, "OAUX? 1") == "0" and q(emu, "SNAP?5,10,11").startswith("0,")


# -- SR860 -------------------------------------------------------------------------------------


def test_sr860_identity_and_lf_termination(sr860: Sr860Emulator) -> None:
    assert sr860.process(b"*IDN?") == b"Stanford_Research_Systems,SR860,003693,V1.51\n"
    assert sr860.process(b"*IDN?\r\n".strip()) == sr860.process(b"*idn?")


SR860_INDEX = {
    "RSRC": (2, ("INT", "EXTERNAL")), "RTRG": (3, ("SIN", "POSTTL", "NEG")),
    "IVMD": (2, ("VOLT", "CURRENT")), "ISRC": (2, ("A", "A-B")), "ICPL": (2, ("AC", "DC")),
    "IGND": (2, ("FLOAT", "GRO")), "IRNG": (5, ()), "ICUR": (2, ("1MEG", "100MEG")),
    "SCAL": (28, ()), "OFLT": (22, ()), "OFSL": (4, ()), "SYNC": (2, ("OFF", "ON")),
}  # fmt: skip


@pytest.mark.parametrize(("name", "spec"), SR860_INDEX.items())
def test_sr860_every_setting_by_index_and_token(
    sr860: Sr860Emulator, name: str, spec: tuple[int, tuple[str, ...]]
) -> None:
    count, tokens = spec
    for i in range(count):
        sr860.process(f"{name} {i}".encode())
        assert q(sr860, f"{name}?") == str(i)
    for i, token in enumerate(tokens):
        sr860.process(f"{name} {token.lower()}".encode())
        assert q(sr860, f"{name}?") == str(i)
    assert esr(sr860) == 0
    sr860.process(f"{name} {count}".encode())
    assert esr(sr860) == 16
    sr860.process(f"{name} NONSENSE".encode())
    assert esr(sr860) == 32


def test_sr860_tables_and_unemulated_references(sr860: Sr860Emulator) -> None:
    sr860.process(b"SCAL 0;OFLT 0")
    assert sr860.full_scale == 1.0 and sr860.time_constant_s == 1e-6
    sr860.process(b"SCAL 27;OFLT 21")
    assert sr860.full_scale == 1e-9 and sr860.time_constant_s == 3e4
    assert SR860_SENSITIVITIES_V[9] == 1e-3 and SR860_TIME_CONSTANTS_S[10] == 0.1
    sr860.process(b"RSRC DUAL")
    assert esr(sr860) == 16 and q(sr860, "RSRC?") == "0"


def test_sr860_reference_phase_harmonic_and_queries(sr860: Sr860Emulator) -> None:
    sr860.process(b"FREQ 12345.678;PHAS 190;HARM 3;SLVL 0.5")
    assert q(sr860, "FREQ?") == "12345.68" and q(sr860, "FREQINT?") == "12345.68"
    assert q(sr860, "PHAS?") == "-170" and q(sr860, "HARM?") == "3"
    assert q(sr860, "FREQDET?") == "37037.03" and q(sr860, "SLVL?") == "0.5"
    sr860.process(b"RSRC EXT")
    assert q(sr860, "FREQ?") == "1000" and q(sr860, "FREQEXT?") == "1000"
    sr860.process(b"OFLT 10;OFSL 3")
    assert q(sr860, "ENBW?") == "0.78125"  # 5/64τ
    for bad in ("PHAS 360001", "HARM 100", "FREQ 600000", "SLVL 3"):
        sr860.process(bad.encode())
        assert esr(sr860) == 16, bad


def test_sr860_output_codes_tokens_and_snap(sr860: Sr860Emulator) -> None:
    sr860.connect_input(sine_source(0.2, 1.0))
    sr860.process(b"RSRC EXT;OFLT 8;OFSL 3")
    assert isinstance(sr860.clock, VirtualClock)
    sr860.clock.advance(0.5)
    assert q(sr860, "OUTP? THeta") == q(sr860, "OUTP? 3") == q(sr860, "OUTP? th")
    assert q(sr860, "SNAP? X,Y,R") == q(sr860, "SNAP? 0,1,2")
    x, y, _, _ = sr860.outputs()
    assert q(sr860, "SNAP? x, y") == f"{np.float32(x):.7g},{np.float32(y):.7g}"
    assert q(sr860, "SNAP? FExt,PHAse") == "1000,0"
    for bad in ("SNAP? 0", "SNAP? 0,1,2,3", "OUTP?"):
        assert sr860.process(bad.encode()) == b""
        assert esr(sr860) == 32, bad
    assert sr860.process(b"OUTP? 4") == b"" and esr(sr860) == 16
