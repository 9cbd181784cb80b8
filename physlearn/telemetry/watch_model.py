"""What ``physlearn watch`` shows, and where it comes from.

`WatchModel` takes (topic, payload) messages — from a broker (`BrokerFeed`, a subscriber thread)
or from a run directory's ``telemetry.jsonl`` (`FileFeed`, read as it grows) — and keeps per run
the last status, the recent losses, accuracies and step times, and the last events. `render`
turns it into a `rich` table: state, epoch and step, ETA, loss and accuracy sparklines, step
time against the physical minimum, the last events (of the runs under way, and of those whose
events arrived while watching: a run that ended before has only its row).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from physlearn.telemetry.config import Broker, tls_context
from physlearn.telemetry.link import describe_mqtt_error

log = logging.getLogger(__name__)

__all__ = ["BrokerFeed", "FileFeed", "RunView", "WatchModel", "render", "sparkline"]

BARS = "▁▂▃▄▅▆▇█"
HISTORY = 80


def sparkline(values: list[float | None], width: int = 24) -> str:
    """The last ``width`` values as block characters scaled to their range ('·' for none)."""
    vals = [v for v in values if v is not None][-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo
    if span <= 0:
        return BARS[3] * len(vals)
    return "".join(BARS[min(7, int((v - lo) / span * 7.999))] for v in vals)


@dataclass
class RunView:
    """One run as seen so far."""

    bench: str
    run: str
    status: dict[str, Any] = field(default_factory=dict)
    losses: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY))
    accuracies: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY))
    step_times: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY))
    last_metrics: dict[str, Any] = field(default_factory=dict)
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=8))
    seen_steps: set[int] = field(default_factory=set)
    seen_seq: set[int] = field(default_factory=set)


class WatchModel:
    """Runs by (bench, run), fed message by message (thread-unsafe: one feeder)."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], RunView] = {}
        self.messages = 0

    def feed(self, topic: str, payload: Any) -> None:
        if not isinstance(payload, dict) or "type" not in payload:
            return
        self.messages += 1
        key = (str(payload.get("bench", "?")), str(payload.get("run", "?")))
        view = self.runs.setdefault(key, RunView(*key))
        kind = payload["type"]
        if kind == "status":
            view.status = payload
        elif kind == "metrics":
            step = int(payload.get("step", -1))
            if step in view.seen_steps:  # at-least-once delivery: a repeat
                return
            view.seen_steps.add(step)
            view.last_metrics = payload
            view.losses.append(payload.get("loss"))
            view.accuracies.append(payload.get("accuracy"))
            view.step_times.append(payload.get("bench_time_s") or payload.get("step_time_s"))
        elif kind == "event":
            seq = int(payload.get("seq", -1))
            if seq in view.seen_seq:
                return
            view.seen_seq.add(seq)
            view.events.append(payload)


def _fmt(v: Any, spec: str = ".3g", none: str = "–") -> str:
    return none if not isinstance(v, int | float) else format(v, spec)


def _duration(s: Any) -> str:
    if not isinstance(s, int | float):
        return "–"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


STATE_STYLE = {
    "running": "green",
    "paused": "yellow",
    "finished": "cyan",
    "stopped": "yellow",
    "failed": "bold red",
    "crashed": "bold red",
    "offline": "red",
}


#: states of a run still under way (its events are shown even before any arrived)
ACTIVE = ("starting", "running", "paused", "?")


def _step_time(view: RunView) -> str:
    m = view.last_metrics
    t = m.get("bench_time_s") or m.get("step_time_s")
    if t is None:
        return "–"
    minimum = m.get("physical_min_s")
    if not minimum:
        return f"{t:.3g} s"
    return f"{t:.3g} s / {minimum:.3g} s ({t / minimum:.2f}×)"


def render(model: WatchModel, title: str = "physlearn watch") -> Any:
    """The model as a rich renderable: one row per run, then each run's last events."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, expand=True, title_justify="left")
    width = min(40, max((len(f"{b}/{r}") for b, r in model.runs), default=3))
    table.add_column("run", no_wrap=True, min_width=width)
    for col in ("state", "epoch", "step", "ETA", "loss", "accuracy", "step time / min"):
        table.add_column(col, no_wrap=col in ("state", "epoch", "step", "ETA"))
    parts: list[Any] = [table]
    if not model.runs:
        table.add_row("(waiting for a run)", "", "", "", "", "", "", "")
    for (bench, run), v in sorted(model.runs.items()):
        st = v.status
        state = str(st.get("state", "?"))
        # a watcher that joined late has no metrics yet: the retained status has the last loss
        loss = v.last_metrics.get("loss", st.get("loss"))
        table.add_row(
            f"{bench}/{run}",
            Text(state, style=STATE_STYLE.get(state, "")),
            str(st.get("epoch", "–")),
            f"{st.get('step', '–')}/{st.get('total_steps', '–')}",
            _duration(st.get("eta_s")) if state == "running" else "–",
            f"{_fmt(loss)} {sparkline(list(v.losses))}",
            f"{_fmt(st.get('accuracy'), '.0%')} {sparkline(list(v.accuracies))}",
            _step_time(v),
        )
        if state not in ACTIVE and not v.events:
            continue  # a run that ended before this watch began: its row says enough
        events = Table(
            title=f"last events of {bench}/{run}",
            expand=True,
            show_header=False,
            title_justify="left",
        )
        events.add_column("time", no_wrap=True)
        events.add_column("kind", no_wrap=True)
        events.add_column("message")
        for ev in list(v.events)[-6:]:
            when = str(ev.get("time", ""))[11:19]
            events.add_row(when, str(ev.get("kind", "")), str(ev.get("message", ""))[:160])
        if not v.events:  # events are not retained: only those since the watch began
            events.add_row("", "", "(none since this watch began)")
        if st.get("message"):
            events.caption = f"status: {st.get('message')}"
        parts.append(events)
    return Group(*parts)


class FileFeed:
    """A run directory's ``telemetry.jsonl``, read from where the last `poll` stopped."""

    def __init__(self, path: Path) -> None:
        self.path, self._pos, self._partial = Path(path), 0, ""

    def poll(self) -> list[tuple[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                fh.seek(self._pos)
                text = fh.read()
                self._pos = fh.tell()
        except FileNotFoundError:
            return []
        text, out = self._partial + text, []
        lines = text.split("\n")
        self._partial = lines.pop()  # an incomplete last line waits for its end
        for line in lines:
            try:
                rec = json.loads(line)
                out.append((str(rec["topic"]), rec["payload"]))
            except (ValueError, KeyError, TypeError):
                continue
        return out


class BrokerFeed:
    """A subscriber thread (aiomqtt; reconnects with bounded backoff) putting (topic, payload)
    on a queue; ``error`` holds the last connection problem as one line."""

    def __init__(self, broker: Broker, topics: list[str]) -> None:
        self.broker, self.topics = broker, topics
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.error: str | None = None
        self.connected = threading.Event()
        self._stop = False
        self._tls = tls_context(broker)
        self._thread = threading.Thread(target=self._main, daemon=True, name="physlearn-watch")

    def start(self) -> BrokerFeed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True

    def poll(self) -> list[tuple[str, Any]]:
        out = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.queue.get_nowait())
        return out

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        import aiomqtt

        delay = 0.5
        while not self._stop:
            try:
                async with aiomqtt.Client(
                    self.broker.host,
                    self.broker.port,
                    username=self.broker.username,
                    password=self.broker.password,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    tls_context=self._tls,
                    keepalive=10,
                ) as client:
                    for t in self.topics:
                        await client.subscribe(t, qos=1)
                    self.connected.set()
                    self.error, delay = None, 0.5
                    async for m in client.messages:
                        raw = m.payload
                        data = bytes(raw) if isinstance(raw, bytes | bytearray) else b""
                        try:
                            self.queue.put((str(m.topic), json.loads(data)))
                        except ValueError:
                            continue
                        if self._stop:
                            return
            except Exception as exc:
                self.connected.clear()
                self.error = describe_mqtt_error(exc, self.broker)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 10.0)


def wait_until(pred: Any, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())
