"""The emulated bench's physics hub: config, hidden truth, lazy deterministic integration,
twin control, bit-identical transports, and acceptance 3 (a free-phase scope measurement agrees
with the ideal twin's steady state, statistically)."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from test_bench_twin_helpers import EXAMPLE, example_bench, example_configs

from physlearn.drivers.link import TransportSettings
from physlearn.drivers.transport import Transport
from physlearn.errors import ConfigError, InstrumentProtocolError
from physlearn.simulators.bench_twin import BenchTwin, EmulatedBench, load_twin_config
from physlearn.simulators.clock import VirtualClock
from physlearn.simulators.instruments.qdac2 import quantise
from physlearn.simulators.problem import PeriodicProblem
from physlearn.simulators.twin_control import TwinControlClient
from physlearn.spec.bench import BenchConfig
from physlearn.spec.network import NetworkSpec
from physlearn.spec.tomlconfig import read_toml, validate
from physlearn.spec.waveform import SampledWaveform

pytestmark = pytest.mark.timeout(120)

OMEGA = 2.0 * math.pi * 25.0
PERIOD = 1.0 / 25.0
DAC_V = {1: 0.4, 2: -0.3, 3: 0.8, 4: 0.1}  # qdac channel → volts (edges 0-2, 1-2, 0-3, 2-3)
GEN = {1: (0.5, 0.0), 2: (0.4, 60.0)}  # generator channel → (amplitude V, phase deg)
SCALE_V = {1: 0.2, 2: 0.2, 3: 0.1, 4: 0.05}  # scope volts/div per channel
_names = itertools.count()


@pytest.fixture
def bench_factory() -> Iterator[Any]:
    benches: list[EmulatedBench] = []

    def make(**kwargs: Any) -> EmulatedBench:
        bench = example_bench(**kwargs)
        benches.append(bench)
        return bench

    yield make
    for b in benches:
        b.stop()


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------


def test_example_bench_file_validates_and_controller_view_drops_twin() -> None:
    cfg = BenchConfig.load(EXAMPLE)
    assert cfg.twin is not None and "truth" in cfg.twin
    assert cfg.controller_view().twin is None
    assert "twin" not in repr(cfg.controller_view()) or "twin=None" in repr(cfg.controller_view())
    assert cfg.output_limits("qdac").check(3, 1.0) == 1.0
    assert set(cfg.by_role("lockin")) == {"lockin1", "lockin2"}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (lambda r: r["wiring"]["sense"][0].update(channel=5), "wiring.sense[0].channel"),
        (lambda r: r["wiring"]["edges"][1].update(channel=1), "wiring.edges[1]"),
        (lambda r: r["wiring"]["drives"][0].update(instrument="scope"), "expected a generator"),
        (lambda r: r["instruments"]["qdac"].pop("limits"), "instruments.qdac: limits"),
        (lambda r: r["instruments"]["scope"].update(colour="red"), "instruments.scope.colour"),
    ],
)
def test_bench_config_errors_name_the_field(patch: Any, message: str) -> None:
    raw = read_toml(EXAMPLE)
    patch(raw)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(BenchConfig, raw, "bench.toml")


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (lambda t: t["truth"]["sensing"].update(gain=1.0), r"truth\.sensing\.gain"),
        (lambda t: t["network"]["couplings"].pop(0), r"wiring\.edges\[0\]\.nodes: .* no coupling"),
        (
            lambda t: t["network"].update(
                drive={"omega_rad_s": 1.0, "tones": [{"node": 0, "amplitude_n": 1.0}]}
            ),
            r"network\.drive\.tones",
        ),
    ],
)
def test_twin_config_errors_name_the_field(patch: Any, message: str) -> None:
    raw = read_toml(EXAMPLE)
    patch(raw["twin"])
    cfg = BenchConfig.model_validate(raw)
    with pytest.raises(ConfigError, match=message):
        BenchTwin(load_twin_config(cfg, "bench.toml"), cfg.wiring, VirtualClock())


# --------------------------------------------------------------------------------------------
# truth and integration
# --------------------------------------------------------------------------------------------


def _twin(seed: int | None = None) -> tuple[BenchTwin, VirtualClock]:
    cfg, tw = example_configs()
    clock = VirtualClock()
    twin = BenchTwin(tw, cfg.wiring, clock, seed=seed)
    twin.connect_generator(
        "fgen", lambda ch, t: GEN[ch][0] * np.sin(OMEGA * t + math.radians(GEN[ch][1]))
    )
    return twin, clock


def test_truth_is_seeded_and_spread_around_nominals() -> None:
    a, b, c = _twin(1)[0].truth, _twin(1)[0].truth, _twin(2)[0].truth
    assert np.array_equal(a.map_span, b.map_span) and np.array_equal(
        a.sensing_delay_s, b.sensing_delay_s
    )
    assert not np.array_equal(a.map_span, c.map_span)
    _, tw = example_configs()
    nominal = tw.truth.actuator.gain_n_per_v
    assert np.all(a.actuator_gain_n_per_v != nominal)
    assert np.all(
        np.abs(a.actuator_gain_n_per_v / nominal - 1) < 6 * tw.truth.actuator.gain_spread_rel
    )
    v = np.linspace(-1.5, 1.5, 31)[:, None] * np.ones(a.map_span.size)
    alpha = a.coupling(v)
    assert np.all(np.diff(alpha, axis=0) * np.sign(a.map_span) > 0)  # monotone tuning curves


def test_integration_schedule_does_not_depend_on_queries_or_chunking() -> None:
    """Committed states depend only on the clock: query often and advance in odd pieces, or
    advance once — bit-identical trajectories."""
    t1, c1 = _twin()
    t2, c2 = _twin()
    rng = np.random.default_rng(5)
    while c1.now() < 0.6:
        c1.advance(float(rng.uniform(0.0, 0.05)))
        t1.sensed_voltage(0, c1.now() + rng.uniform(-0.02, 0.01, 7))  # partial steps, future
    c2.set(c1.now())
    t2.sync()
    times = np.linspace(0.0, c1.now(), 2001)
    assert t1.committed_steps() == t2.committed_steps()
    assert np.array_equal(t1.positions(times), t2.positions(times))
    assert np.array_equal(t1.sensed_voltage(3, times), t2.sensed_voltage(3, times))


def test_provisional_signal_equals_committed_signal_once_time_passes() -> None:
    twin, clock = _twin()
    clock.advance(0.3 + 0.3 * twin.step_s)
    ahead = 0.3 + np.linspace(0.0, 0.01, 50)
    early = twin.positions(ahead)  # partly in the future: provisional
    clock.advance(0.02)
    assert np.array_equal(early, twin.positions(ahead))


def test_clock_advance_integrates_transient_then_settles() -> None:
    twin, clock = _twin()
    t = np.arange(64) * twin.step_s

    def periodicity_defect(t_end: float) -> float:
        clock.set(t_end)
        x_now = twin.positions(t_end - PERIOD + t)
        x_prev = twin.positions(t_end - 2 * PERIOD + t)
        return float(np.max(np.abs(x_now - x_prev)) / np.max(np.abs(x_now)))

    assert twin.positions(np.array([0.0, -1.0])).tolist() == [[0.0] * 4] * 2  # rest at t ≤ 0
    early = periodicity_defect(0.1)
    late = periodicity_defect(2.0)
    assert early > 0.05
    assert late < 1e-6


def test_dac_voltage_sets_coupling_through_truth_map(bench_factory: Any) -> None:
    bench = bench_factory(virtual=True, seed=11)
    clock, twin = bench.clock, bench.twin
    edge_term = 0  # couplings[0]: 0-2 on qdac channel 1
    assert twin.theta_at(0.0)[edge_term] == pytest.approx(
        float(twin.truth.coupling(np.zeros(4))[0])
    )
    clock.advance(0.01)
    bench.emulators["qdac"].process(b"sour1:volt 0.7\n")
    clock.advance(0.01)
    v = quantise(0.7, "HIGH")
    expected = twin.truth.map_offset[0] + twin.truth.map_span[0] * math.tanh(
        (v - twin.truth.map_center_v[0]) / twin.truth.map_width_v[0]
    )
    assert twin.theta_at(clock.now())[edge_term] == pytest.approx(expected, rel=1e-12)
    assert abs(expected - bench.twin.spec.couplings[0].value) > 0.05  # the map moved it
    assert twin.theta_at(clock.now())[4] == bench.twin.spec.couplings[4].value  # unwired spring


def test_generator_output_becomes_force_through_actuator_gain_and_delay(bench_factory: Any) -> None:
    bench = bench_factory(virtual=True, seed=12)
    bench.emulators["fgen"].process(b"SOUR1:VOLT 0.5;:SOUR2:VOLT 0.25\n")
    t = np.linspace(0.01, 0.05, 17)
    f = bench.twin.forces_at(t)
    tr = bench.twin.truth
    for j, amp in ((0, 0.5), (1, 0.25)):
        want = tr.actuator_gain_n_per_v[j] * amp * np.sin(OMEGA * (t - tr.actuator_delay_s[j]))
        np.testing.assert_allclose(f[:, j], want, rtol=0, atol=1e-15)
    assert np.all(f[:, 2:] == 0.0)


# --------------------------------------------------------------------------------------------
# a measurement through the emulated bench
# --------------------------------------------------------------------------------------------


def _transport(bench: EmulatedBench, name: str, resource: str) -> Transport:
    inst = bench.config.instruments[name]
    backend = inst.backend if resource.startswith("ASRL") else "pyvisa"
    return Transport(TransportSettings(resource=resource, backend=backend, timeout_s=5.0))


async def _complete(*links: Transport) -> None:
    for link in links:
        assert await link.query("*OPC?") == "1"


async def _measure(
    bench: EmulatedBench, resources: dict[str, str], advance: Any, settle_s: float
) -> dict[int, tuple[str, bytes]]:
    """Set DAC and generator, wait `settle_s`, take one single-shot scope acquisition of all
    four channels; returns channel → (preamble, BYTE block)."""
    qdac = _transport(bench, "qdac", resources["qdac"])
    gen = _transport(bench, "fgen", resources["fgen"])
    scope = _transport(bench, "scope", resources["scope"])
    out: dict[int, tuple[str, bytes]] = {}
    try:
        for link in (qdac, gen, scope):
            await link.open()
        for ch, v in DAC_V.items():
            await qdac.write(f"sour{ch}:volt {v}")
        for ch, (amp, deg) in GEN.items():
            await gen.write(f"SOUR{ch}:VOLT {amp};:SOUR{ch}:PHAS {deg}")
        await scope.write("*RST")
        for ch, scale in SCALE_V.items():
            await scope.write(f":CHAN{ch}:DISP ON;:CHAN{ch}:PROB 1;:CHAN{ch}:SCAL {scale}")
        await scope.write(":TIM:SCAL 0.004;:TRIG:EDG:SOUR EXT;:TRIG:EDG:LEV 1.5")
        # Over TCP/pty a write returns once sent, not once executed: complete every command
        # (*OPC?) before moving the virtual clock, as a controller must (and does on hardware).
        await _complete(qdac, gen, scope)
        await advance(settle_s)
        await scope.write(":SING")
        await _complete(scope)
        await advance(0.1)
        assert await scope.query(":TRIG:STAT?") == "STOP"
        for ch in SCALE_V:
            await scope.write(f":WAV:SOUR CHAN{ch};:WAV:MODE NORM;:WAV:FORM BYTE")
            pre = await scope.query(":WAV:PRE?")
            out[ch] = (pre, await scope.query_block(":WAV:DATA?"))
        errors = [await link.query("SYST:ERR?") for link in (qdac, scope)]
        assert all(e.startswith(("0,", "+0,", "0, ")) for e in errors), errors
    finally:
        for link in (qdac, gen, scope):
            await link.close()
    return out


def _in_memory(bench: EmulatedBench) -> dict[str, str]:
    return bench.serve(memory_prefix=f"benchtest{next(_names)}-", control=False)


def test_same_seed_same_commands_bit_identical_in_memory_and_over_tcp_pty(
    bench_factory: Any,
) -> None:
    mem = bench_factory(virtual=True, seed=7)
    res_mem = _in_memory(mem)
    data_mem = asyncio.run(_measure(mem, res_mem, mem.control.advance, 0.5))

    net = bench_factory(virtual=True, seed=7)
    res_net = net.serve()
    assert res_net["qdac"].startswith("ASRL") and res_net["scope"].startswith("TCPIP0::127.0.0.1::")
    assert net.control_address is not None

    async def over_network() -> dict[int, tuple[str, bytes]]:
        async with TwinControlClient(net.control_address) as control:
            assert await control.mode() == "VIRTUAL"
            data = await _measure(net, res_net, control.advance, 0.5)
            assert await control.now() == mem.clock.now()
            return data

    data_net = asyncio.run(over_network())
    assert data_mem == data_net
    times = np.linspace(0.0, mem.clock.now(), 3001)
    assert np.array_equal(mem.twin.positions(times), net.twin.positions(times))
    assert len({blk for _, blk in data_mem.values()}) == 4  # four different waveforms


def _ideal_expectation(
    bench: EmulatedBench, times: dict[int, np.ndarray], sensing_gain: Any = None
) -> dict[int, np.ndarray]:
    """The ideal twin's periodic steady state under the hidden truth, seen through each scope
    channel's sensing chain (gain, offset, drift, delay) at absolute times."""
    twin = bench.twin
    tr = twin.truth
    raw = twin.spec.model_dump()
    v_dac = np.array([quantise(DAC_V[e.channel], "HIGH") for e in bench.config.wiring.edges])
    alpha = tr.coupling(v_dac)
    for e, term in enumerate(twin._edge_terms):
        raw["couplings"][int(term)]["value"] = float(alpha[e])
    tones = []
    for j, dw in enumerate(bench.config.wiring.drives):
        amp, deg = GEN[dw.channel]
        phase = math.radians(deg) - OMEGA * tr.actuator_delay_s[j] - math.pi / 2  # sin → cos
        tones.append(
            {"node": dw.node, "amplitude_n": tr.actuator_gain_n_per_v[j] * amp, "phase_rad": phase}
        )
    raw["drive"]["tones"] = tones
    spec = NetworkSpec.model_validate(raw)
    prob = PeriodicProblem.from_spec(spec, points_per_period=129)
    sol = prob.solve(tol=1e-11)
    assert sol.multipliers is not None and np.abs(sol.multipliers).max() < 1.0  # attracting
    orbit = SampledWaveform(sol.x, spec.period_s, "spectral")
    out = {}
    for path, sw in enumerate(bench.config.wiring.sense):
        if sw.instrument != "scope":
            continue
        assert sw.channel is not None
        t = times[sw.channel]
        gain = tr.sensing_gain_v_per_unit[path] if sensing_gain is None else sensing_gain
        x = orbit(t - tr.sensing_delay_s[path])[0, :, sw.node]
        out[sw.channel] = gain * x + tr.sensing_offset(path, t)
    return out


def _decode(
    bench: EmulatedBench, data: dict[int, tuple[str, bytes]]
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], dict[int, float]]:
    """Scope data → (absolute times, volts, LSB) per channel, using :WAV:PRE? scaling."""
    acq = bench.emulators["scope"].last_acquisition()
    t_trig = acq.triggers_s[0]
    assert abs((t_trig / PERIOD) - round(t_trig / PERIOD)) < 1e-4  # triggered on the sync
    times, volts, lsb = {}, {}, {}
    for ch, (pre, block) in data.items():
        f = pre.split(",")
        points, xinc, xorg, xref = int(f[2]), float(f[4]), float(f[5]), float(f[6])
        yinc, yorg, yref = float(f[7]), float(f[8]), float(f[9])
        codes = np.frombuffer(block, dtype=np.uint8).astype(np.float64)
        assert codes.size == points == 1200
        assert codes.min() > 0 and codes.max() < 255  # no clipping
        times[ch] = t_trig + xorg + (np.arange(points) - xref) * xinc
        volts[ch] = (codes - yorg - yref) * yinc
        lsb[ch] = yinc
    return times, volts, lsb


def _chi2_z(
    bench: EmulatedBench,
    volts: dict[int, np.ndarray],
    expected: dict[int, np.ndarray],
    lsb: dict[int, float],
) -> tuple[float, float, int]:
    """χ² of the residuals against white noise σ plus uniform quantisation (LSB q):
    each residual has variance s² = σ² + q²/12 and fourth moment 3σ⁴ + σ²q²/2 + q⁴/80, so
    χ² = Σ r²/s² has mean N and variance Σ (E r⁴/s⁴ − 1); returns (χ²/N, z, N)."""
    sigma = bench.twin.truth.scope_sigma_v
    chi2, var, n = 0.0, 0.0, 0
    for ch, v in volts.items():
        q = lsb[ch]
        s2 = sigma**2 + q**2 / 12.0
        m4 = 3 * sigma**4 + sigma**2 * q**2 / 2.0 + q**4 / 80.0
        r = v - expected[ch]
        chi2 += float(np.sum(r**2) / s2)
        var += r.size * (m4 / s2**2 - 1.0)
        n += r.size
    return chi2 / n, (chi2 - n) / math.sqrt(var), n


def test_acceptance3_free_phase_scope_measurement_matches_ideal_steady_state(
    bench_factory: Any,
) -> None:
    """Acceptance 3: residuals consistent with the modelled noise and quantisation (|z| < 4.5,
    a two-sided 7e-6 false-alarm rate); a wrong sensing gain or an unsettled bench is rejected."""
    bench = bench_factory(virtual=True, seed=20240611)
    res = _in_memory(bench)
    data = asyncio.run(_measure(bench, res, bench.control.advance, 1.5))
    times, volts, lsb = _decode(bench, data)
    expected = _ideal_expectation(bench, times)
    chi2_per_n, z, n = _chi2_z(bench, volts, expected, lsb)
    print(f"acceptance 3: N = {n}, chi2/N = {chi2_per_n:.4f}, z = {z:+.2f}")
    assert abs(z) < 4.5

    nominal_gain = bench.twin_config.truth.sensing.gain_v_per_unit
    _, z_wrong, _ = _chi2_z(bench, volts, _ideal_expectation(bench, times, nominal_gain), lsb)
    assert z_wrong > 20.0  # the check has power: the uncalibrated sensing gain is rejected

    early = bench_factory(virtual=True, seed=20240611)
    data_early = asyncio.run(_measure(early, _in_memory(early), early.control.advance, 0.05))
    t_e, v_e, q_e = _decode(early, data_early)
    _, z_early, _ = _chi2_z(early, v_e, _ideal_expectation(early, t_e), q_e)
    assert z_early > 20.0  # waited too little: the transient is still there


# --------------------------------------------------------------------------------------------
# twin control
# --------------------------------------------------------------------------------------------


def test_twin_control_line_protocol_virtual(bench_factory: Any) -> None:
    bench = bench_factory(virtual=True, seed=3)
    bench.serve(memory_prefix=f"ctl{next(_names)}-")
    assert bench.control_address is not None

    async def go() -> None:
        async with TwinControlClient(bench.control_address, timeout_s=10.0) as c:
            assert await c.now() == 0.0
            assert await c.advance(0.25) == 0.25
            assert bench.twin.committed_steps() == math.floor(0.25 / bench.twin.step_s + 1e-9)
            assert await c.advance(0.0) == 0.25
            for bad in ("ADVANCE -1", "ADVANCE nan", "ADVANCE", "FOO", "ADVANCE 1 2"):
                with pytest.raises(InstrumentProtocolError, match="ERR"):
                    await c._ask(bad)
            assert await c.now() == 0.25

    asyncio.run(go())


def test_twin_control_free_running_follows_wall_clock(bench_factory: Any) -> None:
    bench = bench_factory(virtual=False, speed=4.0, seed=3)
    bench.serve(memory_prefix=f"free{next(_names)}-")
    assert bench.control_address is not None

    async def go() -> None:
        async with TwinControlClient(bench.control_address, timeout_s=10.0) as c:
            assert await c.mode() == "FREE 4.0"
            t0 = await c.now()
            t1 = await c.advance(0.4)  # waits ≈ 0.1 s of wall time
            assert t1 >= t0 + 0.4
            await asyncio.sleep(0.2)
            assert bench.twin.committed_steps() > 0.4 / bench.twin.step_s  # the pacer integrates

    asyncio.run(go())
