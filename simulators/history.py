"""Signals with a bounded history: the bench twin keeps the node trajectory of the last
``[twin] history_s`` seconds only; instruments that integrate their input over time (the
lock-ins' filters) must stay within it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

__all__ = ["HistoryError", "HistorySource"]


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
