"""Telemetry without a broker: the [telemetry] table (credentials never in a config, paths,
URLs), the checks of remote commands (stale, future, replayed, wrong run, unknown, oversize,
malformed, retained, not an operator), the link's bounded buffer, the watch model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from physlearn.errors import ConfigError
from physlearn.telemetry.config import TelemetryConfig, broker_from_url, read_password
from physlearn.telemetry.link import Outbox, Outgoing
from physlearn.telemetry.payloads import CommandCheck, RemoteCommand, command_payload, iso_time
from physlearn.telemetry.watch_model import FileFeed, WatchModel, render, sparkline
from physlearn.training.config import load_train_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_a_password_never_goes_into_a_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="never goes into a config"):
        TelemetryConfig.model_validate({"broker": "mqtt://h", "username": "u", "password": "x"})
    with pytest.raises(ValueError, match="not both"):
        TelemetryConfig(broker="mqtt://h", username="u", password_env="A", password_file="/f")
    with pytest.raises(ValueError, match="mqtt://HOST"):
        TelemetryConfig(broker="http://h")
    with pytest.raises(ValueError, match="no credentials in the URL"):
        TelemetryConfig(broker="mqtt://u:pw@h")
    with pytest.raises(ValueError, match="ca_file applies"):
        TelemetryConfig(broker="mqtt://h", ca_file="/ca.crt")
    assert broker_from_url("mqtts://h").port == 8883 and broker_from_url("mqtt://h:1").port == 1
    # the resolved config of a run holds the variable's name, never its value
    cfg = load_train_config(
        EXAMPLES / "xor.toml",
        {"telemetry": {"broker": "mqtt://127.0.0.1:1", "username": "run", "password_env": "PW"}},
    )
    text = json.dumps(cfg.resolved())
    assert '"password_env": "PW"' in text and 'password"' not in text


def test_password_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PL_TEST_PW", "s3cret")
    assert read_password("PL_TEST_PW", None) == "s3cret"
    monkeypatch.delenv("PL_TEST_PW")
    with pytest.raises(ConfigError, match=r"\$PL_TEST_PW is not set"):
        read_password("PL_TEST_PW", None)
    f = tmp_path / "pw"
    f.write_text("filepw\n")
    assert read_password(None, f) == "filepw"
    run = tmp_path / "run"
    run.mkdir()
    (run / "pw").write_text("x\n")
    with pytest.raises(ConfigError, match="inside the run directory"):
        read_password(None, run / "pw", run)
    with pytest.raises(ConfigError, match="cannot read password_file"):
        read_password(None, tmp_path / "absent")


def _cmd(**kw: object) -> bytes:
    base = {"schema": 1, "run": "r1", "command": "pause", "issued": iso_time(), "nonce": "n" * 16}
    base.update(kw)
    return json.dumps(base).encode()


def test_command_checks() -> None:
    check = CommandCheck("r1", max_age_s=60, max_bytes=512, operators=["operator", "alice"])
    ok = check.check("operator", _cmd(reason="look at it"))
    assert isinstance(ok, RemoteCommand) and (ok.command, ok.sender) == ("pause", "operator")
    cases = {
        "replayed": _cmd(),  # the same nonce again
        "stale": _cmd(nonce="a" * 16, issued=iso_time(time.time() - 600)),
        "in the future": _cmd(nonce="b" * 16, issued=iso_time(time.time() + 600)),
        "not this run": _cmd(nonce="c" * 16, run="other"),
        "unknown command": _cmd(nonce="d" * 16, command="self_destruct"),
        "exceeds the limit": _cmd(nonce="e" * 16, reason="x" * 1000),
        "not UTF-8 JSON": b"\xff\xfe{",
        "not a JSON object": b"[1, 2]",
        "unsupported schema": _cmd(nonce="f" * 16, schema=99),
        "'nonce' must be": _cmd(nonce="short"),
        "not an ISO 8601": _cmd(nonce="g" * 16, issued="yesterday"),
    }
    for why, payload in cases.items():
        res = check.check("operator", payload)
        assert isinstance(res, str) and why in res, (why, res)
    assert "retained" in str(check.check("operator", _cmd(nonce="h" * 16), retained=True))
    assert "not among this run's operators" in str(check.check("mallory", _cmd(nonce="i" * 16)))
    # what `physlearn control` sends passes
    good = check.check("alice", command_payload("r1", "resume", "ok"))
    assert isinstance(good, RemoteCommand) and good.command == "resume"


def test_outbox_keeps_every_event_and_the_newest_metrics() -> None:
    box = Outbox(max_events=1000, max_metrics=3)
    for i in range(10):
        box.put(Outgoing("metrics", "t/metrics", str(i).encode()))
        box.put(Outgoing("event", "t/events", str(i).encode()))
        box.put(Outgoing("status", "t/status", str(i).encode(), retain=True))
    assert box.take_drops() == {"metrics": 7}
    sent = []
    while (msg := box.peek()) is not None:
        sent.append((msg.cls, msg.payload.decode()))
        box.done(msg)
    assert sent[0] == ("status", "9")  # only the newest status
    assert [p for c, p in sent if c == "event"] == [str(i) for i in range(10)]
    assert [p for c, p in sent if c == "metrics"] == ["7", "8", "9"]
    small = Outbox(max_events=2, max_metrics=1)
    for _ in range(5):
        small.put(Outgoing("event", "t/events", b"x"))
    assert small.lost_records()
    assert small.take_drops() == {"event": 3} and not small.lost_records()
    # a replaced waveform is counted but is no lost record (the connected link reports lost
    # records at once, waveform replacements with them or at the next reconnection)
    small.put(Outgoing("waveforms", "t/waveforms", b"1"))
    small.put(Outgoing("waveforms", "t/waveforms", b"2"))
    assert not small.lost_records()
    small.put(Outgoing("metrics", "t/metrics", b"1"))
    small.put(Outgoing("metrics", "t/metrics", b"2"))
    assert small.lost_records() and small.take_drops() == {"waveforms": 1, "metrics": 1}


def test_watch_model_and_file_feed(tmp_path: Path) -> None:
    assert sparkline([0.0, 1.0, 0.5]) == "▁█▄" and sparkline([None]) == ""
    log = tmp_path / "telemetry.jsonl"
    lines: list[dict[str, Any]] = [
        {
            "topic": "status",
            "payload": {
                "type": "status",
                "run": "r",
                "bench": "b",
                "state": "running",
                "epoch": 1,
                "step": 3,
                "total_steps": 8,
                "eta_s": 75.0,
                "accuracy": 0.75,
            },
        },
        *(
            {
                "topic": "metrics",
                "payload": {
                    "type": "metrics",
                    "run": "r",
                    "bench": "b",
                    "step": s,
                    "loss": 1.0 / s,
                    "accuracy": 0.5,
                    "bench_time_s": 5.5,
                    "physical_min_s": 5.0,
                },
            }
            for s in (1, 2, 3, 3)
        ),
        {
            "topic": "events",
            "payload": {
                "type": "event",
                "run": "r",
                "bench": "b",
                "seq": 1,
                "kind": "paused",
                "message": "paused by mqtt:op",
                "time": "2026-01-01T10:00:00.000Z",
            },
        },
    ]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"topic": "sta')
    feed, model = FileFeed(log), WatchModel()
    for t, p in feed.poll():
        model.feed(t, p)
    view = model.runs[("b", "r")]
    assert list(view.losses) == [1.0, 0.5, 1 / 3]  # the repeated step counted once
    assert view.events[-1]["kind"] == "paused"
    from rich.console import Console

    console = Console(width=140, record=True, file=open("/dev/null", "w"))
    console.print(render(model))
    text = console.export_text()
    assert "b/r" in text and "running" in text and "3/8" in text and "1m15s" in text
    assert "5.5 s / 5 s (1.10×)" in text and "paused by mqtt:op" in text and "75%" in text
    # a watcher that joined a stopped run late: the status's loss, no ETA, no events yet
    late = WatchModel()
    late.feed("status", {**lines[0]["payload"], "state": "paused", "loss": 0.0125})
    late.feed("status", {**lines[0]["payload"], "run": "old", "state": "finished"})
    console.print(render(late))
    text = console.export_text()
    assert "paused" in text and "0.0125" in text and "1m15s" not in text
    assert "(none since this watch began)" in text and "b/old" in text
    assert "last events of b/r" in text and "last events of b/old" not in text


def test_physlearn_control_refuses_unknown_commands_and_missing_brokers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from physlearn.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["control", "self_destruct", "run1", "--broker", "mqtt://127.0.0.1:1"])
    assert exc.value.code == 2 and "invalid choice: 'self_destruct'" in capsys.readouterr().err
    monkeypatch.delenv("PHYSLEARN_BROKER", raising=False)
    assert main(["control", "pause", "run1"]) == 2
    assert "no broker: give --broker" in capsys.readouterr().err
    assert main(["control", "pause", "run1", "--broker", "tcp://x"]) == 2
    assert "use mqtt://HOST" in capsys.readouterr().err


def test_publisher_log_waveforms_and_status_without_a_broker(tmp_path: Path) -> None:
    from types import SimpleNamespace

    import numpy as np

    from physlearn.telemetry.publisher import TelemetryPublisher
    from physlearn.training.control import RunControl
    from physlearn.training.events import RunPaused, RunStarted, StepDone

    journal = [
        SimpleNamespace(nudged=False, x=np.random.default_rng(0).normal(size=(2, 33, 6))),
        SimpleNamespace(nudged=True, x=np.ones((2, 33, 6))),
    ]
    pub = TelemetryPublisher(
        "r",
        "b",
        "physlearn/b/r",
        names=["a"],
        units=["N/m"],
        log_dir=tmp_path,
        control=RunControl(),
        waveforms=lambda: journal,
        waveform_points=8,
    )
    pub(RunStarted("emulated-memory", 4, {"train_accuracy": 0.5}))
    z = np.zeros(1)
    pub(StepDone(0, 0, 1, 4, z, z + 1.0, 0.25, z, None, 6, 1.5))
    pub(RunPaused("paused", "paused by mqtt:op", 0, 1, source="mqtt:op"))
    pub.close()
    rows = [json.loads(x) for x in (tmp_path / "telemetry.jsonl").read_text().splitlines()]
    topics = [r["topic"] for r in rows]
    assert topics == [
        "events",
        "status",
        "metrics",
        "status",
        "waveforms",
        "events",
        "status",
        "status",
    ]
    wf = rows[4]["payload"]
    assert [p["nudged"] for p in wf["phases"]] == [False, True]
    assert np.asarray(wf["phases"][0]["x"]).shape == (2, 8, 6)
    assert np.array_equal(np.asarray(wf["phases"][0]["x"])[:, 0], journal[0].x[:, 0])
    m = rows[2]["payload"]
    assert (m["loss"], m["gradient_norm"], m["accuracy"], m["schema"]) == (0.25, 1.0, 0.5, 1)
    assert rows[6]["payload"]["state"] == "paused" and rows[6]["payload"]["source"] == "mqtt:op"
    assert rows[7]["payload"]["state"] == "stopped"  # the session ended while paused
