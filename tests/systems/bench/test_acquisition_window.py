"""The acquisition window: per-period fits anywhere in a record (``fit_periods(start_s=…)``),
the periodicity check that noise cannot fool (``PeriodFit.unexplained_rms_v``), the scope record
placed to END when the K fitted periods end (``AcquisitionWindow.place``), and, through the in-memory
emulated bench, every fitted period starting at or after the settle decision."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from test_safety_bench import BENCH, CALIBRATION, xor_spec

from physlearn.calibration.schema import CalibrationFile
from physlearn.simulators.bench_twin import EmulatedBench
from physlearn.spec.clock import TwinClock
from physlearn.systems.bench.acquisition import fit_periods
from physlearn.systems.bench.journal import MeasurementRecord
from physlearn.systems.bench.options import BenchOptions
from physlearn.systems.bench.system import BenchSystem

pytestmark = pytest.mark.timeout(300)

T = 4.0
H = 6


def periodic(t: np.ndarray) -> np.ndarray:
    w = 2 * math.pi / T
    return 0.3 + np.cos(w * t + 0.4) + 0.2 * np.sin(3 * w * t) - 0.05 * np.cos(5 * w * t)


def record(t0: float, t1: float, n: int = 3000) -> np.ndarray:
    return np.linspace(t0, t1, n, endpoint=False)


def test_fit_periods_before_the_trigger_recovers_the_waveform_in_the_drive_phase() -> None:
    t = record(-5.5, 0.5)  # a 6 s screen ending 0.5 s after the trigger (t = 0)
    grid = np.arange(33) * T / 33
    fit = fit_periods(t, periodic(t), T, 1, grid, H, 0.0, -3.5)
    # the fitted period [-3.5, 0.5) is in the drive's phase: its values are those at t = grid
    assert np.max(np.abs(fit.values[0] - periodic(grid))) < 1e-9
    assert fit.residual_rms_v < 1e-9 and fit.dof == 2000 - (2 * H + 1)
    assert fit.repeat_n == 1000 and fit.repeat_rms_v < 1e-9  # [-5.5, -3.5) before it
    assert fit.unexplained_rms_v() < 1e-9
    # two periods, the first from -7 s: only 0.5 s of the record is before them
    t2 = record(-7.5, 1.0, 4250)
    fit2 = fit_periods(t2, periodic(t2), T, 2, grid, H, 0.0, -7.0)
    assert np.max(np.abs(fit2.values - periodic(grid))) < 1e-9
    assert fit2.repeat_n == 250
    # the periods must lie in the record
    with pytest.raises(ValueError):
        fit_periods(t, periodic(t), T, 1, grid, H, 0.0, -6.5)


def test_lattice_fit_is_bit_identical_wherever_the_period_starts() -> None:
    # a record on the lattice n dt from the trigger, 800 samples per period, quantised: the
    # same samples of the same response, fitted from two different period starts
    dt = T / 800
    t = np.arange(-1800, 0) * dt
    v = np.round(periodic(t) * 50) / 50
    grid = np.arange(33) * T / 33
    fits = [
        fit_periods(t, v, T, 1, grid, H, 0.0, start, lattice_s=dt)
        for start in (-T - 137 * dt, -T - 811 * dt, -2 * T)
    ]
    for f in fits[1:]:
        assert np.array_equal(f.values, fits[0].values)
        assert f.residual_rms_v == fits[0].residual_rms_v
    plain = fit_periods(t, v, T, 1, grid, H, 0.0, -T - 137 * dt)
    assert np.max(np.abs(plain.values - fits[0].values)) < 1e-12  # the same fit otherwise


def test_unexplained_rms_ignores_noise_and_quantisation_but_not_subharmonics() -> None:
    rng = np.random.default_rng(1)
    t = record(-6.0, 0.0)
    grid = np.arange(33) * T / 33
    swing = float(np.max(np.abs(periodic(t))))

    def unexplained(v: np.ndarray, lsb: float = 0.0) -> float:
        return fit_periods(t, v, T, 1, grid, H, 0.0, -4.0).unexplained_rms_v(lsb) / swing

    # white noise at 5 % of the swing (the raw residual is ≈ 0.05): explained, ≈ 0
    noisy = periodic(t) + 0.05 * swing * rng.standard_normal(t.size)
    assert fit_periods(t, noisy, T, 1, grid, H, 0.0, -4.0).residual_rms_v / swing > 0.04
    assert unexplained(noisy) < 0.01
    # undithered 8-bit quantisation (not white: the lsb²/12 floor explains it)
    lsb = 2 * swing / 200
    assert unexplained(np.round(periodic(t) / lsb) * lsb, lsb) < 0.01
    # a period-doubled response: the half-frequency part fits inside one period, but the part
    # of the record before it has the opposite sign
    w = 2 * math.pi / T
    doubled = noisy + 0.05 * swing * np.sin(w * t / 2)
    assert unexplained(doubled) > 0.03
    # an incommensurate tone (quasi-periodic response)
    quasi = noisy + 0.05 * swing * np.sin(w * (math.sqrt(2) - 1) * t + 1.0)
    assert unexplained(quasi) > 0.02


def make(ranging: str = "hysteretic", **settle: object) -> tuple[EmulatedBench, BenchSystem]:
    bench = EmulatedBench.from_file(BENCH, virtual=True)
    res = bench.serve(memory_prefix=f"window{id(settle)}-", control=False)
    opts = BenchOptions(
        safety={"max_response": 3.0},
        settle=settle,
        calibration_max_age_days=None,
        ranging=ranging,  # type: ignore[arg-type]
    )
    cal = CalibrationFile.read(CALIBRATION)
    return bench, BenchSystem(
        bench.config, cal, xor_spec(), TwinClock(bench.control), opts, resources=res
    )


@pytest.mark.parametrize("ranging", ["hysteretic", "canonical"])
@pytest.mark.parametrize("periods", [1, 3])
def test_window_ends_the_record_when_the_fitted_periods_end(periods: int, ranging: str) -> None:
    bench, sysb = make(ranging, acquire_periods=periods)
    try:

        async def run() -> None:
            await sysb.connect()
            await sysb.arm()

        asyncio.run(run())
        Tp, screen = sysb.period_s, sysb.scopes.window.screen_s
        assert screen >= periods * Tp
        for not_before in sysb.scopes.window.phase_origin_s + np.linspace(0.0, 3 * Tp, 37):
            w0, e, offset, t_arm = sysb.scopes.window.place(float(not_before))
            assert w0 == not_before
            assert e - Tp < w0 <= e + 1e-9 * Tp and e <= w0 + periods * Tp
            assert -screen / 2 <= offset <= screen / 2
            pre = screen / 2 - offset  # the scope's pre-trigger time
            end = e + offset + screen / 2  # record end: when the fitted periods end
            if ranging == "canonical":  # the offset on the screen-sample lattice (< dt later)
                dt = screen / 1200
                assert abs(offset / dt - round(offset / dt)) < 1e-6
                assert w0 + periods * Tp - 1e-9 * Tp <= end < w0 + periods * Tp + dt
                assert e - Tp / 8 - dt < t_arm + pre <= e - Tp / 8 + 1e-9 * Tp
            else:
                assert math.isclose(end, w0 + periods * Tp)
                assert math.isclose(t_arm + pre, e - Tp / 8)  # edge search starts T/8 early
    finally:
        asyncio.run(sysb.close())
        bench.stop()


def test_bench_fits_start_at_or_after_the_settle_decision_and_the_record_matches() -> None:
    bench, sysb = make()  # calibrated decay rate judges settling, K = 1
    spec = sysb.spec
    try:

        async def run() -> list[MeasurementRecord]:
            await sysb.connect()
            await sysb.arm()
            await sysb.set_parameters(spec.initial_parameters())
            await sysb.set_input(np.array([[1.0, 0.0], [0.0, 1.0]]))
            await sysb.measure()
            await sysb.set_parameters(spec.initial_parameters() * 0.9)
            await sysb.measure()
            return sysb.drain_journal()

        journal = asyncio.run(run())
        Tp = sysb.period_s
        scopes = [bench.emulators[n] for n in ("scope1", "scope2")]
        acqs = [s.last_acquisition() for s in scopes]
        n = 0
        for entry in journal:
            for i in range(len(entry.t_window)):
                t_change, t_settle = entry.t_change[i], entry.t_settle[i]
                t_window, t_trigger = entry.t_window[i], entry.t_trigger[i]
                assert t_settle >= t_change
                assert t_window >= t_settle  # no fitted sample before the settle decision
                assert t_window <= t_trigger < t_window + Tp
                assert entry.settle_s[i] == pytest.approx(t_window - t_change)
                assert entry.acquisitions[i] >= 1
                n += 1
        assert n == 4
        # the emulated scopes' last record: triggered on the planned sync edge, ending when the
        # fitted period ends (the emulator's own timing, not the controller's plan)
        t_window = journal[-1].t_window[-1]
        for acq in acqs:
            assert acq is not None
            (t_trig,) = acq.triggers_s
            assert t_trig == pytest.approx(journal[-1].t_trigger[-1], abs=1e-3)
            end = t_trig + acq.settings.post_trigger_s
            assert end == pytest.approx(t_window + Tp, abs=1e-3)
            assert t_trig - acq.settings.pre_trigger_s <= t_window
    finally:
        asyncio.run(sysb.close())
        bench.stop()
