"""`TelemetryPublisher`: a listener of the run's events that turns them into the topics' payloads
(`physlearn.telemetry.payloads`, docs/telemetry.md) and remote commands into `RunControl`
requests.

It never blocks the training loop: a call builds a small JSON payload, appends one line to the
run's ``telemetry.jsonl`` (the run's own record of everything published, and what ``physlearn
watch RUN_DIR`` reads without a broker) and queues it on the `MqttLink` (thread-safe), whose
thread does the network I/O. It reads the event and never changes the run: a run with
telemetry trains bit-identically to one without.

Commands arrive in the link's thread (`on_control`): checked (`CommandCheck`), then posted to
the run's `RunControl` (``source`` ``mqtt:<user>``) and acknowledged on ``events`` (kind
``command``, with the sender), or refused and reported (kind ``command_refused``, with why).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from physlearn.telemetry.link import MqttLink, Outgoing
from physlearn.telemetry.payloads import SCHEMA, CommandCheck, dumps, iso_time
from physlearn.training.control import RunControl
from physlearn.training.events import (
    EpochDone,
    Fault,
    RunEvent,
    RunFinished,
    RunPaused,
    RunResumed,
    RunStarted,
    StepDone,
    Suspended,
)

log = logging.getLogger(__name__)

__all__ = ["LOG_FILE", "StepClock", "TelemetryPublisher"]

#: in the run directory: every payload published, one JSON object per line
LOG_FILE = "telemetry.jsonl"
#: refusals of remote commands reported per minute at most (then counted in the next report)
REFUSALS_PER_MINUTE = 20


def _nonce_of(payload: bytes) -> str | None:
    """The nonce of a (refused) command, when it has a readable one (so its sender can match
    the refusal to its command)."""
    if len(payload) > 65536:
        return None
    try:
        nonce = json.loads(payload).get("nonce")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return nonce[:64] if isinstance(nonce, str) else None


class StepClock:
    """A bench's clock per step: the controller time a step took (waits + instrument I/O) and
    the physical minimum of its measurements (the calibrated decay's settle time to the settle
    tolerance from a full change, plus the acquisition, per measured sample), for the live
    view."""

    def __init__(
        self,
        elapsed: Callable[[], float],
        measured: Callable[[], int],
        per_measurement_s: float | None,
    ) -> None:
        self._elapsed, self._measured, self.per_measurement_s = elapsed, measured, per_measurement_s
        self._mark = (elapsed(), measured())

    @classmethod
    def of_bench(cls, bench: Any) -> StepClock:
        st, sigma = bench.options.settle, bench.chains.decay_rate_per_s
        per = None
        if sigma:
            per = math.log(1.0 / st.tol) / float(sigma) + st.acquire_periods * bench.period_s
        return cls(
            lambda: bench.time.wait_time_s + bench.time.io_time_s,
            lambda: int(bench.experiments),
            per,
        )

    def mark(self) -> None:
        self._mark = (self._elapsed(), self._measured())

    def step(self) -> tuple[float, float | None]:
        """(controller seconds, physical minimum) since the last mark; marks."""
        (t0, n0), now = self._mark, (self._elapsed(), self._measured())
        self._mark = now
        per = self.per_measurement_s
        return now[0] - t0, None if per is None else per * (now[1] - n0)


class TelemetryPublisher:
    """See the module docstring.

    Args:
        run, bench: the run id and the bench name (topic levels).
        root: the topic root ``<prefix>/<bench>/<run>``.
        names, units: the trainable parameters' names and units (``params``).
        level: the system's fidelity level.
        link: the MQTT link (None: only the local log).
        log_dir: where ``telemetry.jsonl`` goes (None: no local log).
        control, check: the run's mailbox and the checks of remote commands.
        clock: the bench's `StepClock` (None on the twin).
        waveforms: the last step's measurement journal (None: no ``waveforms`` topic).
    """

    def __init__(
        self,
        run: str,
        bench: str,
        root: str,
        *,
        names: list[str],
        units: list[str],
        level: str = "",
        link: MqttLink | None = None,
        log_dir: Path | None = None,
        control: RunControl | None = None,
        check: CommandCheck | None = None,
        clock: StepClock | None = None,
        waveforms: Callable[[], list[Any]] | None = None,
        waveform_points: int = 64,
    ) -> None:
        self.run, self.bench, self.root = run, bench, root
        self.names, self.units, self.level = names, units, level
        self.link, self.control, self.check, self.clock = link, control, check, clock
        self.waveforms, self.waveform_points = waveforms, waveform_points
        self._lock = threading.Lock()
        self._seq = 0
        self._log: IO[str] | None = None
        if log_dir is not None:
            self._log = open(Path(log_dir) / LOG_FILE, "a", encoding="utf-8")
        self.status: dict[str, Any] = {"state": "starting", "epoch": 0, "step": 0}
        self._accuracy: float | None = None
        self._t_session = time.monotonic()
        self._steps_at_session = 0
        self._paused_s = 0.0
        self._paused_at: float | None = None
        self._refusals: list[float] = []
        self._unreported_refusals = 0

    # ------------------------------------------------------------------ outgoing
    def _base(self, kind: str) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "type": kind,
            "run": self.run,
            "bench": self.bench,
            "time": iso_time(),
        }

    def _send(self, cls: str, suffix: str, payload: dict[str, Any], retain: bool = False) -> None:
        data = dumps(payload)
        with self._lock:
            if self._log is not None:
                self._log.write(f'{{"topic":"{suffix}","payload":{data.decode()}}}\n')
                self._log.flush()
        if self.link is not None:
            self.link.put(Outgoing(cls, f"{self.root}/{suffix}", data, retain))

    def event(self, kind: str, message: str = "", **fields: Any) -> None:
        """Publish an event on ``events`` (any thread): ``kind``, a one-line ``message`` and
        more fields; numbered by ``seq``."""
        with self._lock:
            self._seq += 1
            seq = self._seq
        payload = {**self._base("event"), "seq": seq, "kind": kind, "message": message}
        payload.update(fields)
        self._send("event", "events", payload)

    def retry(self, fault: dict[str, Any]) -> None:
        """A transient instrument fault the retry wrapper saw (any thread; never raises)."""
        try:
            self.event(
                "retry",
                f"{fault.get('kind')} on {fault.get('instrument')} (attempt "
                f"{int(fault.get('attempt', 0)) + 1}): {fault.get('message', '')}",
                fault=fault.get("kind"),
                instrument=fault.get("instrument"),
                attempt=fault.get("attempt"),
            )
        except Exception:
            log.exception("telemetry: could not publish a retry")

    def suspended(self, name: str, action: str, message: str, **fields: Any) -> None:
        self.event("suspender", message, suspender=name, action=action, **fields)

    def drops_message(self, drops: dict[str, int], outage_s: float) -> Outgoing:
        """The ``events`` message reporting what an outage dropped (for the link)."""
        with self._lock:
            self._seq += 1
            seq = self._seq
        message = f"broker link back after {outage_s:.1f} s; dropped while away: " + ", ".join(
            f"{n} {k}" for k, n in sorted(drops.items())
        )
        log.warning("telemetry: %s", message)
        payload = {
            **self._base("event"),
            "seq": seq,
            "kind": "telemetry_drops",
            "message": message,
            "dropped": drops,
            "outage_s": outage_s,
        }
        with self._lock:
            if self._log is not None:
                self._log.write(f'{{"topic":"events","payload":{dumps(payload).decode()}}}\n')
                self._log.flush()
        return Outgoing("event", f"{self.root}/events", dumps(payload))

    def publish_status(self, **update: Any) -> None:
        self.status.update(update)
        self.status["eta_s"] = self._eta()
        payload = {**self._base("status"), "level": self.level, **self.status}
        self._send("status", "status", payload, retain=True)

    def will(self) -> dict[str, Any]:
        """The last-will payload: the run ``crashed`` (connection lost without a goodbye)."""
        return {
            **self._base("status"),
            "state": "crashed",
            "level": self.level,
            "message": "the run's connection ended without a goodbye (killed, crashed or cut off)",
        }

    def _eta(self) -> float | None:
        total, step = self.status.get("total_steps"), int(self.status.get("step", 0))
        done = step - self._steps_at_session
        if not total or done <= 0:
            return None
        paused = self._paused_s + (
            time.monotonic() - self._paused_at if self._paused_at is not None else 0.0
        )
        rate = (time.monotonic() - self._t_session - paused) / done
        return max(0.0, rate * (int(total) - step))

    # ------------------------------------------------------------------ the listener
    def __call__(self, ev: RunEvent) -> None:
        try:
            self._on(ev)
        except Exception:  # telemetry never stops a run
            log.exception("telemetry: could not publish %s", type(ev).__name__)

    def _on(self, ev: RunEvent) -> None:
        if isinstance(ev, StepDone):
            self._step(ev)
        elif isinstance(ev, RunStarted | RunResumed):
            self._started(ev)
        elif isinstance(ev, EpochDone):
            self._epoch(ev)
        elif isinstance(ev, Fault):
            self.event(
                "fault",
                ev.message,
                fault=ev.fault,
                epoch=ev.epoch,
                batch=ev.batch,
                step=ev.step,
                consecutive=ev.consecutive,
                step_scale=ev.step_scale,
                unsolved=ev.unsolved,
            )
        elif isinstance(ev, RunPaused):
            self._paused(ev)
        elif isinstance(ev, Suspended):
            self.suspended(
                ev.name, ev.action, ev.message, epoch=ev.epoch, step=ev.step, value=ev.value
            )
        elif isinstance(ev, RunFinished):
            final = ev.summary.get("final") or {}
            self.event(
                "finished",
                ev.stop_reason or "all epochs done",
                final=final,
                steps=ev.summary.get("steps"),
            )
            self.publish_status(state="finished", reason=ev.stop_reason, message="")

    def _started(self, ev: RunStarted | RunResumed) -> None:
        self.level = ev.level
        if self._paused_at is not None:  # resumed after a pause in this session
            self._paused_s += time.monotonic() - self._paused_at
            self._paused_at = None
        else:
            self._t_session = time.monotonic()
            self._steps_at_session = getattr(ev, "step", 0)
        if self.clock is not None:
            self.clock.mark()
        if isinstance(ev, RunStarted):
            self._accuracy = ev.initial.get("train_accuracy")
            self.event(
                "run_started",
                f"run started at level {ev.level}",
                total_steps=ev.total_steps,
                initial=ev.initial,
            )
            self.publish_status(
                state="running",
                epoch=0,
                step=0,
                total_steps=ev.total_steps,
                reason="",
                message="",
                source="",
            )
            return
        self.event(
            "resumed",
            f"resumed by {ev.source} at epoch {ev.epoch}, step {ev.step}",
            source=ev.source,
            epoch=ev.epoch,
            batch=ev.batch,
            step=ev.step,
        )
        self.publish_status(
            state="running",
            epoch=ev.epoch,
            step=ev.step,
            total_steps=ev.total_steps,
            reason="",
            message="",
            source=ev.source,
        )

    def _step(self, ev: StepDone) -> None:
        bench_s = physical_s = None
        if self.clock is not None:
            bench_s, physical_s = self.clock.step()
        self.status["experiments"] = ev.experiments
        payload = {
            **self._base("metrics"),
            "epoch": ev.epoch,
            "batch": ev.batch,
            "step": ev.step,
            "total_steps": ev.total_steps,
            "loss": ev.loss,
            "accuracy": self._accuracy,
            "gradient_norm": float(np.linalg.norm(ev.gradient)),
            "step_time_s": ev.wall_time_s,
            "bench_time_s": bench_s,
            "physical_min_s": physical_s,
            "experiments": ev.experiments,
            "cosine": ev.cosine,
        }
        self._send("metrics", "metrics", payload)
        self.publish_status(
            state="running", epoch=ev.epoch, step=ev.step, total_steps=ev.total_steps, loss=ev.loss
        )
        if self.waveforms is not None:
            self._send("waveforms", "waveforms", self._waveforms(ev))

    def _waveforms(self, ev: StepDone) -> dict[str, Any]:
        """The last step's measured responses (free and nudged phases), decimated."""
        phases = []
        for entry in self.waveforms() if self.waveforms is not None else []:
            x = np.asarray(entry.x)  # (B, M, d)
            idx = np.unique(np.linspace(0, x.shape[1] - 1, self.waveform_points).round())
            phases.append({"nudged": bool(entry.nudged), "x": x[:, idx.astype(int), :]})
        return {
            **self._base("waveforms"),
            "epoch": ev.epoch,
            "step": ev.step,
            "layout": "phase, sample, time point, node",
            "phases": phases,
        }

    def _epoch(self, ev: EpochDone) -> None:
        m = ev.metrics
        self._accuracy = m.get("train_accuracy")
        payload = {
            **self._base("params"),
            "epoch": ev.epoch,
            "step": ev.step,
            "names": self.names,
            "units": self.units,
            "values": ev.params,
            "metrics": m,
        }
        self._send("params", "params", payload, retain=True)
        self.publish_status(
            epoch=ev.epoch + 1,
            step=ev.step,
            accuracy=self._accuracy,
            test_accuracy=m.get("test_accuracy"),
        )
        if self.clock is not None:
            self.clock.mark()

    def _paused(self, ev: RunPaused) -> None:
        kind = {"paused": "paused", "aborted": "aborted", "stopped": "stopped"}.get(
            ev.reason, ev.reason
        )
        self.event(
            kind, ev.message, reason=ev.reason, source=ev.source, epoch=ev.epoch, step=ev.step
        )
        state = "paused" if ev.reason == "paused" else "stopped"
        if state == "paused":
            self._paused_at = time.monotonic()
        self.publish_status(
            state=state, reason=ev.reason, message=ev.message, source=ev.source, step=ev.step
        )

    # ------------------------------------------------------------------ incoming
    def on_control(self, sender: str, payload: bytes, retained: bool) -> None:
        """A message on ``control/<sender>`` (the link's thread): checked, then acted on."""
        if self.check is None or self.control is None:
            return
        if not payload:  # how a retained message is deleted from the broker: nothing to do
            return
        res = self.check.check(sender, payload, retained=retained)
        if isinstance(res, str):
            self._refused(sender, res, payload)
            return
        source = f"mqtt:{res.sender}"
        self.control.request(res.command, source, res.reason)
        log.warning("telemetry: %s requested by %s (%s)", res.command, source, res.reason or "-")
        self.event(
            "command",
            f"{res.command} from {source} accepted; acted on at the next step boundary",
            command=res.command,
            sender=res.sender,
            nonce=res.nonce,
            issued=res.issued,
            reason=res.reason,
        )

    def _refused(self, sender: str, why: str, payload: bytes) -> None:
        now = time.monotonic()
        self._refusals = [t for t in self._refusals if now - t < 60.0]
        if len(self._refusals) >= REFUSALS_PER_MINUTE:
            self._unreported_refusals += 1
            return
        self._refusals.append(now)
        more, self._unreported_refusals = self._unreported_refusals, 0
        log.warning("telemetry: command from %r refused: %s", sender, why)
        self.event(
            "command_refused",
            f"command from {sender!r} refused: {why}",
            sender=sender,
            reason=why,
            size=len(payload),
            nonce=_nonce_of(payload),
            unreported_before=more,
        )

    # ------------------------------------------------------------------ the end
    def close(self, state: str | None = None, message: str = "") -> None:
        """The final status (``state``: e.g. ``failed``; None keeps what the events said),
        delivered with what is buffered; the local log closed."""
        try:
            if state is not None:
                if state == "failed":
                    self.event("failed", message)
                self.publish_status(state=state, message=message)
            elif self.status.get("state") in ("running", "paused", "starting"):
                self.publish_status(state="stopped", message=message or "the session ended")
            if self.link is not None:
                self.link.close()
        finally:
            with self._lock:
                if self._log is not None:
                    self._log.close()
                    self._log = None
