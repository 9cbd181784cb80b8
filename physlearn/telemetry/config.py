"""``[telemetry]`` of a train config: where a run publishes and who may steer it.

Credentials never enter a config or a run directory: ``password_env`` names an environment
variable, ``password_file`` a file (refused when it lies inside the run directory); a
``password`` key is refused with a message saying so. See docs/telemetry.md.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from physlearn.errors import ConfigError

__all__ = ["Broker", "TelemetryConfig", "broker_from_url", "read_password", "tls_context"]

#: a topic level: no MQTT wildcards, separators or NUL
_LEVEL_RE = re.compile(r"^[^/#+\x00]+$")


class TelemetryConfig(BaseModel):
    """The ``[telemetry]`` table (docs/telemetry.md, "Configuration")."""

    model_config = ConfigDict(extra="forbid")

    #: ``mqtt://host[:port]`` (1883) or ``mqtts://host[:port]`` (8883, verified against ca_file)
    broker: str
    ca_file: Path | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    #: topic root ``<prefix>/<bench>/<run>/``; bench default: the bench file's name, or "twin"
    prefix: str = "physlearn"
    bench: str | None = None
    #: publish decimated free and nudged responses of each step (bench runs; off by default)
    waveforms: bool = False
    waveform_points: int = Field(64, ge=4, le=4096)
    #: accept pause/resume/abort from ``<root>/control/<user>``
    control: bool = True
    #: if set, only these broker users may command the run (the broker's ACL decides first)
    operators: list[str] | None = None
    #: commands issued longer ago than this (or this far in the future) are refused
    command_max_age_s: float = Field(60.0, gt=0)
    max_payload_bytes: int = Field(4096, ge=256)
    #: during a broker outage: every event kept up to this many, the newest metrics only
    buffer_events: int = Field(100_000, ge=10)
    buffer_metrics: int = Field(1000, ge=1)
    keepalive_s: int = Field(10, ge=2)
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _no_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ValueError(
                "a password never goes into a config (it would be copied into the run "
                "directory): use password_env = 'VARIABLE' or password_file = '/path'"
            )
        return data

    @field_validator("broker")
    @classmethod
    def _url(cls, v: str) -> str:
        broker_from_url(v)
        return v

    @field_validator("prefix", "bench")
    @classmethod
    def _level(cls, v: str | None) -> str | None:
        if v is not None and not _LEVEL_RE.match(v):
            raise ValueError(f"{v!r} cannot be a topic level (no '/', '+', '#')")
        return v

    @model_validator(mode="after")
    def _credentials(self) -> TelemetryConfig:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("give password_env or password_file, not both")
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("a password needs a username")
        if self.ca_file is not None and not self.broker.startswith("mqtts://"):
            raise ValueError("ca_file applies to an mqtts:// broker")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be ≥ reconnect_min_s")
        return self

    def resolve_paths(self, base: Path) -> TelemetryConfig:
        """Relative ``ca_file``/``password_file`` resolved against ``base`` (the config's folder)."""
        upd: dict[str, Any] = {}
        for key in ("ca_file", "password_file"):
            p = getattr(self, key)
            if p is not None and not Path(p).is_absolute():
                upd[key] = (base / p).resolve()
        return self.model_copy(update=upd) if upd else self

    def broker_of(self, run_dir: Path | None = None) -> Broker:
        """The broker address with the credentials read now (`read_password`)."""
        b = broker_from_url(self.broker)
        password = read_password(self.password_env, self.password_file, run_dir)
        return Broker(b.host, b.port, b.tls, self.ca_file, self.username, password)


@dataclass(frozen=True)
class Broker:
    """A broker address with credentials (the password lives only in memory)."""

    host: str
    port: int
    tls: bool
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never print the password
        scheme = "mqtts" if self.tls else "mqtt"
        return f"Broker({scheme}://{self.host}:{self.port}, user={self.username!r})"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def broker_from_url(url: str) -> Broker:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]``; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"broker {url!r}: use mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    if parts.username or parts.password:
        raise ValueError(
            f"broker {parts.scheme}://{parts.hostname}: no credentials in the URL "
            "(username, password_env or password_file)"
        )
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"broker {url!r}: nothing after HOST[:PORT]")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise ValueError(f"broker {url!r}: {exc}") from None
    return Broker(parts.hostname, port, tls)


def read_password(env: str | None, file: Path | None, run_dir: Path | None = None) -> str | None:
    """The password from the environment variable ``env`` or the file ``file`` (its first line);
    `ConfigError` if unset, unreadable, or the file lies inside ``run_dir``."""
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"telemetry: the password variable ${env} is not set")
        return value
    if file is None:
        return None
    path = Path(file).expanduser().resolve()
    if run_dir is not None and path.is_relative_to(Path(run_dir).resolve()):
        raise ConfigError(
            f"telemetry: password_file {path} lies inside the run directory; keep credentials "
            "outside it (a run directory is copied and shared)"
        )
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"telemetry: cannot read password_file {path}: {exc.strerror}") from None
    return text.splitlines()[0] if text else ""


def tls_context(broker: Broker) -> ssl.SSLContext | None:
    """A verifying TLS context (the broker's CA file, else the system's CAs) for mqtts://."""
    if not broker.tls:
        return None
    try:
        ctx = ssl.create_default_context(
            cafile=str(broker.ca_file) if broker.ca_file is not None else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"telemetry: cannot load the CA file {broker.ca_file}: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
