"""Serve an emulator over TCP (127.0.0.1), a serial pty, or in memory — same bytes on all three.

An emulator is anything implementing `Emulator`: `message_splitter()` (input framing),
`process(message) -> reply bytes`, `faults` (a `FaultPlan`) and `response_terminator`.
Every transport runs the same `serve_message` on each complete message, so the replies (and
the injected faults) are bit-identical across transports.

Servers run in daemon threads, start with `start()` (or `with`), stop with `stop()`, which
closes every socket/fd and joins the threads with a bounded wait: nothing hangs at shutdown.
"""

from __future__ import annotations

import abc
import logging
import os
import select
import socket
import threading
import tty
from dataclasses import dataclass, field
from typing import Protocol

from physlearn.drivers.link import register_memory_resource, unregister_memory_resource
from physlearn.simulators.instruments.faults import FaultPlan, ReplyAction
from physlearn.simulators.instruments.scpi import MessageSplitter

logger = logging.getLogger(__name__)

_POLL_S = 0.05
_JOIN_S = 2.0


class Emulator(Protocol):
    """What a transport needs from an instrument emulator."""

    faults: FaultPlan
    response_terminator: bytes
    model: str

    def message_splitter(self) -> MessageSplitter:
        """A fresh input framer for one connection."""
        ...

    def process(self, message: bytes) -> bytes:
        """Execute one program message; return the reply bytes (b"" if none)."""
        ...


def serve_message(emulator: Emulator, message: bytes) -> ReplyAction:
    """Process one message through the emulator's fault plan; the single path of every server."""
    if not emulator.faults.before_message():
        return ReplyAction(b"", 0.0, drop_connection=True)
    try:
        reply = emulator.process(message)
    except Exception:
        # an emulator bug must not take the server (and every later message) down with it:
        # said loudly, no reply (the client times out on a query), the server goes on
        logger.exception("%s: the emulator failed on %r; no reply", emulator.model, message[:80])
        return ReplyAction(b"", 0.0)
    return emulator.faults.after_message(reply, emulator.response_terminator)


class _Server(abc.ABC):
    """Start/stop plumbing shared by the threaded servers."""

    def __init__(self, emulator: Emulator, name: str) -> None:
        self.emulator = emulator
        self.name = name
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(
            target=target,  # type: ignore[arg-type]
            args=args,
            name=f"{type(self).__name__}-{self.name}",
            daemon=True,
        )
        self._threads.append(thread)
        thread.start()

    def _join(self) -> None:
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(_JOIN_S)
                if thread.is_alive():
                    logger.error("%s: thread %s did not stop", self.name, thread.name)
        self._threads.clear()

    def __enter__(self) -> _Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @abc.abstractmethod
    def start(self) -> None:
        """Start serving (idempotent)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop serving (idempotent)."""


class TcpServer(_Server):
    """Raw-socket server on `host:port` (port 0: any free port; see `port` after `start()`).

    Several clients may connect at once; they share the emulator (its lock serialises them).
    """

    def __init__(
        self, emulator: Emulator, *, host: str = "127.0.0.1", port: int = 0, name: str = "tcp"
    ) -> None:
        super().__init__(emulator, name)
        self.host = host
        self._requested_port = port
        self._listener: socket.socket | None = None
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        self.port = 0

    @property
    def resource_string(self) -> str:
        """VISA resource string of this server, e.g. `TCPIP0::127.0.0.1::5025::SOCKET`."""
        return f"TCPIP0::{self.host}::{self.port}::SOCKET"

    def start(self) -> None:
        if self._started:
            return
        self._listener = socket.create_server((self.host, self._requested_port))
        self._listener.settimeout(_POLL_S)
        self.port = self._listener.getsockname()[1]
        self._started = True
        self._spawn(self._accept_loop)
        logger.info("%s serving on %s", self.name, self.resource_string)

    def stop(self) -> None:
        if not self._started:
            return
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        with self._clients_lock:
            for client in list(self._clients):
                _close_socket(client)
        self._join()
        self._started = False
        self._stop.clear()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            conn.settimeout(_POLL_S)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._clients_lock:
                self._clients.add(conn)
            self._spawn(self._client_loop, conn)

    def _client_loop(self, conn: socket.socket) -> None:
        splitter = self.emulator.message_splitter()
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                if not self._handle(conn, splitter.feed(data)):
                    break
        finally:
            with self._clients_lock:
                self._clients.discard(conn)
            _close_socket(conn)

    def _handle(self, conn: socket.socket, messages: list[bytes]) -> bool:
        for message in messages:
            action = serve_message(self.emulator, message)
            if action.delay_s > 0 and self._stop.wait(action.delay_s):
                return False
            if action.reply:
                try:
                    conn.sendall(action.reply)
                except OSError:
                    return False
            if action.drop_connection:
                logger.info("%s: dropping connection (fault)", self.name)
                return False
        return True


def _close_socket(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class PtyServer(_Server):
    """Serial-port emulation on a pseudo-terminal in raw mode.

    `path` is the slave device (`/dev/pts/N`), opened by pyserial or as `ASRL<path>::INSTR`.
    The server keeps its own slave fd open, so clients may close and reopen the port. A
    dropped "connection" discards the input buffered so far (a serial line has no connection);
    `vanish()` closes the pty for good, as when a USB-serial adapter is unplugged.
    """

    def __init__(self, emulator: Emulator, *, name: str = "pty") -> None:
        super().__init__(emulator, name)
        self._master = -1
        self._slave = -1
        self._wake_r = -1
        self._wake_w = -1
        self.path = ""

    @property
    def resource_string(self) -> str:
        """VISA resource string, e.g. `ASRL/dev/pts/5::INSTR`."""
        return f"ASRL{self.path}::INSTR"

    def start(self) -> None:
        if self._started:
            return
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        tty.setraw(self._master)
        self.path = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._started = True
        self._spawn(self._loop)
        logger.info("%s serving on %s", self.name, self.resource_string)

    def stop(self) -> None:
        if not self._started:
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._join()
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = self._wake_r = self._wake_w = -1
        self._started = False
        self._stop.clear()

    def vanish(self) -> None:
        """Close the pty: the device path disappears, open ports get I/O errors."""
        self.stop()

    def _loop(self) -> None:
        splitter = self.emulator.message_splitter()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master, self._wake_r], [], [], _POLL_S)
            if self._wake_r in ready or self._master not in ready:
                continue
            try:
                data = os.read(self._master, 65536)
            except OSError:
                continue
            for message in splitter.feed(data):
                action = serve_message(self.emulator, message)
                if action.delay_s > 0 and self._stop.wait(action.delay_s):
                    return
                if action.reply:
                    self._write_all(action.reply)
                if action.drop_connection:
                    splitter.reset()
                    break

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._stop.is_set():
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                select.select([], [self._master], [], _POLL_S)
                continue
            except OSError:
                return
            view = view[n:]


@dataclass
class _Pending:
    data: bytes
    delay_s: float


@dataclass
class InMemoryConnection:
    """One client connection to an in-memory emulator; a `RawLink` for the drivers.

    Time is virtual: a reply delayed by `d` seconds arrives during a read only if the reader
    waits at least `d` (its timeout); otherwise the read times out at once and the reply stays
    pending, to arrive during a later read — exactly like a late reply on a real line.
    """

    emulator: Emulator
    _splitter: MessageSplitter = field(init=False)
    _buffer: bytearray = field(default_factory=bytearray)
    _pending: list[_Pending] = field(default_factory=list)
    _closed_by_peer: bool = False
    _closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._splitter = self.emulator.message_splitter()

    def write(self, data: bytes) -> None:
        """Feed bytes to the emulator; replies are queued for reading."""
        with self._lock:
            if self._closed or self._closed_by_peer:
                raise ConnectionResetError("in-memory connection closed by the instrument")
            for message in self._splitter.feed(data):
                action = serve_message(self.emulator, message)
                if action.reply:
                    self._pending.append(_Pending(action.reply, action.delay_s))
                if action.drop_connection:
                    self._closed_by_peer = True
                    break

    def _pull(self, budget_s: float) -> float:
        """Move the next pending reply into the buffer if it arrives within `budget_s`."""
        head = self._pending[0]
        if head.delay_s <= budget_s:
            self._buffer.extend(head.data)
            self._pending.pop(0)
            return budget_s - head.delay_s
        head.delay_s -= budget_s
        return -1.0

    def read_until(self, terminator: bytes, timeout_s: float) -> bytes:
        """Read up to and including `terminator`; on timeout return the partial data."""
        with self._lock:
            budget = timeout_s
            while terminator not in self._buffer:
                if not self._pending:
                    if self._closed_by_peer and not self._buffer:
                        raise ConnectionResetError("in-memory connection closed by the instrument")
                    break
                budget = self._pull(budget)
                if budget < 0:
                    break
            idx = self._buffer.find(terminator)
            end = len(self._buffer) if idx < 0 else idx + len(terminator)
            out = bytes(self._buffer[:end])
            del self._buffer[:end]
            return out

    def read_exact(self, n_bytes: int, timeout_s: float) -> bytes:
        """Read exactly `n_bytes`; TimeoutError (data kept) if they do not arrive in time."""
        with self._lock:
            budget = timeout_s
            while len(self._buffer) < n_bytes:
                if not self._pending:
                    if self._closed_by_peer and not self._buffer:
                        raise ConnectionResetError("in-memory connection closed by the instrument")
                    raise TimeoutError(f"{len(self._buffer)} of {n_bytes} bytes")
                budget = self._pull(budget)
                if budget < 0:
                    raise TimeoutError(f"{len(self._buffer)} of {n_bytes} bytes")
            out = bytes(self._buffer[:n_bytes])
            del self._buffer[:n_bytes]
            return out

    def is_alive(self) -> bool:
        """False once the instrument side dropped the connection."""
        return not (self._closed or self._closed_by_peer)

    def close(self) -> None:
        """Close the client side."""
        self._closed = True


class InMemoryServer:
    """Registers an emulator as `MEM::<name>::INSTR` for the drivers' transport layer."""

    def __init__(self, emulator: Emulator, *, name: str) -> None:
        self.emulator = emulator
        self.name = name
        self._started = False

    @property
    def resource_string(self) -> str:
        """The in-memory resource string."""
        return f"MEM::{self.name}::INSTR"

    def connect(self) -> InMemoryConnection:
        """A new client connection (what the drivers' transport opens)."""
        return InMemoryConnection(self.emulator)

    def start(self) -> None:
        """Register the resource (idempotent)."""
        if not self._started:
            register_memory_resource(self.name, self.connect)
            self._started = True

    def stop(self) -> None:
        """Unregister the resource (idempotent)."""
        if self._started:
            unregister_memory_resource(self.name)
            self._started = False

    def __enter__(self) -> InMemoryServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
