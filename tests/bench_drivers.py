"""Helpers (no tests): the real drivers for every instrument of an emulated bench, configured
from the bench file as a controller would configure them, and byte recorders for emulators."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from physlearn.drivers.keysight33500b import Keysight33500B, Keysight33500BConfig
from physlearn.drivers.link import TransportSettings
from physlearn.drivers.qdac2 import Qdac2, Qdac2Config
from physlearn.drivers.rigol_ds1000z import RigolDs1000z, RigolDs1000zConfig
from physlearn.drivers.scpi_instrument import ScpiInstrument
from physlearn.drivers.srs_lockin import Sr830, Sr830Config, Sr860, Sr860Config
from physlearn.spec.bench import BenchConfig


def make_driver(
    config: BenchConfig, name: str, resource: str, *, timeout_s: float | None = None
) -> ScpiInstrument:
    """The driver of instrument `name` at `resource` (limits and backend from the bench file)."""
    inst = config.instruments[name]
    common: dict[str, Any] = {
        "resource": resource,
        "backend": inst.backend if resource.upper().startswith("ASRL") else "pyvisa",
        "timeout_s": inst.timeout_s if timeout_s is None else timeout_s,
        "reconnect_backoff_s": 0.01,
    }
    if inst.kind == "keysight33500b":
        return Keysight33500B(
            Keysight33500BConfig(
                name=name,
                transport=TransportSettings(**common),
                limits=config.output_limits(name),
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
    raise ValueError(f"no driver for {inst.kind!r}")


@dataclass
class Drivers:
    """Connected drivers of the reference bench (examples/bench.toml)."""

    gen: Keysight33500B
    qdac: Qdac2
    scope: RigolDs1000z
    lockin1: Sr830
    lockin2: Sr860


@contextlib.asynccontextmanager
async def bench_drivers(
    config: BenchConfig, resources: dict[str, str], *, timeout_s: float | None = None
) -> AsyncIterator[Drivers]:
    """Connect every driver of the reference bench; close them all on exit."""
    names = {"gen": "fgen", "qdac": "qdac", "scope": "scope"}
    names |= {"lockin1": "lockin1", "lockin2": "lockin2"}
    async with contextlib.AsyncExitStack() as stack:
        drivers: dict[str, Any] = {}
        for field, name in names.items():
            driver = make_driver(config, name, resources[name], timeout_s=timeout_s)
            drivers[field] = await stack.enter_async_context(driver)
        yield Drivers(**drivers)


def record(emulator: Any) -> list[tuple[bytes, bytes]]:
    """Log every (message, reply) the emulator processes, on whatever transport."""
    log: list[tuple[bytes, bytes]] = []
    original = emulator.process

    def process(message: bytes) -> bytes:
        reply: bytes = original(message)
        log.append((message, reply))
        return reply

    emulator.process = process
    return log
