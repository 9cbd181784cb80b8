"""The calibration's view of a bench: drivers configured from the bench file, and a clock.

Routines act only through the drivers and wait only through a `Clock`:

- `TwinClock` on the emulated bench: advances the virtual clock through twin control (the
  in-memory `TwinControl` or a `TwinControlClient` over TCP), after completing every pending
  instrument command (`*OPC?`), as a controller must before it starts waiting;
- `WallClock` on a real bench: `asyncio.sleep`.

`CalibrationBench` never reads the bench file's `[twin]` table (it keeps `controller_view()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from physlearn.bench_config import BenchConfig
from physlearn.drivers.keysight33500b import Keysight33500B, Keysight33500BConfig
from physlearn.drivers.qdac2 import Qdac2, Qdac2Config
from physlearn.drivers.rigol_ds1000z import RigolDs1000z, RigolDs1000zConfig
from physlearn.drivers.scpi_instrument import ScpiInstrument
from physlearn.drivers.srs_lockin import Sr830, Sr830Config, Sr860, Sr860Config, SrsLockin
from physlearn.drivers.transport import TransportSettings
from physlearn.errors import CalibrationError, ConfigError

logger = logging.getLogger(__name__)


class Advancer(Protocol):
    """Anything that advances the emulated bench's clock (TwinControl, TwinControlClient)."""

    async def advance(self, dt_s: float) -> float: ...


class Clock(Protocol):
    """How calibration waits: `wait(dt_s)` returns once `dt_s` seconds of bench time passed."""

    async def wait(self, dt_s: float) -> None: ...

    def now(self) -> float: ...


class WallClock:
    """A real bench: sleep on the wall clock."""

    def __init__(self) -> None:
        self._loop_t0: float | None = None

    async def wait(self, dt_s: float) -> None:
        await asyncio.sleep(max(0.0, float(dt_s)))

    def now(self) -> float:
        return asyncio.get_running_loop().time()


class TwinClock:
    """The emulated bench's virtual clock, advanced through twin control. `instruments` are
    completed (`*OPC?`) before every advance, so commands act at the time they were issued."""

    def __init__(self, control: Advancer, start_s: float = 0.0) -> None:
        self.control = control
        self.instruments: list[ScpiInstrument] = []
        self._now = float(start_s)

    async def wait(self, dt_s: float) -> None:
        for inst in self.instruments:
            reply = await inst.query("*OPC?")
            if reply.strip() not in ("1", "+1"):
                raise CalibrationError(f"{inst.name}: *OPC? replied {reply!r}")
        self._now = await self.control.advance(max(0.0, float(dt_s)))

    def now(self) -> float:
        return self._now


def make_driver(config: BenchConfig, name: str, resource: str) -> ScpiInstrument:
    """The driver of instrument `name` at `resource` (limits, backend, timeout from the file)."""
    inst = config.instruments[name]
    common: dict[str, Any] = {
        "resource": resource,
        "backend": inst.backend if resource.upper().startswith("ASRL") else "pyvisa",
        "timeout_s": inst.timeout_s,
    }
    if inst.kind == "keysight33500b":
        return Keysight33500B(
            Keysight33500BConfig(
                name=name, transport=TransportSettings(**common), limits=config.output_limits(name)
            )
        )
    if inst.kind == "qdac2":
        return Qdac2(
            Qdac2Config(
                name=name, transport=TransportSettings(**common), limits=config.output_limits(name)
            )
        )
    if inst.kind == "rigol_ds1000z":
        return RigolDs1000z(RigolDs1000zConfig(name=name, transport=TransportSettings(**common)))
    if inst.kind == "sr830":
        settings = TransportSettings(
            **common, baud_rate=9600, read_termination="\r", write_termination="\r"
        )
        return Sr830(Sr830Config(name=name, transport=settings))
    if inst.kind == "sr860":
        return Sr860(Sr860Config(name=name, transport=TransportSettings(**common)))
    raise ConfigError(f"instruments.{name}.kind: no driver for {inst.kind!r}")


def config_hash(config: BenchConfig) -> str:
    """SHA-256 of the controller view of the bench file (instruments + wiring, no [twin])."""
    view = config.controller_view().model_dump(mode="json", exclude={"twin"})
    for inst in view["instruments"].values():
        inst.pop("resource", None)  # addresses change between sessions; the bench does not
    text = json.dumps(view, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class CalibrationBench:
    """Connected drivers of one bench plus its clock."""

    config: BenchConfig
    drivers: dict[str, ScpiInstrument]
    clock: Clock

    def generator(self, name: str) -> Keysight33500B:
        d = self.drivers[name]
        assert isinstance(d, Keysight33500B)
        return d

    def scope(self, name: str) -> RigolDs1000z:
        d = self.drivers[name]
        assert isinstance(d, RigolDs1000z)
        return d

    def lockin(self, name: str) -> SrsLockin:
        d = self.drivers[name]
        assert isinstance(d, SrsLockin)
        return d

    def dac(self, name: str) -> Qdac2:
        d = self.drivers[name]
        assert isinstance(d, Qdac2)
        return d

    def identities(self) -> dict[str, str]:
        return {name: d.identity for name, d in self.drivers.items()}

    async def safe_state(self) -> None:
        """Generators off (DACs are left where calibration put them, within their limits)."""
        for name in self.config.by_role("generator"):
            with contextlib.suppress(Exception):
                await self.generator(name).safe_state()


@contextlib.asynccontextmanager
async def open_bench(
    config: BenchConfig, resources: dict[str, str], clock: Clock
) -> AsyncIterator[CalibrationBench]:
    """Connect every instrument of `config` at `resources` (name → VISA resource); generators
    are switched off on exit, whatever happens."""
    config = config.controller_view()
    missing = sorted(set(config.instruments) - set(resources))
    if missing:
        raise ConfigError(f"no VISA resource for instruments {missing}")
    async with contextlib.AsyncExitStack() as stack:
        drivers: dict[str, ScpiInstrument] = {}
        for name in config.instruments:
            driver = make_driver(config, name, resources[name])
            drivers[name] = await stack.enter_async_context(driver)
        if isinstance(clock, TwinClock):
            clock.instruments = list(drivers.values())
        bench = CalibrationBench(config, drivers, clock)
        try:
            yield bench
        finally:
            await bench.safe_state()
