"""The event stream of a training run: the one place progress is reported.

`Trainer` emits typed events; listeners subscribe to its `EventStream` (the progress bar of
``physlearn train``, the per-step bench records writer, later telemetry and reports). `emit`
calls the listeners in subscription order: async listeners are awaited, sync ones called; an
exception in a listener propagates into the run (it stops there, as a crash would).

Order within a run: `RunStarted` (after the initial evaluation) or `RunResumed` (continued from
a checkpoint); per mini-batch `StepDone`, or `Fault` for a failed step; per epoch a `Fault` if
the evaluation sent the parameters back, then `EpochDone`; finally `RunFinished`, or `RunPaused`
when the run stops resumably (persistent instrument fault, SIGINT/SIGTERM). A step's event is
emitted (and awaited) *before* the checkpoint that commits the step: a kill in between makes the
resumed run redo the step and report it again, never commit a step whose report was lost.
Arrays in events are copies the listener may keep.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

__all__ = [
    "EpochDone",
    "EventStream",
    "Fault",
    "Listener",
    "RunEvent",
    "RunFinished",
    "RunPaused",
    "RunResumed",
    "RunStarted",
    "StabilityGuarded",
    "StepDone",
    "Suspended",
]


@dataclass(frozen=True)
class RunEvent:
    """Base of every event; ``kind`` names the event type (a stable string for telemetry)."""

    kind: ClassVar[str] = "event"


@dataclass(frozen=True)
class RunStarted(RunEvent):
    """A fresh run, after the initial evaluation: the level observations come from, the
    mini-batch steps planned, and the initial evaluation (losses, accuracies, unsolved)."""

    kind: ClassVar[str] = "run_started"
    level: str
    total_steps: int
    initial: dict[str, Any]


@dataclass(frozen=True)
class RunResumed(RunEvent):
    """A run continued at ``epoch``, mini-batch ``batch`` (``step`` updates done so far): from
    its checkpoint in a new session (``source`` ``"checkpoint"``), or after a pause in the same
    one (``source``: who asked to resume, e.g. ``"mqtt:operator"``)."""

    kind: ClassVar[str] = "resumed"
    level: str
    total_steps: int
    epoch: int
    batch: int
    step: int
    source: str = "checkpoint"


@dataclass(frozen=True)
class StepDone(RunEvent):
    """An applied update: ``params`` the gradient was measured at, the batch-mean ``gradient``
    and ``loss``, the ``new_params`` after the step (shortened, guarded, projected),
    ``cosine`` to the adjoint gradient (None if not logged), ``experiments`` of the run so far,
    the step's wall time (s, measurement included) and the mini-batch's ``inputs``
    (B, n_in)."""

    kind: ClassVar[str] = "step"
    epoch: int
    batch: int
    step: int
    total_steps: int
    params: Array
    gradient: Array
    loss: float
    new_params: Array
    cosine: float | None
    experiments: int
    wall_time_s: float
    inputs: Array = field(default_factory=lambda: np.zeros((0, 0)))


@dataclass(frozen=True)
class Fault(RunEvent):
    """A failure the run recovers from. ``fault`` is the counter it adds to:
    ``"nonfinite_steps"`` (a step with a non-finite gradient: parameters kept),
    ``"solver_failures"`` (a step without an attracting steady state: parameters sent back) or
    ``"evaluation_reverts"`` (an epoch-end evaluation with ``unsolved`` samples: parameters
    sent back to the last fully solved epoch; ``batch`` is −1). ``consecutive``: failed steps
    in a row so far; ``step_scale``: the step-length factor now."""

    kind: ClassVar[str] = "fault"
    fault: str
    message: str
    epoch: int
    batch: int
    step: int
    consecutive: int
    step_scale: float
    unsolved: int = 0


@dataclass(frozen=True)
class StabilityGuarded(RunEvent):
    """The stability guard (``training.stability_check``) changed a step: ``outcome``
    ``"shortened"`` (the update × ``fraction`` kept every free orbit of the mini-batch
    attracting) or ``"refused"`` (no fraction did: parameters kept). ``max_multiplier``: the
    largest |μ| at the full step (inf where a sample had no steady state, −inf when only the
    cost is checked); ``threshold``: the bound it had to keep; ``cost_ratio``: the mini-batch
    cost at the full step over the cost before it (``training.max_loss_increase``; None when
    not checked or the orbits did not attract)."""

    kind: ClassVar[str] = "stability_guard"
    epoch: int
    batch: int
    step: int
    outcome: str
    fraction: float
    max_multiplier: float
    threshold: float
    cost_ratio: float | None = None


@dataclass(frozen=True)
class EpochDone(RunEvent):
    """An epoch evaluated: its metrics row as written to metrics.jsonl and its parameters as
    saved (before a revert)."""

    kind: ClassVar[str] = "epoch"
    epoch: int
    step: int
    total_steps: int
    metrics: dict[str, Any]
    params: Array


@dataclass(frozen=True)
class RunPaused(RunEvent):
    """The run holds or stops resumably (its checkpoint stands): ``reason`` is
    ``"persistent_fault"`` (an instrument fault outlasted the retries), ``"interrupted"``
    (SIGINT/SIGTERM, cancellation), ``"stopped"`` or ``"aborted"`` (a stop or abort request:
    the process ends) or ``"paused"`` (a pause request: the system is in its safe state and the
    run waits for resume); ``source``: who asked (``"SIGINT"``, ``"mqtt:operator"``, …)."""

    kind: ClassVar[str] = "paused"
    reason: str
    message: str
    epoch: int
    step: int
    source: str = ""


@dataclass(frozen=True)
class Suspended(RunEvent):
    """A suspender (`physlearn.training.suspenders`) acted: ``name`` (``interlock``,
    ``persistent_fault``, ``drift``), ``action`` ``"pause"`` (it asked the run to pause) or
    ``"resume"`` (its condition cleared and it asked the run to resume), why (``message``) and
    any measured ``value`` (the drift's relative change)."""

    kind: ClassVar[str] = "suspended"
    name: str
    action: str
    message: str
    epoch: int
    step: int
    value: float | None = None


@dataclass(frozen=True)
class RunFinished(RunEvent):
    """The run ended (summary written): the summary and why it stopped ("" after all epochs)."""

    kind: ClassVar[str] = "finished"
    summary: dict[str, Any]
    stop_reason: str


Listener = Callable[[RunEvent], Awaitable[None] | None]


@dataclass
class EventStream:
    """Listeners of a run's events, called in subscription order."""

    listeners: list[Listener] = field(default_factory=list)

    def subscribe(self, listener: Listener) -> Listener:
        """Add ``listener`` (sync or async callable taking an event); returns it."""
        self.listeners.append(listener)
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        self.listeners.remove(listener)

    async def emit(self, event: RunEvent) -> None:
        """Call every listener with ``event`` (awaiting async ones), in subscription order."""
        for listener in list(self.listeners):
            out = listener(event)
            if inspect.isawaitable(out):
                await out
