"""DS1000Z emulator against its programming guide: forms, queries, errors, blocks, acquisition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from physlearn.drivers.rigol_ds1000z import SCREEN_POINTS
from physlearn.simulators.clock import VirtualClock
from physlearn.simulators.instruments.rigol_ds1000z import RigolDs1000zEmulator, nearest_125

pytestmark = pytest.mark.timeout(60)

FREQ_HZ = 1e3


def sines(channel: int, t_s: NDArray[np.float64]) -> NDArray[np.float64]:
    """Channel n: 0.1·n V sine at 1 kHz, phase 0.3·n rad; EXT (0): 1 V sine, phase 0."""
    amplitude = 1.0 if channel == 0 else 0.1 * channel
    return amplitude * np.sin(2 * np.pi * FREQ_HZ * t_s + 0.3 * channel)


def q(emu: RigolDs1000zEmulator, text: str) -> str:
    reply = emu.process(text.encode())
    assert reply.endswith(b"\n")
    return reply[:-1].decode()


def err(emu: RigolDs1000zEmulator) -> str:
    return q(emu, ":SYST:ERR?")


def block(emu: RigolDs1000zEmulator, text: str = ":WAV:DATA?") -> bytes:
    """Reply of a block query: exactly `#9<9 digits><payload>` + one `\\n`."""
    reply = emu.process(text.encode())
    assert reply[:2] == b"#9"
    length = int(reply[2:11])
    assert len(reply) == 11 + length + 1, "a block is followed by exactly one terminator"
    assert reply[-1:] == b"\n"
    return reply[11:-1]


@pytest.fixture
def scope(clock: VirtualClock) -> RigolDs1000zEmulator:
    return RigolDs1000zEmulator(clock, source=sines, rng=np.random.default_rng(7))


def acquire(emu: RigolDs1000zEmulator, clock: VirtualClock, wait_s: float = 0.01) -> None:
    emu.process(b":SING")
    clock.advance(wait_s)
    assert q(emu, ":TRIG:STAT?") == "STOP"


def test_identity_reset_and_error_queue(scope: RigolDs1000zEmulator) -> None:
    assert q(scope, "*IDN?") == "RIGOL TECHNOLOGIES,DS1054Z,DS1ZA000000001,00.04.04.SP3"
    assert q(scope, "*OPC?") == "1"
    assert err(scope) == '0,"No error"'
    scope.process(b":CHAN1:BOGUS 1")
    scope.process(b":CHAN1:SCAL 1e6")
    assert err(scope) == '-113,"Undefined header"'
    assert err(scope) == '-222,"Data out of range"'
    assert q(scope, ":SYSTem:ERRor:NEXT?") == '0,"No error"'


def test_reset_state_and_every_setting_is_queryable(scope: RigolDs1000zEmulator) -> None:
    scope.process(b":CHAN2:DISP 1;:TIM:SCAL 1e-3;*RST")
    assert q(scope, ":CHAN1:DISP?;SCAL?;OFFS?;COUP?;PROB?;BWL?") == (
        "1;1.000000e+00;0.000000e+00;DC;1.000000e+01;OFF"
    )
    assert q(scope, ":CHAN2:DISP?") == "0"
    assert q(scope, ":TIM:SCAL?;OFFS?") == "1.000000e-06;0.000000e+00"
    assert q(scope, ":ACQ:TYPE?;AVER?;MDEP?;SRAT?") == "NORM;2;AUTO;1.000000e+09"
    assert q(scope, ":TRIG:MODE?;SWE?;EDG:SOUR?;SLOP?;LEV?") == "EDGE;AUTO;CHAN1;POS;0.000000e+00"
    assert q(scope, ":WAV:SOUR?;MODE?;FORM?;STAR?;STOP?") == "CHAN1;NORM;BYTE;1;1200"
    assert q(scope, ":WAV:XREF?;YREF?") == "0;127"
    assert err(scope) == '0,"No error"'


@pytest.mark.parametrize(
    "command",
    [
        ":CHANnel3:SCALe 0.2",
        ":chan3:scal 0.2",
        "CHANNEL3:SCALE 200mV",
        ":Chan3:Scal 2.1E-1",  # coarse knob: nearest 1-2-5 step
    ],
)
def test_short_and_long_forms(scope: RigolDs1000zEmulator, command: str) -> None:
    scope.process(b":CHAN3:PROB 1")
    scope.process(command.encode())
    assert q(scope, ":CHAN3:SCAL?") == "2.000000e-01"
    assert err(scope) == '0,"No error"'


def test_compound_commands_with_relative_paths(scope: RigolDs1000zEmulator) -> None:
    scope.process(b":CHAN2:DISP ON;PROB 1;SCAL 0.5;OFFS -0.25;COUP AC;BWL 20M")
    assert q(scope, ":CHAN2:DISP?;SCAL?;OFFS?;COUP?;PROB?;BWL?") == (
        "1;5.000000e-01;-2.500000e-01;AC;1.000000e+00;20M"
    )
    scope.process(b":TIMebase:MAIN:SCALe 200us;OFFSet 100us;:TIM:SCAL?")
    assert q(scope, ":TIMebase:SCALe?;:TIM:MAIN:OFFS?") == "2.000000e-04;1.000000e-04"
    scope.process(b":ACQ:TYPE AVERages;AVER 64;:TRIG:EDG:SOUR CHAN2;SLOP NEG;LEV 0.1")
    assert q(scope, ":ACQ:TYPE?;AVER?;:TRIG:EDG:SOUR?;SLOP?;LEV?") == (
        "AVER;64;CHAN2;NEG;1.000000e-01"
    )
    scope.process(b":TRIG:EDG:SOUR EXT;:TRIG:EDG:SOUR?")
    assert q(scope, ":TRIG:EDG:SOUR?") == "EXT"
    scope.process(b":WAV:SOUR CHANnel2;MODE RAW;FORM ASCii;:ACQ:MDEP 6000")
    assert q(scope, ":WAV:SOUR?;MODE?;FORM?;:ACQ:MDEP?") == "CHAN2;RAW;ASC;6000"
    assert err(scope) == '0,"No error"'


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (":CHAN5:SCAL 1", -114),
        (":CHAN0:DISP 1", -114),
        (":CHAN1:COUP XYZ", -224),
        (":CHAN1:SCAL", -109),
        (":CHAN1:SCAL 1,2", -108),
        (":CHAN1:SCAL 200", -222),  # probe 10×: 10 mV .. 100 V per division
        (":CHAN1:OFFS 1000", -222),
        (":CHAN1:PROB 3", -224),
        (":TIM:SCAL 100", -222),
        (":TIM:OFFS -1", -222),  # less than -screen/2
        (":ACQ:AVER 3", -224),
        (":ACQ:AVER 2048", -222),
        (":ACQ:MDEP 1000", -224),
        (":TRIG:EDG:LEV 100", -222),  # beyond ±5 divisions
        (":TRIG:MODE PULS", -224),
        (":WAV:SOUR MATH", -224),
        (":WAV:FORM FLOAT", -224),
        (":WAV:STAR 5000", -222),
        (":CHAN1:SCAL 1 Hz", -131),
        (":FOO:BAR?", -113),
    ],
)
def test_error_codes(scope: RigolDs1000zEmulator, command: str, code: int) -> None:
    before = q(scope, ":CHAN1:SCAL?;OFFS?;PROB?;:TIM:SCAL?;OFFS?;:ACQ:AVER?;MDEP?")
    assert scope.process(command.encode()) == b""
    assert err(scope).startswith(f"{code},")
    assert err(scope) == '0,"No error"'
    after = q(scope, ":CHAN1:SCAL?;OFFS?;PROB?;:TIM:SCAL?;OFFS?;:ACQ:AVER?;MDEP?")
    assert after == before, "a refused command changes nothing"


def test_nearest_125() -> None:
    assert nearest_125(0.3, 1e-3, 10.0) == 0.2
    assert nearest_125(0.35, 1e-3, 10.0) == 0.5
    assert nearest_125(7e-9, 5e-9, 50.0) == 5e-9
    assert nearest_125(99.0, 1e-3, 10.0) == 10.0


def test_single_waits_for_trigger_plus_post_trigger_time(
    scope: RigolDs1000zEmulator, clock: VirtualClock
) -> None:
    clock.set(0.0102)
    scope.process(b":CHAN1:PROB 1;SCAL 0.05;:TIM:SCAL 100e-6;:TRIG:EDG:SOUR CHAN1;LEV 0.02")
    assert q(scope, ":TRIG:STAT?") in ("AUTO", "TD")  # running after *RST
    scope.process(b":SING")
    t_arm = clock.now()
    # First rising crossing of 0.1 sin(2π f t + 0.3) through 0.02 V after arm + 0.6 ms pre-trigger.
    phase = (2 * np.pi * FREQ_HZ * (t_arm + 6e-4) + 0.3) % (2 * np.pi)
    target = math.asin(0.2)
    wait = ((target - phase) % (2 * np.pi)) / (2 * np.pi * FREQ_HZ)
    t_trig = t_arm + 6e-4 + wait
    t_done = t_trig + 6e-4
    clock.set(t_done - 1e-6)
    assert q(scope, ":TRIG:STAT?") == "WAIT"
    clock.set(t_done + 1e-6)
    assert q(scope, ":TRIG:STAT?") == "STOP"
    acq = scope.last_acquisition()
    assert acq is not None
    assert acq.triggers_s[0] == pytest.approx(t_trig, abs=2e-9)  # 1 µs grid, interpolated
    # Trigger point at the screen centre: point 600 is t = 0 and sits at the trigger level.
    pre = q(scope, ":WAV:PRE?").split(",")
    assert pre[:4] == ["0", "0", "1200", "1"]
    assert float(pre[4]) == pytest.approx(1e-6) and float(pre[5]) == pytest.approx(-6e-4)
    codes = np.frombuffer(block(scope), dtype=np.uint8).astype(float)
    volts = (codes - int(pre[8]) - int(pre[9])) * float(pre[7])
    assert volts[600] == pytest.approx(0.02, abs=float(pre[7]))
    assert volts[610] > volts[590]  # rising edge


def test_data_before_completion_is_the_previous_acquisition(
    scope: RigolDs1000zEmulator, clock: VirtualClock
) -> None:
    scope.process(b":CHAN1:PROB 1;SCAL 0.05;:TIM:SCAL 100e-6;:TRIG:EDG:SOUR EXT;LEV 0.5")
    acquire(scope, clock)
    first = block(scope)
    first_acq = scope.last
    scope.process(b":SING")
    clock.advance(1e-4)
    assert q(scope, ":TRIG:STAT?") == "WAIT"
    assert block(scope) == first
    assert scope.last is first_acq
    clock.advance(0.01)
    assert q(scope, ":TRIG:STAT?") == "STOP"
    assert scope.last is not first_acq


def test_all_channels_come_from_one_acquisition(
    scope: RigolDs1000zEmulator, clock: VirtualClock
) -> None:
    scope.process(b":TIM:SCAL 100e-6;:TRIG:EDG:SOUR EXT;LEV 0")
    for ch in (1, 2, 3, 4):
        scope.process(f":CHAN{ch}:DISP 1;PROB 1;SCAL 0.1".encode())
    clock.set(0.01234)
    acquire(scope, clock)
    acq = scope.last
    assert acq is not None and len(acq.triggers_s) == 1
    t_trig = acq.triggers_s[0]
    assert math.sin(2 * np.pi * FREQ_HZ * t_trig) == pytest.approx(0.0, abs=1e-6)
    t_rel = -6e-4 + 1e-6 * np.arange(SCREEN_POINTS)
    for ch in (1, 2, 3, 4):
        scope.process(f":WAV:SOUR CHAN{ch}".encode())
        codes = np.frombuffer(block(scope), dtype=np.uint8).astype(float)
        volts = (codes - 127) * 0.1 / 25
        expected = sines(ch, t_trig + t_rel)
        assert np.max(np.abs(volts - expected)) <= 0.5 * 0.1 / 25 + 1e-12, ch


def test_formats_agree_and_blocks_are_exact(
    scope: RigolDs1000zEmulator, clock: VirtualClock
) -> None:
    scope.adc_noise_v = 2e-3
    scope.process(b":CHAN1:PROB 1;SCAL 0.02;OFFS 0.013;:TIM:SCAL 50e-6;:TRIG:EDG:SOUR EXT")
    acquire(scope, clock)
    yinc, yorg, yref = 0.02 / 25, round(0.013 / (0.02 / 25)), 127
    assert q(scope, ":WAV:YINC?;YOR?;YREF?") == f"{yinc:e};{yorg};{yref}"
    by = np.frombuffer(block(scope), dtype=np.uint8).astype(float)
    scope.process(b":WAV:FORM WORD")
    word_payload = block(scope)
    assert len(word_payload) == 2 * SCREEN_POINTS
    assert word_payload[1::2] == bytes(SCREEN_POINTS), "WORD: high byte 0, low byte the code"
    wo = np.frombuffer(word_payload, dtype="<u2").astype(float)
    scope.process(b":WAV:FORM ASC")
    text = block(scope).decode()
    asc = np.array([float(x) for x in text.split(",")])
    assert text.split(",")[0] == f"{asc[0]:e}"
    np.testing.assert_array_equal(by, wo)
    np.testing.assert_allclose((by - yorg - yref) * yinc, asc, atol=yinc * 1e-5)
    assert q(scope, "*IDN?").startswith("RIGOL"), "the next query after a block still works"
    scope.process(b":WAV:FORM BYTE;:WAV:STAR 101;STOP 110")
    assert block(scope) == bytes(by[100:110].astype(np.uint8))


def test_raw_memory_reads_are_chunk_independent(
    scope: RigolDs1000zEmulator, clock: VirtualClock
) -> None:
    scope.adc_noise_v = 1e-3
    scope.process(b":CHAN1:PROB 1;SCAL 0.05;:TIM:SCAL 100e-6;:ACQ:MDEP 12000")
    acquire(scope, clock)
    scope.process(b":WAV:MODE RAW")
    pre = q(scope, ":WAV:PRE?").split(",")
    assert pre[1:3] == ["2", "12000"]
    assert float(pre[4]) == pytest.approx(1e-7) and float(pre[5]) == pytest.approx(-6e-4)
    assert q(scope, ":ACQ:SRAT?") == "1.000000e+07"
    scope.process(b":WAV:STAR 1;STOP 12000")
    whole = block(scope)
    scope.process(b":WAV:STAR 5000;STOP 9000")
    assert block(scope) == whole[4999:9000]
    scope.process(b":TRIG:SWE AUTO;:RUN;:WAV:DATA?")
    assert err(scope).startswith("-221,")


def test_clipping_saturates_at_the_adc_limits(
    scope: RigolDs1000zEmulator, clock: VirtualClock
) -> None:
    # CH4 carries 0.4 V amplitude; at 20 mV/div the screen is ±80 mV and the ADC ±101.6 mV.
    scope.process(b":CHAN4:DISP 1;PROB 1;SCAL 0.02;:TIM:SCAL 100e-6;:WAV:SOUR CHAN4")
    acquire(scope, clock)
    codes = np.frombuffer(block(scope), dtype=np.uint8)
    assert codes.min() == 0 and codes.max() == 255
    assert np.count_nonzero(codes == 255) > 100


def _noise_std(clock: VirtualClock, acquire_setup: bytes) -> float:
    emu = RigolDs1000zEmulator(
        clock, source=lambda ch, t: np.zeros_like(t), rng=np.random.default_rng(3), adc_noise_v=5e-3
    )
    emu.process(b":CHAN1:PROB 1;SCAL 0.02;:TIM:SCAL 1e-6;:TRIG:SWE NORM;:TRIG:EDG:SOUR AC")
    emu.process(acquire_setup)
    emu.process(b":SING")
    clock.advance(1.0)
    assert q(emu, ":TRIG:STAT?") == "STOP"
    codes = np.frombuffer(block(emu), dtype=np.uint8).astype(float)
    return float(np.std(codes)) * 0.8e-3  # volts per code at 20 mV/div


def test_averaging_reduces_noise_by_sqrt_n(clock: VirtualClock) -> None:
    single = _noise_std(clock, b":ACQ:TYPE NORM")
    averaged = _noise_std(clock, b":ACQ:TYPE AVER;AVER 16")
    assert single == pytest.approx(5e-3, rel=0.08)
    # σ/4 plus the quantisation (1/√12 code of 0.8 mV) in quadrature.
    expected = math.hypot(5e-3 / 4, 0.8e-3 / math.sqrt(12))
    assert averaged == pytest.approx(expected, rel=0.1)


def test_high_resolution_averages_the_oversampling_factor(clock: VirtualClock) -> None:
    # 12 kpts over 12 ms: 1 MSa/s stored, 1 GSa/s ADC: 1000 samples per stored point.
    normal = _noise_std(clock, b":TIM:SCAL 1e-3;:ACQ:MDEP 12000;:ACQ:TYPE NORM")
    hres = _noise_std(clock, b":TIM:SCAL 1e-3;:ACQ:MDEP 12000;:ACQ:TYPE HRES")
    assert hres < normal / 10


def test_averaged_acquisition_takes_n_sweeps(
    scope: RigolDs1000zEmulator, clock: VirtualClock
) -> None:
    scope.process(b":TIM:SCAL 100e-6;:TRIG:EDG:SOUR EXT;:ACQ:TYPE AVER;AVER 4;:SING")
    clock.advance(2.5e-3)  # 1 kHz trigger, 1.2 ms per sweep: not yet 4 sweeps
    assert q(scope, ":TRIG:STAT?") == "WAIT"
    clock.advance(0.01)
    assert q(scope, ":TRIG:STAT?") == "STOP"
    acq = scope.last
    assert acq is not None and len(acq.triggers_s) == 4
    assert np.all(np.diff(acq.triggers_s) >= 1.2e-3)
    assert q(scope, ":WAV:PRE?").split(",")[3] == "4"


def test_run_mode_status(scope: RigolDs1000zEmulator, clock: VirtualClock) -> None:
    scope.process(b":TRIG:EDG:LEV 4")  # CH1 shows a 1 V sine (10× probe): never reaches 4 V
    clock.advance(0.01)
    assert q(scope, ":TRIG:STAT?") == "AUTO"
    scope.process(b":TRIG:EDG:SOUR EXT;LEV 0")
    assert q(scope, ":TRIG:STAT?") == "TD"
    scope.process(b":TRIG:EDG:LEV 4;:TRIG:SWE NORM")
    clock.advance(0.01)
    assert q(scope, ":TRIG:STAT?") == "WAIT"
    scope.process(b":STOP")
    assert q(scope, ":TRIG:STAT?") == "STOP"


@settings(max_examples=40, deadline=None)
@given(
    scale_index=st.integers(min_value=0, max_value=11),
    offset_divs=st.floats(min_value=-3.0, max_value=3.0),
    level_divs=st.floats(min_value=-4.9, max_value=4.9),
)
def test_property_preamble_scaling_round_trip(
    scale_index: int, offset_divs: float, level_divs: float
) -> None:
    scale_v = [1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0][scale_index]
    offset_v = offset_divs * scale_v
    dc_v = (level_divs * scale_v) - offset_v  # level_divs divisions from the screen centre
    clock = VirtualClock()
    emu = RigolDs1000zEmulator(clock, source=lambda ch, t: np.full_like(t, dc_v))
    emu.process(f":CHAN1:PROB 1;SCAL {scale_v!r};OFFS {offset_v!r}".encode())
    emu.process(b":TRIG:EDG:SOUR AC;:SING")
    clock.advance(0.1)
    pre = q(emu, ":WAV:PRE?").split(",")
    yinc, yorg, yref = float(pre[7]), int(pre[8]), int(pre[9])
    assert yinc == pytest.approx(scale_v / 25) and yref == 127
    codes = np.frombuffer(block(emu), dtype=np.uint8).astype(float)
    volts = (codes - yorg - yref) * yinc
    np.testing.assert_allclose(volts, dc_v, atol=0.5 * yinc * (1 + 1e-6))
    emu.process(b":WAV:FORM ASC")
    asc = np.array([float(x) for x in block(emu).decode().split(",")])
    np.testing.assert_allclose(asc, volts, rtol=1e-6, atol=1e-12)
