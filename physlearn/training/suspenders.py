"""Suspenders (as in bluesky): conditions that pause a run by themselves and, where it is safe,
resume it. Enabled by the ``[suspenders]`` table of the train config (absent: none — an
interlock trip or a persistent fault then ends the session, as before).

Each acts through the run's `RunControl` (a pause request with ``source``
``"suspender:<name>"``), so the trainer pauses the way an operator's pause does: the checkpoint
committed at the step boundary, the bench in its safe state, `RunPaused` reported; each trip is
also reported as a `Suspended` event (telemetry ``events``; the run's ``telemetry.jsonl``).

* ``interlock`` — the bench's interlock tripped during a step or an evaluation (`InterlockTrip`:
  the measured response exceeded ``max_response``). The step is abandoned (not applied; the
  estimator's random state restored), the run pauses and **stays paused** until an operator
  resumes it (``physlearn control resume RUN``): re-armed, the step is measured again from rest.
  A second trip pauses again.
* ``persistent_fault`` — an instrument fault outlasted the retries (`PersistentFault`). The step
  is abandoned, the run pauses (safe state), then tries to reconnect every ``recover_every_s``;
  once every instrument answers again it **resumes by itself** (re-armed, the step measured
  again). After ``recover_for_s`` without success it stops trying and waits for an operator.
* ``drift`` (``drift_threshold`` set) — every ``drift_every_steps`` steps, before the next
  step, the free response of a reference (the run's initial parameters, the first training
  input) is measured and compared with the first such measurement of the session: a relative
  change ‖x − x₀‖/‖x₀‖ above the threshold pauses the run, which **stays paused** (recalibrate,
  then resume; after an operator's resume the next check takes a new reference). The check costs
  one measurement of one sample; it changes the bench's measurement history, so a run with it
  is not bit-identical to one without.
* a pause commanded through the broker (``physlearn control pause``) is the fourth: it stays
  paused until resumed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from physlearn.errors import InstrumentError
from physlearn.systems.safety import InterlockTrip, PersistentFault
from physlearn.training.control import Command, RunControl
from physlearn.training.events import EventStream, RunEvent, RunPaused, RunResumed, Suspended

if TYPE_CHECKING:
    from physlearn.spec.system import PhysicalSystem

log = logging.getLogger(__name__)

__all__ = ["Suspenders", "SuspendersConfig"]


class SuspendersConfig(BaseModel):
    """``[suspenders]`` (module docstring)."""

    model_config = ConfigDict(extra="forbid")

    interlock: bool = True
    persistent_fault: bool = True
    recover_every_s: float = Field(30.0, gt=0)
    recover_for_s: float = Field(3600.0, gt=0)
    drift_threshold: float | None = Field(None, gt=0)
    drift_every_steps: int = Field(10, ge=1)


class Suspenders:
    """The suspenders of one session (module docstring), also a listener of its events.

    Args:
        config: ``[suspenders]``.
        control: the run's mailbox.
        events: the run's event stream (trips are reported there).
        system: the system trained on (the drift reference is measured through it).
        reconnect: re-opens the instruments (the persistent-fault recovery probe).
        reference: (parameters, one input (1, n_in)) of the drift check.
        forget: drops the drift check's measurement from the bench's journal (it is not a
            measurement of the step that follows, whose per-step record the journal becomes).
    """

    def __init__(
        self,
        config: SuspendersConfig,
        control: RunControl,
        events: EventStream,
        system: PhysicalSystem,
        *,
        reconnect: object | None = None,
        reference: tuple[np.ndarray, np.ndarray] | None = None,
        forget: Callable[[], object] | None = None,
    ) -> None:
        self.config, self.control, self.events, self.system = config, control, events, system
        self.reconnect, self.forget = reconnect, forget
        self.reference = reference
        self._x0: np.ndarray | None = None
        self._checked_at = -1
        self._recovery: asyncio.Task[None] | None = None
        self._where = (0, 0)
        self.trips: list[tuple[str, str]] = []

    async def _trip(self, name: str, message: str, value: float | None = None) -> None:
        epoch, step = self._where
        self.trips.append((name, message))
        log.warning("suspender %s: %s; pausing", name, message)
        await self.events.emit(Suspended(name, "pause", message, epoch, step, value))
        self.control.request(Command.PAUSE, f"suspender:{name}", message)

    # ------------------------------------------------------------------ the trainer's hooks
    async def before(self, epoch: int, step: int) -> bool:
        """Before a step: the drift check when due; True if it asked for a pause."""
        self._where = (epoch, step)
        cfg = self.config
        if cfg.drift_threshold is None or self.reference is None:
            return False
        if step == self._checked_at or (step % cfg.drift_every_steps and self._x0 is not None):
            return False
        self._checked_at = step
        x = await self._reference_response()
        if self._x0 is None:
            self._x0 = x
            log.info("suspender drift: reference response taken at step %d", step)
            return False
        rel = float(np.linalg.norm(x - self._x0)) / max(float(np.linalg.norm(self._x0)), 1e-300)
        log.info("suspender drift: reference response changed by %.3g at step %d", rel, step)
        if rel <= cfg.drift_threshold:
            return False
        await self._trip(
            "drift",
            f"the reference response changed by {rel:.3g} (threshold {cfg.drift_threshold:g}): "
            "recalibrate, then resume",
            rel,
        )
        return True

    async def _reference_response(self) -> np.ndarray:
        assert self.reference is not None
        params, u = self.reference
        await self.system.set_parameters(params)
        await self.system.set_input(u)
        await self.system.set_forces(None)
        x = np.array((await self.system.measure()).x[0], dtype=float)
        if self.forget is not None:
            self.forget()
        return x

    async def tripped(self, exc: BaseException, epoch: int, step: int) -> bool:
        """A step or an evaluation raised ``exc``: True if a suspender takes it (a pause was
        requested; the caller abandons the step and goes back to its control point)."""
        self._where = (epoch, step)
        if isinstance(exc, InterlockTrip) and self.config.interlock:
            await self._trip("interlock", f"{exc}; resume when safe")
            return True
        if isinstance(exc, PersistentFault) and self.config.persistent_fault:
            await self._trip(
                "persistent_fault",
                f"{exc}; reconnecting every {self.config.recover_every_s:g} s",
            )
            return True
        return False

    # ------------------------------------------------------------------ the listener
    def __call__(self, ev: RunEvent) -> None:
        if isinstance(ev, RunPaused):
            if ev.source == "suspender:persistent_fault" and ev.reason == "paused":
                self._recovery = asyncio.get_running_loop().create_task(self._recover())
            elif ev.reason != "paused":
                self._cancel()
        elif isinstance(ev, RunResumed):
            self._cancel()
            if ev.source.startswith("mqtt:") or ev.source == "operator":
                self._x0 = None  # an operator accepted the bench as it is now
                self._checked_at = -1

    def _cancel(self) -> None:
        if self._recovery is not None and not self._recovery.done():
            self._recovery.cancel()
        self._recovery = None

    async def _recover(self) -> None:
        """While paused by a persistent fault: reconnect every ``recover_every_s``; resume once
        it works (or give up after ``recover_for_s``)."""
        cfg = self.config
        end = time.monotonic() + cfg.recover_for_s
        attempt = 0
        while time.monotonic() < end:
            await asyncio.sleep(cfg.recover_every_s)
            attempt += 1
            try:
                if callable(self.reconnect):
                    await self.reconnect()
            except InstrumentError as exc:
                log.warning("suspender persistent_fault: reconnect %d failed: %s", attempt, exc)
                continue
            epoch, step = self._where
            message = f"the instruments answer again (reconnect {attempt}): resuming"
            log.warning("suspender persistent_fault: %s", message)
            await self.events.emit(Suspended("persistent_fault", "resume", message, epoch, step))
            self.control.request(Command.RESUME, "suspender:persistent_fault", message)
            return
        log.warning(
            "suspender persistent_fault: no recovery within %.0f s; waiting for an operator",
            cfg.recover_for_s,
        )
