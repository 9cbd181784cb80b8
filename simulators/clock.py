"""Time sources of the emulated bench: emulators read the twin's time only through a
`TimeSource`.

`VirtualClock` is advanced explicitly (by the controller, through the twin-control endpoint,
never through an instrument protocol), so emulated runs are deterministic. `PacedClock` paces
the twin by the wall clock with a speed factor (free-running mode).

Not the controller's clock (`physlearn.spec.clock`: `Clock`, `WallClock`, `TwinClock`), which
is how a controller waits; these are the emulated instruments' own notion of time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from physlearn.errors import ConfigError


@runtime_checkable
class TimeSource(Protocol):
    """Anything with `now()` returning the twin's time in seconds (what emulators read)."""

    def now(self) -> float:
        """Current twin time in seconds."""
        ...


class VirtualClock:
    """A clock that only moves when told to; thread-safe, never goes backwards."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._t_s = float(start_s)
        self._lock = threading.Lock()

    def now(self) -> float:
        """Current virtual time in seconds."""
        with self._lock:
            return self._t_s

    def advance(self, dt_s: float) -> float:
        """Move time forward by `dt_s` seconds (≥ 0, finite); return the new time in seconds."""
        if not (dt_s >= 0.0 and dt_s != float("inf")):
            raise ConfigError(f"VirtualClock.advance: dt_s must be finite and >= 0, got {dt_s!r}")
        with self._lock:
            self._t_s += float(dt_s)
            return self._t_s

    def set(self, t_s: float) -> None:
        """Jump to time `t_s` in seconds; refuses to go backwards."""
        with self._lock:
            if not (t_s >= self._t_s and t_s != float("inf")):
                raise ConfigError(f"VirtualClock.set: {t_s!r} s is before now ({self._t_s} s)")
            self._t_s = float(t_s)


class PacedClock:
    """Wall-clock seconds since construction, scaled by `speed` (2.0: the twin runs twice as
    fast): the free-running emulated bench's time."""

    def __init__(
        self, speed: float = 1.0, time_source: Callable[[], float] = time.monotonic
    ) -> None:
        if not (speed > 0.0 and speed != float("inf")):
            raise ConfigError(f"PacedClock: speed must be finite and > 0, got {speed!r}")
        self.speed = float(speed)
        self._source = time_source
        self._t0 = time_source()

    def now(self) -> float:
        """Scaled seconds elapsed since construction."""
        return (self._source() - self._t0) * self.speed
