"""Telemetry, remote control and suspenders on the emulated XOR bench (in memory), through a real
mosquitto. Every run is a `physlearn train --arm` subprocess (tests/telemetry/telemetry_bench_main.py
installs the test hooks: transport faults, an interlock trip, a persistent fault, a drift of the
hidden truth, and a read-back of the emulators' outputs after every pause and close).

Config: examples/bench-xor.toml cut to 2 epochs of mini-batches of 2 (4 steps), noise off,
settle tolerance 1e-9 and ``ranging = "canonical"`` (the history-free measurement path that
makes a re-armed bench measure bit for bit as before; tests/training/test_resume_bench.py).

1. a run publishes status/metrics/params/events (retries included); the subscriber's record
   matches the run's records.h5 step by step and params/ epoch by epoch; its parameters are
   bit-identical to the same run without telemetry;
2. pause (safe state read back), resume (bit-identical to the uninterrupted run) and abort
   (safe state read back, checkpoint committed, exit) from ``physlearn control``;
3. the suspenders: an interlock trip pauses and stays paused until an operator resumes; a
   persistent fault pauses and resumes by itself once the instrument answers; a drift of the
   reference response pauses and stays paused (then aborted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mqtt_broker import Mosquitto, Recorder
from telemetry_runs import control, env, params_of, start_train, telemetry_table, wait_for

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "training"))
from test_resume_bench import bench_config  # noqa: E402  (a helper of tests/training)

MAIN = HERE / "telemetry_bench_main.py"
STEPS = 4
FAULTS = [[5, "scope1", "garble"], [9, "qdac", "drop"]]  # transient: retried

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _cfg(tmp: Path, name: str, extra: str = "") -> Path:
    path = bench_config(tmp, settle_tol=1e-9, ranging="canonical", name=name)
    path.write_text(path.read_text() + extra)
    return path


def _start(cfg: Path, root: Path, name: str, hooks: dict[str, Any]) -> subprocess.Popen[str]:
    return start_train(
        cfg,
        root,
        name,
        "--arm",
        script=MAIN,
        env=env(PHYSLEARN_TEST_TELEMETRY_HOOKS=json.dumps(hooks)),
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    return proc.returncode, err


def _trace(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


class Scenarios:
    """Every bench run of this module (two at a time), with what each observed."""

    def __init__(self, broker: Mosquitto, rec: Recorder, tmp: Path) -> None:
        self.broker, self.rec, self.tmp = broker, rec, tmp
        self.root = tmp / "runs"
        self.plain = _cfg(tmp, "plain.toml")
        self.tele = _cfg(tmp, "tele.toml", telemetry_table(broker.url))
        sus = "\n[suspenders]\nrecover_every_s = 1.0\n"
        self.sus = _cfg(tmp, "sus.toml", telemetry_table(broker.url) + sus)
        drift = "\n[suspenders]\ndrift_threshold = 0.05\ndrift_every_steps = 1\n"
        self.drift = _cfg(tmp, "drift.toml", telemetry_table(broker.url) + drift)

    def of(self, run: str, suffix: str) -> list[dict[str, Any]]:
        return [p for p in self.rec.of(suffix) if p.get("run") == run]

    def state(self, run: str) -> str | None:
        s = self.of(run, "status")
        return s[-1].get("state") if s else None

    def run_plain(self, name: str, cfg: Path, hooks: dict[str, Any]) -> dict[str, Any]:
        t0 = time.monotonic()
        code, err = _finish(_start(cfg, self.root, name, hooks))
        return {"code": code, "err": err, "wall_s": time.monotonic() - t0}

    def paused_resumed(self) -> dict[str, Any]:
        name, trace = "paused", self.tmp / "paused.trace"
        proc = _start(self.tele, self.root, name, {"trace": str(trace)})
        out: dict[str, Any] = {}
        wait_for(lambda: len(self.of(name, "metrics")) >= 1, 400, proc)
        out["pause"] = control(self.broker.url, "pause", name, "--wait", "--reason", "check")
        out["trace_paused"] = _trace(trace)
        n = len(self.of(name, "metrics"))
        time.sleep(2.0)
        out["held"] = len(self.of(name, "metrics")) == n and self.state(name) == "paused"
        out["resume"] = control(self.broker.url, "resume", name, "--wait")
        out["code"], out["err"] = _finish(proc)
        return out

    def aborted(self) -> dict[str, Any]:
        name, trace = "aborted", self.tmp / "aborted.trace"
        proc = _start(self.tele, self.root, name, {"trace": str(trace)})
        wait_for(lambda: len(self.of(name, "metrics")) >= 1, 400, proc)
        out: dict[str, Any] = {"abort": control(self.broker.url, "abort", name, "--wait")}
        out["code"], out["err"] = _finish(proc)
        out["trace"] = _trace(trace)
        return out

    def interlock(self) -> dict[str, Any]:
        name, trace = "interlock", self.tmp / "interlock.trace"
        proc = _start(self.sus, self.root, name, {"interlock_at": 6, "trace": str(trace)})
        wait_for(lambda: self.state(name) == "paused", 400, proc)
        time.sleep(3.0)
        out: dict[str, Any] = {"stayed": self.state(name) == "paused", "trace": _trace(trace)}
        out["resume"] = control(self.broker.url, "resume", name, "--wait")
        out["code"], out["err"] = _finish(proc)
        return out

    def persistent(self) -> dict[str, Any]:
        name = "persistent"
        hooks = {"persistent_at": [6, "scope1"], "clear_at_reconnect": 4}
        code, err = _finish(_start(self.sus, self.root, name, hooks))
        return {"code": code, "err": err}

    def drifted(self) -> dict[str, Any]:
        name = "drift"
        proc = _start(self.drift, self.root, name, {"drift_at": 7})
        wait_for(lambda: self.state(name) == "paused", 400, proc)
        time.sleep(3.0)
        out: dict[str, Any] = {"stayed": self.state(name) == "paused"}
        out["abort"] = control(self.broker.url, "abort", name, "--wait")
        out["code"], out["err"] = _finish(proc)
        return out


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("telemetry-bench")
    with Mosquitto(tmp / "broker") as broker:
        rec = Recorder(broker.port).start()
        s = Scenarios(broker, rec, tmp)
        jobs: dict[str, Callable[[], dict[str, Any]]] = {
            "base": lambda: s.run_plain("base", s.plain, {"faults": FAULTS}),
            "tele": lambda: s.run_plain("tele", s.tele, {"faults": FAULTS}),
            "paused": s.paused_resumed,
            "aborted": s.aborted,
            "interlock": s.interlock,
            "persistent": s.persistent,
            "drift": s.drifted,
        }
        t0 = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            futures = {k: pool.submit(f) for k, f in jobs.items()}
            out: dict[str, Any] = {k: f.result() for k, f in futures.items()}
        print(f"7 bench runs, two at a time: {time.monotonic() - t0:.0f} s")
        time.sleep(1.0)
        rec.stop()
        out["scenarios"], out["root"] = s, s.root
        yield out


def _same_params(a: Path, b: Path) -> bool:
    pa, pb = params_of(a), params_of(b)
    return len(pa) == len(pb) == 2 and all(
        np.array_equal(x, y) for x, y in zip(pa, pb, strict=False)
    )


def _safe(line: dict[str, Any]) -> bool:
    return not any(line["outputs_on"]) and all(abs(v) < 1e-9 for v in line["dac_v"])


def test_bench_run_publishes_its_records_bit_identically(results: dict[str, Any]) -> None:
    from physlearn.training.records import read_run_records

    s, root = results["scenarios"], results["root"]
    assert results["base"]["code"] == 0, results["base"]["err"][-3000:]
    assert results["tele"]["code"] == 0, results["tele"]["err"][-3000:]
    print(
        f"wall: base {results['base']['wall_s']:.0f} s, telemetry {results['tele']['wall_s']:.0f} s"
    )
    assert _same_params(root / "base", root / "tele")
    records = read_run_records(root / "tele")
    metrics = s.of("tele", "metrics")
    assert [m["step"] for m in metrics] == records["step"].tolist() == list(range(1, STEPS + 1))
    for i, m in enumerate(metrics):
        assert m["loss"] == float(records["loss"][i])
        assert m["gradient_norm"] == float(np.linalg.norm(records["gradient"][i]))
        assert (m["epoch"], m["batch"]) == (int(records["epoch"][i]), int(records["batch"][i]))
        assert m["bench_time_s"] > 0 and m["physical_min_s"] > 0 and m["experiments"] > 0
    params = s.of("tele", "params")
    assert [p["epoch"] for p in params] == [0, 1]
    for p, saved in zip(params, params_of(root / "tele"), strict=True):
        assert np.array_equal(np.asarray(p["values"]), saved)
    kinds = [e["kind"] for e in s.of("tele", "events")]
    assert kinds[0] == "run_started" and kinds[-1] == "finished" and "retry" in kinds
    retries = [e for e in s.of("tele", "events") if e["kind"] == "retry"]
    assert any("scope1" in e["message"] for e in retries)
    assert any("qdac" in e["message"] or "qdac" in str(e["instrument"]) for e in retries)
    status = s.of("tele", "status")[-1]
    assert status["state"] == "finished" and status["level"] == "emulated-memory"
    assert status["bench"] == s.of("tele", "metrics")[0]["bench"] != "twin"


def test_pause_resume_abort_from_physlearn_control(results: dict[str, Any]) -> None:
    s, root = results["scenarios"], results["root"]
    p = results["paused"]
    assert p["pause"].returncode == 0, p["pause"].stderr
    assert "is paused" in p["pause"].stdout and p["held"]
    # the safe state, read back from the emulators once paused
    assert p["trace_paused"] and p["trace_paused"][-1]["at"] == "pause"
    assert _safe(p["trace_paused"][-1]), p["trace_paused"]
    assert p["resume"].returncode == 0 and p["code"] == 0, p["err"][-3000:]
    # paused and resumed: bit-identical to the uninterrupted run
    assert _same_params(root / "base", root / "paused")
    ev = {e["kind"]: e for e in s.of("paused", "events")}
    assert ev["paused"]["source"] == "mqtt:operator" and ev["resumed"]["source"] == "mqtt:operator"
    a = results["aborted"]
    assert a["abort"].returncode == 0, a["abort"].stderr
    assert a["code"] == 130 and "aborted by mqtt:operator" in a["err"]
    assert a["trace"] and a["trace"][-1]["at"] == "close" and _safe(a["trace"][-1])
    assert (root / "aborted" / "checkpoint.npz").exists()
    assert not (root / "aborted" / "summary.json").exists()
    assert s.state("aborted") == "stopped"
    aborted = [e for e in s.of("aborted", "events") if e["kind"] == "aborted"]
    assert aborted and aborted[0]["source"] == "mqtt:operator"


def test_suspenders_trip_and_resume_as_documented(results: dict[str, Any]) -> None:
    s, root = results["scenarios"], results["root"]
    # interlock: paused in the safe state, stays paused until the operator resumes
    il = results["interlock"]
    assert il["stayed"] and il["trace"] and _safe(il["trace"][-1])
    assert il["resume"].returncode == 0 and il["code"] == 0, il["err"][-3000:]
    ev = s.of("interlock", "events")
    trip = [e for e in ev if e["kind"] == "suspender"]
    assert trip[0]["suspender"] == "interlock" and trip[0]["action"] == "pause"
    assert "interlock" in trip[0]["message"]
    assert [e["source"] for e in ev if e["kind"] in ("paused", "resumed")] == [
        "suspender:interlock",
        "mqtt:operator",
    ]
    assert json.loads((root / "interlock" / "summary.json").read_text())["steps"] == STEPS
    # in the run's own records too: every trip, and the pause and resume it caused
    for run, name, expected in (
        ("interlock", "interlock", ["pause"]),
        ("persistent", "persistent_fault", ["pause", "resume"]),
        ("drift", "drift", ["pause"]),
    ):
        local = [
            json.loads(x)["payload"]
            for x in (root / run / "telemetry.jsonl").read_text().splitlines()
        ]
        trips = [e for e in local if e.get("kind") == "suspender"]
        assert [(e["suspender"], e["action"]) for e in trips] == [(name, a) for a in expected]
        paused = [e for e in local if e.get("kind") == "paused"]
        assert paused and paused[0]["source"] == f"suspender:{name}"
    # persistent fault: paused, then resumed by itself once scope1 answers again
    pf = results["persistent"]
    assert pf["code"] == 0, pf["err"][-3000:]
    ev = s.of("persistent", "events")
    actions = [(e["suspender"], e["action"]) for e in ev if e["kind"] == "suspender"]
    assert actions == [("persistent_fault", "pause"), ("persistent_fault", "resume")]
    resumed = [e for e in ev if e["kind"] == "resumed"]
    assert resumed and resumed[0]["source"] == "suspender:persistent_fault"
    assert json.loads((root / "persistent" / "summary.json").read_text())["steps"] == STEPS
    # drift: paused, stays paused; then aborted by the operator
    dr = results["drift"]
    assert dr["stayed"] and dr["code"] == 130, dr["err"][-3000:]
    trip = [e for e in s.of("drift", "events") if e["kind"] == "suspender"]
    assert trip[0]["suspender"] == "drift" and trip[0]["value"] > 0.05
    print(f"drift measured: {trip[0]['value']:.3g}")
    # the drift checks' reference measurements are not in the steps' records
    from physlearn.training.records import read_run_records

    drift_rec, plain_rec = read_run_records(root / "drift"), read_run_records(root / "tele")
    assert drift_rec["settle_s"].shape[1:] == plain_rec["settle_s"].shape[1:]


def test_the_run_directory_never_holds_the_password(results: dict[str, Any]) -> None:
    from mqtt_broker import PASSWORDS

    for run in results["root"].iterdir():
        for f in run.rglob("*"):
            if f.is_file() and f.suffix in (".toml", ".json", ".jsonl"):
                assert PASSWORDS["run"] not in f.read_text(errors="ignore"), f
    assert os.environ.get("PL_TEST_RUN_PASSWORD") is None  # only the subprocesses had it
