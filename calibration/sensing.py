"""The `sensing` step: every scope path's offset (drives off), the scope paths' gains and
delays from the resonance fit, and each lock-in path's gain, reference phase and delay from a
sine sweep against the resonance model."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from physlearn.calibration import plots
from physlearn.calibration.acquire import (
    channels_by_scope,
    configure_scope_for,
    drives_off,
    lockin_sweep,
    scope_paths,
)
from physlearn.calibration.bench import CalibrationBench
from physlearn.calibration.context import StepContext
from physlearn.calibration.model import Measurement, NetworkParams, Topology, predict
from physlearn.calibration.options import CalibrationOptions
from physlearn.calibration.resonance import params_from_json
from physlearn.calibration.wiring import bench_topology, recorded_scopes
from physlearn.drivers.rigol_ds1000z import Waveform
from physlearn.errors import CalibrationError
from physlearn.spec.bench import BenchConfig

Array = NDArray[np.float64]


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
    topo = bench_topology(bench)
    scopes = recorded_scopes(bench, opts)
    cfg = bench.config
    await drives_off(bench)
    waves, offset_clock_s = await _offset_records(bench, scopes, opts.settle_s)
    offsets = {}
    raw: dict[str, Array] = {}
    for i, sc, c in scope_paths(bench, scopes):
        v = waves[sc][c].volts
        offsets[i] = [float(np.mean(v)), float(np.std(v) / math.sqrt(v.size))]
        raw[f"offset_{'' if len(scopes) == 1 else sc + '_'}ch{c}_v"] = v
    lock = await _lockin_paths(bench, opts, p, topo, raw)
    paths = _path_entries(cfg, lock, offsets, p, res)
    plots.plot_sensing(ctx.out / "sensing.png", raw, lock)
    result = {"paths": paths, "offset_clock_s": offset_clock_s}
    ctx.save("sensing", result, raw)
    return result


async def _lockin_paths(
    bench: CalibrationBench,
    opts: CalibrationOptions,
    p: NetworkParams,
    topo: Topology,
    raw: dict[str, Array],
) -> dict[int, dict[str, list[float]]]:
    """Per lock-in path its gain, phase and delay ([value, σ] each) from one sine sweep on drive
    0 (none without lock-ins); the sweep's readings and each path's ratio go into `raw`."""
    cfg = bench.config
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
            lock[pth], raw[f"lockin_path{pth}_ratio"] = _fit_lockin_path(
                m, p, topo, pth, cfg.wiring.sense[pth].instrument
            )
    return lock


def _fit_lockin_path(
    m: Measurement, p: NetworkParams, topo: Topology, pth: int, instrument: str
) -> tuple[dict[str, list[float]], Array]:
    """Gain c, phase φ and delay τ of lock-in path `pth` ([value, σ] each) from the sweep `m`
    against the model `p` without that path's gain and delay, and the measured/model ratio."""
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
    sol = least_squares(resid, np.array([np.mean(np.abs(ratio)), icpt, -slope]), method="lm")
    if not sol.success:
        raise CalibrationError(f"sensing: {instrument} fit did not converge")
    dof = max(2 * sel.sum() - 3, 1)
    s2 = float(np.sum(sol.fun**2)) / dof
    cov = np.linalg.inv(sol.jac.T @ sol.jac) * s2
    # the model's own uncertainty (reference node gain is declared; Ω², Γ fitted) is
    # carried by the residual scatter across frequencies
    g, phi, tau = sol.x
    if g < 0:
        g, phi = -g, phi + math.pi
    phi = math.remainder(phi, 2 * math.pi)
    fit = {
        "gain": [float(g), float(math.sqrt(cov[0, 0]))],
        "phase": [float(phi), float(math.sqrt(cov[1, 1]))],
        "delay": [float(tau), float(math.sqrt(cov[2, 2]))],
    }
    return fit, ratio


def _path_entries(
    cfg: BenchConfig,
    lock: dict[int, dict[str, list[float]]],
    offsets: dict[int, list[float]],
    p: NetworkParams,
    res: dict[str, Any],
) -> list[dict[str, Any]]:
    """The result's entry of every sense path (wiring order) with a lock-in fit or an offset."""
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
    return paths
