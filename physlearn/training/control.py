"""Requests to a running trainer — stop, pause, resume, abort — acted on at step boundaries.

A `RunControl` is a mailbox any thread or signal handler may post to (`request`; lock-free, so
a signal handler cannot deadlock the thread it interrupts). The trainer looks at it before every
mini-batch and before every evaluation (`Trainer.control_point`):

* ``stop`` (SIGINT/SIGTERM on the ideal twin) and ``abort`` (an operator): commit the checkpoint
  where the run stands, emit `RunPaused`, raise `RunStopped` — the run continues later with
  ``physlearn train --resume RUN_DIR``;
* ``pause``: commit the checkpoint, emit `RunPaused`, put the system in its safe state
  (`physlearn.spec.system.Pausable`: a bench switches its drive off and ramps its DACs to the
  safe value; the twin has nothing to do), then wait for ``resume`` (re-arm, emit
  `RunResumed`, go on as if never paused) or ``stop``/``abort``;
* ``resume`` outside a pause is ignored (and logged).

Every request names its ``source`` (``"SIGINT"``, ``"mqtt:operator"``, …), which the events
carry on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from physlearn.errors import PhyslearnError

log = logging.getLogger(__name__)

__all__ = ["Command", "ControlRequest", "RunControl", "RunStopped"]


class Command(StrEnum):
    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"


@dataclass(frozen=True)
class ControlRequest:
    """One request: what, who asked (``source``), and why (free text)."""

    command: Command
    source: str
    reason: str = ""


class RunStopped(PhyslearnError):
    """The run stopped on request (stop or abort) with its checkpoint committed; it can be
    continued with ``physlearn train --resume``."""

    def __init__(self, request: ControlRequest, epoch: int, step: int) -> None:
        self.request, self.epoch, self.step = request, epoch, step
        what = "aborted" if request.command == Command.ABORT else "stopped"
        why = f": {request.reason}" if request.reason else ""
        super().__init__(f"{what} by {request.source} at epoch {epoch}, step {step}{why}")


class RunControl:
    """The mailbox of one run (see the module docstring)."""

    def __init__(self, poll_s: float = 0.1) -> None:
        self._box: deque[ControlRequest] = deque()
        self.poll_s = poll_s

    def request(self, command: Command | str, source: str, reason: str = "") -> None:
        """Post a request (any thread, or a signal handler)."""
        self._box.append(ControlRequest(Command(command), source, reason))

    def take(self) -> ControlRequest | None:
        """The oldest pending request, if any."""
        try:
            return self._box.popleft()
        except IndexError:
            return None

    async def next_request(self) -> ControlRequest:
        """Wait for the next request (polling: requests may come from other threads)."""
        while True:
            req = self.take()
            if req is not None:
                return req
            await asyncio.sleep(self.poll_s)
