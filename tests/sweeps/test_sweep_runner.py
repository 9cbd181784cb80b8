"""Running points in one process: records, the tidy table, skipping finished points, failures
kept, partial run directories, locks, and an unreachable scheduler."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sweep_helpers import physlearn, read_records, result_values, xor_sweep

from physlearn.sweeps import SerialExecutor, SweepError, Task, execute, load_sweep, run_sweep
from physlearn.sweeps.engine import DaskExecutor
from physlearn.sweeps.records import PointRecord, RecordStore
from physlearn.sweeps.runner import run_tasks


def test_serial_sweep_writes_one_exact_row_per_point_and_skips_them_after(tmp_path: Path) -> None:
    plan = load_sweep(xor_sweep(tmp_path, seeds=(0, 1), estimators=("adjoint",), epochs=2))
    seen: list[tuple[str, bool]] = []
    records = run_sweep(plan, SerialExecutor(), on_record=lambda r, f: seen.append((r.point, f)))
    assert [r.point for r in records] == ["adjoint-s0", "adjoint-s1"]
    assert seen == [("adjoint-s0", True), ("adjoint-s1", True)]
    assert all(r.status == "done" and r.worker == "serial" for r in records)
    table = pd.read_csv(plan.root / "results.csv")
    assert list(table["point"]) == ["adjoint-s0", "adjoint-s1"]
    assert list(table["training.seed"]) == [0, 1]
    for r, (_, row) in zip(records, table.iterrows(), strict=True):
        assert row["test_loss"] == r.metrics["test_loss"]  # floats round-trip bit for bit
        assert row["epochs_run"] == 2 and row["status"] == "done"
        assert (plan.root / r.point / "summary.json").is_file()
    before = {p: (plan.root / "_sweep" / "points" / f"{p}.json").read_bytes() for p, _ in seen}
    seen.clear()
    again = run_sweep(plan, SerialExecutor(), on_record=lambda r, f: seen.append((r.point, f)))
    assert seen == [("adjoint-s0", False), ("adjoint-s1", False)]  # nothing ran
    assert [r.to_json() for r in again] == [r.to_json() for r in records]
    assert before == {
        p: (plan.root / "_sweep" / "points" / f"{p}.json").read_bytes() for p in before
    }
    assert "| adjoint-s1 |" in (plan.root / "results.md").read_text()


def _boom(x: int) -> dict[str, Any]:
    if x == 1:
        raise ValueError("point one is broken")
    return {"y": 2 * x}


def test_a_failed_point_is_kept_never_fatal_and_retried_on_request(tmp_path: Path) -> None:
    tasks = [Task(f"p{x}", _boom, {"x": x}, labels={"x": x}) for x in range(3)]
    recs = run_tasks(tasks, SerialExecutor(), tmp_path)
    assert [(r.point, r.status) for r in recs] == [("p0", "done"), ("p1", "failed"), ("p2", "done")]
    assert recs[1].error == "ValueError: point one is broken"
    table = pd.read_csv(tmp_path / "results.csv")
    assert list(table["status"]) == ["done", "failed", "done"]
    assert table["error"][1] == "ValueError: point one is broken"
    ran: list[str] = []
    run_tasks(tasks, SerialExecutor(), tmp_path, on_record=lambda r, f: f and ran.append(r.point))
    assert ran == []  # a failure is a finished point
    run_tasks(
        tasks,
        SerialExecutor(),
        tmp_path,
        retry_failed=True,
        on_record=lambda r, f: f and ran.append(r.point),
    )
    assert ran == ["p1"]


def _never(**_: Any) -> dict[str, Any]:
    raise AssertionError("a finished point ran again")


def test_execute_returns_the_record_of_a_finished_point(tmp_path: Path) -> None:
    done = PointRecord("p", "done", {"x": 1}, {"y": 0.1}, wall_s=1.0, worker="w1")
    RecordStore(tmp_path).write(done)
    assert execute(Task("p", _never), str(tmp_path)).to_json() == done.to_json()


def _hold(log: list[tuple[str, float, float]], name: str) -> dict[str, Any]:
    t0 = time.monotonic()
    time.sleep(0.3)
    log.append((name, t0, time.monotonic()))
    return {}


def test_points_of_one_bench_never_overlap(tmp_path: Path) -> None:
    log: list[tuple[str, float, float]] = []
    tasks = [Task(f"p{i}", _hold, {"log": log, "name": f"p{i}"}, lock="rig") for i in range(3)]
    threads = [threading.Thread(target=execute, args=(t, str(tmp_path))) for t in tasks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans = sorted((a, b) for _, a, b in log)
    assert len(spans) == 3
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(2))


def test_partial_run_directories_are_resumed_restarted_or_refused(tmp_path: Path) -> None:
    plan = load_sweep(xor_sweep(tmp_path, seeds=(0, 1, 2), estimators=("adjoint",), epochs=2))
    run_sweep(plan, SerialExecutor())
    ref = result_values(plan.root)
    store = RecordStore(plan.root)
    # s0: its summary lost (killed at the very end): resumed from the checkpoint
    (plan.root / "adjoint-s0" / "summary.json").unlink()
    # s1: killed while its directory was being created (no config.toml yet): started over
    shutil.rmtree(plan.root / "adjoint-s1")
    (plan.root / "adjoint-s1" / "params").mkdir(parents=True)
    store.forget("adjoint-s1")
    # s2: the directory holds another run's config: refused, kept as the point's failure
    cfg = plan.root / "adjoint-s2" / "config.toml"
    cfg.write_text(cfg.read_text().replace("lr = 0.05", "lr = 0.07"))
    (plan.root / "adjoint-s2" / "summary.json").unlink()
    store.forget("adjoint-s2")
    recs = {r.point: r for r in run_sweep(plan, SerialExecutor())}
    assert recs["adjoint-s0"].status == "done" and recs["adjoint-s0"].resumed
    assert recs["adjoint-s1"].status == "done" and not recs["adjoint-s1"].resumed
    assert recs["adjoint-s2"].status == "failed"
    assert "config differs in optimizer.lr" in recs["adjoint-s2"].error
    now = result_values(plan.root)
    assert now["adjoint-s0"] == ref["adjoint-s0"] and now["adjoint-s1"] == ref["adjoint-s1"]
    assert len(read_records(plan.root)) == 3


def test_an_unreachable_scheduler_is_a_clear_error_within_the_timeout() -> None:
    t0 = time.monotonic()
    with pytest.raises(
        SweepError, match=r"tcp://127\.0\.0\.1:9: no Dask scheduler answered within 2 s"
    ):
        DaskExecutor.connect("tcp://127.0.0.1:9", timeout=2.0)
    assert time.monotonic() - t0 < 15


def test_cli_lists_points_and_reports_bad_input(tmp_path: Path) -> None:
    f = xor_sweep(tmp_path, seeds=(0,))
    out = physlearn("sweep", "--config", str(f), "--list", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ep_symmetric-s0: xor.toml" in out.stdout and "2 points" in out.stdout
    bad = xor_sweep(tmp_path / "bad", extra='[[points]]\nname = "t"\nset = { "nope.x" = 1 }\n')
    out = physlearn("sweep", "--config", str(bad), timeout=120)
    assert out.returncode == 2 and "point 't_ep_symmetric-s0'" in out.stderr
    assert "nope: Extra inputs are not permitted" in out.stderr
    t0 = time.monotonic()
    out = physlearn(
        "sweep", "--config", str(f), "--scheduler", "tcp://127.0.0.1:9", "--timeout", "2"
    )
    assert out.returncode == 2 and "no Dask scheduler answered within 2 s" in out.stderr
    assert time.monotonic() - t0 < 30
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_summary_metrics_keep_the_validation_split_when_the_run_has_one() -> None:
    """A recipe screen chooses on validation data: the sweep table carries the selected epoch's
    validation accuracy and loss when the run held a split out, and no such column otherwise."""
    from physlearn.sweeps.records import markdown_table
    from physlearn.sweeps.training import summary_metrics

    final = {"test_accuracy": 0.9, "test_loss": 0.01, "train_accuracy": 0.95, "train_loss": 0.02}
    plain = summary_metrics({"final": dict(final, validation_accuracy=None)})
    assert "validation_accuracy" not in plain and "validation_loss" not in plain
    held = summary_metrics({"final": dict(final, validation_accuracy=0.97, validation_loss=0.03)})
    assert held["validation_accuracy"] == 0.97 and held["validation_loss"] == 0.03
    rec = PointRecord(point="p", status="done", labels={}, metrics=held, wall_s=1.0, worker="w")
    assert "validation_accuracy" in markdown_table([rec]).splitlines()[0]
