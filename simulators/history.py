"""Signals with a bounded history: the bench twin keeps the node trajectory of the last
``[twin] history_s`` seconds only; instruments that integrate their input over time (the
lock-ins' filters) must stay within it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

__all__ = ["HistoryError", "HistorySource", "history_start"]


class HistoryError(ValueError):
    """Asked for a time older than the kept history; ``earliest_s`` is the earliest time
    still kept."""

    def __init__(self, earliest_s: float, message: str) -> None:
        super().__init__(message)
        self.earliest_s = earliest_s


@runtime_checkable
class HistorySource(Protocol):
    """A signal source (clock times → volts) that keeps ``history_s()`` seconds of the past;
    older times raise `HistoryError`."""

    def __call__(self, t_s: Array) -> Array: ...

    def history_s(self) -> float: ...


def history_start(
    start: float, t1: float, source: object, usable: float
) -> tuple[float, float | None]:
    """``start`` moved, if needed, into the last ``usable`` fraction of a bounded source's
    history before ``t1``: (start, None) when it already was (or the source keeps everything),
    else (the new start, the length of signal left before t1)."""
    if not isinstance(source, HistorySource):
        return start, None
    earliest = t1 - usable * source.history_s()
    if start >= earliest:
        return start, None
    return earliest, t1 - earliest
