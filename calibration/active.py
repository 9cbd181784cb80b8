"""The `active` step: each active coupling element's gain map, bandwidth and reversed gain.

An element target ← source (`[[wiring.active]]`) adds g(1 − iωτ) to entry (target, source) of
the network's dynamic stiffness Z(ω) = H(ω)⁻¹ (force per node coordinate, H the transfer matrix
from forces to coordinates) and nothing to (source, target); every reciprocal term is symmetric.
So Z[t, s] − Z[s, t] = g (1 − iωτ) whatever the nodes, the reciprocal couplings or their DAC
settings: the step measures H column by column (each actuator alone plays the multisine; the
scopes record every node; volts → forces and coordinates through the calibrated actuators and
sensors), inverts it line by line, and reads each element's antisymmetric entry. Over the gain
channel's bias sweep (every element at once: their entries are distinct) a weighted linear fit
gives α(V) = k (V − z); the imaginary parts give the delay τ; one more sweep point with every
switch reversed gives the reversed element's gain (the same amplifier: (α_rev − α)/|α| is
recorded, and what `ep_asymmetric` relies on). The input offset is not identified (a constant
force, see docs/estimators.md: it cancels to first order in the ±β learning phases).

Needs a force actuator and a scope path on every node (the full H), and the sensing and
actuator calibration (the steps before). Two elements wired both ways between the same nodes
cannot be separated this way and are refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.calibration import plots
from physlearn.calibration.acquire import drives_off, single_drive_transfer
from physlearn.calibration.assemble import assemble
from physlearn.calibration.bench import CalibrationBench
from physlearn.calibration.context import StepContext
from physlearn.calibration.options import CalibrationOptions
from physlearn.calibration.schema import CalibrationFile
from physlearn.calibration.wiring import recorded_scopes, reference_paths, set_all_biases
from physlearn.errors import CalibrationError
from physlearn.spec.bench import SWITCH_FORWARD_V, SWITCH_REVERSED_V, ActiveWire

Array = NDArray[np.float64]
CArray = NDArray[np.complex128]

__all__ = ["dynamic_stiffness", "measure_active", "robust_mean", "step_active"]


async def step_active(bench: CalibrationBench, ctx: StepContext) -> dict[str, Any]:
    """The step (module docstring), with the calibration of the steps before it."""
    result, raw = await measure_active(bench, assemble(bench, ctx), ctx.opts)
    if result["maps"]:
        plots.plot_active(
            ctx.out / "active.png",
            raw["biases_v"],
            raw["gain"],
            raw["gain_sigma"],
            raw["reversed_gain"],
            result["maps"],
        )
    ctx.save("active", result, raw)
    return result


async def measure_active(
    bench: CalibrationBench, cal: CalibrationFile, opts: CalibrationOptions
) -> tuple[dict[str, Any], dict[str, Array]]:
    """The maps (`ActiveMap` fields, in wiring order) and the raw data, measured with the
    sensing and actuator terms of ``cal``."""
    act = bench.config.wiring.active
    if not act:
        return {"maps": []}, {}
    pairs = {a.key for a in act}
    both = sorted(a.key for a in act if (a.source, a.target) in pairs)
    if both:
        raise CalibrationError(
            f"active elements wired both ways between the same nodes {both}: their "
            "antisymmetric entries cannot be separated"
        )
    scopes = recorded_scopes(bench, opts)
    biases = np.linspace(opts.active_bias_v[0], opts.active_bias_v[1], opts.active_points)
    await set_all_biases(bench, opts.base_bias_v)
    g, sig, lines = [], [], []
    try:
        await _switches(bench, act, SWITCH_FORWARD_V)
        for v in biases:
            for a in act:
                await bench.dac(a.instrument).set_voltage(a.channel, float(v))
            omega, asym = await _antisymmetric(bench, cal, opts, scopes, act)
            gb, sb = robust_mean(asym.real)
            g.append(gb)
            sig.append(sb)
            lines.append(asym)
        await _switches(bench, act, SWITCH_REVERSED_V)
        _, rev = await _antisymmetric(bench, cal, opts, scopes, act)
    finally:
        await drives_off(bench)
        await _switches(bench, act, SWITCH_FORWARD_V)
        for a in act:
            await bench.dac(a.instrument).set_voltage(a.channel, 0.0)
    gain, sigma, asym_all = np.array(g), np.array(sig), np.stack(lines)
    g_rev = -robust_mean(rev.real)[0]
    maps = []
    for i, a in enumerate(act):
        k, z, cov, chi2 = _linear_fit(biases, gain[:, i], sigma[:, i])
        # Im Z_asym = −g ω τ: per bias and line −Im/(g ω), where the gain is well away from 0
        big = np.abs(gain[:, i]) >= 0.5 * np.max(np.abs(gain[:, i]))
        per = -asym_all[big, :, i].imag / (gain[big, i, None] * omega[None, :])
        tau, tau_sigma = (float(x[0]) for x in robust_mean(per.reshape(-1, 1)))
        maps.append(
            {
                "target": a.target,
                "source": a.source,
                "instrument": a.instrument,
                "channel": a.channel,
                "switch_channel": a.switch_channel,
                "k_per_v": k,
                "z_v": z,
                "cov": cov,
                "v_min": float(biases[0]),
                "v_max": float(biases[-1]),
                "delay_s": [tau, tau_sigma],
                "chi2_per_dof": chi2,
                "reverse_rel_diff": float((g_rev[i] - gain[-1, i]) / abs(gain[-1, i])),
            }
        )
    raw = {
        "biases_v": biases,
        "gain": gain,
        "gain_sigma": sigma,
        "reversed_gain": g_rev,
        "omega_rad_s": omega,
        "antisymmetric": asym_all,
    }
    return {"maps": maps}, raw


async def _switches(bench: CalibrationBench, act: list[ActiveWire], volts: float) -> None:
    for a in act:
        await bench.dac(a.instrument).set_voltage(a.switch_channel, volts)


async def _antisymmetric(
    bench: CalibrationBench,
    cal: CalibrationFile,
    opts: CalibrationOptions,
    scopes: list[str],
    act: list[ActiveWire],
) -> tuple[Array, CArray]:
    """(ω (L,), Z[t, s] − Z[s, t] (L, A) per element) from the full transfer matrix."""
    omega, z = await dynamic_stiffness(bench, cal, opts, scopes, "active")
    asym = np.stack([z[:, a.target, a.source] - z[:, a.source, a.target] for a in act], axis=1)
    return omega, asym


async def dynamic_stiffness(
    bench: CalibrationBench,
    cal: CalibrationFile,
    opts: CalibrationOptions,
    scopes: list[str],
    what: str,
) -> tuple[Array, CArray]:
    """(ω (L,), Z(ω) = H(ω)⁻¹ (L, d, d) in N/m): the full transfer matrix H from forces to
    node coordinates, measured column by column (each actuator alone plays the multisine)
    through the calibrated actuators and sensors, inverted line by line. ``what`` names the
    step in messages."""
    w = bench.config.wiring
    d = 1 + max([dw.node for dw in w.drives] + [sw.node for sw in w.sense])
    drive_of = {dw.node: j for j, dw in enumerate(w.drives)}
    missing = sorted(set(range(d)) - set(drive_of))
    if missing:
        raise CalibrationError(
            f"{what}: the dynamic stiffness needs the full transfer matrix; "
            f"nodes {missing} have no force actuator"
        )
    ref = reference_paths(bench, scopes, d)
    plan = opts.plan()
    h: CArray | None = None
    omega = np.zeros(0)
    for col in range(d):
        j = drive_of[col]
        m = await single_drive_transfer(
            bench,
            plan,
            j,
            scope=scopes,
            settle_s=opts.settle_s,
            what=f"{what}: drive {j}",
            averages=opts.coupling_averages,
        )
        act_cal = cal.actuator(col)
        for row in range(d):
            sel = m.path == ref[row]
            om = m.omega_rad_s[sel]
            if h is None:
                h, omega = np.zeros((om.size, d, d), dtype=complex), om
            sw = w.sense[ref[row]]
            sen = cal.sense(sw.instrument, sw.channel)
            conv = (
                sen.gain_v_per_unit.value
                * np.exp(-1j * om * sen.delay_s.value)
                * cal.mass_kg
                * act_cal.gain_per_s2_per_v.value
                * np.exp(-1j * om * act_cal.delay_s.value)
            )
            h[:, row, col] = m.h[sel] / conv
    assert h is not None
    z: CArray = np.linalg.inv(h).astype(np.complex128)
    return omega, z


def robust_mean(a: Array) -> tuple[Array, Array]:
    """Median over the lines (axis 0) and its standard error from the median absolute
    deviation: far from the modes the response is weak and Z = H⁻¹ noisy, and a few such lines
    would dominate a mean."""
    med = np.median(a, axis=0)
    mad = 1.4826 * np.median(np.abs(a - med), axis=0)
    return med, 1.2533 * mad / np.sqrt(a.shape[0])


def _linear_fit(v: Array, g: Array, sigma: Array) -> tuple[float, float, list[list[float]], float]:
    """Weighted fit g = k (V − z): (k, z, cov of (k, z), χ²/dof)."""
    wt = 1.0 / np.maximum(sigma, 1e-12 * np.max(np.abs(g))) ** 2
    a = np.stack([np.ones_like(v), v], axis=1)
    cov_c = np.linalg.inv(a.T @ (a * wt[:, None]))
    c = cov_c @ (a.T @ (wt * g))
    chi2 = float(np.sum(wt * (g - a @ c) ** 2) / max(1, v.size - 2))
    k, z = float(c[1]), float(-c[0] / c[1])
    jac = np.array([[0.0, 1.0], [-1.0 / c[1], c[0] / c[1] ** 2]])
    cov = jac @ cov_c @ jac.T * max(chi2, 1.0)
    return k, z, cov.tolist(), chi2
