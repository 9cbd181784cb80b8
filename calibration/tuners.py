"""The `tuners` step: each node tuner's stiffness curve κ(V) (`[[wiring.tuners]]`, a DAC-tuned
on-site spring).

A tuner on node j adds κ(V) to the diagonal entry Z[j, j] of the network's dynamic stiffness
Z(ω) = H(ω)⁻¹ = K − ω² M + iω MΓ (N/m; H the transfer matrix from forces to node coordinates),
and nothing else: Re Z[j, j](ω; V) − Re Z[j, j](ω; V_ref) = κ(V) − κ(V_ref) at every line,
whatever the couplings (at their base bias), the masses and the damping. It is the shift of
the node's own resonance, ω_j² = (k_j + κ)/m, read without fitting a resonance. The step measures
Z at V_ref and over the tuner channel's bias sweep (every tuner at once: their entries are
distinct), takes the median over the lines of the shift Re Z[j, j](V) − Re Z[j, j](V_ref) per
bias (far from the modes H is small and Z noisy; the median ignores those lines), and fits
κ(V) = c + s (V − V_ref) + q (V − V_ref)² by weighted least squares; the map keeps s and q (κ relative to the node at V_ref, the volts the earlier steps ran at: the network's
``nodes.stiffness``). The map is valid where it is monotone, and refused otherwise.

Needs a force actuator and a scope path on every node, and the sensing and actuator
calibration (the steps before).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.calibration import plots
from physlearn.calibration.acquire import drives_off
from physlearn.calibration.active import dynamic_stiffness, robust_mean
from physlearn.calibration.assemble import assemble
from physlearn.calibration.bench import CalibrationBench
from physlearn.calibration.context import StepContext
from physlearn.calibration.options import CalibrationOptions
from physlearn.calibration.schema import CalibrationFile
from physlearn.calibration.wiring import recorded_scopes, set_all_biases
from physlearn.errors import CalibrationError

Array = NDArray[np.float64]

__all__ = ["measure_tuners", "quadratic_fit", "step_tuners"]


async def step_tuners(bench: CalibrationBench, ctx: StepContext) -> dict[str, Any]:
    """The step (module docstring), with the calibration of the steps before it."""
    result, raw = await measure_tuners(bench, assemble(bench, ctx), ctx.opts)
    if result["maps"]:
        plots.plot_tuners(
            ctx.out / "tuners.png",
            raw["biases_v"],
            raw["kappa"],
            raw["kappa_sigma"],
            result["maps"],
        )
    ctx.save("tuners", result, raw)
    return result


async def measure_tuners(
    bench: CalibrationBench, cal: CalibrationFile, opts: CalibrationOptions
) -> tuple[dict[str, Any], dict[str, Array]]:
    """The maps (`TunerMap` fields, in wiring order) and the raw data, measured with the
    sensing and actuator terms of ``cal``."""
    tuners = bench.config.wiring.tuners
    if not tuners:
        return {"maps": []}, {}
    scopes = recorded_scopes(bench, opts)
    lo, hi = opts.tuner_bias_v
    ref = opts.tuner_ref_v
    biases = np.linspace(lo, hi, opts.tuner_points)
    await set_all_biases(bench, opts.base_bias_v)
    k, sig = [], []
    nodes = [t.node for t in tuners]

    async def diagonal(volts: float) -> Array:
        """Re Z[j, j] (L, T) of every tuned node with every tuner at ``volts``."""
        for t in tuners:
            await bench.dac(t.instrument).set_voltage(t.channel, volts)
        _, z = await dynamic_stiffness(bench, cal, opts, scopes, "tuners")
        out: Array = z[:, nodes, nodes].real
        return out

    try:
        base = await diagonal(ref)
        for v in biases:
            kb, sb = robust_mean(await diagonal(float(v)) - base)
            k.append(kb)
            sig.append(np.maximum(sb, 1e-3 * np.abs(kb)))
    finally:
        await drives_off(bench)
        for t in tuners:
            await bench.dac(t.instrument).set_voltage(t.channel, ref)
    zjj, sigma = np.array(k), np.array(sig)
    maps, kappa = [], np.zeros_like(zjj)
    for i, t in enumerate(tuners):
        (c, s, q), cov, chi2 = quadratic_fit(biases - ref, zjj[:, i], sigma[:, i])
        kappa[:, i] = zjj[:, i] - c
        slope_ends = s + 2.0 * q * (biases[[0, -1]] - ref)
        if slope_ends[0] * slope_ends[1] <= 0 or s == 0:
            raise CalibrationError(
                f"tuners: the tuner of node {t.node} ({t.instrument} channel {t.channel}) is not "
                f"monotone over [{lo}, {hi}] V (fitted slope {s:.4g} N/m/V, curvature "
                f"{q:.4g} N/m/V²); narrow tuner_bias_v"
            )
        maps.append(
            {
                "node": t.node,
                "instrument": t.instrument,
                "channel": t.channel,
                "ref_v": ref,
                "slope_per_v": s,
                "curvature_per_v2": q,
                "cov": cov,
                "v_min": float(biases[0]),
                "v_max": float(biases[-1]),
                "chi2_per_dof": chi2,
            }
        )
    raw = {"biases_v": biases, "z_diag": zjj, "kappa": kappa, "kappa_sigma": sigma}
    return {"maps": maps}, raw


def quadratic_fit(
    u: Array, y: Array, sigma: Array
) -> tuple[tuple[float, float, float], list[list[float]], float]:
    """Weighted fit y = c + s u + q u²: ((c, s, q), the 2×2 covariance of (s, q) scaled by
    max(χ²/dof, 1), χ²/dof)."""
    wt = 1.0 / np.maximum(sigma, 1e-12 * np.max(np.abs(y))) ** 2
    a = np.stack([np.ones_like(u), u, u * u], axis=1)
    cov = np.linalg.inv(a.T @ (a * wt[:, None]))
    c = cov @ (a.T @ (wt * y))
    chi2 = float(np.sum(wt * (y - a @ c) ** 2) / max(1, u.size - 3))
    cov_sq = cov[1:, 1:] * max(chi2, 1.0)
    return (float(c[0]), float(c[1]), float(c[2])), cov_sq.tolist(), chi2
