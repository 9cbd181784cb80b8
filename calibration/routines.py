"""The calibration routines (`dac`, `resonance`, `sensing`, `actuators`, `couplings`) and the
resumable pipeline `run_all`. Each routine acts only through the drivers, waits through the
bench clock, saves its raw data (`<step>.npz`), a PNG of its fit (`<step>.png`) and its result
(`<step>.json`, written atomically); `assemble` builds the calibration file from the results.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import least_squares

from physlearn.calibration import plots
from physlearn.calibration.acquire import (
    STITCH_TOLERANCE,
    MultisinePlan,
    channels_by_scope,
    configure_scope_for,
    drives_off,
    lockin_sweep,
    multisine_transfer,
    scope_paths,
    scopes_record,
    shared_nodes,
    stitch_check,
    wave_key,
)
from physlearn.calibration.bench import CalibrationBench, config_hash
from physlearn.calibration.model import (
    FitResult,
    FitSpec,
    MapFit,
    Measurement,
    NetworkParams,
    Topology,
    eigen_modes,
    fit_coupling_maps,
    fit_network,
    fit_network_multistart,
    kappa_mask,
    modal_start,
    predict,
    statistical_linearisation,
)
from physlearn.calibration.schema import (
    ActuatorCal,
    CalibrationFile,
    CouplingMap,
    DacChannelCal,
    Identity,
    NodeCal,
    SensingCal,
    Value,
    utc_now,
    val,
    write_atomic,
)
from physlearn.drivers.rigol_ds1000z import Waveform
from physlearn.errors import CalibrationError

logger = logging.getLogger(__name__)
Array = NDArray[np.float64]

STEPS = ("dac", "resonance", "sensing", "actuators", "couplings")
DEPENDS: dict[str, tuple[str, ...]] = {
    "dac": (),
    "resonance": (),
    "sensing": ("resonance",),
    "actuators": ("resonance",),
    "couplings": ("resonance", "dac"),
}


class CalibrationOptions(BaseModel):
    """What the experimenter declares (not identifiable on the bench) and the sweep plan."""

    model_config = ConfigDict(extra="forbid")

    mass_kg: float = Field(3.2e-5, gt=0.0)
    #: V per node unit of each node's reference sensor (the node's first scope path in wiring
    #: order, whichever scope): it defines the node coordinate x (one value for all nodes, or
    #: one per node)
    reference_gain_v_per_unit: float | list[float] = 0.5
    reference_delay_s: float = 0.0  # delay of sense path 0 (fixes the delay gauge)
    nonlinearity: str = "tanh"
    #: default: every scope of the bench, armed for the same sync edge and merged; a name
    #: restricts the calibration to that scope (every node must then be sensed on it)
    scope: str | None = None
    #: relative rms residual above which a node sensed by two scopes disagrees across them
    stitch_tolerance: float = Field(STITCH_TOLERANCE, gt=0.0)
    multisine_period_s: float = 1.2
    multisine_sample_rate_hz: float = 1600.0
    band_hz: tuple[float, float] = (12.0, 60.0)
    drive_peak_v: float = Field(0.05, gt=0.0)
    settle_s: float = Field(1.0, ge=0.0)
    averages: int = Field(8, ge=1, le=1024)  # scope averages of the resonance multisine
    coupling_averages: int = Field(4, ge=1, le=1024)
    base_bias_v: float = 0.0
    bias_points: int = Field(9, ge=5)
    bias_margin_v: float = Field(0.0, ge=0.0)
    lockin_frequencies_hz: list[float] = Field(
        default_factory=lambda: [18.0, 22.0, 26.0, 29.0, 31.0, 33.0, 36.0, 42.0]
    )
    lockin_amplitude_v: float = 0.01
    lockin_settle_s: float = 1.2
    ringdown_s: float = 0.6
    #: optional loopback cabling for the `dac` step, "<dac>:<channel>" → "<scope>:<channel>":
    #: that DAC output is cabled to that scope input while the step runs (the bench file has
    #: no such wiring); the delivered volts are then read through the scope instead of the
    #: DAC's own output monitor. TOML: `[dac_loopback]` with `"qdac:1" = "scope:4"`.
    dac_loopback: dict[str, str] = Field(default_factory=dict)
    seed: int = 0

    def plan(self) -> MultisinePlan:
        return MultisinePlan(
            self.multisine_period_s,
            self.multisine_sample_rate_hz,
            self.band_hz[0],
            self.band_hz[1],
            self.drive_peak_v,
            self.seed + 1,
        )


def _topology(bench: CalibrationBench) -> Topology:
    w = bench.config.wiring
    nodes = [d.node for d in w.drives] + [s.node for s in w.sense]
    nodes += [n for e in w.edges for n in e.nodes]
    return Topology(max(nodes) + 1, tuple(d.node for d in w.drives), tuple(s.node for s in w.sense))


def _scopes(bench: CalibrationBench, opts: CalibrationOptions) -> list[str]:
    """The scopes the calibration records (bench-file order): `opts.scope` alone, or all."""
    if opts.scope is not None:
        if opts.scope not in bench.config.by_role("scope"):
            raise CalibrationError(f"scope {opts.scope!r} is not an oscilloscope of the bench")
        return [opts.scope]
    scopes = list(bench.config.by_role("scope"))
    if not scopes:
        raise CalibrationError("calibration needs an oscilloscope on the bench")
    return scopes


def _reference_paths(bench: CalibrationBench, scopes: list[str], d: int) -> list[int]:
    """Per node its reference path: its first sense path (wiring order) on any of `scopes`."""
    ref = []
    for node in range(d):
        paths = [
            i
            for i, s in enumerate(bench.config.wiring.sense)
            if s.node == node and s.instrument in scopes
        ]
        if not paths:
            raise CalibrationError(
                f"node {node} has no channel on {', '.join(scopes)}: it cannot be referenced"
            )
        ref.append(paths[0])
    return ref


def _declared_gains(opts: CalibrationOptions, d: int) -> Array:
    g = opts.reference_gain_v_per_unit
    arr = np.array(g if isinstance(g, list) else [g] * d, dtype=np.float64)
    if arr.shape != (d,):
        raise CalibrationError(f"reference_gain_v_per_unit: {arr.size} values for {d} nodes")
    return arr


class StepContext:
    """Output directory and options shared by the steps."""

    def __init__(self, out: Path, opts: CalibrationOptions) -> None:
        self.out = Path(out)
        self.opts = opts
        self.out.mkdir(parents=True, exist_ok=True)

    def result_path(self, step: str) -> Path:
        return self.out / f"{step}.json"

    def done(self, step: str) -> bool:
        return self.result_path(step).exists()

    def load(self, step: str) -> dict[str, Any]:
        if not self.done(step):
            raise CalibrationError(f"step {step!r} has not been run (needed first)")
        out: dict[str, Any] = json.loads(self.result_path(step).read_text())
        return out

    def save(self, step: str, result: dict[str, Any], raw: dict[str, Array]) -> None:
        np.savez_compressed(self.out / f"{step}.npz", allow_pickle=False, **raw)
        result["completed_utc"] = utc_now()
        write_atomic(self.result_path(step), json.dumps(result, indent=1))


async def _set_all_biases(bench: CalibrationBench, volts: float) -> None:
    for e in bench.config.wiring.edges:
        await bench.dac(e.instrument).set_voltage(e.channel, volts)


# ------------------------------------------------------------------------------------ dac
def _loopbacks(
    bench: CalibrationBench, opts: CalibrationOptions
) -> dict[tuple[str, int], tuple[str, int]]:
    """The `dac_loopback` option parsed and checked against the bench file."""
    cfg = bench.config
    out: dict[tuple[str, int], tuple[str, int]] = {}
    for src, dst in opts.dac_loopback.items():
        try:
            dac, dch = src.rsplit(":", 1)
            scope, sch = dst.rsplit(":", 1)
            key, val_ = (dac, int(dch)), (scope, int(sch))
        except ValueError as exc:
            raise CalibrationError(
                f'dac_loopback: {src!r} = {dst!r}: expected "<dac>:<channel>" = "<scope>:<channel>"'
            ) from exc
        if cfg.instruments.get(dac) is None or cfg.instruments[dac].role != "dac":
            raise CalibrationError(f"dac_loopback: {dac!r} is not a DAC of the bench")
        if cfg.instruments.get(scope) is None or cfg.instruments[scope].role != "scope":
            raise CalibrationError(f"dac_loopback: {scope!r} is not an oscilloscope of the bench")
        if not 1 <= val_[1] <= 4:
            raise CalibrationError(f"dac_loopback: {scope} has channels 1..4, not {val_[1]}")
        out[key] = val_
    return out


async def _scope_dc_volts(
    bench: CalibrationBench, scope: str, channel: int, expect_v: float, what: str
) -> float:
    """Mean volts of a scope channel over a 24 ms record, on a fine scale (50 mV/div) centred
    on `expect_v` by the channel offset, so the 8-bit ADC resolves ≈ 2 mV."""
    s = bench.scope(scope)
    await s.configure_channel(channel, scale_v_per_div=0.05, offset_v=-expect_v, probe=1.0)
    await s.set_acquisition("NORMal")
    await s.set_timebase(0.002, 0.012)
    await s.set_trigger_edge("EXT", level_v=1.0)
    await s.run()
    await bench.clock.sleep(0.1)
    await s.stop()
    w = (await s.read_channels([channel]))[channel]
    if w.clipped:
        raise CalibrationError(
            f"{what}: {scope} channel {channel} clipped: the delivered volts are more than "
            "0.2 V from the setpoint (is the loopback cabled?)"
        )
    return float(np.mean(w.volts))


async def step_dac(bench: CalibrationBench, ctx: StepContext) -> dict[str, Any]:
    """Setpoint → delivered volts per edge channel: through a scope input where the options
    declare a loopback cable (`dac_loopback`), otherwise read back from the DAC's own output
    monitor (`volt:last?`); each channel's result names the method. A channel whose delivered
    volts do not follow the setpoint is an error naming it."""
    cfg = bench.config
    loop = _loopbacks(bench, ctx.opts)
    channels: list[dict[str, Any]] = []
    raw: dict[str, Array] = {}
    for e in cfg.wiring.edges:
        lim = cfg.output_limits(e.instrument).limit_for(e.channel)
        sp = np.linspace(lim.min_v, lim.max_v, 7)
        got = np.zeros_like(sp)
        dac = bench.dac(e.instrument)
        via = loop.get((e.instrument, e.channel))
        for i, v in enumerate(sp):
            await dac.set_voltage(e.channel, float(v))
            await bench.clock.sleep(0.05)
            if via is None:
                got[i] = await dac.get_output_voltage(e.channel)
            else:
                got[i] = await _scope_dc_volts(
                    bench, via[0], via[1], float(v), f"dac: {e.instrument} channel {e.channel}"
                )
        await dac.set_voltage(e.channel, ctx.opts.base_bias_v)
        method = (
            "readback (volt:last?)"
            if via is None
            else f"loopback through {via[0]} channel {via[1]} (mean of a 24 ms record)"
        )
        coef, _res, *_ = np.polyfit(sp, got, 1, full=True)
        gain, offset = float(coef[0]), float(coef[1])
        resid = got - (offset + gain * sp)
        n = sp.size
        s2 = float(np.sum(resid**2) / (n - 2)) if n > 2 else 0.0
        sxx = float(np.sum((sp - sp.mean()) ** 2))
        if not abs(gain) > 0.5:
            raise CalibrationError(
                f"dac: {e.instrument} channel {e.channel} (edge {list(e.nodes)}) does not move: "
                f"delivered {got.min():.4g}..{got.max():.4g} V for setpoints "
                f"{sp.min():.4g}..{sp.max():.4g} V (gain {gain:.3g})"
            )
        channels.append(
            {
                "instrument": e.instrument,
                "channel": e.channel,
                "offset_v": [offset, math.sqrt(s2 * (1 / n + sp.mean() ** 2 / sxx))],
                "gain": [gain, math.sqrt(s2 / sxx)],
                "max_nonlinearity_v": float(np.max(np.abs(resid))),
                "method": method,
            }
        )
        raw[f"{e.instrument}_ch{e.channel}_setpoint_v"] = sp
        raw[f"{e.instrument}_ch{e.channel}_delivered_v"] = got
    plots.plot_dac(ctx.out / "dac.png", raw)
    result = {"channels": channels}
    ctx.save("dac", result, raw)
    return result


# ------------------------------------------------------------------------------------ resonance
def _params_to_json(p: NetworkParams, fit: FitResult) -> dict[str, Any]:
    return {
        "omega2_diag": p.omega2_diag.tolist(),
        "kappa": p.kappa.tolist(),
        "gamma": p.gamma.tolist(),
        "act_gain": p.act_gain.tolist(),
        "act_delay_s": p.act_delay_s.tolist(),
        "sen_gain": p.sen_gain.tolist(),
        "sen_delay_s": p.sen_delay_s.tolist(),
        "sigma": {
            name: fit.sigma_of(name).tolist()
            for name in ("omega2_diag", "kappa", "gamma", "act_gain", "act_delay_s", "sen_delay_s")
        },
        "chi2": fit.chi2,
        "dof": fit.dof,
        "scale": fit.scale,
    }


def params_from_json(d: dict[str, Any]) -> NetworkParams:
    return NetworkParams(
        *(
            np.array(d[k], dtype=np.float64)
            for k in (
                "omega2_diag",
                "kappa",
                "gamma",
                "act_gain",
                "act_delay_s",
                "sen_gain",
                "sen_delay_s",
            )
        )
    )


async def step_resonance(bench: CalibrationBench, ctx: StepContext) -> dict[str, Any]:
    """Multisine transfer matrix on the scope at the base bias → the linear network fit
    (per node f0 = √Ω²_ii/2π, Q = √Ω²_ii/Γ_i); then a ring-down on the scope, whose modal
    decay rates and frequencies are fitted and compared with the model's."""
    opts = ctx.opts
    scopes = _scopes(bench, opts)
    topo = _topology(bench)
    d = topo.n_nodes
    ref = _reference_paths(bench, scopes, d)
    await _set_all_biases(bench, opts.base_bias_v)
    plan = opts.plan()
    span = await _scope_spans(bench, scopes, opts)
    m, raw = await multisine_transfer(
        bench,
        plan,
        scope=scopes,
        settle_s=opts.settle_s,
        what="resonance",
        span_v=span,
        averages=opts.averages,
        stitch_tolerance=opts.stitch_tolerance,
    )
    fit = fit_scope_network(m, topo, bench, scopes, opts, ref)
    p = fit.params
    # ring-down: outputs off 10 ms before an arb-cycle boundary (a sync edge), record the
    # free decay from that edge on
    t0 = float(raw["arb_origin_s"][0])
    now = await bench.clock.now()
    nxt = t0 + math.ceil((now - t0 + 0.05) / plan.period_s) * plan.period_s
    await bench.clock.sleep(nxt - now - 0.01)
    await drives_off(bench)
    rd = await _ringdown(bench, scopes, opts, p, topo)
    raw.update({f"ringdown_{k}": v for k, v in rd.pop("raw").items()})
    raw.update({"omega_rad_s": m.omega_rad_s, "path": m.path, "drive": m.drive, "h": m.h})
    raw["sigma"] = m.sigma
    raw["model_h"] = predict(p, topo, m)
    plots.plot_transfer(ctx.out / "resonance.png", m, raw["model_h"], topo)
    nodes = _node_entries(p, fit.sigma_of("omega2_diag"), fit.sigma_of("gamma"))
    result = {
        "nodes": nodes,
        "fit": _params_to_json(p, fit),
        "reference_paths": ref,
        "ringdown": rd,
    }
    ctx.save("resonance", result, raw)
    return result


def _node_entries(p: NetworkParams, w2s: Array, gs: Array) -> list[dict[str, Any]]:
    """Per node f0, Q, Γ and Ω²_ii with standard errors."""
    nodes = []
    for i in range(p.omega2_diag.size):
        w0 = math.sqrt(p.omega2_diag[i])
        w0s = 0.5 * w2s[i] / w0
        q = w0 / p.gamma[i]
        qs = q * math.hypot(w0s / w0, gs[i] / p.gamma[i])
        nodes.append(
            {
                "node": i,
                "f0_hz": [w0 / (2 * math.pi), w0s / (2 * math.pi)],
                "q": [q, qs],
                "damping_per_s": [float(p.gamma[i]), float(gs[i])],
                "omega2_per_s2": [float(p.omega2_diag[i]), float(w2s[i])],
            }
        )
    return nodes


async def _scope_spans(
    bench: CalibrationBench, scopes: list[str], opts: CalibrationOptions
) -> dict[tuple[str, int], float]:
    """Per (scope, channel), the expected peak signal (a first low-drive look at 1 V/div)."""
    # The response of a Q≈10 network to the multisine can reach ~3× the drive-level estimate;
    # a coarse look with wide scales gives the span, then each channel is set to fit it.
    plan = opts.plan()
    m_peak: dict[tuple[str, int], float] = {}
    chans = [(s, c) for _, s, c in scope_paths(bench, scopes)]
    wide = {sc: 2.0 for sc in chans}
    _, raw = await multisine_transfer(
        bench,
        plan,
        scope=scopes,
        settle_s=opts.settle_s,
        what="resonance (ranging)",
        span_v=wide,
        stitch_tolerance=opts.stitch_tolerance,
    )
    for s, c in chans:
        v = raw[f"{wave_key(scopes, s, c)}_v"]
        m_peak[(s, c)] = (
            float(np.max(np.abs(v - np.mean(v)))) * 1.5 + float(abs(np.mean(v))) + 0.005
        )
    return m_peak


def _network_spec(
    topo: Topology, scope_paths: set[int], ref: list[int], free_pairs: list[tuple[int, int]]
) -> FitSpec:
    """Free parameters of the scope network fit: every node's Ω² and Γ, the actuators' gains
    and delays, the scope paths' gains (but the reference paths') and delays (but path 0's),
    and the couplings of `free_pairs`."""
    d = topo.n_nodes
    n_sense = len(topo.sense_nodes)
    free_gain = np.array(
        [(i in scope_paths) and (i not in ref) for i in range(n_sense)], dtype=bool
    )
    free_delay = np.array([(i in scope_paths) and i != 0 for i in range(n_sense)], dtype=bool)
    spec = FitSpec(
        {
            "omega2_diag": np.ones(d, bool),
            "gamma": np.ones(d, bool),
            "act_gain": np.ones(len(topo.drive_nodes), bool),
            "act_delay_s": np.ones(len(topo.drive_nodes), bool),
            "sen_delay_s": free_delay,
        }
    )
    if free_pairs:
        spec.free["kappa"] = kappa_mask(d, free_pairs)
    if free_gain.any():
        spec.free["sen_gain"] = free_gain
    return spec


def fit_scope_network(
    m: Measurement,
    topo: Topology,
    bench: CalibrationBench,
    scope: str | list[str],
    opts: CalibrationOptions,
    ref: list[int],
) -> FitResult:
    d = topo.n_nodes
    n_sense = len(topo.sense_nodes)
    gains = np.ones(n_sense)
    declared = _declared_gains(opts, d)
    for node, pth in enumerate(ref):
        gains[pth] = declared[node]
    delays = np.zeros(n_sense)
    delays[0] = opts.reference_delay_s
    start = modal_start(m, topo, gains, delays)
    spec = _network_spec(topo, {int(p) for p in m.path}, ref, topo.pairs())
    return fit_network_multistart(
        m,
        topo,
        start,
        spec,
        what="resonance: network fit of the "
        f"{scope if isinstance(scope, str) else '+'.join(scope)} transfer functions",
        rng=np.random.default_rng(opts.seed),
        n_starts=6,
    )


async def _ringdown(
    bench: CalibrationBench,
    scopes: list[str],
    opts: CalibrationOptions,
    p: NetworkParams,
    topo: Topology,
) -> dict[str, Any]:
    """Record the free decay after the drive stops (every scope, the same sync edge); fit
    Σ_n Re(c_sn e^{λ_n t}) + O_s with the model's modes scaled by a common frequency factor and
    a common decay factor. Shared nodes are stitch-checked with the fitted gain ratio (a scope
    that recorded a later edge sees a decayed or vanished signal)."""
    paths = scope_paths(bench, scopes)
    records = await scopes_record(
        bench,
        channels_by_scope(bench, scopes),
        length_s=opts.ringdown_s,
        arm_wait_s=0.0,
        what="ring-down",
    )
    ratio = {
        (a, b): float(p.sen_gain[b] / p.sen_gain[a]) for _, a, b in shared_nodes(bench, scopes)
    }
    stitch = stitch_check(bench, records, "ring-down", ratio, opts.stitch_tolerance)
    chans = [(i, (s, c)) for i, s, c in paths]
    waves = {(s, c): records[s][c] for _, s, c in paths}
    # the record starts at the first sync edge after arming: the generator sync keeps running
    d = topo.n_nodes
    a = np.block([[np.zeros((d, d)), np.eye(d)], [-p.omega2(), -np.diag(p.gamma)]])
    lam = np.linalg.eigvals(a)
    lam = lam[lam.imag > 0]
    t = np.concatenate([waves[c].t_s for _, c in chans])
    y = np.concatenate([waves[c].volts for _, c in chans])
    seg = np.concatenate([np.full(waves[c].t_s.size, k) for k, (_, c) in enumerate(chans)])
    t_rel = t - t.min()
    keep = t_rel > 0.02  # skip the instant the drive stops

    def basis(s: Array) -> Array:
        lm = lam.real * s[0] + 1j * lam.imag * s[1]
        cols = []
        for k in range(len(chans)):
            on = (seg == k).astype(float)
            e = np.exp(np.outer(t_rel, lm))
            cols += [on[:, None] * e.real, on[:, None] * e.imag, on[:, None]]
        return np.hstack(cols)[keep]

    def resid(s: Array) -> Array:
        b = basis(s)
        coef, *_ = np.linalg.lstsq(b, y[keep], rcond=None)
        r: Array = b @ coef - y[keep]
        return r

    sol = least_squares(resid, np.array([1.0, 1.0]), method="lm")
    if not sol.success:
        raise CalibrationError(
            f"ring-down fit on {', '.join(scopes)} did not converge ({sol.message})"
        )
    n, k = int(keep.sum()), 2
    s2 = float(np.sum(sol.fun**2)) / max(n - k - basis(sol.x).shape[1], 1)
    cov = np.linalg.inv(sol.jac.T @ sol.jac) * s2
    f_modes, g_modes = eigen_modes(p)
    return {
        "decay_scale": [float(sol.x[0]), float(math.sqrt(cov[0, 0]))],
        "frequency_scale": [float(sol.x[1]), float(math.sqrt(cov[1, 1]))],
        "model_mode_f_hz": f_modes.tolist(),
        "model_mode_decay_per_s": g_modes.tolist(),
        "ringdown_mode_decay_per_s": (g_modes * sol.x[0]).tolist(),
        **({"stitch_residual": stitch} if stitch else {}),
        "raw": {"t_s": t, "v": y, "segment": seg.astype(float)},
    }


# ------------------------------------------------------------------------------------ sensing
async def s_norm(bench: CalibrationBench, scope: str) -> None:
    await bench.scope(scope).set_acquisition("NORMal")


async def _offset_records(
    bench: CalibrationBench, scopes: list[str], settle_s: float
) -> tuple[dict[str, dict[int, Waveform]], float]:
    """Drives off: a 0.2 s free-running record of every sensed channel of every scope (the
    scopes run together); returns the records and the bench-clock time they end at."""
    by_scope = channels_by_scope(bench, scopes)
    for sc, ch in by_scope.items():
        await configure_scope_for(bench, sc, ch, {c: 0.1 for c in ch})
        await s_norm(bench, sc)
    await bench.clock.sleep(settle_s)

    async def start(sc: str) -> None:
        s = bench.scope(sc)
        await s.set_timebase(0.2 / 12, 0.1)
        await s.set_trigger_edge("EXT", level_v=1.0)
        await s.run()

    await asyncio.gather(*(start(sc) for sc in scopes))
    await bench.clock.sleep(0.3)
    await asyncio.gather(*(bench.scope(sc).stop() for sc in scopes))
    # the offsets drift slowly: they are the offsets at this bench-clock time
    offset_clock_s = await bench.clock.now()
    reads = await asyncio.gather(*(bench.scope(sc).read_channels(by_scope[sc]) for sc in scopes))
    return dict(zip(scopes, reads, strict=True)), offset_clock_s


async def step_sensing(bench: CalibrationBench, ctx: StepContext) -> dict[str, Any]:
    """Offsets (scope, drives off), scope gains/delays from the network fit, and each lock-in's
    gain, phase and delay (phase vs frequency slope) from a sine sweep against the model."""
    opts = ctx.opts
    res = ctx.load("resonance")
    p = params_from_json(res["fit"])
    topo = _topology(bench)
    scopes = _scopes(bench, opts)
    cfg = bench.config
    await drives_off(bench)
    waves, offset_clock_s = await _offset_records(bench, scopes, opts.settle_s)
    offsets = {}
    raw: dict[str, Array] = {}
    for i, sc, c in scope_paths(bench, scopes):
        v = waves[sc][c].volts
        offsets[i] = [float(np.mean(v)), float(np.std(v) / math.sqrt(v.size))]
        raw[f"offset_{'' if len(scopes) == 1 else sc + '_'}ch{c}_v"] = v
    lock_paths = [
        i
        for i, sw in enumerate(cfg.wiring.sense)
        if cfg.instruments[sw.instrument].role == "lockin"
    ]
    lock: dict[int, dict[str, list[float]]] = {}
    if lock_paths:
        m, lraw = await lockin_sweep(
            bench,
            np.array(opts.lockin_frequencies_hz),
            drive=0,
            amplitude_v=opts.lockin_amplitude_v,
            settle_s=opts.lockin_settle_s,
            what="sensing",
        )
        raw.update({f"lockin_{k}": v for k, v in lraw.items()})
        for pth in lock_paths:
            sel = m.path == pth
            # model without this path's gain/delay: H = c·e^{−iωτ}·H_unit
            unit = p.copy()
            unit.sen_gain[pth] = 1.0
            unit.sen_delay_s[pth] = 0.0
            sub = Measurement(m.omega_rad_s[sel], m.path[sel], m.drive[sel], m.h[sel], m.sigma[sel])
            hu = predict(unit, topo, sub)
            ratio = sub.h / hu
            w = sub.omega_rad_s

            def resid(x: Array, ratio: Array = ratio, w: Array = w) -> Array:
                mod = x[0] * np.exp(1j * (x[1] - w * x[2]))
                r = (mod - ratio) / np.abs(ratio)
                return np.concatenate([r.real, r.imag])

            ph = np.unwrap(np.angle(ratio))
            slope, icpt = np.polyfit(w, ph, 1)
            sol = least_squares(
                resid, np.array([np.mean(np.abs(ratio)), icpt, -slope]), method="lm"
            )
            if not sol.success:
                raise CalibrationError(
                    f"sensing: {cfg.wiring.sense[pth].instrument} fit did not converge"
                )
            dof = max(2 * sel.sum() - 3, 1)
            s2 = float(np.sum(sol.fun**2)) / dof
            cov = np.linalg.inv(sol.jac.T @ sol.jac) * s2
            # the model's own uncertainty (reference node gain is declared; Ω², Γ fitted) is
            # carried by the residual scatter across frequencies
            g, phi, tau = sol.x
            if g < 0:
                g, phi = -g, phi + math.pi
            phi = math.remainder(phi, 2 * math.pi)
            lock[pth] = {
                "gain": [float(g), float(math.sqrt(cov[0, 0]))],
                "phase": [float(phi), float(math.sqrt(cov[1, 1]))],
                "delay": [float(tau), float(math.sqrt(cov[2, 2]))],
            }
            raw[f"lockin_path{pth}_ratio"] = ratio
    sig_delay = res["fit"]["sigma"]["sen_delay_s"]
    paths = []
    for i, _sw in enumerate(cfg.wiring.sense):
        if i in lock:
            paths.append(
                {
                    "path": i,
                    "gain": lock[i]["gain"],
                    "offset": [0.0, 0.0],
                    "delay": lock[i]["delay"],
                    "phase": lock[i]["phase"],
                    "reference": False,
                }
            )
        elif i in offsets:
            paths.append(
                {
                    "path": i,
                    "gain": [float(p.sen_gain[i]), 0.0],
                    "offset": offsets[i],
                    "delay": [float(p.sen_delay_s[i]), float(sig_delay[i])],
                    "phase": None,
                    "reference": i in res["reference_paths"],
                }
            )
    plots.plot_sensing(ctx.out / "sensing.png", raw, lock)
    result = {"paths": paths, "offset_clock_s": offset_clock_s}
    ctx.save("sensing", result, raw)
    return result


# ------------------------------------------------------------------------------------ actuators
async def step_actuators(bench: CalibrationBench, ctx: StepContext) -> dict[str, Any]:
    """Generator → node force gain (per unit mass) and phase vs frequency, from the network fit
    of the multisine transfer functions (the actuator part of H_sj)."""
    res = ctx.load("resonance")
    fit = res["fit"]
    f = np.linspace(ctx.opts.band_hz[0], ctx.opts.band_hz[1], 50)
    out, raw = [], {"frequency_hz": f}
    for j, _dw in enumerate(bench.config.wiring.drives):
        g, gs = fit["act_gain"][j], fit["sigma"]["act_gain"][j]
        tau, ts = fit["act_delay_s"][j], fit["sigma"]["act_delay_s"][j]
        raw[f"drive{j}_phase_rad"] = -2 * np.pi * f * tau
        raw[f"drive{j}_gain"] = np.full(f.size, g)
        out.append({"drive": j, "gain": [g, gs], "delay": [tau, ts]})
    plots.plot_actuators(ctx.out / "actuators.png", raw, len(out))
    result = {"drives": out}
    ctx.save("actuators", result, raw)
    return result


# ------------------------------------------------------------------------------------ couplings
async def step_couplings(bench: CalibrationBench, ctx: StepContext) -> dict[str, Any]:
    """α(V)/m per edge: at each of `bias_points` biases over the DAC limits (all edges at once)
    the multisine transfer matrix is refitted for the couplings (node terms, gains and delays
    held at the resonance fit; the per-bias values and the map start), then one joint fit of
    every bias's transfer matrix, the resonance step's and the sensing step's lock-in sweep
    gives the maps a + b tanh((V − c)/w) together with the shared node, actuator and sensing
    terms (result `joint`, which supersedes the resonance and sensing fits in the file). Each
    multisine record enters with its drive-level linearisation of the tanh couplings."""
    opts = ctx.opts
    res = ctx.load("resonance")
    base = params_from_json(res["fit"])
    topo = _topology(bench)
    scopes = _scopes(bench, opts)
    cfg = bench.config
    edges = cfg.wiring.edges
    lo = max(cfg.output_limits(e.instrument).limit_for(e.channel).min_v for e in edges)
    hi = min(cfg.output_limits(e.instrument).limit_for(e.channel).max_v for e in edges)
    biases = np.linspace(lo + opts.bias_margin_v, hi - opts.bias_margin_v, opts.bias_points)
    d = topo.n_nodes
    kap = np.zeros((biases.size, len(edges)))
    kap_s = np.zeros_like(kap)
    plan = opts.plan()
    spans = {(sc, c): 0.6 for _, sc, c in scope_paths(bench, scopes)}
    spec = FitSpec({"kappa": kappa_mask(d, topo.pairs())})
    raw: dict[str, Array] = {"bias_v": biases}
    p = base.copy()
    measured: list[Measurement] = []
    wired = [e.key for e in edges]
    lin: list[tuple[Array, Array]] = []
    for b, v in enumerate(biases):
        await _set_all_biases(bench, float(v))
        m, mraw = await multisine_transfer(
            bench,
            plan,
            scope=scopes,
            settle_s=opts.settle_s,
            what=f"couplings at {v:+.3f} V",
            span_v=spans,
            averages=opts.coupling_averages,
            stitch_tolerance=opts.stitch_tolerance,
        )
        measured.append(m)
        lin.append(_linearisation(mraw, bench, scopes, opts, res["reference_paths"], wired))
        fit = fit_network(m, topo, p, spec, what=f"couplings: fit at bias {v:+.3f} V")
        p = fit.params
        ks = fit.sigma_of("kappa")
        for k, e in enumerate(edges):
            a_, b_ = e.key
            # the small-signal α/m (the drive level compresses the coupling by lin gain)
            kap[b, k] = p.kappa[a_, b_] / lin[-1][0][k]
            kap_s[b, k] = ks[a_, b_] / lin[-1][0][k]
        raw[f"h_bias{b}"] = m.h
        raw[f"lin_gain_bias{b}"] = lin[-1][0]
    await _set_all_biases(bench, opts.base_bias_v)
    await drives_off(bench)
    raw["kappa_per_s2"] = kap
    raw["kappa_sigma_per_s2"] = kap_s
    # per-edge maps fitted to the per-bias couplings: the "does it move" check and a start
    starts = [
        _fit_map(biases, kap[:, k], kap_s[:, k], e.instrument, e.channel, e.key)
        for k, e in enumerate(edges)
    ]
    # the joint fit: every bias's transfer matrix and the resonance step's (at the base bias)
    # with the maps' parameters and the shared node/actuator/sensing terms free together
    rraw = np.load(ctx.out / "resonance.npz")
    data = [
        (
            opts.base_bias_v,
            Measurement(
                rraw["omega_rad_s"],
                rraw["path"].astype(np.intp),
                rraw["drive"].astype(np.intp),
                rraw["h"],
                rraw["sigma"],
            ),
        ),
        *list(zip(biases.tolist(), measured, strict=True)),
    ]
    lin.insert(0, _linearisation(dict(rraw), bench, scopes, opts, res["reference_paths"], wired))
    # the sensing step's lock-in sweep (at the base bias) joins the fit: the lock-in paths'
    # gains, delays and reference phases are then fitted against the same model, and their
    # covariance carries the model's uncertainty
    start = base.copy()
    lock = _lockin_data(ctx, start)
    lock_paths: list[int] = []
    lock_phase = np.zeros(0)
    if lock is not None:
        m_lock, lock_paths, lock_phase = lock
        data.append((opts.base_bias_v, m_lock))
        lin.append((np.ones(len(wired)), np.zeros((len(wired), 2))))
    joint = fit_coupling_maps(
        data,
        topo,
        start,
        _network_spec(
            topo,
            {int(i) for i in data[0][1].path} | set(lock_paths),
            res["reference_paths"],
            [pr for pr in topo.pairs() if pr not in wired],
        ),
        wired,
        np.array([mp["params"] for mp in starts]),
        what="couplings: joint fit of the maps",
        linearisation=lin,
        phase_paths=lock_paths,
        phase_start=lock_phase,
    )
    dof = joint.dof
    maps = []
    for k, mp in enumerate(starts):
        maps.append(
            {
                **mp,
                "params": joint.maps[k].tolist(),
                "cov": joint.map_cov(k).tolist(),
                "chi2_per_dof": joint.chi2 / dof,
                "per_bias_params": mp["params"],
            }
        )
    unwired_sigma = joint.cov_sigma("kappa") if "kappa" in joint.spec.free else None
    fixed = {
        f"{a}-{b}": [
            float(joint.params.kappa[a, b]),
            float(0.0 if unwired_sigma is None else unwired_sigma[a, b]),
        ]
        for a, b in topo.pairs()
        if (a, b) not in set(wired)
    }
    raw["joint_chi2_per_dof"] = np.array([joint.chi2 / dof])
    if lock is not None:
        raw["lockin_h"] = data[-1][1].h
        raw["lockin_model_h"] = predict(
            joint.at_bias(opts.base_bias_v), topo, data[-1][1]
        ) * np.exp(1j * joint.phases[[lock_paths.index(int(q)) for q in data[-1][1].path]])
        raw["lockin_sigma"] = data[-1][1].sigma
    plots.plot_couplings(ctx.out / "couplings.png", biases, kap, kap_s, maps)
    result = {
        "maps": maps,
        "fixed": fixed,
        "v_min": float(biases[0]),
        "v_max": float(biases[-1]),
        "joint": _joint_terms(joint, lock_paths),
    }
    ctx.save("couplings", result, raw)
    return result


#: relative σ floor of a lock-in reading (per real/imaginary part) on top of its noise: the
#: drive-level nonlinearity (≈ 1e-3 at the resonance peak with a 10 mV sine) and residual
#: filter settling, which the lock-in noise estimate does not contain
LOCKIN_REL_SIGMA = 1e-3


def _lockin_data(
    ctx: StepContext, start: NetworkParams
) -> tuple[Measurement, list[int], Array] | None:
    """The sensing step's lock-in sweep as a `Measurement` (σ with the `LOCKIN_REL_SIGMA`
    floor), its paths, and their reference phases; `start` gets the sensing step's lock-in
    gains and delays. None when the sensing step has not run or kept no lock-in readings."""
    if not ctx.done("sensing") or not (ctx.out / "sensing.npz").exists():
        return None
    sraw = np.load(ctx.out / "sensing.npz")
    if "lockin_h" not in sraw or "lockin_omega_rad_s" not in sraw:
        return None
    h = np.asarray(sraw["lockin_h"], dtype=np.complex128)
    sigma = np.hypot(np.asarray(sraw["lockin_sigma"]), LOCKIN_REL_SIGMA * np.abs(h))
    m = Measurement(
        np.asarray(sraw["lockin_omega_rad_s"], dtype=np.float64),
        sraw["lockin_path"].astype(np.intp),
        sraw["lockin_drive"].astype(np.intp),
        h,
        sigma,
    )
    lock = {int(q["path"]): q for q in ctx.load("sensing")["paths"] if q["phase"] is not None}
    paths = sorted({int(q) for q in m.path})
    if not paths or any(q not in lock for q in paths):
        return None
    for q in paths:
        start.sen_gain[q] = lock[q]["gain"][0]
        start.sen_delay_s[q] = lock[q]["delay"][0]
    return m, paths, np.array([lock[q]["phase"][0] for q in paths])


def _joint_terms(joint: MapFit, lock_paths: list[int]) -> dict[str, Any]:
    """The node, actuator and sensing terms of the joint fit (all biases' transfer matrices,
    the resonance step's and the lock-in sweep): they supersede the resonance fit's."""
    p = joint.params
    sg, sd = joint.cov_sigma("sen_gain"), joint.cov_sigma("sen_delay_s")
    ag, ad = joint.cov_sigma("act_gain"), joint.cov_sigma("act_delay_s")
    ph, phs = joint.phases, joint.phase_sigma()
    return {
        "nodes": _node_entries(p, joint.cov_sigma("omega2_diag"), joint.cov_sigma("gamma")),
        "drives": [
            {
                "drive": j,
                "gain": [float(p.act_gain[j]), float(ag[j])],
                "delay": [float(p.act_delay_s[j]), float(ad[j])],
            }
            for j in range(p.act_gain.size)
        ],
        "paths": {
            str(i): {
                "gain": [float(p.sen_gain[i]), float(sg[i])],
                "delay": [float(p.sen_delay_s[i]), float(sd[i])],
                "phase": (
                    [float(ph[lock_paths.index(i)]), float(phs[lock_paths.index(i)])]
                    if i in lock_paths
                    else None
                ),
            }
            for i in range(p.sen_gain.size)
        },
        "chi2_per_dof": joint.chi2 / joint.dof,
    }


def _linearisation(
    raw: dict[str, Array],
    bench: CalibrationBench,
    scopes: list[str],
    opts: CalibrationOptions,
    ref: list[int],
    edges: list[tuple[int, int]],
) -> tuple[Array, Array]:
    """`statistical_linearisation` of the wired couplings along the node waveforms of one
    multisine record: each node's reference scope record (one arb period), kept at the
    excited lines only (offset and most noise removed), divided by its declared gain."""
    plan = opts.plan()
    d = len(ref)
    n_drives = len(bench.config.wiring.drives)
    lines = np.concatenate([plan.lines(j, n_drives) for j in range(n_drives)])
    gains = _declared_gains(opts, d)
    xs = []
    for node, pth in enumerate(ref):
        sw = bench.config.wiring.sense[pth]
        v = np.asarray(raw[f"{wave_key(scopes, sw.instrument, sw.channel or 1)}_v"])
        spec = np.fft.rfft(v)
        keep = np.zeros_like(spec)
        keep[lines] = spec[lines]
        xs.append(np.fft.irfft(keep, n=v.size) / gains[node])
    return statistical_linearisation(np.array(xs), edges, opts.nonlinearity)


def _fit_map(
    v: Array, k: Array, s: Array, instrument: str, channel: int, nodes: tuple[int, int]
) -> dict[str, Any]:
    """Weighted fit of κ(V) = a + b tanh((V − c)/w); errors name the DAC channel."""
    where = f"couplings: edge {list(nodes)} ({instrument} channel {channel})"
    span = float(np.ptp(k))
    if span < 5.0 * float(np.median(s)):
        raise CalibrationError(
            f"{where}: the coupling does not change with the bias (κ spread {span:.3g} 1/s² "
            f"≤ 5σ over {v.min():+.3g}..{v.max():+.3g} V): the DAC does not move or the "
            "varactor is not connected"
        )
    slope = np.polyfit(v, k, 1)[0]
    x0 = np.array(
        [float(np.mean(k)), 0.6 * span * np.sign(slope), float(np.mean(v)), float(np.ptp(v)) / 3]
    )

    def resid(x: Array) -> Array:
        r: Array = (x[0] + x[1] * np.tanh((v - x[2]) / x[3]) - k) / s
        return r

    sol = least_squares(resid, x0, method="lm", max_nfev=4000)
    if not sol.success or sol.x[3] <= 0:
        raise CalibrationError(f"{where}: the map fit did not converge ({sol.message})")
    dof = max(v.size - 4, 1)
    chi2 = float(np.sum(sol.fun**2))
    scale = max(1.0, chi2 / dof)
    jtj = sol.jac.T @ sol.jac
    if np.linalg.cond(jtj) > 1e14:
        raise CalibrationError(f"{where}: the map parameters are not identifiable; add biases")
    cov = np.linalg.inv(jtj) * scale
    return {
        "nodes": list(nodes),
        "instrument": instrument,
        "channel": channel,
        "params": sol.x.tolist(),
        "cov": cov.tolist(),
        "chi2_per_dof": chi2 / dof,
    }


# ------------------------------------------------------------------------------------ assemble
def assemble(bench: CalibrationBench, ctx: StepContext) -> CalibrationFile:
    """The calibration file from every completed step's result."""
    cfg = bench.config
    opts = ctx.opts
    m_kg = opts.mass_kg
    steps = {s: ctx.load(s)["completed_utc"] for s in STEPS if ctx.done(s)}
    cal = CalibrationFile(
        created_utc=utc_now(),
        bench_name=cfg.name,
        bench_config_sha256=config_hash(cfg),
        instruments={n: Identity.parse(i) for n, i in bench.identities().items()},
        mass_kg=m_kg,
        nonlinearity=opts.nonlinearity,
        steps=steps,
        notes=[
            f"node coordinate defined by each node's reference scope path with declared gain "
            f"{opts.reference_gain_v_per_unit} V/unit; delay gauge: sense path 0 has "
            f"{opts.reference_delay_s} s; mass declared {m_kg} kg"
        ],
    )
    if "dac" in steps:
        for c in ctx.load("dac")["channels"]:
            cal.dac.append(
                DacChannelCal(
                    instrument=c["instrument"],
                    channel=c["channel"],
                    offset_v=val(*c["offset_v"], "V"),
                    gain=val(*c["gain"], "V/V"),
                    max_nonlinearity_v=c["max_nonlinearity_v"],
                    method=c["method"],
                )
            )
    # the couplings step's joint fit (all biases, the lock-in sweep) supersedes the resonance
    # fit's node, actuator and sensing terms
    joint = ctx.load("couplings").get("joint") if "couplings" in steps else None
    if "resonance" in steps:
        for n in ctx.load("resonance")["nodes"] if joint is None else joint["nodes"]:
            cal.nodes.append(
                NodeCal(
                    node=n["node"],
                    f0_hz=val(*n["f0_hz"], "Hz"),
                    q=val(*n["q"], ""),
                    damping_per_s=val(*n["damping_per_s"], "1/s"),
                    omega2_per_s2=val(*n["omega2_per_s2"], "1/s^2"),
                )
            )
    if "actuators" in steps:
        for a in ctx.load("actuators")["drives"] if joint is None else joint["drives"]:
            dw = cfg.wiring.drives[a["drive"]]
            cal.actuators.append(
                ActuatorCal(
                    node=dw.node,
                    instrument=dw.instrument,
                    channel=dw.channel,
                    gain_per_s2_per_v=val(*a["gain"], "unit/s^2/V"),
                    delay_s=val(*a["delay"], "s"),
                )
            )
    if "sensing" in steps:
        for s in ctx.load("sensing")["paths"]:
            if joint is not None and str(s["path"]) in joint["paths"]:
                js = joint["paths"][str(s["path"])]
                s = {
                    **s,
                    "gain": js["gain"] if not s["reference"] else s["gain"],
                    "delay": js["delay"],
                    "phase": js["phase"] if s["phase"] is not None else None,
                }
            sw = cfg.wiring.sense[s["path"]]
            cal.sensing.append(
                SensingCal(
                    node=sw.node,
                    instrument=sw.instrument,
                    channel=sw.channel,
                    gain_v_per_unit=val(*s["gain"], "V/unit"),
                    offset_v=val(*s["offset"], "V"),
                    delay_s=val(*s["delay"], "s"),
                    phase_rad=None if s["phase"] is None else val(*s["phase"], "rad"),
                    reference=bool(s["reference"]),
                )
            )
    if "couplings" in steps:
        cp = ctx.load("couplings")
        res = ctx.load("resonance")["fit"]
        for mp in cp["maps"]:
            a, b, c, w = mp["params"]
            ka, kb = sorted(mp["nodes"])
            cal.couplings.append(
                CouplingMap(
                    nodes=(mp["nodes"][0], mp["nodes"][1]),
                    instrument=mp["instrument"],
                    channel=mp["channel"],
                    a=a,
                    b=b,
                    c_v=c,
                    w_v=w,
                    cov=mp["cov"],
                    v_min=cp["v_min"],
                    v_max=cp["v_max"],
                    mass_kg=m_kg,
                    chi2_per_dof=mp["chi2_per_dof"],
                    linear_kappa_per_s2=val(
                        res["kappa"][ka][kb], res["sigma"]["kappa"][ka][kb], "1/s^2"
                    ),
                )
            )
        cal.fixed_couplings_per_s2 = {k: val(*v, "1/s^2") for k, v in cp["fixed"].items()}
    return cal


StepFn = Callable[[CalibrationBench, StepContext], Awaitable[dict[str, Any]]]
STEP_FUNCTIONS: dict[str, StepFn] = {
    "dac": step_dac,
    "resonance": step_resonance,
    "sensing": step_sensing,
    "actuators": step_actuators,
    "couplings": step_couplings,
}


async def run_step(
    bench: CalibrationBench, ctx: StepContext, step: str, *, force: bool = False
) -> CalibrationFile:
    """Run one step (its dependencies must be complete) and rewrite calibration.json."""
    if step not in STEP_FUNCTIONS:
        raise CalibrationError(f"unknown step {step!r}; steps: {', '.join(STEPS)}, all")
    for dep in DEPENDS[step]:
        if not ctx.done(dep):
            raise CalibrationError(f"step {step!r} needs {dep!r} first (or run 'all')")
    if force or not ctx.done(step):
        logger.info("calibration step %s", step)
        await STEP_FUNCTIONS[step](bench, ctx)
    else:
        logger.info("calibration step %s: already done (use --force to redo)", step)
    cal = assemble(bench, ctx)
    cal.save(ctx.out / "calibration.json")
    return cal


async def run_all(
    bench: CalibrationBench, ctx: StepContext, *, force: bool = False
) -> CalibrationFile:
    """Every step in dependency order; completed steps are skipped unless `force`."""
    cal: CalibrationFile | None = None
    for step in STEPS:
        cal = await run_step(bench, ctx, step, force=force)
    assert cal is not None
    return cal


def as_value(pair: list[float], unit: str) -> Value:
    return val(pair[0], pair[1], unit)
