"""`TrainerState`: everything the loop carries from one mini-batch to the next, and its round
trip through a checkpoint (so that a resumed run continues exactly as the uninterrupted one).

Besides the state proper: the rng state of an estimator (SPSA's perturbations) and the state of
the systems (the ideal twin's warm starts), found through wrappers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError
from physlearn.spec.system import PhysicalSystem
from physlearn.training.runstore import Checkpoint

log = logging.getLogger(__name__)
Array = NDArray[np.float64]

__all__ = [
    "COUNTERS",
    "TRAINER_STATE_VERSION",
    "TrainerState",
    "get_rng_state",
    "load_system_states",
    "set_rng_state",
    "system_states",
]

#: Version of the trainer state kept in a checkpoint's ``extra`` (see `TrainerState`).
TRAINER_STATE_VERSION = 1

#: Failure and projection counters (run totals in ``counters``, this epoch's in ``ep_counts``).
COUNTERS = (
    "nonfinite_steps",
    "solver_failures",
    "clipped_parameters",
    "mode_guard_refusals",
    "evaluation_reverts",
)


@dataclass
class TrainerState:
    """Everything `Trainer.run` carries from one mini-batch to the next, so that a run resumed
    from a checkpoint continues exactly as the uninterrupted run would have.

    Position: ``epoch`` and ``next_batch`` (the first mini-batch not yet done; equal to the
    number of batches when only the epoch-end evaluation is left); ``epoch_rng`` is the shuffle
    Generator *at the start of that epoch* (the resumed run draws the same order and skips the
    batches done). The rest: parameters, the last measured ones (``last_good``, for reverts),
    the last fully solved epoch-end ones (``anchor``), step count, failure counters, the
    stability guard's run of refused steps, the step-length factor and its recovery streak,
    best-epoch selection and patience, the epoch's batch losses, cosines and counts so far, the
    stop decision, wall time (s) and experiments so far, the state of the systems (warm starts
    of the ideal twin) and of the estimator's rng.
    """

    params: Array
    last_good: Array
    anchor: Array
    epoch_rng: np.random.Generator
    epoch: int = 0
    next_batch: int = 0
    step: int = 0
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    consecutive: int = 0
    refused_streak: int = 0
    step_scale: float = 1.0
    good_streak: int = 0
    best: tuple[float, float] | None = None
    best_epoch: int = -1
    best_params: Array | None = None
    since_best: int = 0
    stuck: bool = False
    epochs_run: int = 0
    stopped_early: bool = False
    stop_reason: str = ""
    finished: bool = False
    batch_losses: list[float] = field(default_factory=list)
    cosines: list[float] = field(default_factory=list)
    ep_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    initial: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    experiments: int = 0
    systems: dict[str, Any] = field(default_factory=dict)
    estimator_rng: dict[str, Any] | None = None

    @classmethod
    def fresh(cls, params: Array, seed: int) -> TrainerState:
        p = np.array(params, dtype=float)
        return cls(p, p.copy(), p.copy(), np.random.default_rng(seed), best_params=p.copy())

    def extra(self) -> dict[str, Any]:
        """The checkpoint's ``extra``: every field but params and the Generator (stored apart)."""
        return {
            "trainer_state": TRAINER_STATE_VERSION,
            "next_batch": self.next_batch,
            "last_good": self.last_good,
            "anchor": self.anchor,
            "counters": dict(self.counters),
            "consecutive": self.consecutive,
            "refused_streak": self.refused_streak,
            "step_scale": self.step_scale,
            "good_streak": self.good_streak,
            "best": list(self.best) if self.best is not None else None,
            "best_epoch": self.best_epoch,
            "best_params": self.best_params,
            "since_best": self.since_best,
            "stuck": self.stuck,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "finished": self.finished,
            "batch_losses": list(self.batch_losses),
            "cosines": list(self.cosines),
            "ep_counts": dict(self.ep_counts),
            "initial": dict(self.initial),
            "elapsed_s": self.elapsed_s,
            "systems": self.systems,
            "estimator_rng": self.estimator_rng,
        }

    @classmethod
    def from_checkpoint(cls, ck: Checkpoint, n_batches: int) -> TrainerState:
        """The state a checkpoint holds; ConfigError if it was written without one (or by a run
        cut into another number of mini-batches per epoch)."""
        x = ck.extra
        if x.get("trainer_state") != TRAINER_STATE_VERSION:
            raise ConfigError(
                "checkpoint: no trainer state (written by an older physlearn); cannot resume "
                "this run"
            )
        if int(x.get("batches_per_epoch", -1)) != n_batches:
            raise ConfigError(
                f"checkpoint: written with {x.get('batches_per_epoch')} mini-batches per epoch, "
                f"the config gives {n_batches}"
            )
        best = x["best"]
        return cls(
            params=np.array(ck.params, dtype=float),
            last_good=np.asarray(x["last_good"], dtype=float),
            anchor=np.asarray(x["anchor"], dtype=float),
            epoch_rng=ck.make_rng(),
            epoch=ck.epoch,
            next_batch=int(x["next_batch"]),
            step=ck.step,
            counters={k: int(v) for k, v in x["counters"].items()},
            consecutive=int(x["consecutive"]),
            refused_streak=int(x.get("refused_streak", 0)),  # absent before the stall stop
            step_scale=float(x["step_scale"]),
            good_streak=int(x["good_streak"]),
            best=(float(best[0]), float(best[1])) if best is not None else None,
            best_epoch=int(x["best_epoch"]),
            best_params=np.asarray(x["best_params"], dtype=float),
            since_best=int(x["since_best"]),
            stuck=bool(x["stuck"]),
            epochs_run=int(x["epochs_run"]),
            stopped_early=bool(x["stopped_early"]),
            stop_reason=str(x["stop_reason"]),
            finished=bool(x["finished"]),
            batch_losses=[float(v) for v in x["batch_losses"]],
            cosines=[float(v) for v in x["cosines"]],
            ep_counts={k: int(v) for k, v in x["ep_counts"].items()},
            initial=dict(x["initial"]),
            elapsed_s=float(x["elapsed_s"]),
            experiments=int(x["experiments"]),
            systems=dict(x.get("systems") or {}),
            estimator_rng=x.get("estimator_rng"),
        )


def get_rng_state(obj: object) -> dict[str, Any] | None:
    """``bit_generator.state`` of an object's ``rng`` Generator (e.g. SPSA's), if it has one;
    through wrappers (``inner``)."""
    rng = getattr(obj, "rng", None)
    if isinstance(rng, np.random.Generator):
        return dict(rng.bit_generator.state)
    inner = getattr(obj, "inner", None)
    return get_rng_state(inner) if inner is not None and inner is not obj else None


def set_rng_state(obj: object, state: dict[str, Any]) -> None:
    """Restore what `get_rng_state` returned."""
    rng = getattr(obj, "rng", None)
    if isinstance(rng, np.random.Generator):
        rng.bit_generator.state = state
        return
    inner = getattr(obj, "inner", None)
    if inner is not None and inner is not obj:
        set_rng_state(inner, state)


def _system_method(system: object, name: str) -> Callable[..., Any] | None:
    """``system.<name>`` if callable, else that of the system it wraps (``inner``, as in
    `DelegatingSystem`), outermost first; None if no layer has it."""
    seen: set[int] = set()
    obj: object | None = system
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        fn = getattr(obj, name, None)
        if callable(fn):
            return fn
        obj = getattr(obj, "inner", None)
    return None


def system_states(systems: Mapping[str, PhysicalSystem]) -> dict[str, Any]:
    """``state_dict()`` of every system (by role) that has one, found through wrappers
    (retries, corrections: `DelegatingSystem`) — the ideal twin's warm starts; a bench's
    physical state cannot be stored: it settles again after a resume."""
    out: dict[str, Any] = {}
    for role, sy in systems.items():
        fn = _system_method(sy, "state_dict")
        if fn is not None:
            out[role] = fn()
    return out


def load_system_states(systems: Mapping[str, PhysicalSystem], states: dict[str, Any]) -> None:
    """Give every system (by role) its checkpointed state (`system_states`)."""
    for role, state in states.items():
        sy = systems.get(role)
        fn = _system_method(sy, "load_state_dict") if sy is not None else None
        if fn is not None:
            fn(state)
        else:
            log.warning("resume: the %s system cannot take its checkpointed state", role)
