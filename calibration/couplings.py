"""The `couplings` step: α(V)/m of every wired edge. At each bias the multisine transfer matrix
is refitted for the couplings (the per-bias values and the maps' start); then one joint fit of
every bias's transfer matrix, the resonance step's and the sensing step's lock-in sweep gives
the maps a + b tanh((V − c)/w) with the shared node, actuator and sensing terms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from physlearn.calibration import plots
from physlearn.calibration.acquire import drives_off, multisine_transfer, scope_paths, wave_key
from physlearn.calibration.bench import CalibrationBench
from physlearn.calibration.context import StepContext
from physlearn.calibration.model import (
    FitSpec,
    MapFit,
    Measurement,
    NetworkParams,
    Topology,
    fit_coupling_maps,
    fit_network,
    kappa_mask,
    predict,
    statistical_linearisation,
)
from physlearn.calibration.options import CalibrationOptions
from physlearn.calibration.resonance import network_spec, node_entries, params_from_json
from physlearn.calibration.wiring import (
    bench_topology,
    declared_gains,
    recorded_scopes,
    set_all_biases,
)
from physlearn.errors import CalibrationError

Array = NDArray[np.float64]


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
    topo = bench_topology(bench)
    scopes = recorded_scopes(bench, opts)
    edges = bench.config.wiring.edges
    wired = [e.key for e in edges]
    sweep = await _sweep_biases(bench, opts, topo, scopes, base, res["reference_paths"])
    raw = sweep.raw
    # per-edge maps fitted to the per-bias couplings: the "does it move" check and a start
    starts = [
        _fit_map(
            sweep.biases, sweep.kappa[:, k], sweep.kappa_sigma[:, k], e.instrument, e.channel, e.key
        )
        for k, e in enumerate(edges)
    ]
    joint, data, lock = _joint_fit(ctx, bench, topo, scopes, base, res, sweep, starts)
    lock_paths: list[int] = [] if lock is None else lock[1]
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
    raw["joint_chi2_per_dof"] = np.array([joint.chi2 / dof])
    if lock is not None:
        raw["lockin_h"] = data[-1][1].h
        raw["lockin_model_h"] = predict(
            joint.at_bias(opts.base_bias_v), topo, data[-1][1]
        ) * np.exp(1j * joint.phases[[lock_paths.index(int(q)) for q in data[-1][1].path]])
        raw["lockin_sigma"] = data[-1][1].sigma
    plots.plot_couplings(
        ctx.out / "couplings.png", sweep.biases, sweep.kappa, sweep.kappa_sigma, maps
    )
    result = {
        "maps": maps,
        "fixed": _fixed_couplings(joint, topo, wired),
        "v_min": float(sweep.biases[0]),
        "v_max": float(sweep.biases[-1]),
        "joint": _joint_terms(joint, lock_paths),
    }
    ctx.save("couplings", result, raw)
    return result


@dataclass
class _Sweep:
    """The bias sweep of the couplings step: per bias (B biases, E wired edges) its transfer
    measurement, drive-level linearisation and small-signal κ refit."""

    biases: Array  # (B,) V
    measured: list[Measurement]
    lin: list[tuple[Array, Array]]  # per bias: (gain (E,), diag (E, 2))
    kappa: Array  # (B, E) 1/s²
    kappa_sigma: Array  # (B, E) 1/s²
    raw: dict[str, Array]


async def _sweep_biases(
    bench: CalibrationBench,
    opts: CalibrationOptions,
    topo: Topology,
    scopes: list[str],
    base: NetworkParams,
    ref: list[int],
) -> _Sweep:
    """All edges at each of `bias_points` biases over the DAC limits: the multisine transfer
    matrix refitted for the couplings (the other terms held at `base`); then the base bias and
    the drives off."""
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
        await set_all_biases(bench, float(v))
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
        lin.append(_linearisation(mraw, bench, scopes, opts, ref, wired))
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
    await set_all_biases(bench, opts.base_bias_v)
    await drives_off(bench)
    raw["kappa_per_s2"] = kap
    raw["kappa_sigma_per_s2"] = kap_s
    return _Sweep(biases, measured, lin, kap, kap_s, raw)


def _joint_fit(
    ctx: StepContext,
    bench: CalibrationBench,
    topo: Topology,
    scopes: list[str],
    base: NetworkParams,
    res: dict[str, Any],
    sweep: _Sweep,
    starts: list[dict[str, Any]],
) -> tuple[MapFit, list[tuple[float, Measurement]], tuple[Measurement, list[int], Array] | None]:
    """The joint fit: every bias's transfer matrix and the resonance step's (at the base bias)
    with the maps' parameters and the shared node/actuator/sensing terms free together, and the
    sensing step's lock-in sweep when it has one (`sweep.lin` gains their linearisations: the
    resonance record's first, the lock-in sweep's last). Returns the fit, its data ((bias
    volts, measurement) pairs) and the lock-in data (`_lockin_data`, None without)."""
    opts = ctx.opts
    wired = [e.key for e in bench.config.wiring.edges]
    lin = sweep.lin
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
        *list(zip(sweep.biases.tolist(), sweep.measured, strict=True)),
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
        network_spec(
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
    return joint, data, lock


def _fixed_couplings(
    joint: MapFit, topo: Topology, wired: list[tuple[int, int]]
) -> dict[str, list[float]]:
    """Every unwired pair's coupling "a-b" → [κ, σ] (1/s²) from the joint fit."""
    unwired_sigma = joint.cov_sigma("kappa") if "kappa" in joint.spec.free else None
    return {
        f"{a}-{b}": [
            float(joint.params.kappa[a, b]),
            float(0.0 if unwired_sigma is None else unwired_sigma[a, b]),
        ]
        for a, b in topo.pairs()
        if (a, b) not in set(wired)
    }


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
        "nodes": node_entries(p, joint.cov_sigma("omega2_diag"), joint.cov_sigma("gamma")),
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
    gains = declared_gains(opts, d)
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
