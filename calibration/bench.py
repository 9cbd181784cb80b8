"""The calibration's view of a bench: drivers from the drivers' registry, and the controller's
clock (`physlearn.spec.clock`).

Routines act only through the drivers and wait only through the bench's clock, which completes
every pending instrument command (`*OPC?`) before it waits, as a controller must: `TwinClock` on
the emulated bench (the wait advances the twin's virtual clock), `WallClock` on a real bench.

`CalibrationBench` never reads the bench file's `[twin]` table (it keeps `controller_view()`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from physlearn.drivers.keysight33500b import Keysight33500B
from physlearn.drivers.qdac2 import Qdac2
from physlearn.drivers.registry import make_driver
from physlearn.drivers.rigol_ds1000z import RigolDs1000z
from physlearn.drivers.scpi_instrument import ScpiInstrument
from physlearn.drivers.srs_lockin import SrsLockin
from physlearn.errors import CalibrationError, ConfigError
from physlearn.spec.bench import BenchConfig
from physlearn.spec.clock import Clock

logger = logging.getLogger(__name__)


def config_hash(config: BenchConfig) -> str:
    """SHA-256 of the controller view of the bench file (instruments + wiring, no [twin])."""
    view = config.controller_view().model_dump(mode="json", exclude={"twin"})
    for inst in view["instruments"].values():
        inst.pop("resource", None)  # addresses change between sessions; the bench does not
    for key in ("active", "tuners"):
        if not view["wiring"].get(key):
            # a bench without active elements or node tuners hashes as before they existed
            # (its calibrations stay valid)
            view["wiring"].pop(key, None)
    text = json.dumps(view, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class CompletingClock:
    """A clock that completes every instrument's pending commands (``*OPC?``) before each wait,
    so that commands act at the time they were issued."""

    def __init__(self, inner: Clock, instruments: list[ScpiInstrument]) -> None:
        self.inner = inner
        self.instruments = instruments

    async def sleep(self, dt_s: float) -> None:
        for inst in self.instruments:
            reply = await inst.query("*OPC?")
            if reply.strip() not in ("1", "+1"):
                raise CalibrationError(f"{inst.name}: *OPC? replied {reply!r}")
        await self.inner.sleep(max(0.0, float(dt_s)))

    async def now(self) -> float:
        return await self.inner.now()


@dataclass
class CalibrationBench:
    """Connected drivers of one bench plus its clock (completing commands before each wait)."""

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
        for name, inst in config.instruments.items():
            limits = config.output_limits(name) if inst.role in ("generator", "dac") else None
            driver = make_driver(name, inst, resources[name], limits=limits)
            drivers[name] = await stack.enter_async_context(driver)
        bench = CalibrationBench(config, drivers, CompletingClock(clock, list(drivers.values())))
        try:
            yield bench
        finally:
            await bench.safe_state()
