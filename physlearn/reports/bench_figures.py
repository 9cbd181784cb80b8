"""The bench part of a run report, from the per-step records (records.h5): measured waveforms of
a chosen step (free and nudged phases), settle time of every measurement against its physical
minimum, faults and retries on a timeline, and the calibration the run used."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from physlearn.reports.collector import FigureCollector
from physlearn.reports.html import Section
from physlearn.reports.run_data import RunData

__all__ = ["bench_section", "fault_timeline", "settle_against_minimum", "step_waveforms"]

#: names of the measurement phases of a step, in the order the estimators measure them
PHASES = {
    "ep_symmetric": ("free", "+β", "−β"),
    "ep_one_sided": ("free", "+β"),
    "ep_time_reversed": ("free", "+β (reversed error)", "−β (reversed error)"),
    "ep_echo": ("free", "echo", "echo +β", "echo −β"),
}


def _phase_names(run: RunData, n: int) -> list[str]:
    names = list(PHASES.get(run.estimator, ()))
    return [names[p] if p < len(names) else f"phase {p}" for p in range(n)]


def _row(records: dict[str, Any], step: int | None) -> int:
    steps = np.asarray(records["step"])
    if step is None:
        return int(steps.size - 1)
    hit = np.flatnonzero(steps == step)
    if hit.size == 0:
        raise ValueError(f"step {step} is not in the records (steps {steps.min()}…{steps.max()})")
    return int(hit[-1])


def step_waveforms(run: RunData, step: int | None, sample: int = 0) -> Figure:
    """The node waveforms (or, without them, the raw scope records) of every phase of one step,
    for one batch sample: free against nudged."""
    rec = run.records or {}
    r = _row(rec, step)
    fig = Figure(figsize=(9.0, 6.0), layout="constrained")
    if "x" in rec and np.isfinite(np.asarray(rec["x"][r], dtype=float)[0, sample]).any():
        x = np.asarray(rec["x"][r], dtype=float)  # (phases, batch, M, d)
        predicted = _predicted_free(run, rec, r, sample, x.shape[2])
        n_nodes = x.shape[-1]
        axes = np.atleast_1d(fig.subplots(math.ceil(n_nodes / 2), 2, sharex=True)).ravel()
        t = np.arange(x.shape[2]) / x.shape[2]
        names = _phase_names(run, x.shape[0])
        for j in range(n_nodes):
            ax = axes[j]
            for p, name in enumerate(names):
                if np.isfinite(x[p, sample, :, j]).any():
                    ax.plot(t, x[p, sample, :, j], lw=1.0, label=f"{name} (measured)")
            if predicted is not None:
                ax.plot(t, predicted[:, j], "k--", lw=0.8, label="free (ideal twin)")
            ax.set_title(f"node {j}", fontsize="small")
            ax.set_ylabel("x (m)")
            ax.grid(alpha=0.3)
        for ax in axes[n_nodes:]:
            ax.set_visible(False)
        for ax in axes[max(0, n_nodes - 2) : n_nodes]:
            ax.set_xlabel("time (drive periods)")
        handles, labels = axes[0].get_legend_handles_labels()
    else:
        wave = np.asarray(rec["waveforms"][r], dtype=float)  # (phases, batch, channels, samples)
        raw_names = (rec.get("attrs") or {}).get("waveform_channels") or "[]"
        channels = json.loads(raw_names) if isinstance(raw_names, str) else list(raw_names)
        n_ch = wave.shape[2]
        axes = np.atleast_1d(fig.subplots(math.ceil(n_ch / 2), 2, sharex=True)).ravel()
        names = _phase_names(run, wave.shape[0])
        for c in range(n_ch):
            ax = axes[c]
            for p, name in enumerate(names):
                v = wave[p, sample, c]
                if np.isfinite(v).any():
                    ax.plot(v, lw=0.8, label=name)
            ax.set_title(channels[c] if c < len(channels) else f"channel {c}", fontsize="small")
            ax.set_ylabel("scope input (V)")
            ax.grid(alpha=0.3)
        for ax in axes[n_ch:]:
            ax.set_visible(False)
        for ax in axes[max(0, n_ch - 2) : n_ch]:
            ax.set_xlabel("record sample")
        handles, labels = axes[0].get_legend_handles_labels()
    step_no = int(np.asarray(rec["step"])[r])
    fig.legend(handles, labels, loc="outside right upper", fontsize="small")
    fig.suptitle(f"{run.name}: measured response of step {step_no}, sample {sample}")
    return fig


def _predicted_free(
    run: RunData, rec: dict[str, Any], row: int, sample: int, points: int
) -> np.ndarray | None:
    """The free orbit (M, d) the ideal twin of the run's network predicts at the step's
    parameters and inputs (None without recorded inputs, or when the twin has no steady state
    there). The network is the run's as designed (network.toml): node stiffness and damping
    as specified, not as calibrated."""
    if "inputs" not in rec or not (run.run_dir / "network.toml").is_file():
        return None
    u = np.asarray(rec["inputs"][row], dtype=float)[sample : sample + 1]
    if not np.isfinite(u).all():
        return None
    import asyncio
    import tomllib
    from concurrent.futures import ThreadPoolExecutor

    from physlearn.errors import SolverError
    from physlearn.spec.network import NetworkSpec
    from physlearn.systems.ideal import IdealSystem

    spec = NetworkSpec.model_validate(
        tomllib.loads((run.run_dir / "network.toml").read_text())["network"]
    )
    params = np.asarray(rec["params"][row], dtype=float)

    async def solve() -> np.ndarray:
        twin = IdealSystem(spec, points, floquet="none")
        await twin.set_parameters(params)
        await twin.set_input(u)
        return (await twin.measure()).one_period().x[0]

    try:  # a thread of its own: the report may be written from inside a running event loop
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, solve()).result()
    except SolverError:
        return None


def _settle_options(run: RunData) -> tuple[float, float]:
    """(settle tolerance, transient margin) the run used."""
    settle = run.config.get("system", {}).get("bench", {}).get("options", {}).get("settle", {})
    return float(settle.get("tol", 1e-4)), float(settle.get("transient_margin", 2.0))


def settle_against_minimum(run: RunData) -> Figure:
    """Every measurement's settle time (change → first fitted sample) against the physical
    minimum ln(ρ/tol)/σ of the transient it started from (ρ the measured relative transient
    without the margin, σ the calibrated decay rate)."""
    rec = run.records or {}
    tol, margin = _settle_options(run)
    settle = np.asarray(rec["settle_s"], dtype=float).ravel()
    rho = np.asarray(rec["initial_transient"], dtype=float).ravel() / margin
    sigma = np.asarray(rec["decay_rate_per_s"], dtype=float).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        minimum = np.where(rho > tol, np.log(rho / tol) / sigma, 0.0)
    ok = np.isfinite(settle) & np.isfinite(minimum)
    fig = Figure(figsize=(9.0, 4.5), layout="constrained")
    ax, ax_h = fig.subplots(1, 2, width_ratios=[3, 2])
    ax.plot(minimum[ok], settle[ok], ".", ms=3, label="measurement")
    top = float(np.max(settle[ok], initial=1.0))
    ax.plot([0, top], [0, top], "k--", lw=0.8, label="settle = minimum")
    ax.set_xlabel("physical minimum ln(ρ/tol)/σ (s)")
    ax.set_ylabel("settle time waited (s)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")  # below the diagonal: no measurement there
    pos = ok & (minimum > 0)
    ratio = settle[pos] / minimum[pos]
    if ratio.size:
        ax_h.hist(ratio, bins=30, color="C1")
        ax_h.axvline(float(np.median(ratio)), color="k", lw=0.8)
        ax_h.set_title(f"median {np.median(ratio):.2f}×", fontsize="small")
    ax_h.set_xlabel("settle time / physical minimum (1)")
    ax_h.set_ylabel("measurements")
    fig.suptitle(f"{run.name}: settle time per measurement (tol {tol:g}, margin {margin:g})")
    return fig


def fault_timeline(run: RunData) -> Figure | None:
    """Faults and retries per training step (None when the run had none)."""
    rec = run.records or {}
    steps = np.asarray(rec["step"], dtype=float)
    events: list[tuple[float, str]] = []
    for s, text in zip(steps, rec.get("faults", []), strict=False):
        raw = text.decode() if isinstance(text, bytes) else str(text)
        for f in json.loads(raw or "[]"):
            kind = f.get("fault") or f.get("kind") or "fault"
            where = f.get("instrument") or f.get("origin") or ""
            events.append((float(s), f"{kind} {where}".strip()))
    if not events:
        return None
    kinds = sorted({k for _, k in events})
    fig = Figure(figsize=(9.0, 1.2 + 0.4 * len(kinds)), layout="constrained")
    ax = fig.subplots()
    for i, k in enumerate(kinds):
        xs = [s for s, kk in events if kk == k]
        ax.plot(xs, [i] * len(xs), "|", ms=14, mew=2, label=k)
    ax.set_yticks(range(len(kinds)), kinds)
    ax.set_xlabel("training step")
    ax.set_ylabel("fault (instrument)")
    ax.set_xlim(-0.5, float(steps.max(initial=0.0)) + 0.5)
    ax.grid(alpha=0.3, axis="x")
    fig.suptitle(f"{run.name}: instrument faults and retries ({len(events)})")
    return fig


def bench_section(run: RunData, out: FigureCollector, step: int | None) -> Section:
    sec = Section("Bench")
    rec = run.records
    if rec is None:
        sec.notes.append("no per-step records (records.h5): the run made no training step yet")
        return sec
    attrs = rec.get("attrs") or {}
    sec.paragraphs.append(f"Calibration: {attrs.get('calibration_version', 'unknown')}")
    out.add(
        sec,
        "waveforms",
        lambda: step_waveforms(run, step),
        "Free and nudged responses of one step (first sample)",
    )
    out.add(
        sec,
        "settling",
        lambda: settle_against_minimum(run),
        "Settle time against the physical minimum",
    )
    out.add(sec, "faults", lambda: fault_timeline(run), "Instrument faults and retries")
    return sec
