"""Safety and fault tolerance of bench sessions.

* `check_finite` / `project_to_bounds`: NaN/inf never reaches an instrument; an update that
  would leave the parameter bounds is projected onto them and the projection is reported.
* `Interlock`: trips (`SafetyError`) when the *measured response* exceeds its amplitude limit —
  a high-Q network rings large from a small drive, so limiting the drive alone is not enough.
* `RetryPolicy` + `RetryingSystem`: transient instrument faults (timeouts, dropped connections,
  garbled or truncated replies, SCPI errors, overload/NaN readings) are retried with bounded
  exponential backoff; the *whole* measurement is repeated (parameters, inputs and forces are
  re-applied first), never skipped and never reordered, so the update it belongs to sees exactly
  the measurement it would have seen. A fault that persists past the retries raises
  `PersistentFault`, naming the instrument and the fault; the caller puts the bench in its safe
  state and keeps the last checkpoint (the run is paused, `physlearn train --resume` continues).
* `safe_exit`: every exit path — normal end, exception, instrument fault, SIGINT/SIGTERM — runs
  the system's `close()` (its safe state) before the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import InstrumentError, LimitError, SafetyError
from physlearn.spec.delegating import DelegatingSystem
from physlearn.spec.system import ForceWaveform, LinearFeedback, Observation, PhysicalSystem

log = logging.getLogger(__name__)
Array = NDArray[np.float64]
T = TypeVar("T")

__all__ = [
    "Interlock",
    "InterlockTrip",
    "PersistentFault",
    "RetryPolicy",
    "RetryingSystem",
    "check_finite",
    "project_to_bounds",
    "run_with_safe_exit",
]


class PersistentFault(InstrumentError):
    """An instrument fault that outlasted the retries; the run is paused in the safe state."""

    def __init__(self, message: str, *, instrument: str, fault: str):
        super().__init__(message)
        self.instrument = instrument
        self.fault = fault


class InterlockTrip(SafetyError):
    """The interlock tripped: the measured response exceeded its limit (the bench must go to
    its safe state; a run with ``[suspenders] interlock`` pauses there for an operator)."""


def check_finite(name: str, values: Array) -> Array:
    """``values`` as float64, or LimitError if any entry is NaN or inf (nothing is written)."""
    a = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))
        raise LimitError(
            f"{name}: refusing non-finite value(s) at {bad[:5].tolist()}; nothing was written"
        )
    return a


def project_to_bounds(alpha: Array, lower: Array, upper: Array) -> tuple[Array, list[int]]:
    """Project α onto [lower, upper] (after refusing NaN/inf); returns (α, projected indices)."""
    a = check_finite("parameters", alpha)
    p = np.clip(a, lower, upper)
    return p, [int(i) for i in np.flatnonzero(p != a)]


@dataclass
class Interlock:
    """Trips when |x| on any node exceeds ``max_response`` (node units)."""

    max_response: float
    trips: int = 0

    def check(self, x: Array, where: str = "") -> None:
        peak = float(np.max(np.abs(x))) if np.size(x) else 0.0
        if not math.isfinite(peak) or peak > self.max_response:
            self.trips += 1
            node = int(
                np.argmax(
                    np.max(np.abs(np.nan_to_num(x, nan=np.inf)), axis=tuple(range(x.ndim - 1)))
                )
            )
            raise InterlockTrip(
                f"interlock: measured response |x| = {peak:.4g} on node {node} exceeds the limit "
                f"{self.max_response:.4g}{(' (' + where + ')') if where else ''}; the bench is "
                "put in its safe state"
            )


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: ``attempts`` in total, backoff_s · 2^k between them (wall time)."""

    attempts: int = 4
    backoff_s: float = 0.05
    max_backoff_s: float = 2.0

    def delay(self, k: int) -> float:
        return min(self.backoff_s * (2.0**k), self.max_backoff_s)


def fault_origin(exc: BaseException) -> str:
    """The instrument (resource or name) an InstrumentError names, as well as it can be told."""
    for attr in ("instrument", "resource"):
        v = getattr(exc, attr, None)
        if v:
            return str(v)
    text = str(exc)
    return text.split(":", 1)[0] if ":" in text else "unknown instrument"


@dataclass
class FaultLog:
    """Faults seen (kind, instrument, message, attempt) — written to the per-step records;
    ``listeners`` are told of each as it happens (telemetry's ``retry`` events)."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    listeners: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)

    def add(self, exc: BaseException, attempt: int) -> None:
        entry = {
            "kind": type(exc).__name__,
            "instrument": fault_origin(exc),
            "message": str(exc)[:300],
            "attempt": attempt,
        }
        self.entries.append(entry)
        for listener in self.listeners:
            listener(dict(entry))

    def drain(self) -> list[dict[str, Any]]:
        out, self.entries = self.entries, []
        return out


class RetryingSystem(DelegatingSystem):
    """Wraps a system: a measurement that fails with a transient `InstrumentError` is repeated
    (after re-applying parameters, inputs and forces) up to the policy's attempts.

    `LimitError` and `SafetyError` are never retried (they are decisions, not faults).
    """

    def __init__(
        self,
        inner: PhysicalSystem,
        policy: RetryPolicy | None = None,
        *,
        on_fault: Callable[[], Awaitable[None]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        super().__init__(inner)
        self.policy = policy or RetryPolicy()
        self.faults = FaultLog()
        self._on_fault = on_fault
        self._sleep = sleep
        self._alpha: Array | None = None
        self._u: Array | None = None
        self._forces: ForceWaveform | None = None
        self._echo: ForceWaveform | None = None
        self._echo_set = False
        self._feedback: LinearFeedback | None = None

    async def _retry(self, what: str, op: Callable[[], Coroutine[Any, Any, T]]) -> T:
        last: BaseException | None = None
        for attempt in range(self.policy.attempts):
            try:
                return await op()
            except (LimitError, SafetyError):
                raise
            except InstrumentError as exc:
                last = exc
                self.faults.add(exc, attempt)
                log.warning(
                    "%s failed (attempt %d of %d): %s", what, attempt + 1, self.policy.attempts, exc
                )
                if attempt + 1 < self.policy.attempts:
                    await self._sleep(self.policy.delay(attempt))
                    if self._on_fault is not None:
                        try:
                            await self._on_fault()
                        except InstrumentError as exc2:
                            self.faults.add(exc2, attempt)
                            log.warning("recovery after the fault failed: %s", exc2)
        assert last is not None
        inst = fault_origin(last)
        raise PersistentFault(
            f"persistent fault on {inst} during {what} after {self.policy.attempts} attempts: "
            f"{type(last).__name__}: {last}",
            instrument=inst,
            fault=type(last).__name__,
        ) from last

    async def _reapply(self) -> None:
        if self._alpha is not None:
            await self.inner.set_parameters(self._alpha)
        if self._u is not None:
            await self.inner.set_input(self._u)
        if self._echo_set:
            await self.inner.set_echo_drive(self._echo)
        if self._feedback is not None:
            await self.inner.set_feedback(self._feedback)
        await self.inner.set_forces(self._forces)

    async def set_parameters(self, alpha: Array) -> None:
        a = np.array(alpha, dtype=float)
        await self._retry("set_parameters", lambda: self.inner.set_parameters(a))
        self._alpha = a

    async def set_input(self, u: Array) -> None:
        uu = np.array(u, dtype=float)
        await self._retry("set_input", lambda: self.inner.set_input(uu))
        self._u, self._forces, self._echo, self._echo_set = uu, None, None, False
        self._feedback = None

    async def set_forces(self, forces: ForceWaveform | None) -> None:
        await self._retry("set_forces", lambda: self.inner.set_forces(forces))
        self._forces = forces

    async def set_echo_drive(self, drive: ForceWaveform | None) -> None:
        await self._retry("set_echo_drive", lambda: self.inner.set_echo_drive(drive))
        self._echo, self._echo_set = drive, drive is not None

    async def set_feedback(self, feedback: LinearFeedback | None) -> None:
        await self._retry("set_feedback", lambda: self.inner.set_feedback(feedback))
        self._feedback = feedback

    async def drive_peak(self) -> Array:
        return await self._retry("drive_peak", self.inner.drive_peak)

    async def drive_forces(self) -> Array:
        return await self._retry("drive_forces", self.inner.drive_forces)

    async def measure(self) -> Observation:
        first = True

        async def op() -> Observation:
            nonlocal first
            if not first:
                await self._reapply()
            first = False
            return await self.inner.measure()

        return await self._retry("measure", op)


async def run_with_safe_exit(main: Coroutine[Any, Any, T], system: PhysicalSystem | None) -> T:
    """Run ``main``; SIGINT/SIGTERM cancel it; whatever happens, ``system.close()`` (the safe
    state) runs before this returns or re-raises. A signal re-raises as KeyboardInterrupt."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    got: list[int] = []

    def on_signal(signum: int) -> None:
        log.warning("signal %d received: stopping, putting the bench in its safe state", signum)
        got.append(signum)
        task.cancel()

    installed: list[int] = []
    for signum in (int(signal.SIGINT), int(signal.SIGTERM)):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError) as exc:
            # Not the main thread, or a platform without loop signal handlers: exceptions and
            # cancellation still reach the safe state, but this signal will not.
            log.warning(
                "cannot handle signal %d here (%s): no safe exit on that signal", signum, exc
            )
    try:
        return await task
    except asyncio.CancelledError:
        if got:
            raise KeyboardInterrupt(f"stopped by signal {got[0]}") from None
        raise
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        if system is not None:
            try:
                await asyncio.shield(system.close())
            except Exception:
                log.exception("putting the system in its safe state failed")
                raise
