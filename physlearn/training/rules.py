"""The loop's rules, as plain functions: step-length back-off after failures, the mode guard on
updates, best-epoch selection and the stop decisions (target reached, patience, a bifurcation
that the smallest step cannot avoid)."""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from physlearn.training.config import TrainingConfig

Array = NDArray[np.float64]


class Guard(Protocol):
    """A margin of parameter vectors that updates must keep (`ModeGuard`, `OrbitGuard`)."""

    def margin(self, params: Array) -> float: ...


__all__ = [
    "MIN_STEP_SCALE",
    "Guard",
    "backed_off",
    "cosine",
    "guard_stalled",
    "guarded_update",
    "selection_key",
    "stop_reason",
    "target_reached",
]

#: Smallest step-length factor after repeated failures; one more failure there stops the run.
MIN_STEP_SCALE = 1.0 / 1024.0


def backed_off(step_scale: float, factor: float) -> float:
    """The step-length factor after a failure: × ``factor``, down to `MIN_STEP_SCALE`."""
    return max(step_scale * factor, MIN_STEP_SCALE)


def cosine(a: Array, b: Array) -> float:
    """cos ∠(a, b); NaN if either is zero."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return math.nan
    return float(np.dot(a, b) / (na * nb))


def guarded_update(
    guard: Guard | None, min_margin: float | None, params: Array, proposal: Array
) -> tuple[Array, bool]:
    """The update params → proposal, shortened (½, ¼, ⅛) until the guard's margin is ≥
    ``min_margin`` (`ModeGuard`: no linear mode at rest within ``min_margin``·ω of ω or 2ω;
    `OrbitGuard`: every input's equilibrium stiff enough) or at least no lower than before;
    (params, False) if no shortening does. Without a guard the proposal stands."""
    if guard is None or min_margin is None:
        return proposal, True
    floor = min(min_margin, guard.margin(params))
    delta = proposal - params
    for frac in (1.0, 0.5, 0.25, 0.125):
        trial = params + frac * delta
        if guard.margin(trial) >= floor:
            return trial, True
    return params, False


def selection_key(ev: dict[str, Any], split: str) -> tuple[float, float]:
    """(accuracy, −loss) of the selection split in an evaluation; NaN counts as worst."""
    acc, loss = ev[f"{split}_accuracy"], ev[f"{split}_loss"]
    return (
        acc if math.isfinite(acc) else -math.inf,
        -loss if math.isfinite(loss) else -math.inf,
    )


def target_reached(ev: dict[str, Any], tc: TrainingConfig) -> bool:
    """Whether the evaluation meets ``target_accuracy`` (and ``target_loss``, if both are set)
    on ``target_split``."""
    if tc.target_accuracy is not None:
        acc = ev[f"{tc.target_split}_accuracy"]
        if math.isfinite(acc) and acc >= tc.target_accuracy - 1e-12:
            if tc.target_loss is None:
                return True
            loss = ev[f"{tc.target_split}_loss"]
            return bool(math.isfinite(loss) and loss <= tc.target_loss)
    elif tc.target_loss is not None:
        loss = ev[f"{tc.target_split}_loss"]
        return bool(math.isfinite(loss) and loss <= tc.target_loss)
    return False


#: The evaluation splits whose unsolved samples steer a run (`decision_unsolved`).
DECISION_SPLITS = ("train", "validation")


def decision_unsolved(ev: dict[str, Any]) -> int:
    """The unsolved samples of an evaluation ``ev`` (`evaluate_splits`) that may steer the run:
    those of the training and validation splits, never the test split's."""
    return int(sum(ev.get(f"{split}_unsolved", 0) for split in DECISION_SPLITS))


def guard_stalled(tc: TrainingConfig, refused_streak: int) -> bool:
    """True once the stability guard has refused ``training.stability_stall_steps`` steps in a
    row (``refused_streak``, which only the guard counts): the parameters have not moved for
    that long."""
    stall = tc.stability_stall_steps
    return stall is not None and refused_streak >= stall


def stop_reason(
    tc: TrainingConfig,
    ev: dict[str, Any],
    *,
    stuck: bool,
    since_best: int,
    refused_streak: int = 0,
) -> str | None:
    """Why the run stops after an epoch with evaluation ``ev``, or None if it goes on:
    failures at the smallest step length (``stuck``), the stability guard refusing
    ``training.stability_stall_steps`` steps in a row (``refused_streak``), the target reached,
    or no improvement of the selection in ``patience`` epochs."""
    if stuck:
        return (
            "steady states keep failing at the smallest step length "
            f"({MIN_STEP_SCALE:g} of the optimizer's): the network sits at a bifurcation"
        )
    if guard_stalled(tc, refused_streak):
        return (
            f"the stability guard refused the last {refused_streak} steps: every update the "
            "optimizer proposes leaves a free orbit non-attracting"
            + (" or raises the cost too much" if tc.max_loss_increase is not None else "")
            + " (training.stability_stall_steps)"
        )
    if target_reached(ev, tc):
        return "target reached"
    if tc.patience is not None and since_best >= tc.patience:
        return f"no improvement of the {tc.select} selection in {tc.patience} epochs"
    return None
