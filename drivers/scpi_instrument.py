"""Base class of SCPI drivers: identity check, typed queries, optional error-queue check.

async with Qdac2(Qdac2Config(...)) as dac:     # connects, checks *IDN? against idn_pattern
    await dac.write("sour1:volt 0.1")          # then SYST:ERR? if check_errors
    v = await dac.query_float("sour1:volt?")
"""

from __future__ import annotations

import logging
import math
import re
from types import TracebackType
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from physlearn.drivers.link import TransportSettings
from physlearn.drivers.transport import Transport
from physlearn.errors import (
    InstrumentCommandError,
    InstrumentConnectionError,
    InstrumentProtocolError,
    InstrumentTimeoutError,
)

logger = logging.getLogger(__name__)

_ERROR_ENTRY = re.compile(r'\s*([+-]?\d+)\s*,\s*"(.*)"\s*', re.DOTALL)


class ScpiInstrumentConfig(BaseModel):
    """Configuration shared by SCPI drivers."""

    model_config = ConfigDict(extra="forbid")

    name: str
    transport: TransportSettings
    #: Regular expression the *IDN? reply must match (re.search).
    idn_pattern: str
    #: Query SYSTem:ERRor? after every write and raise on an error.
    check_errors: bool = True
    error_query: str = "SYST:ERR?"
    max_error_entries: int = Field(32, ge=1)


def parse_error_entry(text: str) -> tuple[int, str]:
    """Parse `-113,"Undefined header"` (any spacing) into (code, message)."""
    m = _ERROR_ENTRY.fullmatch(text)
    if m is None:
        raise InstrumentProtocolError(f"malformed error-queue entry {text!r}")
    return int(m.group(1)), m.group(2)


class ScpiInstrument:
    """An SCPI instrument over a `Transport`; subclasses add typed methods in SI units."""

    #: Transport settings this instrument needs unless a bench file says otherwise
    #: (`physlearn.drivers.registry.transport_settings`).
    TRANSPORT_DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: ScpiInstrumentConfig, transport: Transport | None = None) -> None:
        self.config = config
        self.name = config.name
        self.transport = transport if transport is not None else Transport(config.transport)
        self.identity = ""

    @property
    def resource(self) -> str:
        """The instrument's resource string."""
        return self.transport.resource

    async def connect(self) -> str:
        """Open the transport and check the identity; return the *IDN? reply. A failure to
        connect names the instrument (InstrumentConnectionError)."""
        try:
            await self.transport.open()
            idn = await self.transport.query("*IDN?")
        except InstrumentConnectionError as exc:
            raise InstrumentConnectionError(f"{self.name}: {exc}") from exc
        except InstrumentTimeoutError as exc:
            raise InstrumentTimeoutError(
                f"{self.name}: no answer to *IDN? ({exc}); check the address, the terminations "
                "and that the instrument is on"
            ) from exc
        if re.search(self.config.idn_pattern, idn) is None:
            await self.transport.close()
            raise InstrumentConnectionError(
                f"{self.name}: the instrument at {self.resource} identifies as {idn!r}, "
                f"which does not match the configured pattern {self.config.idn_pattern!r}"
            )
        self.identity = idn
        logger.info("%s: connected to %s (%s)", self.name, self.resource, idn)
        return idn

    async def close(self) -> None:
        """Close the transport."""
        await self.transport.close()

    async def __aenter__(self) -> ScpiInstrument:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- I/O -----------------------------------------------------------------------------------

    async def write(self, command: str, *, check_errors: bool | None = None) -> None:
        """Send `command`; then check the error queue if configured (or asked)."""
        await self.transport.write(command)
        if self.config.check_errors if check_errors is None else check_errors:
            await self.check_errors(command)

    async def query(self, command: str) -> str:
        """Send a query, return the reply text."""
        return await self.transport.query(command)

    async def query_float(self, command: str) -> float:
        """Send a query, parse the reply as one finite float."""
        reply = await self.query(command)
        try:
            value = float(reply)
        except ValueError:
            raise InstrumentProtocolError(
                f"{self.name} ({self.resource}): reply {reply!r} to {command!r} is not a number"
            ) from None
        if not math.isfinite(value):
            raise InstrumentProtocolError(
                f"{self.name} ({self.resource}): reply {reply!r} to {command!r} is not finite"
            )
        return value

    async def query_floats(self, command: str) -> list[float]:
        """Send a query, parse a comma-separated list of floats."""
        reply = await self.query(command)
        try:
            values = [float(x) for x in reply.split(",")]
        except ValueError:
            raise InstrumentProtocolError(
                f"{self.name} ({self.resource}): reply {reply!r} to {command!r} is not a "
                "list of numbers"
            ) from None
        if not all(math.isfinite(v) for v in values):
            raise InstrumentProtocolError(
                f"{self.name} ({self.resource}): reply {reply!r} to {command!r} contains a "
                "non-finite value"
            )
        return values

    async def query_binary_block(self, command: str) -> bytes:
        """Send a query whose reply is one IEEE 488.2 block; return its payload."""
        return await self.transport.query_block(command)

    async def write_binary_block(self, prefix: str, payload: bytes) -> None:
        """Send `prefix` followed by a definite-length block of `payload`; check errors."""
        await self.transport.write_block(prefix, payload)
        if self.config.check_errors:
            await self.check_errors(f"{prefix}<block of {len(payload)} bytes>")

    # -- error queue ---------------------------------------------------------------------------

    async def read_errors(self) -> list[tuple[int, str]]:
        """Drain the error queue; return the (code, message) entries (empty if none)."""
        entries: list[tuple[int, str]] = []
        for _ in range(self.config.max_error_entries):
            code, message = parse_error_entry(await self.query(self.config.error_query))
            if code == 0:
                break
            entries.append((code, message))
        return entries

    async def check_errors(self, command: str) -> None:
        """Raise InstrumentCommandError if the instrument queued an error after `command`."""
        entries = await self.read_errors()
        if entries:
            code, message = entries[0]
            more = f" (and {len(entries) - 1} more: {entries[1:]})" if len(entries) > 1 else ""
            raise InstrumentCommandError(
                f"{self.name} ({self.resource}) reported error {code}, {message!r} after "
                f"{command!r}{more}",
                code=code,
                error_message=message,
                command=command,
                resource=self.resource,
            )
