"""The bench's drivers, built from the bench file (or a factory) and read back typed by role, and
the controller's time: the clock, and what the bench loop spent in instrument I/O and in waits."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from physlearn.drivers.keysight33500b import Keysight33500B
from physlearn.drivers.link import TransportSettings
from physlearn.drivers.qdac2 import Qdac2
from physlearn.drivers.rigol_ds1000z import RigolDs1000z
from physlearn.drivers.scpi_instrument import ScpiInstrument
from physlearn.drivers.srs_lockin import SrsLockin
from physlearn.errors import ConfigError
from physlearn.spec.bench import BenchConfig
from physlearn.spec.clock import Clock

__all__ = ["BenchTime", "DriverFactory", "Instruments"]

#: builds the driver of bench-file instrument ``name`` from its transport settings (tests)
DriverFactory = Callable[[str, TransportSettings], ScpiInstrument]
_D = TypeVar("_D", bound=ScpiInstrument)


class Instruments:
    """The drivers of the bench loop by instrument name (``by_name``; none until created), with
    typed access by role: generators (Keysight 33500B), DACs (QDAC-II), scopes (DS1000Z),
    lock-ins (SR830/SR860). A driver of another class than its role needs is a ConfigError."""

    def __init__(
        self,
        config: BenchConfig,
        resources: dict[str, str],
        safe_dac_v: float,
        factory: DriverFactory | None = None,
    ) -> None:
        self.config = config
        self.resources = resources
        self.safe_dac_v = safe_dac_v
        self.factory = factory
        self.by_name: dict[str, ScpiInstrument] = {}

    def make(self, name: str) -> ScpiInstrument:
        """A new (unconnected) driver of instrument ``name`` of the bench file."""
        from physlearn.drivers.registry import make_driver, transport_settings

        inst = self.config.instruments[name]
        if self.factory is not None:
            return self.factory(name, transport_settings(name, inst, self.resources.get(name)))
        if inst.role not in ("generator", "dac", "scope", "lockin"):
            raise ConfigError(f"instruments.{name}.kind: {inst.kind} is not used by the bench loop")
        return make_driver(
            name,
            inst,
            self.resources.get(name),
            limits=self.config.output_limits(name) if inst.role in ("generator", "dac") else None,
            safe_voltage_v=self.safe_dac_v,
        )

    def generator(self, name: str) -> Keysight33500B:
        return _typed(self.by_name[name], Keysight33500B, name)

    def dac(self, name: str) -> Qdac2:
        return _typed(self.by_name[name], Qdac2, name)

    def scope(self, name: str) -> RigolDs1000z:
        return _typed(self.by_name[name], RigolDs1000z, name)

    def lockin(self, name: str) -> SrsLockin:
        return _typed(self.by_name[name], SrsLockin, name)


def _typed(driver: ScpiInstrument, cls: type[_D], name: str) -> _D:
    if not isinstance(driver, cls):
        raise ConfigError(
            f"instruments.{name}: the bench loop needs a {cls.__name__} driver, got "
            f"{type(driver).__name__}"
        )
    return driver


class BenchTime:
    """The controller clock, with the time (s) the bench loop spent in instrument I/O
    (``io_time_s``, wall clock) and in waits (``wait_time_s``, controller clock)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.io_time_s = 0.0
        self.wait_time_s = 0.0

    async def now(self) -> float:
        return await self.clock.now()

    async def wait(self, dt_s: float) -> None:
        """Wait ``dt_s`` (counted when positive; the clock is called whatever its sign)."""
        self.wait_time_s += max(0.0, dt_s)
        await self.clock.sleep(dt_s)

    @contextmanager
    def io(self) -> Iterator[None]:
        """Count the wall time of the block as I/O time (not when it raises)."""
        t0 = time.perf_counter()
        yield
        self.io_time_s += time.perf_counter() - t0
