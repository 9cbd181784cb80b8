"""Lock-in phasor readout (`physlearn.systems.bench.lockin.LockinReadout`) on the emulated bench.

The bench is examples/bench.toml with its twin network made linear (``nonlinearity =
"identity"``: the twin config allows it) and the SR830 (lockin1, RS-232) re-wired to the output
node 1 (an actuated node, so EP can nudge it); the SR860 (lockin2) stays on the hidden node 2.
For the gradient test two more SR860s sense nodes 0 and 3, so every node is read as a phasor.
The calibration is the truth (`truth_calibration`) with the lock-in paths' reference phase 0 —
the emulator's convention: X + iY = (A/√2) e^{iθs} for A sin(θ_ref + θs), θ_ref = 0 at the
generator sync's rising edge, where arb sample 0 starts.

Measured (seed of examples/bench.toml, 4 repeated measurements, 33 points per period, scope K = 4
periods): output node 1 (amplitude 0.067) — lock-in rms error to the twin's true waveform
3.5e-6 (5e-5 of the amplitude; the modelled noise, 0.88 µV rms per X/Y at τ = 0.1 s, 24 dB/oct,
is 2.5e-6 in node units), scope 2.0e-3: ≈ 580× less noisy; hidden node 2 (amplitude 0.19):
2.7e-6 vs 1.7e-3, ≈ 610×. ep_symmetric (β = 0.05, batch of 2) with every node on a lock-in:
relative error 1.1e-3 to the ideal twin's ep_symmetric (cosine 0.9999995), scope readout 0.15
(cosine 0.989): ≈ 140× less error; to the exact adjoint gradient the cosine is 0.9654, EP's own
damping bias (the ideal twin's ep_symmetric is at 0.9654 too). With only the example's two
lock-ins (nodes 1, 2; nodes 0, 3 on the scope) the relative error is 2.5e-2 (cosine 0.9997).
"""

from __future__ import annotations

import asyncio
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_system_helpers import truth_calibration

from physlearn.calibration.schema import CalibrationFile, val
from physlearn.errors import CalibrationError, ConfigError, GradientError, InstrumentError
from physlearn.estimators import make_estimator
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.simulators.bench_twin import EmulatedBench, load_twin_config
from physlearn.simulators.instruments.srs_lockin import enbw_hz
from physlearn.spec.bench import BenchConfig
from physlearn.spec.clock import TwinClock
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import ForceWaveform, PhysicalSystem
from physlearn.spec.task import Task
from physlearn.systems.bench.lockin import LockinBenchSystem, LockinReadout, harmonic_fraction
from physlearn.systems.bench.options import BenchOptions
from physlearn.systems.bench.system import BenchSystem
from physlearn.systems.ideal import IdealSystem

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "bench.toml"
_names = itertools.count()
U = np.array([[1.0], [0.5]])
TARGETS = np.array([[0.0], [0.1]])


def linear_bench(
    all_nodes: bool = False, nonlinearity: str = "identity"
) -> tuple[EmulatedBench, dict[str, str], CalibrationFile, NetworkSpec]:
    raw = BenchConfig.load(EXAMPLE).model_dump(mode="json")
    for s in raw["wiring"]["sense"]:
        if s["instrument"] == "lockin1":
            s["node"] = 1  # the output node
    if all_nodes:
        for name, node in (("lockin3", 0), ("lockin4", 3)):
            raw["instruments"][name] = {"kind": "sr860", "resource": f"TCPIP0::{name}::SOCKET"}
            raw["wiring"]["sense"].append({"node": node, "instrument": name})
    raw["twin"]["network"]["nonlinearity"] = nonlinearity
    config = BenchConfig.model_validate(raw)
    bench = EmulatedBench(config, load_twin_config(config, str(EXAMPLE)), virtual=True)
    res = bench.serve(memory_prefix=f"lockin{next(_names)}-", control=False)
    cal = truth_calibration(bench)
    sensing = [
        s.model_copy(update={"phase_rad": val(0.0, 0.0, "rad")})
        if config.instruments[s.instrument].role == "lockin"
        else s
        for s in cal.sensing
    ]
    cal = cal.model_copy(update={"sensing": sensing})
    spec = bench.twin.spec.model_dump(mode="json")
    for c in spec["couplings"]:
        c["trainable"] = c["kind"] == "product"
    spec["inputs"] = {"nodes": [0], "mode": "force", "gain": 0.1}
    spec["outputs"] = {"nodes": [1], "target": {"kind": "inphase", "values": [0.0]}}
    return bench, res, cal, NetworkSpec.model_validate(spec)


def options() -> BenchOptions:
    # the example's scope noise is ~5 % of the smallest node's swing: the harmonic-fit
    # periodicity check is relaxed as in tests/calibration/test_calibration_bias.py (not under test)
    return BenchOptions(
        safety={"max_response": 1.0},
        settle={"periodic_residual": 0.5, "acquire_periods": 4},
        calibration_max_age_days=None,
    )


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


async def ep_gradient(system: PhysicalSystem, spec: NetworkSpec, name: str) -> np.ndarray:
    kw: dict[str, Any] = {"beta": 0.05} if name == "ep_symmetric" else {}
    est = make_estimator(name, ModelKnowledge.from_spec(spec), **kw)
    g = await est.estimate(system, spec.initial_parameters(), U, Task.from_spec(spec, TARGETS))
    return np.asarray(g.grad, dtype=float).mean(axis=0)


def test_harmonic_fraction() -> None:
    t = np.arange(33) / 33 * 2 * math.pi
    w = np.stack([np.cos(t), np.cos(t) + 0.1 * np.sin(2 * t), np.ones_like(t), 0 * t], axis=-1)
    f = harmonic_fraction(w[None])[0]
    assert f[0] < 1e-12 and f[1] == pytest.approx(0.1 / math.sqrt(1.01), rel=1e-9)
    assert f[2] == pytest.approx(1.0) and math.isnan(f[3])


def test_refusals_before_anything_is_written() -> None:
    bench, res, cal, spec = linear_bench()
    try:
        clock = TwinClock(bench.control)
        tanh = spec.model_copy(update={"nonlinearity": "tanh"})
        with pytest.raises(ConfigError, match=r"linear ρ.*'tanh'"):
            LockinBenchSystem(bench.config, cal, tanh, clock, options(), resources=res)
        no_phase = cal.model_copy(
            update={"sensing": [s.model_copy(update={"phase_rad": None}) for s in cal.sensing]}
        )
        with pytest.raises(CalibrationError, match=r"lockin1 → node 1 has no reference phase"):
            LockinBenchSystem(bench.config, no_phase, spec, clock, options(), resources=res)
        # an input drive with a DC part (waveform "constant"): refused naming node and fraction
        raw = spec.model_dump(mode="json")
        raw["inputs"]["waveform"] = "constant"
        dc = NetworkSpec.model_validate(raw)
        sysb = LockinBenchSystem(bench.config, cal, dc, clock, options(), resources=res)
        with pytest.raises(ConfigError, match=r"input drive on node 0 \(sample 0\) has 1 of"):
            asyncio.run(sysb.set_input(np.array([[1.0]])))
        # a nudge with a second harmonic (10 % of its amplitude)
        sysb = LockinBenchSystem(bench.config, cal, spec, clock, options(), resources=res)
        asyncio.run(sysb.set_input(np.array([[1.0]])))
        t = sysb.grid_t * 2 * math.pi / sysb.period_s
        f = np.zeros((1, t.size, 4))
        f[0, :, 1] = 1e-3 * (np.cos(t) + 0.1 * np.cos(2 * t))
        with pytest.raises(GradientError, match=r"nudge force on node 1 \(sample 0\) has 0.0995"):
            asyncio.run(sysb.set_forces(ForceWaveform(f, sysb.period_s)))
        f[0, :, 1] = 1e-3 * np.cos(t)  # a pure sinusoid is accepted
        asyncio.run(sysb.set_forces(ForceWaveform(f, sysb.period_s)))
        assert not sysb.drivers  # nothing connected, nothing written
    finally:
        bench.stop()


@pytest.mark.slow
def test_lockin_waveform_matches_the_truth_and_beats_the_scope() -> None:
    bench, res, cal, spec = linear_bench()
    sysb = LockinBenchSystem(
        bench.config, cal, spec, TwinClock(bench.control), options(), resources=res
    )
    readout = sysb.readout
    assert isinstance(readout, LockinReadout)
    assert readout.time_constant_s == 0.1  # 24 dB/oct, 1e-4 at 25 Hz: ωτ ≥ 9.95
    assert readout.settle_s == pytest.approx(15.91 * 0.1, rel=1e-3)
    fgen = bench.emulators["fgen"]
    reps = 4
    lock_err, scope_err, amps = [], [], []

    async def run() -> None:
        await sysb.connect()
        await sysb.arm()
        await sysb.set_parameters(spec.initial_parameters())
        await sysb.set_input(np.array([[1.0]]))
        for _ in range(reps):
            obs = await sysb.measure()
            raw = sysb.drain_journal()[-1].samples[0]
            # the hidden truth: the twin's node positions over the period just before the read
            T, now = sysb.period_s, bench.clock.now()
            t0 = fgen.sync_phase_origin_s()
            start = t0 + (math.floor((now - t0) / T) - 1) * T
            truth = bench.twin.positions(start + sysb.grid_t)
            lock_err.append(obs.x[0] - truth)
            assert raw.x_scope is not None
            scope_err.append(raw.x_scope - truth)
            amps.append(np.abs(truth).max(axis=0))
        # refusals of a corrupted reading, naming instrument and node
        bench.emulators["lockin1"].inject_invalid_readings(1)
        with pytest.raises(InstrumentError, match=r"node 1: lockin1 .*not finite"):
            await sysb.measure()
        sleep = readout.sleep

        async def sleep_then_overload(dt: float) -> None:  # overload during the filter wait
            await sleep(dt)
            bench.emulators["lockin2"].inject_lia_status(1)

        readout.sleep = sleep_then_overload  # type: ignore[method-assign]
        with pytest.raises(InstrumentError, match=r"node 2: lockin2 .*input overload"):
            await sysb.measure()

    try:
        asyncio.run(run())
        asyncio.run(sysb.close())
    finally:
        bench.stop()
    le, se, amp = np.array(lock_err), np.array(scope_err), np.mean(amps, axis=0)
    # modelled lock-in noise: e_n √ENBW per X and Y (rms), → node units: √2 σ/G per component
    sigma_xy = bench.twin.truth.lockin_noise_v_per_rthz * math.sqrt(enbw_hz(0.1, 4))
    for node, li in ((1, "lockin1"), (2, "lockin2")):
        gain = next(s.gain_v_per_unit.value for s in cal.sensing if s.instrument == li)
        sigma = math.sqrt(2) * sigma_xy / abs(gain)
        rms_l = float(np.sqrt(np.mean(le[:, :, node] ** 2)))
        rms_s = float(np.sqrt(np.mean(se[:, :, node] ** 2)))
        print(
            f"node {node}: amplitude {amp[node]:.4g}, lock-in rms error {rms_l:.3g} "
            f"(modelled σ {sigma:.3g}), scope {rms_s:.3g}, ratio {rms_s / rms_l:.0f}"
        )
        # within the modelled noise plus the settling accuracy (1e-4 of the amplitude) and the
        # SR830's 16-bit output mantissa
        assert np.max(np.abs(le[:, :, node])) <= 4 * sigma + 2e-4 * amp[node]
        assert rms_s > 100 * rms_l
    # nodes without a lock-in keep the scope reading
    assert np.array_equal(le[:, :, 0], se[:, :, 0])


@pytest.mark.slow
def test_ep_gradient_through_lockins_vs_exact_and_scope() -> None:
    got: dict[str, np.ndarray] = {}
    spec: NetworkSpec | None = None
    for label, cls in (("lockin", LockinBenchSystem), ("scope", BenchSystem)):
        bench, res, cal, spec = linear_bench(all_nodes=True)
        sysb = cls(bench.config, cal, spec, TwinClock(bench.control), options(), resources=res)

        async def run(s: BenchSystem = sysb, sp: NetworkSpec = spec) -> np.ndarray:
            try:
                await s.connect()
                await s.arm()
                return await ep_gradient(s, sp, "ep_symmetric")
            finally:
                await s.close()

        try:
            got[label] = asyncio.run(run())
        finally:
            bench.stop()
    assert spec is not None
    ideal = asyncio.run(ep_gradient(IdealSystem(spec, 33, cache_size=0), spec, "ep_symmetric"))
    exact = asyncio.run(ep_gradient(IdealSystem(spec, 33, cache_size=0), spec, "adjoint"))
    rel = {k: float(np.linalg.norm(g - ideal) / np.linalg.norm(ideal)) for k, g in got.items()}
    cos = {k: cosine(g, exact) for k, g in got.items()}
    print(
        "relative error to the ideal ep_symmetric",
        rel,
        "cosine to the exact gradient",
        cos,
        "ideal ep_symmetric vs exact",
        cosine(ideal, exact),
    )
    assert rel["lockin"] < 0.01
    assert cosine(got["lockin"], ideal) > 0.9999
    # to the exact gradient: EP's damping bias only (the ideal twin's EP is at the same cosine)
    assert abs(cos["lockin"] - cosine(ideal, exact)) < 1e-3
    assert rel["scope"] > 20 * rel["lockin"]


def test_session_config_selects_the_readout() -> None:
    from physlearn.systems.factory import make_system
    from physlearn.training.config import load_train_config

    xor = ROOT / "examples" / "bench-xor.toml"
    assert load_train_config(xor).system.bench.readout == "scope"  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="readout"):
        load_train_config(xor, {"system.bench.lockin": {"headroom": 3.0}})
    cfg = load_train_config(xor, {"system.bench.readout": "lockin"})

    async def run() -> None:
        # the XOR example's network is tanh: the lock-in readout is refused when it is built
        async with make_system(cfg, xor.parent):
            pass

    with pytest.raises(ConfigError, match=r"linear ρ"):
        asyncio.run(run())
