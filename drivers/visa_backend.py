"""A `RawLink` over pyvisa with the pure-Python backend (`@py`): TCPIP SOCKET and ASRL.

pyvisa-py reports a peer that closed a socket as a read timeout (it cannot tell EOF from
silence); `is_alive` peeks at the socket so that the transport can tell the two apart.

TCP sockets are opened with TCP_NODELAY, as NI-VISA does by default (VI_ATTR_TCPIP_NODELAY):
without it a command followed by a query (every write with its `SYST:ERR?` check) waits for
the instrument's delayed ACK, about 40 ms per exchange on Linux. pyvisa-py's setter for that
attribute on SOCKET sessions raises UnknownAttribute, so the option is set on its socket.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import pyvisa
from pyvisa import constants

from physlearn.drivers.link import TransportSettings
from physlearn.errors import InstrumentConnectionError

_SOCKET_POLL_S = 0.05
_rm_lock = threading.Lock()
_resource_manager: pyvisa.ResourceManager | None = None


def resource_manager() -> pyvisa.ResourceManager:
    """The process-wide pyvisa-py resource manager (created on first use).

    pyvisa shares one manager per VISA library, so any other code in the process (a
    third-party script, a test) that calls `ResourceManager("@py").close()` closes ours too;
    a closed manager is replaced by a fresh one instead of failing every later open.
    """
    global _resource_manager
    with _rm_lock:
        rm = _resource_manager
        if rm is None or rm.visalib.resource_manager is not rm:
            rm = _resource_manager = pyvisa.ResourceManager("@py")
        return rm


def _timeout_ms(timeout_s: float) -> int:
    return max(1, round(timeout_s * 1000))


class VisaLink:
    """Byte-level access to one pyvisa resource; termination handling is done by the caller."""

    def __init__(self, resource: str, settings: TransportSettings) -> None:
        self.resource_name = resource
        kwargs: dict[str, Any] = {
            "read_termination": settings.read_termination,
            "write_termination": "",
            "timeout": _timeout_ms(settings.timeout_s),
        }
        if resource.upper().startswith("ASRL"):
            kwargs["baud_rate"] = settings.baud_rate
        try:
            self._res: Any = resource_manager().open_resource(resource, **kwargs)
        except (pyvisa.errors.VisaIOError, OSError, ValueError) as exc:
            raise InstrumentConnectionError(f"cannot open {resource}: {exc}") from exc
        self._timeout_s = settings.timeout_s
        sock = self._socket()
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _set_timeout(self, timeout_s: float) -> None:
        if timeout_s != self._timeout_s:
            self._res.timeout = _timeout_ms(timeout_s)
            self._timeout_s = timeout_s

    @staticmethod
    def _map(exc: pyvisa.errors.VisaIOError) -> OSError:
        if exc.error_code == constants.StatusCode.error_timeout:
            return TimeoutError(str(exc))
        return ConnectionResetError(str(exc))

    def write(self, data: bytes) -> None:
        try:
            self._res.write_raw(data)
        except pyvisa.errors.VisaIOError as exc:
            raise self._map(exc) from exc

    def read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        """Read to the termination; on a socket, poll in short slices so that a peer that
        closed the connection is noticed at once instead of after the whole timeout."""
        deadline = time.monotonic() + timeout_s
        poll_s = _SOCKET_POLL_S if self._socket() is not None else timeout_s
        while True:
            self._set_timeout(max(0.001, min(poll_s, deadline - time.monotonic())))
            try:
                data: bytes = self._res.read_raw()
            except pyvisa.errors.VisaIOError as exc:
                mapped = self._map(exc)
                if not isinstance(mapped, TimeoutError):
                    raise mapped from exc
                if not self.is_alive():
                    raise ConnectionResetError(f"{self.resource_name}: closed by peer") from exc
                if time.monotonic() >= deadline:
                    return b""
                continue
            return data

    def read_exact(self, n_bytes: int, timeout_s: float) -> bytes:
        self._set_timeout(timeout_s)
        try:
            data: bytes = self._res.read_bytes(n_bytes, break_on_termchar=False)
        except pyvisa.errors.VisaIOError as exc:
            raise self._map(exc) from exc
        return data

    def _socket(self) -> socket.socket | None:
        try:
            session = self._res.visalib.sessions[self._res.session]
        except (AttributeError, KeyError, pyvisa.errors.InvalidSession):
            return None
        sock = getattr(session, "interface", None)
        return sock if isinstance(sock, socket.socket) else None

    def is_alive(self) -> bool:
        sock = self._socket()
        if sock is not None:
            try:
                return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
        if self.resource_name.upper().startswith("ASRL/"):
            return os.path.exists(self.resource_name[4:].rsplit("::", 1)[0])
        return True

    def close(self) -> None:
        try:
            self._res.close()
        except (pyvisa.errors.VisaIOError, pyvisa.errors.InvalidSession, OSError):
            pass
