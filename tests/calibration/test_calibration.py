"""Calibration on the emulated bench (in memory, virtual clock): recovered vs hidden truth, bad
inputs, the file loader, and `physlearn calibrate all` against `physlearn twin serve`."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from golden_files import assert_calibration_as_recorded

from physlearn.calibration.bench import config_hash, open_bench
from physlearn.calibration.context import StepContext
from physlearn.calibration.couplings import _fit_map
from physlearn.calibration.model import (
    FitSpec,
    Measurement,
    NetworkParams,
    Topology,
    fit_network,
)
from physlearn.calibration.options import CalibrationOptions
from physlearn.calibration.pipeline import run_all, run_step
from physlearn.calibration.schema import CalibrationFile, StaleCalibrationWarning
from physlearn.errors import CalibrationError
from physlearn.simulators.bench_twin import EmulatedBench, load_twin_config
from physlearn.spec.bench import BenchConfig
from physlearn.spec.clock import TwinClock

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "bench.toml"
_names = itertools.count()


def make_bench(seed: int) -> tuple[EmulatedBench, dict[str, str]]:
    config = BenchConfig.load(EXAMPLE)
    bench = EmulatedBench(config, load_twin_config(config, str(EXAMPLE)), virtual=True, seed=seed)
    return bench, bench.serve(memory_prefix=f"caltest{next(_names)}-", control=False)


def truth_options(bench: EmulatedBench, **kw: Any) -> CalibrationOptions:
    """Declared inputs set to the bench's true values (mass, reference gains, delay gauge): the
    quantities calibration cannot identify (docs/calibration.md)."""
    tr = bench.twin.truth
    m = float(bench.twin.model.mass[0])
    ref = [float(g) for g in tr.sensing_gain_v_per_unit[:4]]  # scope ch1..4 = nodes 0..3
    opts: dict[str, Any] = {
        "mass_kg": m,
        "reference_gain_v_per_unit": ref,
        "reference_delay_s": float(tr.sensing_delay_s[0]),
        "averages": 4,
        "coupling_averages": 2,
        "bias_points": 7,
    }
    opts.update(kw)
    return CalibrationOptions(**opts)


def calibrate(
    bench: EmulatedBench, res: dict[str, str], out: Path, steps: list[str], **kw: Any
) -> CalibrationFile:
    ctx = StepContext(out, truth_options(bench, **kw))

    async def go() -> CalibrationFile:
        async with open_bench(bench.config, res, TwinClock(bench.control)) as b:
            cal = None
            for s in steps:
                cal = await (run_all(b, ctx) if s == "all" else run_step(b, ctx, s))
            assert cal is not None
            return cal

    return asyncio.run(go())


def true_node_omega2(bench: EmulatedBench) -> np.ndarray:
    spec = bench.twin.spec
    m, k, _ = spec.nodes.arrays()
    diag = k.copy()
    for c in spec.couplings:
        if c.kind == "difference":
            diag[list(c.nodes)] += c.value
    return diag / m


def compare(
    bench: EmulatedBench, cal: CalibrationFile, out_dir: Path | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """name → (fitted, σ, truth) for every quantity with a truth. The sense offsets drift
    slowly (≈ 0.1–0.3 mV over a run): with the calibration's output directory `out` their truth
    is taken at the bench-clock time of the offset record (`out_dir`/sensing.json), else at t = 0."""
    tr = bench.twin.truth
    w = bench.config.wiring
    out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    w2 = true_node_omega2(bench)
    gamma = bench.twin.model.damping
    f0 = np.sqrt(w2) / (2 * math.pi)
    q = np.sqrt(w2) / gamma
    out["f0"] = (
        np.array([n.f0_hz.value for n in cal.nodes]),
        np.array([n.f0_hz.sigma for n in cal.nodes]),
        f0,
    )
    out["q"] = (
        np.array([n.q.value for n in cal.nodes]),
        np.array([n.q.sigma for n in cal.nodes]),
        q,
    )
    m = bench.twin.model.mass[0]
    if cal.actuators:
        out["actuator_gain"] = (
            np.array([a.gain_per_s2_per_v.value for a in cal.actuators]),
            np.array([a.gain_per_s2_per_v.sigma for a in cal.actuators]),
            tr.actuator_gain_n_per_v / m,
        )
        out["actuator_delay"] = (
            np.array([a.delay_s.value for a in cal.actuators]),
            np.array([a.delay_s.sigma for a in cal.actuators]),
            tr.actuator_delay_s,
        )
    t_off = 0.0
    if out_dir is not None and (out_dir / "sensing.json").exists():
        sens = json.loads((out_dir / "sensing.json").read_text())
        t_off = float(sens.get("offset_clock_s", 0.0))
    if cal.sensing:
        idx = [
            next(
                i
                for i, s in enumerate(w.sense)
                if s.instrument == sc.instrument and s.channel == sc.channel
            )
            for sc in cal.sensing
        ]
        free = [i for i, sc in zip(idx, cal.sensing, strict=True) if not sc.reference]
        fc = [sc for sc in cal.sensing if not sc.reference]
        out["sensing_gain"] = (
            np.array([s.gain_v_per_unit.value for s in fc]),
            np.array([s.gain_v_per_unit.sigma for s in fc]),
            tr.sensing_gain_v_per_unit[free],
        )
        out["sensing_delay"] = (
            np.array([s.delay_s.value for s in cal.sensing]),
            np.array([s.delay_s.sigma for s in cal.sensing]),
            tr.sensing_delay_s[idx],
        )
        out["sensing_offset"] = (
            np.array([s.offset_v.value for s in cal.sensing if s.channel is not None]),
            np.array([s.offset_v.sigma for s in cal.sensing if s.channel is not None]),
            np.array(
                [
                    tr.sensing_offset(i, np.array([t_off]))[0]
                    for i, s in zip(idx, cal.sensing, strict=True)
                    if s.channel is not None
                ]
            ),
        )
    if cal.fixed_couplings_per_s2:
        lap = np.zeros((4, 4))
        for c in bench.twin.spec.couplings:
            if c.kind == "difference":
                a, b = sorted(c.nodes)
                lap[a, b] = -c.value / m
        keys = sorted(cal.fixed_couplings_per_s2)
        out["fixed_coupling"] = (
            np.array([cal.fixed_couplings_per_s2[k].value for k in keys]),
            np.array([cal.fixed_couplings_per_s2[k].sigma for k in keys]),
            np.array([lap[int(k[0]), int(k[-1])] for k in keys]),
        )
    if cal.couplings:
        v = np.linspace(cal.couplings[0].v_min, cal.couplings[0].v_max, 5)
        fit, sig, true = [], [], []
        for e, c in enumerate(cal.couplings):
            fit.append(c.alpha(v))
            sig.append(c.alpha_sigma(v))
            volts = np.zeros((v.size, len(cal.couplings)))
            volts[:, e] = v
            true.append(tr.coupling(volts)[:, e])
        out["alpha"] = (np.concatenate(fit), np.concatenate(sig), np.concatenate(true))
    return out


@pytest.fixture(scope="module")
def calibrated(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[EmulatedBench, CalibrationFile, Path]]:
    bench, res = make_bench(seed=20240611)
    out = tmp_path_factory.mktemp("cal")
    cal = calibrate(bench, res, out, ["all"])
    yield bench, cal, out
    bench.stop()


def test_acceptance1_recovered_vs_truth(calibrated: Any) -> None:
    bench, cal, out = calibrated
    c = compare(bench, cal, out)
    period = bench.twin.spec.period_s
    for name, (fit, sig, true) in c.items():
        print(
            f"{name}: max |fit−truth| = {np.max(np.abs(fit - true)):.3g}, "
            f"max |z| = {np.max(np.abs(fit - true) / np.maximum(sig, 1e-300)):.2f}"
        )
    f, _, t = c["f0"]
    assert np.all(np.abs(f / t - 1) < 1e-3)
    f, _, t = c["q"]
    assert np.all(np.abs(f / t - 1) < 0.05)
    f, _, t = c["actuator_gain"]
    assert np.all(np.abs(f / t - 1) < 0.01)
    f, _, t = c["sensing_gain"]
    assert np.all(np.abs(f / t - 1) < 0.01)
    f, _, t = c["sensing_delay"]
    assert np.all(np.abs(f - t) < 0.01 * period)
    f, _, t = c["actuator_delay"]
    assert np.all(np.abs(f - t) < 0.01 * period)
    f, _, t = c["sensing_offset"]
    assert np.all(np.abs(f - t) < 5e-4)
    # α(V) within 2 % of each edge's calibrated α range over the valid bias range
    f, _, t = c["alpha"]
    spans = np.repeat([max(abs(x) for x in m.alpha_range()) for m in cal.couplings], 5)
    assert np.all(np.abs(f - t) < 0.02 * spans)
    for step in ("dac", "resonance", "sensing", "actuators", "couplings"):
        assert (out / f"{step}.png").stat().st_size > 1000 and (out / f"{step}.npz").exists()


def test_conversions_round_trip_and_refuse_out_of_range(calibrated: Any) -> None:
    _bench, cal, _ = calibrated
    c = cal.couplings[0]
    lo, hi = c.alpha_range()
    alphas = np.linspace(lo, hi, 7)[1:-1]
    np.testing.assert_allclose(c.alpha(c.volts(alphas)), alphas, rtol=0, atol=1e-9)
    with pytest.raises(CalibrationError, match=r"qdac channel 1.*outside the calibrated range"):
        c.volts(hi + 0.1 * abs(hi))
    with pytest.raises(CalibrationError, match="outside the calibrated bias range"):
        c.alpha(c.v_max + 0.5)
    v = cal.alpha_to_volts(np.array([m.alpha(0.3) for m in cal.couplings]).ravel())
    np.testing.assert_allclose(v, 0.3, atol=1e-9)
    mass, damping = cal.knowledge_arrays(4)
    assert np.all(mass == cal.mass_kg) and np.all(np.abs(damping / 25.0 - 1) < 0.03)
    # sensing/actuator conversions are inverse shifts on a periodic grid
    t = np.arange(64) * (0.04 / 64)
    x = np.sin(2 * np.pi * 25 * t)
    s = cal.sensing[0]
    volts = (
        s.gain_v_per_unit.value * np.sin(2 * np.pi * 25 * (t - s.delay_s.value)) + s.offset_v.value
    )
    np.testing.assert_allclose(cal.volts_to_x("scope", 1, t, volts, 0.04), x, atol=1e-9)


def test_file_loader_refuses_mismatched_serial_and_warns_when_stale(
    calibrated: Any, tmp_path: Path
) -> None:
    bench, _cal, out = calibrated
    path = out / "calibration.json"
    loaded = CalibrationFile.read(path)
    idn = {n: i.idn for n, i in loaded.instruments.items()}
    loaded.check_bench(idn, config_hash(bench.config), max_age_s=3600.0)
    bad = dict(idn)
    bad["scope"] = bad["scope"].replace("DS1ZA000000001", "DS1ZA999999999")
    with pytest.raises(
        CalibrationError, match=r"instrument 'scope'.*DS1ZA000000001.*DS1ZA999999999"
    ):
        loaded.check_bench(bad)
    stale = loaded.model_copy(update={"created_utc": "2020-01-01T00:00:00+00:00"})
    with pytest.warns(StaleCalibrationWarning, match="old"):
        stale.check_bench(idn, max_age_s=24 * 3600.0)
    with pytest.raises(CalibrationError, match="bench config"):
        loaded.check_bench(idn, "0" * 64)
    (tmp_path / "bad.json").write_text('{"schema_version": 2}')
    with pytest.raises(CalibrationError, match="not a valid calibration file"):
        CalibrationFile.read(tmp_path / "bad.json")


def test_resume_skips_completed_steps(calibrated: Any) -> None:
    bench, _, out = calibrated
    before = {s: (out / f"{s}.json").stat().st_mtime_ns for s in ("dac", "resonance")}
    t0 = bench.clock.now()
    ctx = StepContext(out, truth_options(bench))

    async def go() -> None:
        async with open_bench(bench.config, bench.resources(), TwinClock(bench.control)) as b:
            await run_all(b, ctx)

    asyncio.run(go())
    assert bench.clock.now() == t0  # nothing measured again
    assert {s: (out / f"{s}.json").stat().st_mtime_ns for s in before} == before


def test_dependencies_are_required(tmp_path: Path) -> None:
    bench, res = make_bench(seed=5)
    try:
        with pytest.raises(CalibrationError, match="needs 'resonance' first"):
            calibrate(bench, res, tmp_path, ["sensing"])
    finally:
        bench.stop()


# ------------------------------------------------------------------------------ bad input
def test_clipping_channel_is_named(tmp_path: Path) -> None:
    bench, res = make_bench(seed=6)
    try:
        ctx = StepContext(tmp_path, truth_options(bench, drive_peak_v=0.05))

        async def go() -> None:
            from physlearn.calibration.acquire import MultisinePlan, multisine_transfer

            async with open_bench(bench.config, res, TwinClock(bench.control)) as b:
                await multisine_transfer(
                    b,
                    MultisinePlan(peak_v=0.5),
                    scope="scope",
                    settle_s=0.5,
                    what="test",
                    span_v={1: 0.01, 2: 0.01, 3: 0.01, 4: 0.01},
                )

        with pytest.raises(CalibrationError, match=r"test: scope channel 1 clipped"):
            asyncio.run(go())
        del ctx
    finally:
        bench.stop()


def test_dac_that_does_not_move_is_named() -> None:
    v = np.linspace(-1.5, 1.5, 7)
    rng = np.random.default_rng(0)
    k = 5000.0 + 10.0 * rng.standard_normal(v.size)
    with pytest.raises(CalibrationError, match=r"edge \[0, 2\] \(qdac channel 1\).*does not move"):
        _fit_map(v, k, np.full(v.size, 10.0), "qdac", 1, (0, 2))


def test_dac_readback_that_does_not_move_is_named(tmp_path: Path) -> None:
    bench, res = make_bench(seed=8)
    try:
        emu = bench.emulators["qdac"]
        original = emu.process

        def stuck(message: bytes) -> bytes:  # a dead output stage: the monitor reads 0 V
            reply: bytes = original(message)
            if b"last?" in message.lower() and b"sour2" in message.lower():
                return b"0.0\n"
            return reply

        emu.process = stuck
        with pytest.raises(
            CalibrationError, match=r"dac: qdac channel 2 \(edge \[1, 2\]\) does not move"
        ):
            calibrate(bench, res, tmp_path, ["dac"])
    finally:
        bench.stop()


def test_fit_that_does_not_converge_is_an_error() -> None:
    topo = Topology(1, (0,), (0,))
    rng = np.random.default_rng(1)
    w = np.linspace(100.0, 300.0, 5)
    m = Measurement(
        w,
        np.zeros(5, np.intp),
        np.zeros(5, np.intp),
        rng.standard_normal(5) + 1j * rng.standard_normal(5),
        np.full(5, 1e-6),
    )
    p = NetworkParams(
        np.array([4e4]),
        np.zeros((1, 1)),
        np.array([25.0]),
        np.array([1e4]),
        np.zeros(1),
        np.ones(1),
        np.zeros(1),
    )
    spec = FitSpec(
        {
            "omega2_diag": np.ones(1, bool),
            "gamma": np.ones(1, bool),
            "act_gain": np.ones(1, bool),
            "act_delay_s": np.ones(1, bool),
        }
    )
    with pytest.raises(CalibrationError, match="sweep X"):
        fit = fit_network(m, topo, p, spec, what="sweep X", max_nfev=3)
        # a 'converged' fit to noise is still refused by its χ² (the model does not describe it)
        if fit.chi2 / fit.dof > 100:
            raise CalibrationError(f"sweep X: χ²/dof {fit.chi2 / fit.dof:.3g}")


# ------------------------------------------------------------------------------ CLI over TCP/pty
def test_acceptance4_calibrate_all_against_twin_serve(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    py = sys.executable
    conn = tmp_path / "twin.json"
    serve = subprocess.Popen(
        [
            *(py, "-m", "physlearn.cli", "twin", "serve", "--config", str(EXAMPLE)),
            *("--virtual", "--connection-file", str(conn)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        resources: list[str] = []
        control = ""
        assert serve.stdout is not None
        for line in serve.stdout:
            words = line.split()
            if words[:1] == ["instrument"]:
                resources.append(f"{words[1]}={words[3]}")
            elif words[:1] == ["twin-control"]:
                control = words[1]
            elif words[:1] == ["ready"]:
                break
        assert control and len(resources) == 5
        out = tmp_path / "cal"
        run = subprocess.run(
            [
                py,
                "-m",
                "physlearn.cli",
                "calibrate",
                "all",
                "--config",
                str(EXAMPLE),
                "--output",
                str(out),
                "--options",
                str(ROOT / "examples" / "bench-calibration.toml"),
                "--connection",  # every resource and the twin-control address
                str(conn),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert "calibration: steps dac, resonance, sensing, actuators, couplings" in run.stdout
        # the recorded calibration, bit for bit on its arithmetic (but its times; golden_files)
        assert_calibration_as_recorded(out / "calibration.json", "bench_calibration.json")
        show = subprocess.run(
            [py, "-m", "physlearn.cli", "calibrate", "show", str(out / "calibration.json")],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert (
            show.returncode == 0
            and "node 3: f0" in show.stdout
            and "coupling (2, 3)" in show.stdout
        )
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=20)
        except subprocess.TimeoutExpired:
            serve.kill()
            raise
    assert serve.returncode == 0


def test_dac_through_scope_loopback(tmp_path: Path) -> None:
    """`dac_loopback` reads the delivered volts through a scope input: an output-stage gain and
    offset error that the DAC's own monitor cannot see is measured; the other channels keep the
    readback, and each channel's method says which was used."""
    bench, res = make_bench(seed=9)
    try:
        qdac, scope = bench.emulators["qdac"], bench.emulators["scope"]
        original = scope.source
        gain, offset = 0.9985, 0.0031  # the cable end of qdac channel 2 (the monitor reads ideal)

        def source(channel: int, t: np.ndarray) -> np.ndarray:
            if channel == 4:  # node 3's sensor unplugged; the loopback cable plugged in
                return gain * qdac.output_voltages(np.asarray(t))[:, 1] + offset
            return np.asarray(original(channel, t))

        scope.source = source
        cal = calibrate(bench, res, tmp_path, ["dac"], dac_loopback={"qdac:2": "scope:4"})
        by_ch = {d.channel: d for d in cal.dac}
        assert by_ch[2].method.startswith("loopback through scope channel 4")
        assert all(by_ch[c].method.startswith("readback") for c in (1, 3, 4))
        assert (
            abs(by_ch[2].gain.value - gain) < 5e-4 and abs(by_ch[2].offset_v.value - offset) < 5e-4
        )
        assert abs(by_ch[1].gain.value - 1.0) < 1e-4 and abs(by_ch[1].offset_v.value) < 1e-4
        with pytest.raises(
            CalibrationError, match="dac_loopback: 'lockin1' is not an oscilloscope"
        ):
            calibrate(bench, res, tmp_path / "bad", ["dac"], dac_loopback={"qdac:2": "lockin1:1"})
    finally:
        bench.stop()
