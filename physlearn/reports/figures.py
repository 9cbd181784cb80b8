"""Figures of a run report (matplotlib `Figure` objects, no pyplot state): learning curves,
parameters over epochs, failed and reverted steps with the step length, agreement with the
adjoint, and the overlay of several runs.

Every figure has a title, axis labels with units, and its legend outside the axes so that it
never covers data. Epochs are counted as completed epochs: 0 is the initial evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from physlearn.reports.run_data import RunData

__all__ = [
    "adjoint_agreement",
    "failures_and_steps",
    "learning_curves",
    "overlay_curves",
    "parameter_traces",
]

#: above this many parameters a panel has no legend (the report's table names them)
MAX_LEGEND_ENTRIES = 24
_SPLITS = (("train", "-"), ("test", "--"), ("validation", ":"))


def _figure(height: float, width: float = 9.0) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _series(run: RunData, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(completed epochs, values) of a metrics column, the initial evaluation at 0."""
    x = run.metric_epochs() + 1.0
    y = run.column(key)
    initial = (run.summary or {}).get("initial") or {}
    if isinstance(initial.get(key), int | float):
        x, y = np.concatenate([[0.0], x]), np.concatenate([[float(initial[key])], y])
    return x, y


def _colors(n: int) -> list[tuple[float, ...]]:
    """n distinguishable colours (tab10 up to 10, tab20 up to 20, then a continuous map)."""
    from matplotlib import colormaps

    name = "tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"
    cmap = colormaps[name]
    return [tuple(cmap(i if n <= 20 else i / max(n - 1, 1))) for i in range(n)]


def _legend_outside(fig: Figure, ax: Axes, ncol: int = 1) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", ncols=ncol, fontsize="small")


def _loss_accuracy_axes(cost_unit: str) -> tuple[Figure, Axes, Axes]:
    """A figure of two panels over completed epochs: loss (log scale, in ``cost_unit``) above
    accuracy (%)."""
    fig = _figure(6.0)
    ax_loss, ax_acc = fig.subplots(2, 1, sharex=True)
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel(f"mean task cost ({cost_unit})")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_ylim(-3, 103)
    ax_acc.set_xlabel("completed epochs (0: before training)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    return fig, ax_loss, ax_acc


def learning_curves(run: RunData) -> Figure:
    """Loss (log scale) and accuracy per completed epoch, for every evaluated split."""
    fig, ax_loss, ax_acc = _loss_accuracy_axes(run.cost_unit)
    for split, style in _SPLITS:
        x, loss = _series(run, f"{split}_loss")
        if not np.isfinite(loss).any():
            continue
        ax_loss.plot(x, loss, style, marker=".", label=f"{split}")
        _, acc = _series(run, f"{split}_accuracy")
        ax_acc.plot(x, 100.0 * acc, style, marker=".", label=f"{split}")
    fig.suptitle(f"{run.name}: learning curves ({run.estimator}, {run.level})")
    ax_loss.legend(loc="upper right", fontsize="small")  # inside: outside it hid the title
    ax_acc.set_xlim(-0.5, max(1.0, float(np.max(run.metric_epochs(), initial=0.0)) + 1.0) + 0.5)
    return fig


def parameter_traces(run: RunData) -> Figure:
    """Every trainable parameter per completed epoch, one panel per unit, bounds dashed."""
    info = run.parameters
    units = sorted(set(info.units), key=info.units.index)
    fig = _figure(2.6 * max(1, len(units)) + 0.8)
    axes = np.atleast_1d(fig.subplots(len(units), 1, sharex=True))
    x = np.asarray(run.epochs, dtype=float) + 1.0
    init = _initial_params(run)
    for ax, unit in zip(axes, units, strict=True):
        idx = [i for i, u in enumerate(info.units) if u == unit]
        colors = _colors(len(idx))
        for c, i in zip(colors, idx, strict=True):
            xs, ys = x, run.params[:, i] if run.params.size else np.zeros(0)
            if init is not None:
                xs, ys = np.concatenate([[0.0], xs]), np.concatenate([[init[i]], ys])
            ax.plot(xs, ys, lw=1.2, color=c, label=info.names[i])
        for bound in ("lower", "upper"):
            vals = {float(getattr(info, bound)[i]) for i in idx}
            for v in vals:
                if math.isfinite(v):
                    ax.axhline(v, color="0.4", ls="--", lw=0.8)
        ax.set_ylabel(f"value ({unit})")
        ax.grid(alpha=0.3)
        if len(idx) <= MAX_LEGEND_ENTRIES:
            ax.legend(
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                fontsize="x-small",
                ncols=1 if len(idx) <= 12 else 2,
            )
        else:
            ax.text(0.01, 0.97, f"{len(idx)} parameters", transform=ax.transAxes, va="top")
    axes[-1].set_xlabel("completed epochs (0: initial values)")
    fig.suptitle(f"{run.name}: parameters over epochs (dashed: bounds)")
    return fig


def _initial_params(run: RunData) -> np.ndarray | None:
    path = run.run_dir / "network.toml"
    if not path.is_file():
        return None
    import tomllib

    from physlearn.spec.network import NetworkSpec

    spec = NetworkSpec.model_validate(tomllib.loads(path.read_text())["network"])
    p = spec.initial_parameters()
    return p if run.params.size == 0 or p.shape == run.params.shape[1:] else None


def failures_and_steps(run: RunData) -> Figure:
    """Failed, refused and reverted steps per epoch; the parameter step length per epoch and
    the optimizer's step-length factor after failures."""
    fig = _figure(5.5)
    ax_f, ax_s = fig.subplots(2, 1, sharex=True)
    x = run.metric_epochs() + 1.0
    kinds = (
        ("epoch_solver_failures", "no steady state (reverted)"),
        ("epoch_nonfinite_steps", "non-finite gradient (refused)"),
        ("epoch_evaluation_reverts", "evaluation unsolved (reverted)"),
        ("eval_unsolved", "unsolved evaluation samples"),
        ("epoch_clipped_parameters", "parameters projected onto bounds"),
    )
    bottom = np.zeros_like(x)
    for key, label in kinds:
        y = np.nan_to_num(run.column(key))
        if y.any():
            ax_f.bar(x, y, width=0.9, bottom=bottom, label=label)
            bottom = bottom + y
    if not bottom.any():
        ax_f.text(
            0.5,
            0.5,
            "no failed, refused, reverted or clipped step",
            ha="center",
            va="center",
            transform=ax_f.transAxes,
        )
    ax_f.set_ylabel("count per epoch (stacked)")
    ax_f.grid(alpha=0.3, axis="y")
    if bottom.any():
        ax_f.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    if run.params.shape[0] >= 1:
        init = _initial_params(run)
        full = run.params if init is None else np.vstack([init, run.params])
        step = np.linalg.norm(np.diff(full, axis=0), axis=1)
        xs = np.asarray(run.epochs, dtype=float) + 1.0
        xs = xs if init is not None else xs[1:]
        ax_s.plot(xs, step, marker=".", label="‖Δθ‖ over the epoch")
    if ax_s.lines and np.any(ax_s.lines[0].get_ydata() > 0):
        ax_s.set_yscale("log")
    ax_s.set_ylabel("parameter step length (SI)")
    ax_s.grid(alpha=0.3)
    ax_r = ax_s.twinx()
    ax_r.plot(x, run.column("step_scale"), color="C3", drawstyle="steps-mid", label="step factor")
    ax_r.set_ylabel("step-length factor (1 = optimizer's)", color="C3")
    ax_r.set_ylim(0, 1.05)
    h1, l1 = ax_s.get_legend_handles_labels()
    h2, l2 = ax_r.get_legend_handles_labels()
    ax_s.legend(h1 + h2, l1 + l2, loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize="small")
    ax_s.set_xlabel("completed epochs")
    fig.suptitle(f"{run.name}: failed and reverted steps, step length")
    return fig


def adjoint_agreement(run: RunData) -> Figure | None:
    """Per-step agreement of the estimator's batch gradient with the exact adjoint (twin runs
    with ``training.log_cosine_to_adjoint``): 1 − cosine, and the relative error where recorded.
    None when the run recorded neither."""
    xc, cos = run.step_series("step_cosines")
    xr, rel = run.step_series("step_rel_errors")
    if not np.isfinite(cos).any() and not np.isfinite(rel).any():
        return None
    fig = _figure(4.0)
    ax = fig.subplots()
    if np.isfinite(cos).any():
        ax.plot(xc, np.maximum(1.0 - cos, 1e-17), ".", ms=3, label="1 − cosine")
        bad = cos < 0
        if bad.any():
            ax.plot(xc[bad], 1.0 - cos[bad], "x", color="C3", label="cosine < 0")
    if np.isfinite(rel).any():
        ax.plot(xr, rel, ".", ms=3, label="relative error ‖g − g_adj‖/‖g_adj‖")
    ax.set_yscale("log")
    ax.set_xlabel("epoch (fraction: step within the epoch)")
    ax.set_ylabel("disagreement with the adjoint (1)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.suptitle(f"{run.name}: estimator vs exact adjoint gradient, per step")
    return fig


def overlay_curves(runs: Sequence[RunData]) -> Figure:
    """Test (else train) loss and accuracy of several runs on shared axes."""
    units = sorted({run.cost_unit for run in runs})
    fig, ax_loss, ax_acc = _loss_accuracy_axes(units[0] if len(units) == 1 else "mixed units")
    for k, run in enumerate(runs):
        split = "test" if np.isfinite(run.column("test_loss")).any() else "train"
        label = f"{run.name} ({run.estimator}, seed {run.seed})"
        x, loss = _series(run, f"{split}_loss")
        _, acc = _series(run, f"{split}_accuracy")
        ax_loss.plot(x, loss, color=f"C{k % 10}", label=f"{label}: {split}")
        ax_acc.plot(x, 100.0 * acc, color=f"C{k % 10}")
    fig.suptitle(f"{len(runs)} runs: held-out loss and accuracy")
    _legend_outside(fig, ax_loss)
    return fig
