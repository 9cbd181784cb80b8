"""The twin-control endpoint: the emulated bench's clock, never reachable through an instrument.

In memory, `TwinControl` offers `await advance(dt_s)`, `now()` and `mode`. Over TCP,
`TwinControlServer` serves a small line protocol (ASCII, LF-terminated, case-insensitive) on a
local socket beside the instrument ports:

    ADVANCE <seconds>   →  OK <now>       advance the twin by <seconds>; reply when done
    NOW?                →  <now>          twin time in seconds
    MODE?               →  VIRTUAL | FREE <speed>
    anything else       →  ERR <message>

Times are printed with `repr(float)` (shortest round-trip form), so a client reads exactly the
twin's float. `TwinControlClient` is the async client.

Ordering. Instruments and the twin control are separate connections: over TCP/pty an
instrument write returns once sent, not once executed. A controller must complete its commands
(`*OPC?` or any query on that instrument) before `ADVANCE`, exactly as it must on hardware before
it starts waiting; then every command acts at the same virtual time on every transport, and
same seed + same commands give bit-identical data.

Modes. *Virtual*: time moves only when told to; `advance` moves the `VirtualClock` and integrates
the network up to the new time before replying, so a measurement taken after too short an
advance sees the transient, as on hardware. *Free-running*: the twin follows `PacedClock(speed)`;
`advance` waits (speed-scaled) wall time and a pacing thread keeps the integration up to date,
for software that knows nothing of the twin clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import threading
from typing import Protocol

from physlearn.errors import ConfigError, InstrumentConnectionError, InstrumentProtocolError
from physlearn.simulators.clock import PacedClock, TimeSource, VirtualClock

logger = logging.getLogger(__name__)

_POLL_S = 0.05
_JOIN_S = 2.0
_MAX_LINE = 256


class Syncable(Protocol):
    """What the endpoint needs from the twin: commit the integration up to the clock's now."""

    def sync(self) -> int:
        """Integrate up to now; return the last committed step index."""
        ...


def _check_dt(dt_s: float) -> float:
    try:
        dt = float(dt_s)
    except (TypeError, ValueError):
        raise ConfigError(f"advance: {dt_s!r} is not a number of seconds") from None
    if not (math.isfinite(dt) and dt >= 0.0):
        raise ConfigError(f"advance: dt_s must be finite and >= 0, got {dt_s!r}")
    return dt


class TwinControl:
    """In-memory twin control of one emulated bench (virtual or free-running)."""

    def __init__(self, clock: TimeSource, twin: Syncable, *, pace_s: float = 0.02) -> None:
        if not isinstance(clock, VirtualClock | PacedClock):
            raise ConfigError(f"TwinControl: unsupported clock {type(clock).__name__}")
        self.clock = clock
        self.twin = twin
        self.pace_s = float(pace_s)
        self._stop = threading.Event()
        self._pacer: threading.Thread | None = None

    @property
    def mode(self) -> str:
        """``virtual`` or ``free``."""
        return "virtual" if isinstance(self.clock, VirtualClock) else "free"

    @property
    def speed(self) -> float:
        """Twin seconds per wall second (free-running); 0 in virtual mode."""
        return self.clock.speed if isinstance(self.clock, PacedClock) else 0.0

    def now(self) -> float:
        """Twin time in seconds."""
        return self.clock.now()

    def advance_blocking(self, dt_s: float, stop: threading.Event | None = None) -> float:
        """Advance the twin by `dt_s` seconds and integrate up to the new time; return it."""
        dt = _check_dt(dt_s)
        if isinstance(self.clock, VirtualClock):
            t = self.clock.advance(dt)
            self.twin.sync()
            return t
        target = self.clock.now() + dt
        halt = stop if stop is not None else self._stop
        while True:
            remaining = (target - self.clock.now()) / self.clock.speed
            if remaining <= 0.0 or halt.wait(min(remaining, _POLL_S)):
                break
        self.twin.sync()
        return self.clock.now()

    async def advance(self, dt_s: float) -> float:
        """Advance the twin by `dt_s` seconds (off the event loop); return the new time."""
        dt = _check_dt(dt_s)
        return await asyncio.to_thread(self.advance_blocking, dt)

    # ------------------------------------------------------------------ free-running pacing
    def start(self) -> None:
        """Free-running: start the pacing thread that keeps the integration near real time."""
        if self.mode != "free" or self._pacer is not None:
            return
        self._stop.clear()
        self._pacer = threading.Thread(target=self._pace, name="twin-pacer", daemon=True)
        self._pacer.start()

    def stop(self) -> None:
        """Stop the pacing thread (idempotent) and release any waiting `advance`."""
        self._stop.set()
        if self._pacer is not None:
            self._pacer.join(_JOIN_S)
            if self._pacer.is_alive():
                logger.error("twin pacer did not stop")
            self._pacer = None

    def _pace(self) -> None:
        while not self._stop.wait(self.pace_s):
            try:
                self.twin.sync()
            except Exception:  # keep serving; the error is also raised to the next query
                logger.exception("twin integration failed")
                return

    # ------------------------------------------------------------------ line protocol
    def handle_line(self, line: str, stop: threading.Event | None = None) -> str:
        """Execute one protocol line; return the reply line (without terminator)."""
        words = line.strip().split()
        if not words:
            return "ERR empty command"
        head = words[0].upper()
        try:
            if head == "ADVANCE" and len(words) == 2:
                return f"OK {self.advance_blocking(float(words[1]), stop)!r}"
            if head == "NOW?" and len(words) == 1:
                return repr(self.now())
            if head == "MODE?" and len(words) == 1:
                return "VIRTUAL" if self.mode == "virtual" else f"FREE {self.speed!r}"
        except ValueError as exc:
            return f"ERR {exc}"
        return f"ERR unknown command {line.strip()[:64]!r}; use ADVANCE <s>, NOW?, MODE?"


class TwinControlServer:
    """Serves a `TwinControl` on a local TCP socket (threaded; bounded shutdown)."""

    def __init__(self, control: TwinControl, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.control = control
        self.host = host
        self._requested_port = port
        self.port = 0
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        """``tcp://<host>:<port>``."""
        return f"tcp://{self.host}:{self.port}"

    def start(self) -> None:
        if self._listener is not None:
            return
        self._stop.clear()
        self._listener = socket.create_server((self.host, self._requested_port))
        self._listener.settimeout(_POLL_S)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)
        logger.info("twin control on %s", self.address)

    def stop(self) -> None:
        if self._listener is None:
            return
        self._stop.set()
        self._listener.close()
        with self._lock:
            for c in list(self._clients):
                _close(c)
        for th in self._threads:
            th.join(_JOIN_S)
            if th.is_alive():
                logger.error("twin control thread %s did not stop", th.name)
        self._threads.clear()
        self._listener = None

    def __enter__(self) -> TwinControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: object, *args: object) -> None:
        th = threading.Thread(target=target, args=args, daemon=True, name="twin-control")  # type: ignore[arg-type]
        self._threads.append(th)
        th.start()

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
            with self._lock:
                self._clients.add(conn)
            self._spawn(self._client_loop, conn)

    def _client_loop(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    reply = self._reply(raw)
                    try:
                        conn.sendall(reply.encode("ascii") + b"\n")
                    except OSError:
                        return
                if len(buf) > _MAX_LINE:
                    buf = b""
                    conn.sendall(b"ERR line too long\n")
        finally:
            with self._lock:
                self._clients.discard(conn)
            _close(conn)

    def _reply(self, raw: bytes) -> str:
        try:
            line = raw.decode("ascii").rstrip("\r")
        except UnicodeDecodeError:
            return "ERR not ASCII"
        try:
            return self.control.handle_line(line, self._stop)
        except Exception as exc:  # an integration failure is reported, the server keeps going
            logger.exception("twin control: %s failed", line)
            return f"ERR {type(exc).__name__}: {exc}"


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def parse_address(address: str) -> tuple[str, int]:
    """``tcp://host:port`` → (host, port)."""
    rest = address.removeprefix("tcp://")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"twin control address must look like tcp://127.0.0.1:5000, got {address!r}"
        )
    return host, int(port)


class TwinControlClient:
    """Async client of `TwinControlServer` (the emulated bench's clock, seen by a controller)."""

    def __init__(self, address: str, *, timeout_s: float = 30.0) -> None:
        self.host, self.port = parse_address(address)
        self.timeout_s = float(timeout_s)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout_s
            )
        except (OSError, TimeoutError) as exc:
            raise InstrumentConnectionError(
                f"cannot reach twin control at tcp://{self.host}:{self.port}: {exc}"
            ) from exc

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
            self._writer = self._reader = None

    async def __aenter__(self) -> TwinControlClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _ask(self, line: str, timeout_s: float | None = None) -> str:
        async with self._lock:
            if self._writer is None or self._reader is None:
                await self.connect()
            assert self._writer is not None and self._reader is not None
            self._writer.write(line.encode("ascii") + b"\n")
            await self._writer.drain()
            try:
                raw = await asyncio.wait_for(self._reader.readline(), timeout_s or self.timeout_s)
            except TimeoutError as exc:
                raise InstrumentConnectionError(f"twin control: no reply to {line!r}") from exc
        reply = raw.decode("ascii").strip()
        if not raw.endswith(b"\n"):
            raise InstrumentConnectionError(f"twin control closed the connection during {line!r}")
        if reply.startswith("ERR"):
            raise InstrumentProtocolError(f"twin control: {line!r} → {reply}")
        return reply

    async def advance(self, dt_s: float) -> float:
        """Advance the twin by `dt_s` seconds; return the new twin time."""
        dt = _check_dt(dt_s)
        reply = await self._ask(f"ADVANCE {dt!r}", self.timeout_s + dt)
        if not reply.startswith("OK "):
            raise InstrumentProtocolError(f"twin control: unexpected reply {reply!r}")
        return float(reply[3:])

    async def now(self) -> float:
        """Twin time in seconds."""
        return float(await self._ask("NOW?"))

    async def mode(self) -> str:
        """``VIRTUAL`` or ``FREE <speed>``."""
        return await self._ask("MODE?")
