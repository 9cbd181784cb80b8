"""What a transport is made of: the `RawLink` protocol (a blocking byte link), the
`TransportSettings` of an instrument (resource string, backend, terminations, timeouts), and the
in-memory resource registry (`MEM::<name>::INSTR`) the emulated bench registers its instruments in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from physlearn.errors import InstrumentConnectionError

__all__ = [
    "RawLink",
    "TransportSettings",
    "memory_resource_name",
    "memory_resource_opener",
    "register_memory_resource",
    "unregister_memory_resource",
]


class RawLink(Protocol):
    """A blocking byte link to one instrument (not thread-safe; `Transport` serialises it).

    Timeouts raise the builtin `TimeoutError`; a closed or broken connection raises
    `ConnectionError` (or another `OSError`).
    """

    def write(self, data: bytes) -> None:
        """Send all of `data`."""
        ...

    def read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        """Read up to and including `terminator`; on timeout return what arrived (maybe b"")."""
        ...

    def read_exact(self, n_bytes: int, timeout_s: float) -> bytes:
        """Read exactly `n_bytes`; TimeoutError if they do not arrive in time."""
        ...

    def is_alive(self) -> bool:
        """False if the link is known to be closed by the other side."""
        ...

    def close(self) -> None:
        """Release the link (idempotent)."""
        ...


class TransportSettings(BaseModel):
    """Per-instrument transport configuration (terminations as Python strings, times in s)."""

    model_config = ConfigDict(extra="forbid")

    resource: str
    backend: Literal["pyvisa", "pyserial"] = "pyvisa"
    read_termination: str = Field("\n", min_length=1)
    write_termination: str = "\n"
    timeout_s: float = Field(2.0, gt=0.0, le=600.0)
    baud_rate: int = Field(115200, gt=0)
    reconnect_attempts: int = Field(3, ge=0, le=100)
    reconnect_backoff_s: float = Field(0.05, ge=0.0, le=10.0)
    retry_after_reconnect: bool = True
    encoding: str = "ascii"


# --------------------------------------------------------------------------------------------
# In-memory registry (the twin registers its emulators here)
# --------------------------------------------------------------------------------------------

_memory_lock = threading.Lock()
_memory_resources: dict[str, Callable[[], RawLink]] = {}


def memory_resource_name(name: str) -> str:
    """The resource string of an in-memory endpoint called `name`."""
    return f"MEM::{name}::INSTR"


def register_memory_resource(name: str, connect: Callable[[], RawLink]) -> str:
    """Make `connect()` the opener of `MEM::<name>::INSTR`; returns that resource string."""
    with _memory_lock:
        if name in _memory_resources:
            raise InstrumentConnectionError(f"in-memory resource {name!r} already registered")
        _memory_resources[name] = connect
    return memory_resource_name(name)


def unregister_memory_resource(name: str) -> None:
    """Remove an in-memory endpoint (later opens fail with InstrumentConnectionError)."""
    with _memory_lock:
        _memory_resources.pop(name, None)


def memory_resource_opener(name: str) -> Callable[[], RawLink] | None:
    """The opener registered for the in-memory endpoint `name`, if any."""
    with _memory_lock:
        return _memory_resources.get(name)
