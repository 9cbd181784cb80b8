"""The readout of a settled sample: what the bench system reports as the node coordinates once
the scopes have judged the response settled.

`ScopeReadout` (default) reports the scopes' reading as it is; the lock-in readout
(`physlearn.systems.bench.lockin.LockinReadout`) replaces lock-in-wired nodes by their phasors.
A `BenchSystem` builds its readout from a `ReadoutContext` through a `ReadoutFactory` (a class
taking the context, or a `functools.partial` of one)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from physlearn.calibration.schema import CalibrationFile
from physlearn.errors import PhyslearnError
from physlearn.spec.bench import BenchConfig
from physlearn.systems.bench.instruments import BenchTime, Instruments
from physlearn.systems.bench.options import BenchOptions
from physlearn.systems.bench.settler import SettledSample
from physlearn.systems.safety import Interlock

Array = NDArray[np.float64]

__all__ = ["Readout", "ReadoutContext", "ReadoutFactory", "ScopeReadout"]


@dataclass(frozen=True)
class ReadoutContext:
    """What a readout may use of its bench system: the bench config (controller view), the
    calibration and its version, the drive period (s) and period grid (M,), the options, the
    controller time, the drivers and the interlock."""

    config: BenchConfig
    calibration: CalibrationFile
    calibration_version: str
    period_s: float
    grid_t: Array
    options: BenchOptions
    time: BenchTime
    instruments: Instruments
    interlock: Interlock


class Readout(Protocol):
    """The readout collaborator of a `BenchSystem`."""

    @property
    def instrument_names(self) -> list[str]:
        """Instruments it reads besides the scopes (connected with the bench)."""
        ...

    def check_forces(self, samples: Array, what: str, error: type[PhyslearnError]) -> None:
        """Refuse force waveforms (B, M, d) it cannot read the response to (raises ``error``
        naming ``what``) — before anything is written."""
        ...

    async def configure(self) -> None:
        """Program its instruments (after arming, and after a reconnect of an armed bench)."""
        ...

    async def read(self, sample: SettledSample) -> SettledSample:
        """The reported sample, from the scopes' settled one."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """Its settings for the records (merged into `BenchSystem.settings_snapshot`)."""
        ...


ReadoutFactory = Callable[[ReadoutContext], Readout]


class ScopeReadout:
    """The scopes' reading as it is (``readout = "scope"``)."""

    def __init__(self, context: ReadoutContext) -> None:
        self.context = context

    @property
    def instrument_names(self) -> list[str]:
        return []

    def check_forces(self, samples: Array, what: str, error: type[PhyslearnError]) -> None:
        return None

    async def configure(self) -> None:
        return None

    async def read(self, sample: SettledSample) -> SettledSample:
        return sample

    def snapshot(self) -> dict[str, Any]:
        return {}
