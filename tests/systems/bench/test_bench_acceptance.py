"""Issue-4 acceptance through the whole emulated reference bench, with the real emulators and the
real drivers (examples/bench.toml: 33522B over TCP, DS1054Z over TCP, SR830 on a pty, SR860 over
TCP, QDAC-II on a pty — or everything in memory):

- acceptance 3: the 33500B driver drives the wired nodes (through the hidden actuator truth), the
  QDAC sets the couplings, the DS1054Z (triggered on the generator's sync, :SINGle, all four
  channels of one acquisition) and both lock-ins (external reference from the sync) measure the
  free phase; the data agree with the ideal twin's periodic steady state after the truth's
  gains/offsets/delays are applied, by a χ² test against the modelled noise and quantisation —
  and the same test rejects the data when the nominal actuator gain replaces the true one;
- same seed and same commands → bit-identical bytes (every emulator's received messages and
  replies) and numbers, in memory and over TCP + ptys with the clock on the twin-control socket.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from bench_drivers import Drivers, bench_drivers, record
from numpy.typing import NDArray
from scipy import stats

from physlearn.drivers.rigol_ds1000z import Waveform
from physlearn.simulators.bench_twin import EmulatedBench, load_twin_config
from physlearn.simulators.instruments.qdac2 import quantise
from physlearn.simulators.instruments.srs_lockin import enbw_hz
from physlearn.simulators.problem import PeriodicProblem
from physlearn.simulators.twin_control import TwinControlClient
from physlearn.spec.bench import BenchConfig
from physlearn.spec.network import NetworkSpec
from physlearn.spec.waveform import SampledWaveform

from test_bench_twin_helpers import EXAMPLE  # isort: skip

pytestmark = pytest.mark.timeout(180)

Array = NDArray[np.float64]
F_HZ = 25.0
OMEGA = 2.0 * math.pi * F_HZ
PERIOD = 1.0 / F_HZ
DAC_V = {1: 0.4, 2: -0.3, 3: 0.8, 4: 0.1}  # qdac channel → volts (edges 0-2, 1-2, 0-3, 2-3)
GEN = {1: (0.5, 0.0), 2: (0.4, math.radians(60.0))}  # fgen channel → (peak V, phase rad)
SCALE_V = {1: 0.2, 2: 0.2, 3: 0.1, 4: 0.05}  # scope volts/div per channel
LOCKIN_TAU_S = 3e-3  # 24 dB/oct + synchronous filter: σ ≈ 5 µV, ≳ the SR830's 15-bit LSB
LOCKIN_READS = 8
LOCKIN_SPACING_S = 0.1  # ≫ τ: independent noise samples
PRE_PHASE_S = 0.0137  # the phase origin is not at t = 0
SETTLE_S = 1.5  # Q ≈ 8 at 25 Hz: the transient has decayed by e^-19
SEED = 20240611
_names = itertools.count()

Advance = Callable[[float], Awaitable[float]]
Now = Callable[[], Awaitable[float]]


@dataclass
class ChainResult:
    """What the controller side learned from one run of the measurement chain."""

    phase_origin_s: float
    dac_readback_v: list[float]
    lockin1: list[complex] = field(default_factory=list)
    lockin2: list[complex] = field(default_factory=list)
    lockin_times_s: list[float] = field(default_factory=list)
    waves: dict[int, Waveform] = field(default_factory=dict)
    scope_noise_sigma_v: float = 0.0
    extra: list[Any] = field(default_factory=list)


async def run_chain(d: Drivers, advance: Advance, now: Now) -> ChainResult:
    """Couplings from the QDAC, sines from the 33522B, then lock-in and scope measurements."""
    await d.qdac.set_voltages(DAC_V)
    await advance(PRE_PHASE_S)
    for ch, (amp, phase) in GEN.items():
        f = await d.gen.set_sine(ch, F_HZ, amp, 0.0, phase)
        assert f == F_HZ
    await d.gen.set_sync(True, 1)
    await d.gen.sync_phases()
    t0 = await now()
    for ch in GEN:
        await d.gen.output(ch, True)
    result = ChainResult(t0, (await d.qdac.get_voltages(sorted(DAC_V))).tolist())
    for li in (d.lockin1, d.lockin2):
        await li.reset()
        await li.set_reference_external()
        await li.set_harmonic(1)
        await li.set_phase(0.0)
        await li.set_sensitivity(0.5)
        await li.set_time_constant(LOCKIN_TAU_S, slope_db_per_oct=24)
        await li.set_sync_filter(True)
        await li.set_input_coupling("dc")
    await d.lockin2.set_input_range(1.0)
    for ch, scale in SCALE_V.items():
        await d.scope.configure_channel(ch, scale, 0.0, "DC", probe=1)
    await d.scope.set_timebase(4e-3, 0.0)
    await d.scope.set_acquisition("NORMal")
    await d.scope.set_trigger_edge("EXT", level_v=1.5, slope="POS")
    await advance(SETTLE_S)
    for _ in range(LOCKIN_READS):
        result.lockin_times_s.append(await now())
        result.lockin1.append(await d.lockin1.read_xy(check_overload=True))
        result.lockin2.append(await d.lockin2.read_xy(check_overload=True))
        await advance(LOCKIN_SPACING_S)
    await d.scope.single()

    async def sleep(dt: float) -> None:
        await advance(dt)

    await d.scope.wait_triggered(timeout_s=0.5, poll_s=0.01, sleep=sleep)
    result.waves = await d.scope.read_channels(sorted(SCALE_V), allow_clipped=False)
    result.extra = [
        await d.gen.get_settings(1),
        await d.gen.get_settings(2),
        await d.lockin1.get_reference_frequency_hz(),
        await d.lockin2.get_noise_bandwidth_hz(),
        await d.lockin1.status(),
        await d.scope.get_trigger(),
    ]
    await d.gen.safe_state()
    await d.qdac.safe_state()
    return result


# --------------------------------------------------------------------------------------------
# benches
# --------------------------------------------------------------------------------------------


def full_config() -> tuple[BenchConfig, Any]:
    config = BenchConfig.load(EXAMPLE)
    return config, load_twin_config(config, str(EXAMPLE))


@pytest.fixture
def benches() -> Iterator[Callable[..., EmulatedBench]]:
    made: list[EmulatedBench] = []

    def make(**kwargs: Any) -> EmulatedBench:
        config, twin = full_config()
        bench = EmulatedBench(config, twin, **kwargs)
        made.append(bench)
        return bench

    yield make
    for bench in made:
        bench.stop()


def run_in_memory(bench: EmulatedBench) -> ChainResult:
    resources = bench.serve(memory_prefix=f"accept{next(_names)}-", control=False)

    async def go() -> ChainResult:
        async def now() -> float:
            return bench.control.now()

        async with bench_drivers(bench.config, resources) as d:
            return await run_chain(d, bench.control.advance, now)

    return asyncio.run(go())


def run_over_network(bench: EmulatedBench) -> ChainResult:
    resources = bench.serve()
    address = bench.control_address
    assert address is not None

    async def go() -> ChainResult:
        async with TwinControlClient(address) as control:
            assert await control.mode() == "VIRTUAL"
            async with bench_drivers(bench.config, resources, timeout_s=5.0) as d:
                return await run_chain(d, control.advance, control.now)

    return asyncio.run(go())


# --------------------------------------------------------------------------------------------
# the ideal twin's expectation (the test may read the hidden truth)
# --------------------------------------------------------------------------------------------


def ideal_orbit(
    bench: EmulatedBench, t0: float, actuator_gain: float | None = None
) -> SampledWaveform:
    """The ideal twin's periodic steady state for the bench's DAC and generator settings under
    the hidden truth: couplings α_e(V_DAC quantised), forces g_j·A sin(ω(t − τ_j − t0) + φ)."""
    twin = bench.twin
    tr = twin.truth
    raw = twin.spec.model_dump()
    v_dac = np.array([quantise(DAC_V[e.channel], "HIGH") for e in bench.config.wiring.edges])
    alpha = tr.coupling(v_dac)
    for e, term in enumerate(twin._edge_terms):
        raw["couplings"][int(term)]["value"] = float(alpha[e])
    tones = []
    for j, dw in enumerate(bench.config.wiring.drives):
        amp, phi = GEN[dw.channel]
        gain = tr.actuator_gain_n_per_v[j] if actuator_gain is None else actuator_gain
        phase = phi - OMEGA * (tr.actuator_delay_s[j] + t0) - math.pi / 2  # sin → cos
        tones.append({"node": dw.node, "amplitude_n": gain * amp, "phase_rad": phase})
    raw["drive"]["tones"] = tones
    spec = NetworkSpec.model_validate(raw)
    sol = PeriodicProblem.from_spec(spec, points_per_period=129).solve(tol=1e-12)
    assert sol.multipliers is not None and np.abs(sol.multipliers).max() < 1.0  # attracting
    return SampledWaveform(sol.x, spec.period_s, "spectral")


def sensed(bench: EmulatedBench, orbit: SampledWaveform, path: int, t: Array) -> Array:
    """Noise-free volts at the instrument end of sense wire `path`: G x(t − τ) + O + drift."""
    tr = bench.twin.truth
    node = bench.config.wiring.sense[path].node
    x = orbit(t - tr.sensing_delay_s[path])[0, :, node]
    out: Array = tr.sensing_gain_v_per_unit[path] * x + tr.sensing_offset(path, t)
    return out


def sense_path(bench: EmulatedBench, instrument: str, channel: int | None = None) -> int:
    for i, sw in enumerate(bench.config.wiring.sense):
        if sw.instrument == instrument and sw.channel == channel:
            return i
    raise KeyError((instrument, channel))


def scope_chi2(
    bench: EmulatedBench, result: ChainResult, orbit: SampledWaveform
) -> tuple[float, float, int]:
    """χ² of the scope residuals against white noise σ plus uniform ADC quantisation (LSB q):
    each residual has variance s² = σ² + q²/12 and fourth moment 3σ⁴ + σ²q²/2 + q⁴/80, so
    χ² = Σ r²/s² has mean N and variance Σ (E r⁴/s⁴ − 1); returns (χ²/N, z, N)."""
    sigma = bench.twin.truth.scope_sigma_v
    acq = bench.emulators["scope"].last_acquisition()
    k = round((acq.triggers_s[0] - result.phase_origin_s) / PERIOD)
    t_trig = result.phase_origin_s + k * PERIOD  # the sync rises at the phase origin + kT
    assert abs(acq.triggers_s[0] - t_trig) < 2e-6
    chi2, var, n = 0.0, 0.0, 0
    for ch, wave in result.waves.items():
        q = wave.preamble.yincrement_v
        s2 = sigma**2 + q**2 / 12.0
        m4 = 3 * sigma**4 + sigma**2 * q**2 / 2.0 + q**4 / 80.0
        expected = sensed(bench, orbit, sense_path(bench, "scope", ch), t_trig + wave.t_s)
        r = wave.volts - expected
        chi2 += float(np.sum(r**2) / s2)
        var += r.size * (m4 / s2**2 - 1.0)
        n += r.size
    return chi2 / n, (chi2 - n) / math.sqrt(var), n


def lockin_expectation(
    bench: EmulatedBench, orbit: SampledWaveform, path: int, t0: float, t_read: float
) -> complex:
    """X + iY (V rms) of a lock-in locked to the sync (θ_ref = ω(t − t0), phase 0, harmonic 1)
    in steady state: the period mean of i√2·v(t)·e^{−iθ_ref(t)} (the emulator's documented
    demodulation; with the synchronous filter the 2f ripple and the offset average out)."""
    t = t_read - PERIOD + PERIOD * (np.arange(512) + 0.5) / 512
    v = sensed(bench, orbit, path, t)
    return complex(np.mean(1j * math.sqrt(2.0) * v * np.exp(-1j * OMEGA * (t - t0))))


def lockin_chi2(
    bench: EmulatedBench, result: ChainResult, orbit: SampledWaveform
) -> tuple[float, int, float]:
    """χ² of X and Y residuals of both lock-ins against σ = e_n·√ENBW (24 dB/oct) plus the
    reported value's quantisation (binary mantissa and decimal digits, uniform); returns
    (χ², N, two-sided p)."""
    e_n = bench.twin.truth.lockin_noise_v_per_rthz
    sigma = e_n * math.sqrt(enbw_hz(LOCKIN_TAU_S, 4))
    chi2, n = 0.0, 0
    for name, readings in (("lockin1", result.lockin1), ("lockin2", result.lockin2)):
        emulator = bench.emulators[name]
        path = sense_path(bench, name)
        for t_read, z in zip(result.lockin_times_s, readings, strict=True):
            want = lockin_expectation(bench, orbit, path, result.phase_origin_s, t_read)
            for got, exp in ((z.real, want.real), (z.imag, want.imag)):
                _, e2 = math.frexp(got)
                q_bin = math.ldexp(1.0, e2 - emulator.mantissa_bits)
                q_dec = 10.0 ** (math.floor(math.log10(abs(got))) - (emulator.reply_digits - 1))
                s2 = sigma**2 + (q_bin**2 + q_dec**2) / 12.0
                chi2 += (got - exp) ** 2 / s2
                n += 1
    p = 2.0 * min(float(stats.chi2.sf(chi2, n)), float(stats.chi2.cdf(chi2, n)))
    return chi2, n, p


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------


def test_same_seed_same_commands_bit_identical_bytes_in_memory_and_over_tcp_and_ptys(
    benches: Callable[..., EmulatedBench],
) -> None:
    """The whole chain twice with one seed: in memory, and over TCP (generator, scope, SR860)
    and ptys (SR830, QDAC) with the clock on the twin-control socket. Every emulator receives
    the same messages and sends the same bytes; the drivers return the same numbers."""
    runs = {}
    for kind, runner in (("memory", run_in_memory), ("network", run_over_network)):
        bench = benches(virtual=True, seed=SEED)
        logs = {name: record(emulator) for name, emulator in bench.emulators.items()}
        result = runner(bench)
        runs[kind] = (bench, result, logs)
        if kind == "network":
            res = bench.resources()
            assert res["qdac"].startswith("ASRL/dev/") and res["lockin1"].startswith("ASRL/dev/")
            for name in ("fgen", "scope", "lockin2"):
                assert res[name].startswith("TCPIP0::127.0.0.1::"), res[name]
    (mem, r_mem, logs_mem), (net, r_net, logs_net) = runs["memory"], runs["network"]
    for name, log in logs_mem.items():
        assert log == logs_net[name], name
        assert len(log) > 10, name
    assert any(reply.startswith(b"#9") for _, reply in logs_mem["scope"])  # binary blocks
    assert r_mem.phase_origin_s == r_net.phase_origin_s == pytest.approx(PRE_PHASE_S)
    assert r_mem.lockin1 == r_net.lockin1 and r_mem.lockin2 == r_net.lockin2
    assert r_mem.extra == r_net.extra
    for ch, wave in r_mem.waves.items():
        other = r_net.waves[ch]
        assert np.array_equal(wave.volts, other.volts) and np.array_equal(wave.t_s, other.t_s)
        assert wave.preamble == other.preamble
    assert mem.clock.now() == net.clock.now()
    times = np.linspace(0.0, mem.clock.now(), 4001)
    assert np.array_equal(mem.twin.positions(times), net.twin.positions(times))


@pytest.fixture(scope="module")
def measured() -> Iterator[tuple[EmulatedBench, ChainResult]]:
    config, twin = full_config()
    bench = EmulatedBench(config, twin, virtual=True, seed=SEED)
    try:
        yield bench, run_in_memory(bench)
    finally:
        bench.stop()


def test_acceptance3_scope_free_phase_matches_ideal_steady_state(
    measured: tuple[EmulatedBench, ChainResult],
) -> None:
    """Scope (one :SINGle acquisition, 4 × 1200 BYTE points) vs the ideal twin: χ² consistent
    with σ_ADC and the 8-bit quantisation (|z| < 4.5: two-sided false alarm 7e-6); the same data
    against the nominal actuator gain (a 5 % device spread) are rejected."""
    bench, result = measured
    assert result.dac_readback_v == pytest.approx([quantise(v, "HIGH") for v in DAC_V.values()])
    assert not any(w.clipped for w in result.waves.values())
    assert len({w.preamble.yincrement_v for w in result.waves.values()}) == 3
    orbit = ideal_orbit(bench, result.phase_origin_s)
    chi2_per_n, z, n = scope_chi2(bench, result, orbit)
    print(f"acceptance 3 (33522B + DS1054Z): N = {n}, chi2/N = {chi2_per_n:.4f}, z = {z:+.2f}")
    assert n == 4 * 1200
    assert abs(z) < 4.5

    nominal = bench.twin_config.truth.actuator.gain_n_per_v
    _, z_nominal, _ = scope_chi2(bench, result, ideal_orbit(bench, result.phase_origin_s, nominal))
    print(f"  nominal actuator gain: z = {z_nominal:+.1f}")
    assert z_nominal > 20.0


def test_acceptance3_lockins_free_phase_match_ideal_first_harmonic(
    measured: tuple[EmulatedBench, ChainResult],
) -> None:
    """SR830 (node 3) and SR860 (node 2), external reference from the generator sync: X/Y at ω
    vs the ideal steady state's first harmonic through the sensing truth; χ² over 8 readings ×
    2 lock-ins × (X, Y) against σ = e_n√ENBW and the output quantisation, two-sided p > 1e-5;
    nominal actuator gain → p < 1e-12."""
    bench, result = measured
    freq_hz, enbw = result.extra[2], result.extra[3]
    assert freq_hz == F_HZ
    assert enbw == pytest.approx(enbw_hz(LOCKIN_TAU_S, 4), rel=1e-6)
    assert result.extra[4].raw == 0  # no overload, locked
    assert abs(result.lockin1[0]) > 1e-3 and abs(result.lockin2[0]) > 1e-3
    orbit = ideal_orbit(bench, result.phase_origin_s)
    chi2, n, p = lockin_chi2(bench, result, orbit)
    print(
        f"acceptance 3 (lock-ins): N = {n}, chi2 = {chi2:.1f} (chi2/N = {chi2 / n:.3f}), p = {p:.3g}"
    )
    assert n == 2 * 2 * LOCKIN_READS
    assert p > 1e-5

    nominal = bench.twin_config.truth.actuator.gain_n_per_v
    chi2_nom, _, p_nom = lockin_chi2(
        bench, result, ideal_orbit(bench, result.phase_origin_s, nominal)
    )
    print(f"  nominal actuator gain: chi2 = {chi2_nom:.3g}, p = {p_nom:.3g}")
    assert p_nom < 1e-12
