"""Transport-level fault injection shared by every emulator and every transport.

Each emulator owns one `FaultPlan` (`emulator.faults`); every transport serving it asks the plan
what to do with each reply, so a fault behaves the same over TCP, a pty and the in-memory link.
Instrument-level faults are methods of the emulators themselves: extra error-queue entries
(`ScpiInstrument.push_error`, every emulator), invalid/NaN readings
(`RigolDs1000zEmulator.inject_invalid_readings`, `SrsLockinEmulator.inject_invalid_readings`),
overload/unlock status (`SrsLockinEmulator.inject_lia_status`), a DAC losing its setpoints
(`Qdac2Emulator.lose_setpoints`); a pty that disappears is `PtyServer.vanish()`. On an
`EmulatedBench` everything is reached through `bench.emulators[name]` (see docs/instruments.md).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class ReplyAction:
    """What a transport does after the emulator processed one message.

    Attributes:
        reply: bytes to send (possibly garbled/truncated; b"" sends nothing).
        delay_s: wait this long (wall clock on real transports, virtual in memory) before sending.
        drop_connection: close the connection after sending `reply`.
    """

    reply: bytes
    delay_s: float = 0.0
    drop_connection: bool = False


def garble(reply: bytes, terminator: bytes = b"\n") -> bytes:
    """Deterministically corrupt a reply: every payload byte gets its high bit set.

    The terminator is kept, so the reader receives a complete but unreadable (non-ASCII) reply;
    no garbled byte can be a terminator.
    """
    body = reply[: -len(terminator)] if terminator and reply.endswith(terminator) else reply
    tail = reply[len(body) :]
    return bytes(0x80 | (b ^ 0x5A) for b in body) + tail


def truncate(reply: bytes) -> bytes:
    """Keep the first half of a reply and drop its terminator (a reply cut short)."""
    return reply[: max(1, len(reply) // 2)] if len(reply) > 1 else b""


class FaultPlan:
    """Faults armed on an emulator; thread-safe. Counts are numbers of *messages* (replies).

    - `delay_replies(delay_s, count)`: delay the next `count` replies (None: until cleared).
    - `suppress_replies(count)`: process the next `count` messages but never answer them.
    - `drop_connection_after(n)`: answer `n` more messages normally, then close the connection
      right after the n-th reply (n = 0: close on the next message without processing it).
      On a pty, which has no connection, the server discards its buffered input instead.
    - `garble_replies(count)`, `truncate_replies(count)`: corrupt the next `count` replies.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._delay_s = 0.0
            self._delay_count: int | None = 0
            self._suppress = 0
            self._drop_after: int | None = None
            self._garble = 0
            self._truncate = 0

    def delay_replies(self, delay_s: float, count: int | None = 1) -> None:
        """Delay the next `count` replies by `delay_s` seconds (count None: all)."""
        if not delay_s >= 0.0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s!r}")
        with self._lock:
            self._delay_s = float(delay_s)
            self._delay_count = count

    def suppress_replies(self, count: int = 1) -> None:
        """Never answer the next `count` messages (they are still executed)."""
        with self._lock:
            self._suppress += count

    def drop_connection_after(self, n_messages: int) -> None:
        """Close the connection after `n_messages` more answered messages."""
        if n_messages < 0:
            raise ValueError("n_messages must be >= 0")
        with self._lock:
            self._drop_after = n_messages

    def garble_replies(self, count: int = 1) -> None:
        """Corrupt the next `count` non-empty replies (see `garble`)."""
        with self._lock:
            self._garble += count

    def truncate_replies(self, count: int = 1) -> None:
        """Cut the next `count` non-empty replies short (see `truncate`)."""
        with self._lock:
            self._truncate += count

    def before_message(self) -> bool:
        """Called when a message arrives; False means: drop the connection, do not process."""
        with self._lock:
            if self._drop_after == 0:
                self._drop_after = None
                return False
            return True

    def after_message(self, reply: bytes, terminator: bytes = b"\n") -> ReplyAction:
        """Shape the reply of a processed message according to the armed faults."""
        with self._lock:
            drop = False
            if self._drop_after is not None:
                self._drop_after -= 1
                if self._drop_after == 0:
                    self._drop_after = None
                    drop = True
            if not reply:
                return ReplyAction(b"", 0.0, drop)
            delay = 0.0
            if self._delay_count is None or self._delay_count > 0:
                delay = self._delay_s
                if self._delay_count is not None:
                    self._delay_count -= 1
            if self._suppress > 0:
                self._suppress -= 1
                return ReplyAction(b"", delay, drop)
            if self._garble > 0:
                self._garble -= 1
                reply = garble(reply, terminator)
            elif self._truncate > 0:
                self._truncate -= 1
                reply = truncate(reply)
            return ReplyAction(reply, delay, drop)
