"""The `resonance` step: the multisine transfer matrix on the scopes at the base bias, the
linear network fit (per node f0 and Q, actuator and sensing terms, linear couplings), and a
ring-down whose modal decay rates and frequencies are compared with the fit's. Also the fit's
JSON form (`params_from_json`) and the pieces the `couplings` step shares (`network_spec`,
`node_entries`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from physlearn.calibration import plots
from physlearn.calibration.acquire import (
    channels_by_scope,
    drives_off,
    multisine_transfer,
    scope_paths,
    scopes_record,
    shared_nodes,
    stitch_check,
    wave_key,
)
from physlearn.calibration.bench import CalibrationBench
from physlearn.calibration.context import StepContext
from physlearn.calibration.model import (
    FitResult,
    FitSpec,
    Measurement,
    NetworkParams,
    Topology,
    eigen_modes,
    fit_network_multistart,
    kappa_mask,
    modal_start,
    predict,
)
from physlearn.calibration.options import CalibrationOptions
from physlearn.calibration.wiring import (
    bench_topology,
    declared_gains,
    recorded_scopes,
    reference_paths,
    set_all_biases,
)
from physlearn.errors import CalibrationError

Array = NDArray[np.float64]


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
    scopes = recorded_scopes(bench, opts)
    topo = bench_topology(bench)
    d = topo.n_nodes
    ref = reference_paths(bench, scopes, d)
    await set_all_biases(bench, opts.base_bias_v)
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
    nodes = node_entries(p, fit.sigma_of("omega2_diag"), fit.sigma_of("gamma"))
    result = {
        "nodes": nodes,
        "fit": _params_to_json(p, fit),
        "reference_paths": ref,
        "ringdown": rd,
    }
    ctx.save("resonance", result, raw)
    return result


def node_entries(p: NetworkParams, w2s: Array, gs: Array) -> list[dict[str, Any]]:
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


def network_spec(
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
    declared = declared_gains(opts, d)
    for node, pth in enumerate(ref):
        gains[pth] = declared[node]
    delays = np.zeros(n_sense)
    delays[0] = opts.reference_delay_s
    start = modal_start(m, topo, gains, delays)
    spec = network_spec(topo, {int(p) for p in m.path}, ref, topo.pairs())
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
