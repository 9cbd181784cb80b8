"""A run's telemetry, as ``physlearn train`` sets it up: `open_telemetry` builds the publisher
(always: the run's ``telemetry.jsonl``; with ``[telemetry]``: the MQTT link too, started before
the run so that an unreachable broker is said at once) and `attach_session` hooks it to the
session's parts (a bench's clock, its retries, its last step's waveforms)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from physlearn.spec.gp_system import GPSpec
from physlearn.spec.network import NetworkSpec
from physlearn.telemetry.config import TelemetryConfig
from physlearn.telemetry.link import MqttLink
from physlearn.telemetry.payloads import CommandCheck
from physlearn.telemetry.publisher import StepClock, TelemetryPublisher
from physlearn.training.config import TrainConfig
from physlearn.training.control import RunControl
from physlearn.training.session import SessionParts

log = logging.getLogger(__name__)

__all__ = ["bench_name", "open_telemetry", "topic_root"]


def bench_name(cfg: TrainConfig, config_dir: Path | None) -> str:
    """The bench's topic level: ``[telemetry] bench``, else the bench file's ``name``, else
    ``"twin"`` (ideal twin)."""
    if cfg.telemetry is not None and cfg.telemetry.bench:
        return cfg.telemetry.bench
    b = cfg.system.bench
    if cfg.system.kind != "bench" or b is None:
        return "twin"
    from physlearn.spec.bench import BenchConfig
    from physlearn.systems.factory import resolve_path

    name = BenchConfig.load(resolve_path(config_dir, b.config)).name
    return "".join(c if c not in "/+#" else "_" for c in name) or "bench"


def topic_root(tc: TelemetryConfig | None, bench: str, run: str) -> str:
    prefix = tc.prefix if tc is not None else "physlearn"
    return f"{prefix}/{bench}/{run}"


def open_telemetry(
    cfg: TrainConfig,
    run_dir: Path,
    spec: NetworkSpec | GPSpec,
    control: RunControl,
    config_dir: Path | None = None,
) -> TelemetryPublisher:
    """The run's publisher (module docstring); `ConfigError` for credentials that cannot be
    read (an unreachable broker is not an error: the link retries, the run goes on)."""
    tc = cfg.telemetry
    run = Path(run_dir).name
    bench = bench_name(cfg, config_dir)
    root = topic_root(tc, bench, run)
    link = None
    check = None
    if tc is not None:
        if config_dir is not None:
            tc = tc.resolve_paths(config_dir)
        broker = tc.broker_of(run_dir)
        check = CommandCheck(
            run,
            max_age_s=tc.command_max_age_s,
            max_bytes=tc.max_payload_bytes,
            operators=tc.operators,
        )
    publisher = TelemetryPublisher(
        run,
        bench,
        root,
        names=spec.parameter_names(),
        units=spec.parameter_units(),
        level="bench" if cfg.system.kind == "bench" else "ideal",
        log_dir=run_dir,
        control=control,
        check=check,
        waveform_points=tc.waveform_points if tc is not None else 64,
    )
    if tc is not None:
        link = MqttLink(
            broker,
            root,
            will=publisher.will(),
            on_control=publisher.on_control if tc.control else None,
            on_drops=publisher.drops_message,
            max_events=tc.buffer_events,
            max_metrics=tc.buffer_metrics,
            keepalive_s=tc.keepalive_s,
            reconnect_min_s=tc.reconnect_min_s,
            reconnect_max_s=tc.reconnect_max_s,
            client_id=f"physlearn-{run}"[:40] + f"-{id(publisher) & 0xFFFF:04x}",
        )
        publisher.link = link.start()
        log.warning("telemetry: publishing to %s/%s/", broker.url, root)
    return publisher


def attach_session(publisher: TelemetryPublisher, cfg: TrainConfig) -> Any:
    """The ``attach`` hook of `physlearn.training.session.run_session` for ``publisher``."""

    def attach(parts: SessionParts) -> None:
        if parts.bench is not None:
            publisher.clock = StepClock.of_bench(parts.bench)
        if parts.retrying is not None:
            parts.retrying.faults.listeners.append(publisher.retry)
        records = parts.records
        if records is not None and cfg.telemetry is not None and cfg.telemetry.waveforms:
            publisher.waveforms = lambda: records.last_journal

    return attach
