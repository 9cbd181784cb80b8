"""`MqttLink`: the run's MQTT client, in its own thread with its own asyncio loop.

The training loop only calls `MqttLink.put` (thread-safe, returns at once); the thread connects
(aiomqtt, MQTT 5, falling back to 3.1.1 for a broker that refuses 5), publishes, subscribes to
the run's ``control/+`` topics and hands every control message to ``on_control`` (in this
thread). The link reconnects by itself with bounded exponential backoff (aiomqtt has none).

Buffer (`Outbox`), while the broker is away or slow: every message of class ``event`` (and
``params``) is kept up to ``buffer_events`` (then the oldest is dropped and counted); of
``metrics`` the newest ``buffer_metrics``; of ``status`` and ``waveforms`` the newest one. A
message leaves the buffer only once the broker acknowledged it (QoS 1; waveforms QoS 0), so the
link loses nothing but the counted drops, which are reported on ``events`` (kind
``telemetry_drops``) when the link returns, and while connected (at most once a second) when
it fell behind the run. A broker that dies (SIGKILL) loses what it had acknowledged but not yet
delivered; no publisher can count that. A subscriber may see a message twice around an
outage (at-least-once); events carry a sequence number ``seq`` to tell.

The last will (set at every connect) marks the run's ``status`` ``crashed``, retained: the
broker publishes it if the connection dies without a goodbye (SIGKILL, power, network).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from physlearn.telemetry.config import Broker, tls_context
from physlearn.telemetry.payloads import dumps

log = logging.getLogger(__name__)

__all__ = ["MqttLink", "Outbox", "Outgoing", "describe_mqtt_error"]

#: message classes and their QoS
QOS = {"status": 1, "event": 1, "params": 1, "metrics": 1, "waveforms": 0}


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: its class (``QOS``), topic, payload, retain flag."""

    cls: str
    topic: str
    payload: bytes
    retain: bool = False


class Outbox:
    """The bounded buffer of the link (module docstring); thread-safe."""

    def __init__(self, max_events: int, max_metrics: int) -> None:
        self._lock = threading.Lock()
        self.events: deque[Outgoing] = deque()
        self.metrics: deque[Outgoing] = deque()
        self.latest: dict[str, Outgoing] = {}  # status, waveforms: the newest only
        self.max_events, self.max_metrics = max_events, max_metrics
        self.dropped: dict[str, int] = {"event": 0, "metrics": 0, "status": 0, "waveforms": 0}
        self.inflight: Outgoing | None = None

    def put(self, msg: Outgoing) -> None:
        with self._lock:
            if msg.cls in ("status", "waveforms"):
                if msg.cls in self.latest and msg.cls == "waveforms":
                    self.dropped["waveforms"] += 1
                self.latest[msg.cls] = msg
                return
            queue, cap, key = (
                (self.metrics, self.max_metrics, "metrics")
                if msg.cls == "metrics"
                else (self.events, self.max_events, "event")
            )
            queue.append(msg)
            while len(queue) > cap:
                if queue[0] is self.inflight and len(queue) > 1:
                    del queue[1]  # the message being published is not dropped (it may arrive)
                else:
                    queue.popleft()
                self.dropped[key] += 1

    def peek(self) -> Outgoing | None:
        """The next message to send (the one in flight until `done`): status first, then
        events, metrics, waveforms."""
        with self._lock:
            if "status" in self.latest:
                msg: Outgoing | None = self.latest["status"]
            elif self.events:
                msg = self.events[0]
            elif self.metrics:
                msg = self.metrics[0]
            else:
                msg = self.latest.get("waveforms")
            self.inflight = msg
            return msg

    def done(self, msg: Outgoing) -> None:
        """``msg`` (from `peek`) was delivered: remove it (unless replaced meanwhile)."""
        with self._lock:
            if msg.cls in ("status", "waveforms"):
                if self.latest.get(msg.cls) is msg:
                    del self.latest[msg.cls]
            elif msg.cls == "metrics":
                if self.metrics and self.metrics[0] is msg:
                    self.metrics.popleft()
            elif self.events and self.events[0] is msg:
                self.events.popleft()

    def lost_records(self) -> bool:
        """Whether metrics or events were dropped since the last `take_drops` (a replaced
        waveform is not a lost record: only the newest is ever kept)."""
        with self._lock:
            return bool(self.dropped["metrics"] or self.dropped["event"])

    def take_drops(self) -> dict[str, int]:
        """The drop counts since the last call (reset)."""
        with self._lock:
            out = {k: v for k, v in self.dropped.items() if v}
            self.dropped = dict.fromkeys(self.dropped, 0)
            return out

    def __len__(self) -> int:
        with self._lock:
            return len(self.events) + len(self.metrics) + len(self.latest)


def describe_mqtt_error(exc: BaseException, broker: Broker) -> str:
    """One line saying what went wrong connecting to ``broker``."""
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            f"TLS to {broker.url}: the broker's certificate is not trusted ({text}); "
            "ca_file must be the CA that signed it"
        )
    if isinstance(cause, ssl.SSLError) or "SSL" in text:
        return f"TLS to {broker.url} failed: {text}"
    low = text.lower()
    if "not author" in low or "bad user" in low or "bad username" in low:
        who = f"user {broker.username!r}" if broker.username else "an anonymous client"
        return f"{broker.url} refused {who}: {text} (check the username and password)"
    if "refused" in low or "errno 111" in low or "timed out" in low or "unreachable" in low:
        return f"broker {broker.url} unreachable: {text}"
    return f"broker {broker.url}: {text}"


class MqttLink:
    """See the module docstring.

    Args:
        broker: address and credentials.
        root: the topic root (``<prefix>/<bench>/<run>``, no trailing slash).
        will: the payload of the last will (on ``<root>/status``, retained).
        on_control: called (in the link's thread) with (sender, payload, retained) for each
            message on ``<root>/control/<sender>``; None: no subscription.
        on_drops: returns the ``events`` message reporting drops when the link returns.
    """

    def __init__(
        self,
        broker: Broker,
        root: str,
        *,
        will: dict[str, Any],
        on_control: Callable[[str, bytes, bool], None] | None = None,
        on_drops: Callable[[dict[str, int], float], Outgoing] | None = None,
        max_events: int = 100_000,
        max_metrics: int = 1000,
        keepalive_s: int = 10,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        client_id: str | None = None,
    ) -> None:
        self.broker, self.root, self.will = broker, root, will
        self.on_control, self.on_drops = on_control, on_drops
        self.outbox = Outbox(max_events, max_metrics)
        self.keepalive_s = keepalive_s
        self.backoff = (reconnect_min_s, reconnect_max_s)
        self.client_id = client_id or f"physlearn-{secrets.token_hex(6)}"
        self.connected = threading.Event()
        self.connects = 0  # successful connections so far
        self.last_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="physlearn-mqtt", daemon=True)
        self._protocol_v5 = True
        self._tls = tls_context(broker)  # a bad CA file fails here, before the run starts

    # ------------------------------------------------------------------ the caller's side
    def start(self) -> MqttLink:
        self._thread.start()
        self._ready.wait(5.0)
        return self

    def put(self, msg: Outgoing) -> None:
        """Queue ``msg`` (any thread; returns at once)."""
        self.outbox.put(msg)
        self._poke()

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    def close(self, flush_s: float = 5.0) -> int:
        """Deliver what is buffered (up to ``flush_s``: also through an outage that ends within
        it, if the broker was reachable at all), disconnect cleanly (no last will); the number
        of messages left undelivered."""
        deadline = time.monotonic() + flush_s
        while len(self.outbox) and time.monotonic() < deadline:
            if not self.connected.is_set() and not self.connects:
                break  # never reachable: no reason to believe it is about to be
            time.sleep(0.02)
        self._closing = True
        self._poke()
        self._thread.join(max(1.0, deadline - time.monotonic() + 3.0))
        left = len(self.outbox)
        if left:
            log.warning(
                "telemetry: %d message(s) not delivered to %s at the end of the run (they are "
                "in the run's telemetry.jsonl)",
                left,
                self.broker.url,
            )
        return left

    # ------------------------------------------------------------------ the thread
    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._run())
        except Exception:
            log.exception("telemetry: the MQTT thread failed; the run goes on without it")
        finally:
            self.connected.clear()
            loop.close()

    async def _run(self) -> None:
        self._wake = asyncio.Event()
        self._ready.set()
        delay = self.backoff[0]
        outage_since: float | None = None
        while not self._closing:
            try:
                await self._session(outage_since)
                outage_since = None
                delay = self.backoff[0]
            except Exception as exc:  # aiomqtt.MqttError, OSError, ssl errors
                self.connected.clear()
                if self._closing:
                    break
                if outage_since is None:
                    outage_since = time.monotonic()
                if self._maybe_fall_back(exc):
                    continue
                message = describe_mqtt_error(exc, self.broker)
                if message != self.last_error:
                    log.warning(
                        "telemetry: %s; retrying every ≤ %.3g s, training goes on "
                        "(events buffered)",
                        message,
                        self.backoff[1],
                    )
                self.last_error = message
                await self._sleep(delay)
                delay = min(2 * delay, self.backoff[1])

    def _maybe_fall_back(self, exc: BaseException) -> bool:
        """A broker that does not speak MQTT 5: use 3.1.1 from now on (True)."""
        low = str(exc).lower()
        if self._protocol_v5 and ("unsupported protocol" in low or "protocol version" in low):
            log.info("telemetry: %s speaks MQTT 3.1.1 only", self.broker.url)
            self._protocol_v5 = False
            return True
        return False

    async def _sleep(self, s: float) -> None:
        assert self._wake is not None
        end = time.monotonic() + s
        while not self._closing and time.monotonic() < end:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, end - time.monotonic()))

    def _client(self) -> Any:
        import aiomqtt

        return aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=self.broker.username,
            password=self.broker.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if self._protocol_v5 else None,
            will=aiomqtt.Will(f"{self.root}/status", dumps(self.will), qos=1, retain=True),
            keepalive=self.keepalive_s,
            timeout=max(5.0, 2.0 * self.keepalive_s),
            tls_context=self._tls,
        )

    async def _session(self, outage_since: float | None) -> None:
        """One connection: subscribe, report drops, publish until closing or an error."""
        async with self._client() as client:
            reader = None
            if self.on_control is not None:
                await client.subscribe(f"{self.root}/control/+", qos=1)
                reader = asyncio.ensure_future(self._read(client))
            # connected: subscribed, and the reader (which notices a lost connection) running
            self.connects += 1
            self.connected.set()
            if self.last_error is not None or self.connects > 1:
                log.warning("telemetry: connected to %s again", self.broker.url)
            self.last_error = None
            drops = self.outbox.take_drops()
            if drops and self.on_drops is not None:
                outage = time.monotonic() - outage_since if outage_since is not None else 0.0
                self.outbox.put(self.on_drops(drops, outage))
            try:
                await self._write(client, reader)
            finally:
                if reader is not None:
                    reader.cancel()
                    with contextlib.suppress(BaseException):
                        await reader
                self.connected.clear()

    async def _write(self, client: Any, reader: asyncio.Future[None] | None) -> None:
        assert self._wake is not None
        last_report = time.monotonic()
        while True:
            if reader is not None and reader.done():
                reader.result()  # the reader's error ends this connection
                raise ConnectionError("the control subscription ended")
            now = time.monotonic()
            if self.outbox.lost_records() and (now - last_report >= 1.0 or not self.outbox):
                # a connected link that fell behind the run (slow acknowledgements) drops
                # metrics too: report them (at most once a second), not only at the next
                # reconnection
                last_report = now
                drops = self.outbox.take_drops()
                if self.on_drops is not None:
                    self.outbox.put(self.on_drops(drops, 0.0))
            msg = self.outbox.peek()
            if msg is None:
                if self._closing:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.5)
                continue
            await client.publish(msg.topic, msg.payload, qos=QOS[msg.cls], retain=msg.retain)
            self.outbox.done(msg)

    async def _read(self, client: Any) -> None:
        prefix = f"{self.root}/control/"
        async for m in client.messages:
            topic = str(m.topic)
            sender = topic[len(prefix) :] if topic.startswith(prefix) else ""
            raw = m.payload
            payload = bytes(raw) if isinstance(raw, bytes | bytearray) else str(raw).encode()
            if self.on_control is not None and sender:
                try:
                    self.on_control(sender, payload, bool(m.retain))
                except Exception:
                    log.exception("telemetry: handling a control message failed")
