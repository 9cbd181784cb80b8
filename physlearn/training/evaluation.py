"""Evaluation on the free steady states: per split (loss = mean task cost over the solved
samples, accuracy from the decoding of `physlearn.training.encoding`; a sample without an
attracting steady state counts as misclassified and is isolated from its batch), every split of
an epoch, and the stratified validation hold-out."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError, SolverError
from physlearn.spec.system import PhysicalSystem
from physlearn.training.datasets import Dataset
from physlearn.training.encoding import ClassTargets, TrainNetwork, check_inputs

log = logging.getLogger(__name__)
Array = NDArray[np.float64]
Labels = NDArray[np.int64]

__all__ = ["EvalResult", "evaluate", "evaluate_split", "evaluate_splits", "validation_split"]


@dataclass(frozen=True)
class EvalResult:
    """Free-phase evaluation of a split: mean task cost over the solved samples, accuracy over
    all samples (a sample without an attracting steady state counts as misclassified), and the
    number of such unsolved samples."""

    loss: float
    accuracy: float
    unsolved: int


async def _free_outputs(
    system: PhysicalSystem,
    spec: TrainNetwork,
    targets: ClassTargets,
    x: Array,
    y: NDArray[np.int64],
) -> tuple[Array, NDArray[np.int64]]:
    """Costs (n,) and predictions (n,) of one batch. A sample without a steady state gets cost NaN
    and prediction −1: when the error names the failing samples they are set aside and the rest is
    solved again (one more solve); otherwise the batch is split in halves."""
    try:
        await system.set_input(check_inputs(spec, x))
        await system.set_forces(None)
        obs = (await system.measure()).one_period()
    except SolverError as exc:
        n = x.shape[0]
        if n == 1:
            log.warning("evaluation: input %s has no steady state: %s", x[0].tolist(), exc)
            return np.full(1, math.nan), np.full(1, -1, dtype=np.int64)
        bad = [i for i in getattr(exc, "samples", ()) if isinstance(i, int) and 0 <= i < n]
        if bad:
            keep = np.ones(n, dtype=bool)
            keep[bad] = False
            cost = np.full(n, math.nan)
            pred = np.full(n, -1, dtype=np.int64)
            if keep.any():
                cost[keep], pred[keep] = await _free_outputs(
                    system, spec, targets, x[keep], y[keep]
                )
            return cost, pred
        h = n // 2
        c1, p1 = await _free_outputs(system, spec, targets, x[:h], y[:h])
        c2, p2 = await _free_outputs(system, spec, targets, x[h:], y[h:])
        return np.concatenate([c1, c2]), np.concatenate([p1, p2])
    cost = np.asarray(targets.task(spec, y).cost(obs.x, obs.t_s, obs.dt_s), dtype=float)
    return cost, np.asarray(targets.predict(obs, spec), dtype=np.int64)


async def evaluate_split(
    system: PhysicalSystem,
    spec: TrainNetwork,
    targets: ClassTargets,
    params: Array,
    x: Array,
    y: NDArray[np.int64],
    batch_size: int = 128,
) -> EvalResult:
    """Evaluate features x (n, n_in), labels y on the free steady states, ``batch_size`` samples
    per batched solve (the twin solves a batch as one Newton–Krylov problem)."""
    if x.shape[0] == 0:
        return EvalResult(math.nan, math.nan, 0)
    await system.set_parameters(params)
    costs, preds = [], []
    for start in range(0, x.shape[0], batch_size):
        c, p = await _free_outputs(
            system, spec, targets, x[start : start + batch_size], y[start : start + batch_size]
        )
        costs.append(c)
        preds.append(p)
    cost, pred = np.concatenate(costs), np.concatenate(preds)
    solved = np.isfinite(cost)
    loss = float(np.mean(cost[solved])) if solved.any() else math.nan
    return EvalResult(loss, float(np.mean(pred == y)), int(np.sum(~solved)))


async def evaluate(
    system: PhysicalSystem,
    spec: TrainNetwork,
    targets: ClassTargets,
    params: Array,
    x: Array,
    y: NDArray[np.int64],
    batch_size: int = 128,
) -> tuple[float, float]:
    """(mean task cost, accuracy) of the free steady states of features x (n, n_in), labels y
    (see `evaluate_split`)."""
    r = await evaluate_split(system, spec, targets, params, x, y, batch_size)
    return r.loss, r.accuracy


def validation_split(
    ds: Dataset, fraction: float, seed: int
) -> tuple[Array, NDArray[np.int64], Array, NDArray[np.int64]]:
    """(x_fit, y_fit, x_val, y_val): a stratified hold-out of ``fraction`` of the training split
    (``sklearn.model_selection.train_test_split``, ``random_state=seed``); no hold-out for 0."""
    if fraction <= 0.0:
        return ds.x_train, ds.y_train, ds.x_train[:0], ds.y_train[:0]
    from sklearn.model_selection import train_test_split

    idx = np.arange(ds.n_train)
    n_val = max(ds.n_classes, math.ceil(fraction * ds.n_train))
    if n_val >= ds.n_train:
        raise ConfigError(
            f"training.validation_fraction: {fraction} leaves no training samples of {ds.n_train}"
        )
    try:
        fit, val = train_test_split(idx, test_size=n_val, stratify=ds.y_train, random_state=seed)
    except ValueError as exc:
        raise ConfigError(f"training.validation_fraction: {exc}") from None
    fit, val = np.sort(fit), np.sort(val)
    return ds.x_train[fit], ds.y_train[fit], ds.x_train[val], ds.y_train[val]


async def evaluate_splits(
    system: PhysicalSystem,
    spec: TrainNetwork,
    targets: ClassTargets,
    params: Array,
    splits: list[tuple[str, Array, Labels]],
    batch_size: int = 128,
) -> dict[str, Any]:
    """An epoch's evaluation: ``{split}_loss``, ``{split}_accuracy`` and ``{split}_unsolved``
    of every (name, x, y) split, the number of splits with unsolved samples (``failures``) and
    of such samples in all splits (``unsolved``)."""
    out: dict[str, Any] = {"failures": 0, "unsolved": 0}
    for split, x, y in splits:
        r = await evaluate_split(system, spec, targets, params, x, y, batch_size)
        if r.unsolved:
            log.warning(
                "evaluation of the %s split: %d of %d samples have no attracting steady "
                "state (counted as misclassified)",
                split,
                r.unsolved,
                x.shape[0],
            )
            out["failures"] += 1
            out["unsolved"] += r.unsolved
        out[f"{split}_loss"], out[f"{split}_accuracy"] = r.loss, r.accuracy
        out[f"{split}_unsolved"] = r.unsolved
    return out
