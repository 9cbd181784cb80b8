"""What a run writes about itself: the metrics row of every epoch (metrics.jsonl) and the summary
at the end (summary.json). Both name the level that produced the observations."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.training.config import TrainConfig
from physlearn.training.datasets import Dataset
from physlearn.training.encoding import ClassTargets
from physlearn.training.rules import decision_unsolved
from physlearn.training.runstore import EpochMetrics
from physlearn.training.state import TrainerState

Array = NDArray[np.float64]

__all__ = ["EpochTiming", "dataset_summary", "epoch_metrics", "run_summary", "selected"]


@dataclass(frozen=True)
class EpochTiming:
    """Wall seconds of an epoch: since the run started, training steps, evaluation."""

    wall_time_s: float
    train_time_s: float
    eval_time_s: float


def epoch_metrics(
    st: TrainerState,
    ev: dict[str, Any],
    *,
    epoch: int,
    timing: EpochTiming,
    experiments: int,
    lr: float,
    level: str,
    reverted: bool,
    improved: bool,
    select: str,
    has_validation: bool,
    step_cosines: bool,
) -> EpochMetrics:
    """The metrics row of ``epoch`` from its evaluation ``ev`` and the state at its end (the
    epoch's batch losses, cosines and counts not yet reset)."""
    finite_cos = [c for c in st.cosines if math.isfinite(c)]
    validation = (
        {
            "validation_loss": ev["validation_loss"],
            "validation_accuracy": ev["validation_accuracy"],
        }
        if has_validation
        else {}
    )
    return EpochMetrics(
        epoch=epoch,
        train_loss=ev["train_loss"],
        train_accuracy=ev["train_accuracy"],
        test_loss=ev["test_loss"],
        test_accuracy=ev["test_accuracy"],
        wall_time_s=timing.wall_time_s,
        experiments=experiments,
        cosine_to_adjoint=float(np.mean(finite_cos)) if finite_cos else None,
        level=level,
        extra={
            "steps": st.step,
            "lr": lr,
            "step_scale": st.step_scale,
            "mean_batch_loss": float(np.mean(st.batch_losses)) if st.batch_losses else math.nan,
            "eval_failures": ev["failures"],
            "eval_unsolved": ev["unsolved"],
            "eval_unsolved_decisive": decision_unsolved(ev),
            "reverted_after_evaluation": reverted,
            "train_time_s": timing.train_time_s,
            "eval_time_s": timing.eval_time_s,
            **validation,
            **({"best_so_far": improved} if select != "last" else {}),
            **{f"epoch_{k}": v for k, v in st.ep_counts.items()},
            **({"step_cosines": st.cosines} if step_cosines else {}),
        },
    )


def selected(
    st: TrainerState, metrics: list[dict[str, Any]], select: str
) -> tuple[Array, dict[str, Any] | None]:
    """The result of a run: (parameters, metrics row) of the selected epoch — the best one by
    ``select``, or the last; with no epoch run (``training.epochs = 0``: an evaluation only) the
    initial parameters and their evaluation. When the last epoch's evaluation sent the parameters
    back to the last fully solved epoch (``reverted_after_evaluation``), the run ends on those
    parameters, so the row is that epoch's (the initial evaluation's if none was). An epoch
    whose evaluation reverted is never the best one (`Trainer._select`): with no best epoch the
    run ends as with ``"last"``."""
    params, final = st.params, (metrics[-1] if metrics else (dict(st.initial) or None))
    if metrics and metrics[-1].get("reverted_after_evaluation"):
        final = anchor_row(st, metrics)
    if select != "last" and st.best_epoch >= 0 and st.best_params is not None:
        params = st.best_params
        final = next(m for m in metrics if m["epoch"] == st.best_epoch)
    return params, final


def anchor_row(st: TrainerState, metrics: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The metrics row of the parameters an evaluation revert returns to: the last epoch whose
    evaluation solved every training and validation sample (``eval_unsolved_decisive``; rows
    written before that key: every sample), else the initial evaluation."""
    for m in reversed(metrics):
        if not m.get("eval_unsolved_decisive", m.get("eval_unsolved")):
            return m
    return dict(st.initial) or None


def _selected_epoch(st: TrainerState, final: dict[str, Any] | None, select: str) -> int | None:
    """The epoch whose parameters the run returns (None: the initial ones)."""
    if st.epochs_run == 0:
        return None
    if select != "last" and st.best_epoch >= 0:
        return st.best_epoch
    epoch = (final or {}).get("epoch")
    return int(epoch) if isinstance(epoch, int) else None


def run_summary(
    st: TrainerState,
    metrics: list[dict[str, Any]],
    cfg: TrainConfig,
    *,
    params: Array,
    final: dict[str, Any] | None,
    dataset: dict[str, Any],
    targets: ClassTargets,
    parameter_names: list[str],
    wall_time_s: float,
    experiments: int,
    level: str,
    stability: dict[str, Any],
) -> dict[str, Any]:
    """summary.json: how the run went and ended, the selected epoch, the final parameters."""
    tc = cfg.training
    return {
        "epochs_run": st.epochs_run,
        "epochs_configured": tc.epochs,
        "stopped_early": st.stopped_early,
        "stop_reason": st.stop_reason or ("evaluation only (epochs = 0)" if tc.epochs == 0 else ""),
        "steps": st.step,
        "wall_time_s": wall_time_s,
        "experiments": experiments,
        "level": level,
        "initial": st.initial,
        "select": tc.select,
        "selected_epoch": _selected_epoch(st, final, tc.select),
        "final": final,
        "last": metrics[-1] if metrics else None,
        "best_test_accuracy": max((m["test_accuracy"] or 0.0) for m in metrics)
        if metrics
        else None,
        **st.counters,
        "parameter_names": parameter_names,
        "final_params": params.tolist(),
        "dataset": dataset,
        "targets": targets.describe(),
        "estimator": cfg.estimator.name,
        "stability": stability,
    }


def dataset_summary(ds: Dataset, n_fit: int, n_validation: int) -> dict[str, Any]:
    """The data set as the summary describes it."""
    return {
        "name": ds.name,
        "description": ds.description,
        "n_train": ds.n_train,
        "n_fit": n_fit,
        "n_validation": n_validation,
        "n_test": ds.n_test,
        "n_classes": ds.n_classes,
    }
