"""The lock-in emulators' measurement physics on a virtual clock: demodulation, settling,
noise averaged down by the time constant, synchronous filter, overload and unlock."""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.special import gammaincc
from scipy.stats import chi2

from physlearn.simulators.clock import VirtualClock
from physlearn.simulators.instruments.srs_lockin import (
    Sr830Emulator,
    Sr860Emulator,
    SrsLockinEmulator,
    enbw_hz,
)

pytestmark = pytest.mark.timeout(60)

F_HZ = 1000.0
REF_PHASE_RAD = 0.7  # the generator's sync phase origin


def theta_ref(t: NDArray[np.float64]) -> NDArray[np.float64]:
    return 2 * np.pi * F_HZ * t + REF_PHASE_RAD


def make(model: str, clock: VirtualClock, **kwargs: object) -> SrsLockinEmulator:
    cls = Sr830Emulator if model == "sr830" else Sr860Emulator
    emu = cls(clock, reference=lambda: (F_HZ, REF_PHASE_RAD), **kwargs)
    emu.process(b"FMOD 0" if model == "sr830" else b"RSRC EXT")
    return emu


def read_xy(emu: SrsLockinEmulator) -> complex:
    code = "1,2" if isinstance(emu, Sr830Emulator) else "0,1"
    reply = emu.process(f"SNAP? {code}".encode()).decode().strip()
    x, y = (float(v) for v in reply.split(","))
    return complex(x, y)


def setup(emu: SrsLockinEmulator, *, tau_index_830: int, slope: int, sens_830: int) -> None:
    """Time constant, slope and sensitivity by SR830 index (mapped for the SR860)."""
    if isinstance(emu, Sr830Emulator):
        emu.process(f"OFLT {tau_index_830};OFSL {slope};SENS {sens_830}".encode())
    else:
        emu.process(f"OFLT {tau_index_830 + 2};OFSL {slope};SCAL {26 - sens_830}".encode())


@pytest.mark.parametrize("model", ["sr830", "sr860"])
@pytest.mark.parametrize(
    ("harmonic", "tau_index"),
    [(1, 8), (2, 8), (3, 11)],  # 100 ms: sampled demodulation; 3 s: period averages
)
def test_known_sine_gives_amplitude_and_phase(model: str, harmonic: int, tau_index: int) -> None:
    clock = VirtualClock()
    amplitude_v, theta_s, phase_deg = 0.02, 1.1, 25.0

    def source(t: NDArray[np.float64]) -> NDArray[np.float64]:
        signal = amplitude_v * np.sin(harmonic * theta_ref(t) + theta_s)
        other = 0.03 * np.sin(theta_ref(t) + 0.3) + 0.01 * np.sin(5 * theta_ref(t))  # not detected
        return signal + (other if harmonic != 1 else 0.0) + 0.005  # + a DC offset

    emu = make(model, clock, source=source)
    setup(emu, tau_index_830=tau_index, slope=3, sens_830=23)  # 100 mV full scale
    emu.process(f"HARM {harmonic};PHAS {phase_deg}".encode())
    clock.advance(20 * emu.time_constant_s)
    z = read_xy(emu)
    expected = amplitude_v / math.sqrt(2) * cmath.exp(1j * (theta_s - math.radians(phase_deg)))
    assert abs(z - expected) < 1e-4 * abs(expected)  # resolution 2^-15 (SR830), float32 (SR860)
    line = b"OUTP? 3;OUTP? 4" if model == "sr830" else b"OUTP? 2;OUTP? 3"
    r, theta = (float(v) for v in emu.process(line).split())
    assert r == pytest.approx(abs(expected), rel=1e-4)
    assert math.radians(theta) == pytest.approx(cmath.phase(expected), abs=1e-4)


@pytest.mark.parametrize("model", ["sr830", "sr860"])
@pytest.mark.parametrize("slope", [0, 1, 3])
@pytest.mark.parametrize(
    ("tau_index", "tolerance"),
    # 100 ms = 100 periods: sampled; the 2f ripple of the first stage (1/4πfτ = 8e-4 of the
    # signal) is carried through the step. 300 ms: period averages, no ripple.
    [(8, 2e-3), (9, 1e-4)],
)
def test_reading_right_after_a_step_is_unsettled_as_the_cascade_predicts(
    model: str, slope: int, tau_index: int, tolerance: float
) -> None:
    clock = VirtualClock()
    emu = make(model, clock, source=lambda t: 0.1 * np.sin(theta_ref(t)))
    setup(emu, tau_index_830=tau_index, slope=slope, sens_830=23)
    tau = emu.time_constant_s
    n = slope + 1
    clock.advance(30 * tau)
    before = read_xy(emu)
    emu.process(b"PHAS 90")  # the demodulated signal steps from z0 to z0·e^{-iπ/2}
    t_step = clock.now()
    after = before * cmath.exp(-0.5j * math.pi)
    for elapsed_taus in (0.5, 1.0, 3.0):
        clock.set(t_step + elapsed_taus * tau)
        remaining = gammaincc(n, elapsed_taus)  # step-response error e^-x Σ_{k<n} x^k/k!
        predicted = after + (before - after) * remaining
        z = read_xy(emu)
        assert abs(z - predicted) < tolerance * abs(before), elapsed_taus
        if elapsed_taus == 0.5:
            assert abs(z - after) > 0.5 * abs(before)  # far from settled
    clock.advance(20 * tau)
    assert abs(read_xy(emu) - after) < max(tolerance / 4, 1e-4) * abs(before)


def test_noise_is_averaged_down_by_the_time_constant_with_the_manual_enbw() -> None:
    e_n = 1e-6  # V/√Hz
    rng = np.random.default_rng(1234)
    stds = {}
    for tau_index, slope in ((6, 0), (8, 0), (8, 3)):  # 10 ms and 100 ms at 6 dB/oct, 24 dB/oct
        clock = VirtualClock()
        emu = Sr830Emulator(clock, rng=rng, input_noise_v_per_rthz=e_n)
        emu.process(f"FMOD 1;FREQ 100;SENS 14;OFLT {tau_index};OFSL {slope}".encode())
        tau, n = emu.time_constant_s, slope + 1
        sigma = e_n * math.sqrt(enbw_hz(tau, n))
        assert emu.noise_sigma() == pytest.approx(sigma)
        samples = []
        for _ in range(400):
            clock.advance(25 * tau)  # readings 25 τ apart are independent
            samples.append(read_xy(emu))
        z = np.array(samples)
        for part in (z.real, z.imag):
            dof = part.size
            statistic = float(np.sum(part**2)) / sigma**2  # mean is 0: χ² with `dof`
            assert chi2.ppf(1e-4, dof) < statistic < chi2.ppf(1 - 1e-4, dof)
        assert abs(np.corrcoef(z.real, z.imag)[0, 1]) < 4.0 / math.sqrt(z.size)
        stds[(tau_index, slope)] = float(np.std(z.real))
    # ten times the time constant: √10 less noise
    assert stds[(6, 0)] / stds[(8, 0)] == pytest.approx(math.sqrt(10), rel=0.2)


def test_noise_statistics_do_not_depend_on_how_often_one_reads() -> None:
    e_n, rng = 1e-6, np.random.default_rng(99)
    clock = VirtualClock()
    emu = Sr830Emulator(clock, rng=rng, input_noise_v_per_rthz=e_n)
    emu.process(b"FMOD 1;FREQ 100;SENS 14;OFLT 6;OFSL 1")
    tau = emu.time_constant_s
    sigma = emu.noise_sigma()
    samples = []
    for _ in range(300):
        for _ in range(7):  # many small updates in between
            clock.advance(3 * tau)
            emu.process(b"*OPC?")
        samples.append(read_xy(emu).real)
    statistic = float(np.sum(np.square(samples))) / sigma**2
    assert chi2.ppf(1e-4, 300) < statistic < chi2.ppf(1 - 1e-4, 300)


def test_sync_filter_removes_the_2f_ripple_below_200_hz() -> None:
    clock = VirtualClock()
    f = 50.0
    emu = Sr830Emulator(clock, source=lambda t: 0.1 * np.sin(2 * np.pi * f * t))
    emu.process(f"FMOD 1;FREQ {f};SENS 24;OFLT 6;OFSL 0".encode())  # τ = 10 ms, 6 dB/oct
    clock.advance(0.5)
    ripple = []
    for _ in range(64):
        clock.advance(1 / (64 * f))
        ripple.append(read_xy(emu).real)
    expected = 0.1 / math.sqrt(2)
    # a 2f = 100 Hz ripple attenuated by 1/√(1 + (2π·100·τ)²) = 0.157
    assert max(ripple) - min(ripple) == pytest.approx(2 * 0.157 * expected, rel=0.03)
    emu.process(b"SYNC 1")
    clock.advance(0.5)
    synced = []
    for _ in range(8):
        clock.advance(1 / (8 * f))
        synced.append(read_xy(emu).real)
    assert max(synced) - min(synced) < 1e-4 * expected
    assert np.mean(synced) == pytest.approx(expected, rel=1e-4)


def test_sr830_output_overload_saturates_and_latches() -> None:
    clock = VirtualClock()
    emu = Sr830Emulator(clock, source=lambda t: 0.01 * np.sin(2 * np.pi * F_HZ * t))
    emu.process(b"FMOD 1;SENS 17;OFLT 5;OFSL 1;RMOD 0")  # 1 mV full scale, 7 mV rms signal
    clock.advance(0.1)
    z = read_xy(emu)
    assert z.real == pytest.approx(1e-3, rel=1e-4) and abs(z.imag) < 1e-5  # saturated at FS
    # unsaturated inside; τ = 3 ms leaves a 2f ripple of (4πfτ)^-2 = 7e-4
    assert emu.filter_output().real == pytest.approx(0.01 / math.sqrt(2), rel=2e-3)
    assert emu.process(b"LIAS?") == b"4\r"  # output overload only (high reserve: input ok)
    clock.advance(0.1)
    assert emu.process(b"LIAS?") == b"4\r"  # still overloaded: latched again
    emu.process(b"SENS 22")  # 50 mV: fits
    clock.advance(0.1)
    assert emu.process(b"LIAS?") == b"0\r"
    assert read_xy(emu).real == pytest.approx(0.01 / math.sqrt(2), rel=2e-3)


def test_input_overload_from_the_input_range() -> None:
    clock = VirtualClock()
    emu830 = Sr830Emulator(clock, source=lambda t: 0.05 * np.sin(2 * np.pi * F_HZ * t))
    emu830.process(b"FMOD 1;SENS 17;RMOD 2")  # low noise: input range √2·1 mV·10^(20/20)
    clock.advance(0.01)
    assert int(emu830.process(b"LIAS? 0")) == 1
    emu860 = Sr860Emulator(clock, source=lambda t: 0.05 * np.sin(2 * np.pi * F_HZ * t))
    emu860.process(b"IRNG 4;SCAL 0")  # 10 mV range, 1 V full scale
    clock.advance(0.01)
    assert emu860.process(b"LIAS?") == b"1\n"
    emu860.process(b"IRNG 2")  # 100 mV range
    clock.advance(0.01)
    assert emu860.process(b"LIAS?") == b"0\n"


def test_missing_or_out_of_range_reference_unlocks() -> None:
    clock = VirtualClock()
    emu = Sr830Emulator(clock, source=lambda t: 0.1 * np.sin(2 * np.pi * F_HZ * t))
    emu.process(b"FMOD 0")
    clock.advance(0.1)
    assert int(emu.process(b"LIAS?")) & 8 and emu.process(b"FREQ?") == b"0\r"
    emu.connect_reference(lambda: (2e5, 0.0))  # above 102 kHz
    clock.advance(0.1)
    assert int(emu.process(b"LIAS? 3")) == 1
    emu.connect_reference(lambda: (F_HZ, 0.0))
    clock.advance(2.0)
    assert int(emu.process(b"LIAS? 3")) == 0
    assert abs(read_xy(emu)) == pytest.approx(0.1 / math.sqrt(2), rel=1e-4)
