"""Instrument tests' helpers: emulators served over every transport (the ``serve`` fixture stops
them in its finalizer; tests/conftest.py registers the fixtures), and a QDAC-II driver for one."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from physlearn.drivers.link import TransportSettings
from physlearn.drivers.qdac2 import Qdac2, Qdac2Config
from physlearn.simulators.clock import VirtualClock
from physlearn.simulators.instruments.qdac2 import Qdac2Emulator
from physlearn.simulators.instruments.transports import InMemoryServer, PtyServer, TcpServer
from physlearn.spec.limits import OutputLimits, VoltageLimit

#: transport kind → (server class, driver backend)
TRANSPORTS = ("memory", "tcp", "pty-visa", "pty-serial")
_names = itertools.count()


@dataclass
class Served:
    """A running server and how a driver reaches it."""

    server: Any
    resource: str
    backend: str


@pytest.fixture
def serve() -> Iterator[Callable[[Any, str], Served]]:
    """Factory: serve(emulator, kind) starts a server; all are stopped at teardown."""
    started: list[Any] = []

    def _serve(emulator: Any, kind: str) -> Served:
        if kind == "memory":
            server: Any = InMemoryServer(emulator, name=f"test{next(_names)}")
        elif kind == "tcp":
            server = TcpServer(emulator)
        elif kind in ("pty-visa", "pty-serial"):
            server = PtyServer(emulator)
        else:
            raise ValueError(kind)
        server.start()
        started.append(server)
        backend = "pyserial" if kind == "pty-serial" else "pyvisa"
        return Served(server, server.resource_string, backend)

    yield _serve
    for server in started:
        server.stop()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def qdac_emulator(clock: VirtualClock) -> Qdac2Emulator:
    return Qdac2Emulator(clock)


def qdac_driver(
    served: Served,
    *,
    limit_v: float = 1.5,
    timeout_s: float = 1.0,
    check_errors: bool = True,
    idn_pattern: str | None = None,
) -> Qdac2:
    """A QDAC-II driver for a served emulator, limits ±limit_v on every channel."""
    extra = {} if idn_pattern is None else {"idn_pattern": idn_pattern}
    config = Qdac2Config(
        name="qdac",
        transport=TransportSettings(
            resource=served.resource,
            backend=served.backend,
            timeout_s=timeout_s,
            reconnect_backoff_s=0.01,
        ),
        limits=OutputLimits(instrument="qdac", default=VoltageLimit(min_v=-limit_v, max_v=limit_v)),
        check_errors=check_errors,
        **extra,
    )
    return Qdac2(config)
