"""The JSON payloads of a run's topics and the checks a remote command passes.

Every payload is a JSON object with ``"schema": SCHEMA`` (bumped on any incompatible change),
``"type"`` (the topic's kind), ``"run"`` (the run id), ``"bench"`` and ``"time"`` (ISO 8601
UTC). Floats are written as Python writes them (``repr``: they read back bit for bit); a
non-finite float is ``null``. The fields of each type are listed in docs/telemetry.md.

A command (topic ``<root>/control/<user>``, where the broker's ACL lets ``user`` publish only
under their own name) is acted on only if it passes `CommandCheck.check`: a JSON object of at
most ``max_bytes`` with this schema, a known command (pause, resume, abort), the run's id, an
``issued`` UTC timestamp no older than ``max_age_s`` and not in the future (beyond a small
clock skew), a nonce not seen before, not retained, from an allowed operator. Anything else is
refused with a one-line reason (reported on ``events``), never acted on.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

__all__ = [
    "COMMANDS",
    "SCHEMA",
    "CommandCheck",
    "RemoteCommand",
    "command_payload",
    "dumps",
    "iso_time",
    "parse_time",
]

SCHEMA = 1
#: what a remote operator may ask (``stop`` is the local SIGINT's)
COMMANDS = ("pause", "resume", "abort")
#: a command issued up to this far in the future (clock skew) is still accepted
FUTURE_SKEW_S = 5.0


def iso_time(t: float | None = None) -> str:
    """``t`` (Unix seconds; default now) as ISO 8601 UTC with milliseconds and a ``Z``."""
    dt = datetime.fromtimestamp(time.time() if t is None else t, tz=UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> float:
    """An ISO 8601 timestamp with a zone (``Z`` or ``+hh:mm``) as Unix seconds; ValueError."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return dt.timestamp()


def _plain(v: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, non-finite floats to None."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return _plain(v.tolist())
    if isinstance(v, np.generic):
        return _plain(v.item())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def dumps(payload: dict[str, Any]) -> bytes:
    """The payload as compact UTF-8 JSON (non-finite floats as null)."""
    return json.dumps(_plain(payload), separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class RemoteCommand:
    """A command that passed every check: what, from whom (the broker-vouched user), why."""

    command: str
    sender: str
    nonce: str
    issued: str
    reason: str = ""


def command_payload(run: str, command: str, reason: str = "", nonce: str | None = None) -> bytes:
    """The payload ``physlearn control`` sends (issued now, a fresh random nonce)."""
    import secrets

    return dumps(
        {
            "schema": SCHEMA,
            "run": run,
            "command": command,
            "issued": iso_time(),
            "nonce": nonce or secrets.token_hex(12),
            "reason": reason,
        }
    )


class CommandCheck:
    """The checks of a run's incoming commands (module docstring); remembers the nonces of the
    last ``2 × max_age_s`` (older commands are refused as stale anyway)."""

    def __init__(
        self,
        run: str,
        *,
        max_age_s: float = 60.0,
        max_bytes: int = 4096,
        operators: list[str] | None = None,
    ) -> None:
        self.run, self.max_age_s, self.max_bytes = run, max_age_s, max_bytes
        self.operators = None if operators is None else set(operators)
        self._nonces: OrderedDict[str, float] = OrderedDict()

    def check(
        self, sender: str, payload: bytes, *, retained: bool = False, now: float | None = None
    ) -> RemoteCommand | str:
        """The command, or why it is refused (one line)."""
        now = time.time() if now is None else now
        if retained:
            return "a retained command (a stale order left on the broker) is never acted on"
        if self.operators is not None and sender not in self.operators:
            return f"user {sender!r} is not among this run's operators"
        if len(payload) > self.max_bytes:
            return f"payload of {len(payload)} bytes exceeds the limit of {self.max_bytes}"
        try:
            data = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return f"malformed payload (not UTF-8 JSON: {type(exc).__name__})"
        if not isinstance(data, dict):
            return "malformed payload (not a JSON object)"
        fields = _fields(data)
        if isinstance(fields, str):
            return fields
        command, run, issued, nonce, reason = fields
        if command not in COMMANDS:
            return f"unknown command {command[:40]!r} (known: {', '.join(COMMANDS)})"
        if run != self.run:
            return f"command for run {run[:80]!r}, not this run"
        try:
            t = parse_time(issued)
        except ValueError:
            return f"issued {issued[:40]!r} is not an ISO 8601 UTC timestamp"
        if now - t > self.max_age_s:
            return f"stale: issued {now - t:.0f} s ago (max {self.max_age_s:g} s)"
        if t - now > FUTURE_SKEW_S:
            return f"issued {t - now:.0f} s in the future (clock skew > {FUTURE_SKEW_S:g} s)"
        self._forget(now)
        if nonce in self._nonces:
            return f"replayed: nonce {nonce} was already used"
        self._nonces[nonce] = now
        return RemoteCommand(command, sender, nonce, issued, reason)

    def _forget(self, now: float) -> None:
        while self._nonces:
            nonce, t = next(iter(self._nonces.items()))
            if now - t <= 2 * self.max_age_s:
                break
            del self._nonces[nonce]


def _fields(data: dict[str, Any]) -> tuple[str, str, str, str, str] | str:
    """(command, run, issued, nonce, reason) of a command object, or why it is malformed."""
    if data.get("schema") != SCHEMA:
        return f"unsupported schema {str(data.get('schema'))[:20]!r} (this run reads {SCHEMA})"
    out: list[str] = []
    for key in ("command", "run", "issued", "nonce"):
        v = data.get(key)
        if not isinstance(v, str) or not v:
            return f"malformed payload: {key!r} must be a non-empty string"
        out.append(v)
    nonce = out[3]
    if not 8 <= len(nonce) <= 64 or not nonce.isprintable():
        return "malformed payload: 'nonce' must be 8-64 printable characters"
    reason = data.get("reason", "")
    if not isinstance(reason, str):
        return "malformed payload: 'reason' must be a string"
    return out[0], out[1], out[2], nonce, reason[:200]
