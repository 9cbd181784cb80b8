"""Async transport layer of the drivers: one lock per resource, blocking I/O off the event loop.

A `Transport` owns one byte-level `RawLink` (pyvisa resource, pyserial port, or an in-memory
link to an emulator) and serialises every exchange on it with an `asyncio.Lock`; the blocking
calls run in `asyncio.to_thread`. Failures are mapped onto the physlearn hierarchy:

- no answer within `timeout_s` → `InstrumentTimeoutError` (the link is reopened before the
  next exchange, so a late reply cannot desynchronise the stream);
- a dropped connection (BrokenPipe/ConnectionReset, EOF, or a timeout on a socket that turns
  out to be closed, which is how pyvisa-py reports it) → the link is reopened with bounded
  retries and the exchange retried once (SCPI setpoints are absolute, so a retry is safe);
  if that fails → `ConnectionLostError`;
- a reply without its terminator, or a bad block header → `InstrumentProtocolError`.

Resource strings: `TCPIP0::<host>::<port>::SOCKET` and `ASRL<path>::INSTR` go through pyvisa
(pyvisa-py) unless `backend="pyserial"` (ASRL only); `MEM::<name>::INSTR` is an in-memory
emulator registered with `register_memory_resource`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import time
from collections.abc import Callable
from typing import TypeVar

from physlearn.drivers.link import (
    RawLink,
    TransportSettings,
    memory_resource_opener,
)
from physlearn.errors import (
    ConnectionLostError,
    InstrumentConnectionError,
    InstrumentProtocolError,
    InstrumentTimeoutError,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

_LOG_LIMIT = 200


_MEM = re.compile(r"MEM::(?P<name>[^:]+)::INSTR", re.IGNORECASE)
_ASRL = re.compile(r"ASRL(?P<path>.+)::INSTR", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# pyserial link
# --------------------------------------------------------------------------------------------


class SerialLink:
    """A `RawLink` over pyserial (USB-serial instruments, ptys)."""

    def __init__(self, port: str, baud_rate: int, timeout_s: float) -> None:
        import serial

        self._serial_mod = serial
        self.port = port
        try:
            self._port = serial.Serial(port, baudrate=baud_rate, timeout=timeout_s)
        except (serial.SerialException, OSError) as exc:
            raise InstrumentConnectionError(f"cannot open serial port {port}: {exc}") from exc

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
            self._port.flush()
        except self._serial_mod.SerialException as exc:
            raise ConnectionResetError(str(exc)) from exc

    def read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        self._port.timeout = timeout_s
        try:
            data: bytes = self._port.read_until(terminator)
        except self._serial_mod.SerialException as exc:
            raise ConnectionResetError(str(exc)) from exc
        return data

    def read_exact(self, n_bytes: int, timeout_s: float) -> bytes:
        self._port.timeout = timeout_s
        try:
            data: bytes = self._port.read(n_bytes)
        except self._serial_mod.SerialException as exc:
            raise ConnectionResetError(str(exc)) from exc
        if len(data) < n_bytes:
            raise TimeoutError(f"{len(data)} of {n_bytes} bytes in {timeout_s} s")
        return data

    def is_alive(self) -> bool:
        import os

        return bool(self._port.is_open) and os.path.exists(self.port)

    def close(self) -> None:
        self._port.close()


def open_link(settings: TransportSettings) -> RawLink:
    """Open the byte link named by `settings.resource` (InstrumentConnectionError if not)."""
    resource = settings.resource
    mem = _MEM.fullmatch(resource)
    if mem is not None:
        connect = memory_resource_opener(mem.group("name"))
        if connect is None:
            raise InstrumentConnectionError(f"no in-memory instrument at {resource}")
        return connect()
    asrl = _ASRL.fullmatch(resource)
    if settings.backend == "pyserial":
        if asrl is None:
            raise InstrumentConnectionError(
                f"backend 'pyserial' needs an ASRL<path>::INSTR resource, got {resource!r}"
            )
        return SerialLink(asrl.group("path"), settings.baud_rate, settings.timeout_s)
    from physlearn.drivers.visa_backend import VisaLink

    return VisaLink(resource, settings)


# --------------------------------------------------------------------------------------------
# Binary blocks
# --------------------------------------------------------------------------------------------


def encode_block(payload: bytes) -> bytes:
    """IEEE 488.2 definite-length block `#<n><len><payload>` with the smallest n."""
    length = str(len(payload)).encode()
    if len(length) > 9:
        raise ValueError(f"block of {len(payload)} bytes exceeds the #9 header")
    return b"#" + str(len(length)).encode() + length + payload


def _read_block(link: RawLink, terminator: bytes, timeout_s: float, resource: str) -> bytes:
    head = link.read_exact(2, timeout_s)
    if head[:1] != b"#" or not head[1:2].isdigit():
        raise InstrumentProtocolError(f"{resource}: expected a binary block, got {head!r}")
    n = int(head[1:2])
    if n == 0:
        data = link.read_until(terminator, timeout_s)
        if not data.endswith(terminator):
            raise InstrumentProtocolError(f"{resource}: indefinite block without terminator")
        return data[: -len(terminator)]
    digits = link.read_exact(n, timeout_s)
    if not digits.isdigit():
        raise InstrumentProtocolError(f"{resource}: bad block length {digits!r}")
    payload = link.read_exact(int(digits), timeout_s)
    if terminator:
        trailer = link.read_exact(len(terminator), timeout_s)
        if trailer != terminator:
            raise InstrumentProtocolError(
                f"{resource}: block of {len(payload)} bytes followed by {trailer!r}, "
                f"expected the terminator {terminator!r}"
            )
    return payload


def _short(data: bytes) -> str:
    text = repr(data)
    return text if len(text) <= _LOG_LIMIT else text[:_LOG_LIMIT] + f"... ({len(data)} bytes)"


# --------------------------------------------------------------------------------------------
# The async transport
# --------------------------------------------------------------------------------------------


def _never_connected(cause: BaseException) -> bool:
    """A link error that means no connection was ever made (refused, unreachable), as opposed
    to one that was made and broke."""
    return isinstance(cause, ConnectionRefusedError) or (
        isinstance(cause, OSError)
        and cause.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)
    )


class Transport:
    """Async, locked access to one instrument resource; see the module docstring."""

    def __init__(
        self,
        settings: TransportSettings,
        opener: Callable[[TransportSettings], RawLink] = open_link,
    ) -> None:
        self.settings = settings
        self._opener = opener
        self._link: RawLink | None = None
        self._stale = False
        self._lock = asyncio.Lock()
        self._read_term = settings.read_termination.encode(settings.encoding)
        self._write_term = settings.write_termination.encode(settings.encoding)
        self.reconnects = 0
        #: an exchange has succeeded on this resource (before that, a broken link is a failure
        #: to connect, not a lost connection)
        self.connected_once = False

    @property
    def resource(self) -> str:
        """The resource string."""
        return self.settings.resource

    # -- public async API ----------------------------------------------------------------------

    async def open(self) -> None:
        """Open the link (idempotent)."""
        async with self._lock:
            await asyncio.to_thread(self._ensure_link)

    async def close(self) -> None:
        """Close the link (idempotent)."""
        async with self._lock:
            await asyncio.to_thread(self._drop_link)

    async def write(self, command: str) -> None:
        """Send `command` plus the write termination."""
        await self.write_raw(command.encode(self.settings.encoding) + self._write_term)

    async def write_raw(self, data: bytes) -> None:
        """Send `data` exactly as given."""

        def op(link: RawLink) -> None:
            logger.debug("%s << %s", self.resource, _short(data))
            link.write(data)

        await self._run(op)

    async def query_raw(self, command: str) -> bytes:
        """Send `command`, return the reply without its terminator."""
        data = command.encode(self.settings.encoding) + self._write_term

        def op(link: RawLink) -> bytes:
            logger.debug("%s << %s", self.resource, _short(data))
            link.write(data)
            reply = link.read_until(self._read_term, self.settings.timeout_s)
            logger.debug("%s >> %s", self.resource, _short(reply))
            if not reply:
                raise TimeoutError
            if not reply.endswith(self._read_term):
                self._stale = True
                raise InstrumentProtocolError(
                    f"{self.resource}: truncated reply {_short(reply)} to {command!r} "
                    f"(no terminator {self._read_term!r})"
                )
            return reply[: -len(self._read_term)]

        return await self._run(op)

    async def query(self, command: str) -> str:
        """Send `command`, return the decoded reply without its terminator."""
        reply = await self.query_raw(command)
        try:
            return reply.decode(self.settings.encoding)
        except UnicodeDecodeError as exc:
            raise InstrumentProtocolError(
                f"{self.resource}: garbled reply {_short(reply)} to {command!r}"
            ) from exc

    async def query_block(self, command: str) -> bytes:
        """Send `command`, read one IEEE 488.2 block and exactly its terminator; return payload."""
        data = command.encode(self.settings.encoding) + self._write_term

        def op(link: RawLink) -> bytes:
            logger.debug("%s << %s", self.resource, _short(data))
            link.write(data)
            try:
                payload = _read_block(link, self._read_term, self.settings.timeout_s, self.resource)
            except InstrumentProtocolError:
                self._stale = True
                raise
            logger.debug("%s >> block of %d bytes", self.resource, len(payload))
            return payload

        return await self._run(op)

    async def write_block(self, prefix: str, payload: bytes) -> None:
        """Send `prefix` + definite-length block of `payload` + write termination."""
        await self.write_raw(
            prefix.encode(self.settings.encoding) + encode_block(payload) + self._write_term
        )

    # -- machinery -----------------------------------------------------------------------------

    async def _run(self, op: Callable[[RawLink], T]) -> T:
        async with self._lock:
            return await asyncio.to_thread(self._run_sync, op)

    def _run_sync(self, op: Callable[[RawLink], T]) -> T:
        retried = False
        while True:
            link = self._ensure_link()
            try:
                result = op(link)
                self.connected_once = True
                return result
            except TimeoutError as exc:
                self._stale = True
                if link.is_alive():
                    raise InstrumentTimeoutError(
                        f"{self.resource}: no reply within {self.settings.timeout_s} s"
                    ) from exc
                cause: BaseException = exc
            except (ConnectionError, OSError) as exc:
                cause = exc
            self._stale = True
            if not self.connected_once and _never_connected(cause):
                self._drop_link()
                raise InstrumentConnectionError(
                    f"{self.resource}: cannot connect ({type(cause).__name__}: {cause}); is the "
                    "instrument on, and is this its address?"
                ) from cause
            logger.warning("%s: connection lost (%r)", self.resource, cause)
            if retried or not self.settings.retry_after_reconnect:
                self._ensure_link()  # leave a working link behind if the instrument is back
                raise ConnectionLostError(
                    f"{self.resource}: connection lost ({type(cause).__name__}: {cause})"
                ) from cause
            retried = True

    def _drop_link(self) -> None:
        if self._link is not None:
            try:
                self._link.close()
            except OSError:
                logger.debug("%s: error while closing", self.resource, exc_info=True)
            self._link = None

    def _ensure_link(self) -> RawLink:
        if self._link is not None and not self._stale and self._link.is_alive():
            return self._link
        reopening = self._link is not None
        self._drop_link()
        self._stale = False
        attempts = 1 + (self.settings.reconnect_attempts if reopening else 0)
        last: InstrumentConnectionError | None = None
        for attempt in range(attempts):
            try:
                self._link = self._opener(self.settings)
            except InstrumentConnectionError as exc:
                last = exc
                logger.info("%s: open attempt %d failed: %s", self.resource, attempt + 1, exc)
                if attempt + 1 < attempts:
                    time.sleep(self.settings.reconnect_backoff_s * (2**attempt))
                continue
            if reopening:
                self.reconnects += 1
                logger.info("%s: reconnected", self.resource)
            return self._link
        if reopening:
            raise ConnectionLostError(
                f"{self.resource}: could not reconnect after {attempts} attempts: {last}"
            ) from last
        assert last is not None
        raise last
