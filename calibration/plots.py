"""PNG figures of each calibration step's fit (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray

from physlearn.calibration.model import Measurement, Topology

Array = NDArray[np.float64]


def _save(fig: Any, path: Path, title: str) -> None:
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _legend_right(ax: Any, **kw: Any) -> None:
    """The legend beside the axes (never over the data)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, **kw)


def _phase_near(model_phase: Array, data: Array) -> Array:
    """The data's phase on the branch of the model's unwrapped phase: the model plus the
    data's wrapped difference to it, in (−π, π] (data and fit a 2π apart are the same)."""
    return model_phase + np.angle(np.exp(1j * (np.angle(data) - model_phase)))


def plot_dac(path: Path, raw: dict[str, Array]) -> None:
    fig, ax = plt.subplots(figsize=(5, 4))
    for key in raw:
        if key.endswith("_setpoint_v"):
            name = key[: -len("_setpoint_v")]
            ax.plot(raw[key], raw[f"{name}_delivered_v"], "o-", label=name)
    ax.set_xlabel("setpoint (V)")
    ax.set_ylabel("delivered (V)")
    _legend_right(ax)
    _save(fig, path, "DAC: delivered against set volts")


def plot_transfer(path: Path, m: Measurement, model: Any, topo: Topology) -> None:
    pairs = sorted({(int(p), int(d)) for p, d in zip(m.path, m.drive, strict=True)})
    fig, axes = plt.subplots(2, 1, figsize=(8.5, 6), sharex=True)
    for p, d in pairs:
        sel = (m.path == p) & (m.drive == d)
        f = m.omega_rad_s[sel] / (2 * np.pi)
        (line,) = axes[0].semilogy(f, np.abs(m.h[sel]), ".", label=f"path {p} ← drive {d}")
        axes[0].semilogy(f, np.abs(model[sel]), "-", color=line.get_color())
        fit_phase = np.unwrap(np.angle(model[sel]))
        axes[1].plot(f, _phase_near(fit_phase, m.h[sel]), ".", color=line.get_color())
        axes[1].plot(f, fit_phase, "-", color=line.get_color())
    axes[0].set_ylabel("|H| (V/V)")
    axes[1].set_ylabel("phase (rad)")
    axes[1].set_xlabel("frequency (Hz)")
    _legend_right(axes[0])
    _save(fig, path, "Resonances: transfer functions (dots: measured, lines: joint fit)")


def plot_sensing(path: Path, raw: dict[str, Array], lock: dict[int, Any]) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    f = raw.get("lockin_frequency_hz")
    for pth in lock:
        r = raw[f"lockin_path{pth}_ratio"]
        if f is not None:
            w = 2 * np.pi * f
            fit = lock[pth]["phase"][0] - w * lock[pth]["delay"][0]
            ax.plot(f, _phase_near(fit, r), "o", label=f"path {pth} phase")
            ax.plot(f, fit, "-")
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("lock-in / model phase (rad)")
    if ax.get_legend_handles_labels()[1]:
        _legend_right(ax)
    else:  # a bench without lock-in paths (or a sweep not recorded)
        ax.text(0.5, 0.5, "no lock-in paths", ha="center", transform=ax.transAxes)
    _save(fig, path, "Sensing: lock-in phase against frequency (lines: phase and delay fit)")


def plot_actuators(path: Path, raw: dict[str, Array], n: int) -> None:
    fig, axes = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    f = raw["frequency_hz"]
    for j in range(n):
        axes[0].plot(f, raw[f"drive{j}_gain"], label=f"drive {j}")
        axes[1].plot(f, np.degrees(raw[f"drive{j}_phase_rad"]))
    axes[0].set_ylabel("gain (unit s⁻² V⁻¹)")
    axes[1].set_ylabel("phase (deg)")
    axes[1].set_xlabel("frequency (Hz)")
    _legend_right(axes[0])
    _save(fig, path, "Actuators: gain and phase per drive")


def plot_couplings(path: Path, v: Array, k: Array, s: Array, maps: list[dict[str, Any]]) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    vv = np.linspace(v.min(), v.max(), 200)
    for i, mp in enumerate(maps):
        a, b, c, w = mp["params"]
        eb = ax.errorbar(v, k[:, i], yerr=s[:, i], fmt="o", label=f"edge {mp['nodes']}")
        ax.plot(vv, a + b * np.tanh((vv - c) / w), "-", color=eb[0].get_color())
    ax.set_xlabel("DAC bias (V)")
    ax.set_ylabel("α/m (1/s²)")
    _legend_right(ax)
    _save(fig, path, "Couplings: α(V) per edge (points: per-bias fits, lines: joint tanh maps)")


def plot_active(
    path: Path, v: Array, g: Array, s: Array, g_rev: Array, maps: list[dict[str, Any]]
) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    vv = np.linspace(v.min(), v.max(), 50)
    for i, mp in enumerate(maps):
        name = f"{mp['target']}<-{mp['source']}"
        eb = ax.errorbar(v, g[:, i], yerr=s[:, i], fmt="o", label=f"element {name}")
        color = eb[0].get_color()
        ax.plot(vv, mp["k_per_v"] * (vv - mp["z_v"]), "-", color=color)
        ax.plot([v[-1]], [g_rev[i]], "x", color=color, ms=9, label=f"{name} reversed")
    ax.set_xlabel("gain channel (V)")
    ax.set_ylabel("gain α (N/m)")
    _legend_right(ax)
    _save(fig, path, "Active elements: α(V) (points: per-bias medians, lines: k (V − z))")


def plot_tuners(path: Path, v: Array, k: Array, s: Array, maps: list[dict[str, Any]]) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    vv = np.linspace(v.min(), v.max(), 50)
    for i, mp in enumerate(maps):
        u = vv - mp["ref_v"]
        eb = ax.errorbar(v, k[:, i], yerr=s[:, i], fmt="o", label=f"node {mp['node']}")
        ax.plot(
            vv, u * (mp["slope_per_v"] + mp["curvature_per_v2"] * u), "-", color=eb[0].get_color()
        )
    ax.set_xlabel("tuner channel (V)")
    ax.set_ylabel("κ (N/m), relative to the reference volts")
    _legend_right(ax)
    _save(fig, path, "Node tuners: κ(V) (points: Re Z_jj medians, lines: s u + q u²)")
