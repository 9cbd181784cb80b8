"""The controller's clock: how the bench system and calibration wait for physical time to pass.

One protocol, two clocks:

- `WallClock` on a real bench (or a free-running emulated bench): `asyncio.sleep` and the
  monotonic clock;
- `TwinClock` on the emulated bench: waiting advances the twin's virtual clock through its
  twin-control endpoint (the in-memory `TwinControl` or a `TwinControlClient` over TCP), so
  emulated runs are deterministic and take no wall time. Every command must be completed before
  the clock advances (a command acts at the time it was issued); callers that do not complete
  their commands themselves pass ``before_advance`` (calibration completes every instrument's
  pending commands with ``*OPC?``).

The emulators' own time source (`physlearn.simulators.clock`) is a different thing: the twin's
physical time, which the twin-control endpoint advances.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

__all__ = ["Clock", "TwinClock", "TwinControl", "WallClock"]


class Clock(Protocol):
    """``await sleep(dt_s)`` returns once ``dt_s`` seconds of bench time passed; ``await now()``
    is the bench time (s)."""

    async def sleep(self, dt_s: float) -> None: ...

    async def now(self) -> float: ...


class TwinControl(Protocol):
    """What `TwinClock` needs of a twin-control endpoint (in memory or a TCP client): advance the
    virtual clock by ``dt_s`` (returns the new time, maybe awaitable) and read it."""

    def advance(self, dt_s: float) -> Awaitable[float] | float: ...

    def now(self) -> Awaitable[float] | float: ...


class WallClock:
    """Wall-clock time (a real bench, or a free-running emulated bench)."""

    async def sleep(self, dt_s: float) -> None:
        await asyncio.sleep(max(0.0, float(dt_s)))

    async def now(self) -> float:
        return time.monotonic()


class TwinClock:
    """The emulated bench's virtual clock, advanced through its twin-control endpoint.

    ``before_advance`` (optional) runs before every wait, e.g. to complete pending instrument
    commands; the clock advances only for ``dt_s > 0``.
    """

    def __init__(
        self,
        control: TwinControl,
        *,
        before_advance: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.control = control
        self.before_advance = before_advance

    async def sleep(self, dt_s: float) -> None:
        if self.before_advance is not None:
            await self.before_advance()
        if dt_s > 0:
            await _value(self.control.advance(float(dt_s)))

    async def now(self) -> float:
        return float(await _value(self.control.now()))


async def _value(v: Awaitable[float] | float) -> float:
    if inspect.isawaitable(v):
        return float(await v)
    return float(v)
