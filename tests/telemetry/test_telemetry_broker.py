"""Telemetry through a real mosquitto (tests/telemetry/mqtt_broker.py: password file, ACL, TLS
with a CA generated here), on the ideal twin's XOR (`physlearn train` subprocesses, a few
seconds each):

* the run publishes status, metrics, params and events; the subscriber's record matches the
  run's own records (metrics.jsonl, params/) and the parameters are bit-identical to the same
  run without telemetry;
* the broker killed and restarted mid-run: training never stalls, every event and every epoch's
  parameters arrive after the reconnection, dropped metrics are counted and reported;
* a SIGKILLed run's last will marks it crashed; a run that ends during a short outage still
  delivers its final status;
* pause and resume from ``physlearn control`` (operator) give bit-identical parameters;
* bad input — malformed, unknown, oversize, stale, future, replayed, retained, wrong-run
  commands; anonymous clients; a viewer's commands; wrong credentials; an unreachable broker;
  a wrong CA — each refused with a clear message, training unaffected;
* ``physlearn watch`` under tmux against a live run.

The publishing, last-will, end-of-run and pause tests run in the fast suite (about 60 s on 2
busy cores, the broker and the baselines included); the rest are marked slow (about 2 minutes).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from mqtt_broker import PASSWORDS, Mosquitto, Recorder, free_port
from telemetry_runs import (
    control,
    final_params,
    local_log,
    params_of,
    start_train,
    telemetry_table,
    train,
    wait_for,
    xor_config,
)

from physlearn.telemetry.payloads import iso_time

pytestmark = pytest.mark.timeout(600)

#: epochs of the runs that are paused or sent commands while they train (~0.1 s per epoch)
LONG = 400  # epochs: long enough (≥ 4 s on a fast machine) for a command to arrive mid-run


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path_factory.mktemp("mosquitto"), tls=True) as m:
        yield m


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """XOR on the twin without telemetry, by epoch count (the two runs side by side)."""
    tmp = tmp_path_factory.mktemp("baseline")
    cfg = xor_config(tmp, "xor.toml")
    procs = {e: start_train(cfg, tmp / "runs", f"base{e}", "--epochs", str(e)) for e in (6, LONG)}
    for proc in procs.values():
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    return {e: tmp / "runs" / f"base{e}" for e in procs}


def _assert_same_params(a: Path, b: Path) -> None:
    pa, pb = params_of(a), params_of(b)
    assert len(pa) == len(pb) > 0
    assert all(np.array_equal(x, y) for x, y in zip(pa, pb, strict=True))
    assert np.array_equal(final_params(a), final_params(b))


def test_a_run_publishes_what_it_records(
    broker: Mosquitto, baseline: dict[int, Path], tmp_path: Path
) -> None:
    rec = Recorder(broker.port).start()
    cfg = xor_config(tmp_path, "xor.toml", telemetry_table(broker.url))
    t0 = time.monotonic()
    r = train(cfg, tmp_path / "runs", "pub", "--epochs", "6")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / "pub"
    rec.wait_for(lambda: any(s.get("state") == "finished" for s in rec.of("status")))
    rec.stop()
    print(f"run with telemetry: {time.monotonic() - t0:.1f} s")
    _assert_same_params(run, baseline[6])  # bit-identical to the run without telemetry
    assert "password" not in (run / "config.toml").read_text().replace("password_env", "")
    assert PASSWORDS["run"] not in "".join(p.read_text(errors="ignore") for p in run.glob("*.*"))
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = rec.of("metrics")
    assert [m["step"] for m in steps] == [m["steps"] for m in metrics]  # one step per epoch
    for m, row in zip(steps, metrics, strict=True):
        assert m["schema"] == 1 and m["run"] == "pub" and m["bench"] == "twin"
        assert m["loss"] == row["mean_batch_loss"]  # bit for bit (JSON floats round-trip)
        assert m["gradient_norm"] > 0 and m["step_time_s"] > 0 and m["experiments"] > 0
    params = rec.of("params")
    assert [p["epoch"] for p in params] == list(range(6))
    for p, saved in zip(params, params_of(run), strict=True):
        assert np.array_equal(np.array(p["values"]), saved)
        assert len(p["names"]) == len(p["units"]) == saved.size and p["units"][0] == "N/m"
    events = rec.of("events")
    assert [e["kind"] for e in events] == ["run_started", "finished"]
    assert [e["seq"] for e in events] == [1, 2]
    status = rec.of("status")[-1]
    assert status["state"] == "finished" and status["step"] == 6 and status["level"] == "ideal"
    # the run's own log holds the same payloads
    assert local_log(run, "metrics") == steps


def test_the_end_of_a_run_is_delivered_through_an_outage_that_ends_soon(tmp_path: Path) -> None:
    """`MqttLink.close` waits (up to its flush time) for a broker that went away to come back,
    so a run that ends during a short outage still says so; without it the retained status
    would stay at the last one delivered (``running``)."""
    from physlearn.telemetry.config import Broker
    from physlearn.telemetry.link import MqttLink, Outgoing

    with Mosquitto(tmp_path / "b") as m:
        rec = Recorder(m.port).start()
        rec.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]  # (paho sleeps floats)
        broker = Broker("127.0.0.1", m.port, False, None, "run", PASSWORDS["run"])
        root = "physlearn/twin/end"
        link = MqttLink(
            broker,
            root,
            will={"state": "crashed"},
            on_control=lambda sender, payload, retained: None,  # as a run's: notices the loss
            reconnect_min_s=0.3,
            reconnect_max_s=0.3,
        ).start()
        assert link.connected.wait(10)
        m.kill()
        wait_for(lambda: not link.connected.is_set(), 10)
        final = json.dumps({"type": "status", "run": "end", "state": "finished"}).encode()
        link.put(Outgoing("status", f"{root}/status", final, retain=True))
        restart = threading.Timer(1.0, m.start)
        restart.start()
        t0 = time.monotonic()
        left = link.close(flush_s=5.0)
        waited = time.monotonic() - t0
        restart.join()
        assert left == 0 and 1.0 <= waited < 5.0, (left, waited)
        # retained: the subscriber has it whenever it is back
        rec.wait_for(lambda: any(s.get("state") == "finished" for s in rec.of("status")), 10)
        rec.stop()


@pytest.mark.slow
def test_broker_outage_loses_no_event_and_counts_dropped_metrics(
    broker: Mosquitto, tmp_path: Path
) -> None:
    # The run's link retries every 3 s: lost at the kill, refused at +3 s, back at +6 s; the
    # test's subscriber (not a persistent session: it gets only what is published while it is
    # connected) retries every 0.5 s and is back before the run's link, which then delivers
    # what it buffered and reports the drops.
    extra = telemetry_table(
        broker.url, buffer_metrics=3, reconnect_min_s=3.0, reconnect_max_s=3.0, keepalive_s=2
    )
    cfg = xor_config(tmp_path, "xor.toml", extra + "\n")
    rec = Recorder(broker.port).start()
    rec.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]  # (paho sleeps floats)
    # The run is long (a step takes ~0.01 s on a fast machine, ~0.05 s on a slow one) and is
    # ended by Ctrl-C once it has run ≥ 30 steps on either side of the outage, however fast the
    # machine: with a fixed epoch count a fast machine finished inside the outage.
    proc = start_train(cfg, tmp_path / "runs", "outage", "--epochs", "1000000")
    run = tmp_path / "runs" / "outage"

    def steps_since(t: float) -> int:
        from physlearn.telemetry.payloads import parse_time

        return sum(parse_time(m["time"]) > t for m in local_log(run, "metrics"))

    try:
        wait_for(lambda: len(rec.of("metrics")) >= 40, proc=proc)
        t_first = time.time()
        wait_for(lambda: steps_since(t_first) >= 30, proc=proc)  # step times before
        rec.subscribed.clear()
        broker.kill()
        t_kill = time.time()
        time.sleep(4.0)
        broker.start()
        assert rec.subscribed.wait(1.5), "the test's subscriber is not back within 1.5 s"
        t_back = time.time()
        wait_for(lambda: steps_since(t_back + 3) >= 30, proc=proc)  # step times after
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 130, err
        rec.wait_for(lambda: any(s.get("state") == "stopped" for s in rec.of("status")))
    finally:
        if proc.poll() is None:
            proc.kill()
        rec.stop()
    print(err[-2000:])
    assert "unreachable" in err and "connected to" in err  # one line each, no traceback
    assert "Traceback" not in err
    # The link loses only what it counts. What the broker had acknowledged but not yet
    # delivered when it was SIGKILLed (in its memory, or unread in the subscriber's socket when
    # the connection resets) dies with it, uncounted: a publisher cannot know. Such losses are
    # the first steps of the gap, and every uncounted loss of any class was published in the
    # last second before the kill, never during the outage.
    from physlearn.telemetry.payloads import parse_time

    events = rec.of("events")
    seqs = {e["seq"] for e in events}
    lost_events = [e for e in local_log(run, "events") if e["seq"] not in seqs]
    drops = [e for e in events if e["kind"] == "telemetry_drops"]
    outage_drops = [e for e in drops if e["outage_s"] > 0]
    assert len(outage_drops) == 1 and outage_drops[0]["dropped"]["metrics"] >= 1
    dropped = sum(e["dropped"].get("metrics", 0) for e in drops)
    local = local_log(run, "metrics")
    got = {m["step"] for m in rec.of("metrics")}
    missing = [m for m in local if m["step"] not in got]
    print(f"outage: drop reports {[(e['dropped'], e['outage_s']) for e in drops]}")
    print(f"missing steps {[m['step'] for m in missing]}")
    print(
        f"kill {t_kill:.3f} back {t_back:.3f}; gap published {parse_time(missing[0]['time']):.3f}"
        f" to {parse_time(missing[-1]['time']):.3f}"
    )
    first = missing[0]["step"]
    assert [m["step"] for m in missing] == list(range(first, first + len(missing)))  # one gap
    uncounted = len(missing) - dropped
    assert uncounted >= 0
    got_epochs = {p["epoch"] for p in rec.of("params")}
    lost_params = [p for p in local_log(run, "params") if p["epoch"] not in got_epochs]
    lost = missing[:uncounted] + lost_events + lost_params
    ages = [t_kill - parse_time(m["time"]) for m in lost]
    print(
        f"uncounted: {uncounted} metrics, events {[e['seq'] for e in lost_events]}, params "
        f"epochs {[p['epoch'] for p in lost_params]}; published {ages} s before the kill"
    )
    assert all(-0.05 <= a <= 1.0 for a in ages), ages

    # training did not stall: step times during the outage as outside it
    def epoch_s(m: dict) -> float:
        return parse_time(m["time"])

    inside = [m["step_time_s"] for m in local if t_kill <= epoch_s(m) <= t_back]
    outside = [m["step_time_s"] for m in local if not t_kill - 0.5 <= epoch_s(m) <= t_back + 3]
    print(
        f"step time median during the outage {np.median(inside):.3f} s, else "
        f"{np.median(outside):.3f} s ({len(inside)} / {len(outside)} steps)"
    )
    assert len(inside) >= 3
    assert np.median(inside) < 1.5 * np.median(outside) + 0.02


def test_a_killed_run_is_marked_crashed_by_its_last_will(broker: Mosquitto, tmp_path: Path) -> None:
    cfg = xor_config(tmp_path, "xor.toml", telemetry_table(broker.url, keepalive_s=2))
    rec = Recorder(broker.port).start()
    proc = start_train(cfg, tmp_path / "runs", "killed", "--epochs", "300")
    try:
        wait_for(lambda: len(rec.of("metrics")) >= 2, proc=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        rec.wait_for(lambda: rec.of("status")[-1].get("state") == "crashed", 30)
    finally:
        if proc.poll() is None:
            proc.kill()
        rec.stop()
    last = rec.of("status")[-1]
    assert last["run"] == "killed" and "without a goodbye" in last["message"]
    # retained: a watcher that connects later sees it
    late = Recorder(broker.port, topic="physlearn/twin/killed/status").start()
    late.wait_for(lambda: late.of("status") and late.of("status")[-1]["state"] == "crashed", 10)
    late.stop()


def test_pause_and_resume_from_physlearn_control(
    broker: Mosquitto, baseline: dict[int, Path], tmp_path: Path
) -> None:
    cfg = xor_config(tmp_path, "xor.toml", telemetry_table(broker.url))
    rec = Recorder(broker.port).start()
    proc = start_train(cfg, tmp_path / "runs", "pr", "--epochs", str(LONG))
    try:
        wait_for(lambda: len(rec.of("metrics")) >= 3, proc=proc)
        r = control(broker.url, "pause", "pr", "--wait", "--reason", "coffee")
        assert r.returncode == 0, r.stderr
        assert "pause accepted" in r.stdout and "is paused" in r.stdout
        n = len(rec.of("metrics"))
        time.sleep(1.5)
        assert len(rec.of("metrics")) == n  # held
        r = control(broker.url, "resume", "pr", "--wait")
        assert r.returncode == 0, r.stderr
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
        rec.stop()
    _assert_same_params(tmp_path / "runs" / "pr", baseline[LONG])
    kinds = {e["kind"]: e for e in rec.of("events")}
    assert kinds["command"]["sender"] == "operator"
    assert kinds["paused"]["source"] == "mqtt:operator" and "coffee" in kinds["paused"]["message"]
    assert kinds["resumed"]["source"] == "mqtt:operator"


def _publish(
    port: int, topic: str, payloads: list[bytes], user: str = "operator", retain: bool = False
) -> list[int]:
    """Publish as ``user`` (MQTT 5, QoS 1); the PUBACK reason codes."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, PASSWORDS[user])
    codes: list[int] = []
    c.on_publish = lambda cl, ud, mid, rc, props: codes.append(rc.value)
    c.connect("127.0.0.1", port)
    c.loop_start()
    for p in payloads:
        c.publish(topic, p, qos=1, retain=retain).wait_for_publish(10)
    deadline = time.monotonic() + 10
    while len(codes) < len(payloads) and time.monotonic() < deadline:
        time.sleep(0.02)
    c.loop_stop()
    c.disconnect()
    return codes


def _ok(codes: list[int], n: int) -> bool:
    """n publishes accepted (MQTT 5 reason codes below 0x80; 16: no subscriber yet)."""
    return len(codes) == n and all(c < 0x80 for c in codes)


def _cmd(run: str, command: str = "pause", **kw: object) -> bytes:
    base = {
        "schema": 1,
        "run": run,
        "command": command,
        "issued": iso_time(),
        "nonce": uuid.uuid4().hex,
    }
    base.update(kw)
    return json.dumps(base).encode()


@pytest.mark.slow
def test_bad_commands_are_refused_and_reported_training_unaffected(
    broker: Mosquitto, baseline: dict[int, Path], tmp_path: Path
) -> None:
    run_id = "bad"
    topic = f"physlearn/twin/{run_id}/control/operator"
    # a command retained on the broker before the run starts: delivered as retained, refused
    assert _ok(_publish(broker.port, topic, [_cmd(run_id)], retain=True), 1)
    cfg = xor_config(tmp_path, "xor.toml", telemetry_table(broker.url))
    rec = Recorder(broker.port).start()
    proc = start_train(cfg, tmp_path / "runs", run_id, "--epochs", str(LONG))
    try:
        wait_for(lambda: len(rec.of("metrics")) >= 2, proc=proc)
        _publish(broker.port, topic, [b""], retain=True)  # clear the retained command
        resume = _cmd(run_id, "resume")
        bad = [
            b"{not json",
            b"\xff\xfe",
            b"[1,2,3]",
            _cmd(run_id, "self_destruct"),
            _cmd(run_id, reason="x" * 6000),
            _cmd(run_id, issued=iso_time(time.time() - 3600)),
            _cmd(run_id, issued=iso_time(time.time() + 3600)),
            _cmd("another-run"),
            _cmd(run_id, schema=7),
            resume,  # accepted (a resume outside a pause does nothing) ...
            resume,  # ... and replayed
        ]
        assert _ok(_publish(broker.port, topic, bad), len(bad))
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
        rec.stop()
    _assert_same_params(tmp_path / "runs" / run_id, baseline[LONG])
    refused = [e["reason"] for e in rec.of("events") if e["kind"] == "command_refused"]
    print("\n".join(refused))
    expected = [
        "retained",
        "not UTF-8 JSON",
        "not UTF-8 JSON",
        "not a JSON object",
        "unknown command",
        "exceeds the limit",
        "stale",
        "in the future",
        "not this run",
        "unsupported schema",
        "replayed",
    ]
    assert len(refused) == len(expected)
    for why, exp in zip(refused, expected, strict=True):
        assert exp in why
    accepted = [e for e in rec.of("events") if e["kind"] == "command"]
    assert len(accepted) == 1 and accepted[0]["command"] == "resume"
    assert not [e for e in rec.of("events") if e["kind"] == "paused"]
    assert err.count("refused") >= len(expected) and "Traceback" not in err


@pytest.mark.slow
def test_who_may_connect_and_command(
    broker: Mosquitto, baseline: dict[int, Path], tmp_path: Path
) -> None:
    # anonymous: refused by the broker
    anon = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    codes: list[str] = []
    anon.on_connect = lambda c, u, f, rc, p=None: codes.append(str(rc))
    anon.connect("127.0.0.1", broker.port)
    anon.loop_start()
    deadline = time.monotonic() + 10
    while not codes and time.monotonic() < deadline:
        time.sleep(0.05)
    anon.loop_stop()
    assert codes == ["Not authorized"]
    # a viewer's command: refused by the broker (MQTT 5 reason code), said clearly, no effect
    cfg = xor_config(tmp_path, "xor.toml", telemetry_table(broker.url))
    rec = Recorder(broker.port).start()
    proc = start_train(cfg, tmp_path / "runs", "acl", "--epochs", "6")
    try:
        wait_for(lambda: len(rec.of("metrics")) >= 1, proc=proc)
        r = control(broker.url, "pause", "acl", user="viewer", timeout=10)
        assert r.returncode == 1 and "refused 'viewer'" in r.stderr and "Not authorized" in r.stderr
        r = control(broker.url, "pause", "acl", user="nobody", timeout=10)
        assert r.returncode == 2 and "refused user 'nobody'" in r.stderr, r.stderr
        r = control(broker.url, "pause", "no-such-run", timeout=5)
        assert r.returncode == 2 and "no run 'no-such-run'" in r.stderr
        _out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
        rec.stop()
    assert not [e for e in rec.of("events") if e["kind"] in ("command", "paused")]
    # the run's own wrong credentials, or no broker at all: one clear line, training unaffected
    for name, url, say in (
        ("wrongpw", broker.url, "refused user 'run'"),
        ("nobroker", f"mqtt://127.0.0.1:{free_port()}", "unreachable"),
    ):
        r = train(
            cfg if name != "nobroker" else xor_config(tmp_path, "nb.toml", telemetry_table(url)),
            tmp_path / "runs",
            name,
            "--epochs",
            "6",
            env={**__import__("os").environ, "PL_TEST_RUN_PASSWORD": "wrong"},
        )
        assert r.returncode == 0, r.stderr
        assert say in r.stderr and "Traceback" not in r.stderr, r.stderr
        _assert_same_params(tmp_path / "runs" / name, baseline[6])
        assert (tmp_path / "runs" / name / "telemetry.jsonl").stat().st_size > 0  # nothing lost


@pytest.mark.slow
def test_tls_with_the_test_ca_works_and_a_wrong_ca_is_refused(
    broker: Mosquitto, tmp_path: Path
) -> None:
    rec = Recorder(broker.port).start()
    good = telemetry_table(broker.tls_url, ca_file=str(broker.ca_file))
    r = train(xor_config(tmp_path, "tls.toml", good), tmp_path / "runs", "tls", "--epochs", "3")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    rec.wait_for(
        lambda: any(s.get("run") == "tls" and s["state"] == "finished" for s in rec.of("status")),
        30,
    )
    rec.stop()
    assert "mqtts://localhost" in r.stderr and "not trusted" not in r.stderr
    wrong = telemetry_table(broker.tls_url, ca_file=str(broker.wrong_ca_file))
    r = train(xor_config(tmp_path, "bad.toml", wrong), tmp_path / "runs", "tlsbad", "--epochs", "3")
    assert r.returncode == 0, r.stderr
    assert "certificate is not trusted" in r.stderr and "ca_file" in r.stderr, r.stderr
    r = control(broker.tls_url, "pause", "tls", ca=broker.wrong_ca_file, timeout=5)
    assert r.returncode == 2 and "certificate is not trusted" in r.stderr
    r = control(broker.tls_url, "resume", "tls", ca=broker.ca_file, timeout=10)
    assert r.returncode == 1 and "has not answered" in r.stderr  # connected; the run has ended


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_watch_shows_a_live_run_under_tmux(broker: Mosquitto, tmp_path: Path) -> None:
    cfg = xor_config(tmp_path, "xor.toml", telemetry_table(broker.url))
    session = f"plwatch{uuid.uuid4().hex[:8]}"
    watch = (
        f"PHYSLEARN_MQTT_PASSWORD={PASSWORDS['viewer']} {sys.executable} -m physlearn.cli "
        f"watch --broker {broker.url} --username viewer"
    )

    def pane() -> str:
        return subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
        ).stdout

    proc: subprocess.Popen[str] | None = None
    try:
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", watch], check=True
        )
        # events are not retained: the run starts once the watch is subscribed — it shows a
        # retained status published for that purpose — or it would miss run_started on a
        # loaded machine
        mark = {"schema": 1, "type": "status", "run": "watchmark", "bench": "twin"}
        mark.update(state="finished", time="2026-01-01T00:00:00.000Z")
        topic = "physlearn/twin/watchmark/status"
        assert _ok(_publish(broker.port, topic, [json.dumps(mark).encode()], "run", True), 1)
        wait_for(lambda: "twin/watchmark" in pane(), 60)
        proc = start_train(cfg, tmp_path / "runs", "watched", "--epochs", "100000")  # killed below
        screen = ""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            time.sleep(1.0)
            screen = pane()
            if "twin/watched" in screen and "running" in screen and "/100000" in screen:
                if any(c in screen for c in "▁▂▃▄▅▆▇█"):
                    break
        print(screen)
        assert "twin/watched" in screen and "running" in screen
        assert "run_started" in screen and "last events of twin/watched" in screen
        assert any(c in screen for c in "▁▂▃▄▅▆▇█")  # sparklines
        (tmp_path / "screen.txt").write_text(screen)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        if proc is not None:
            proc.kill()
            proc.wait(30)
    # the same view of the run directory, without a broker
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "physlearn.cli",
            "watch",
            str(tmp_path / "runs" / "watched"),
            "--once",
            "--settle",
            "0.2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "twin/watched" in r.stdout and "run_started" in r.stdout
