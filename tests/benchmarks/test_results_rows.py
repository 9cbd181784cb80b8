"""benchmarks/results_rows.py: the docs table's rows picked for a sweep, and a sweep's rows
compared with them value by value (no training: records written by hand)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from physlearn.sweeps.records import PointRecord, RecordStore

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "bench_results_rows", ROOT / "benchmarks" / "results_rows.py"
)
assert _spec is not None and _spec.loader is not None
ROWS = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = ROWS
_spec.loader.exec_module(ROWS)


def _doc_row(seed: int, wall_s: float, loss: float, **extra: object) -> dict[str, object]:
    return {
        "task": "xor",
        "regime": "conservative",
        "estimator": "adjoint",
        "seed": seed,
        "test_accuracy": 1.0,
        "test_loss": loss,
        "train_accuracy": 1.0,
        "epochs": 7,
        "wall_s": wall_s,
        "solver_failures": 0,
        "selected_epoch": 6,
        "stable": True,
        "final_detuning_linewidths": 3.25,
        "stability_orbits": "evaluated",
        "error": "",
        **extra,
    }


def _record(seed: int, loss: float) -> PointRecord:
    metrics = {
        "test_accuracy": 1.0,
        "test_loss": loss,
        "train_accuracy": 1.0,
        "epochs_run": 7,
        "selected_epoch": 6,
        "solver_failures": 0,
        "stable": True,
        "final_detuning_linewidths": 3.25,
        "stability_orbits": "evaluated",
    }
    labels = {"task": "xor", "regime": "conservative", "estimator": "adjoint", "seed": seed}
    return PointRecord(f"xor-conservative-adjoint-s{seed}", "done", labels, metrics, wall_s=2.0)


def test_pick_takes_the_cheapest_finished_row_of_each_group() -> None:
    rows = [
        _doc_row(0, 30.0, 0.1),
        _doc_row(1, 10.0, 0.1),
        _doc_row(2, 5.0, 0.1, error="ConfigError: x"),
        _doc_row(3, 50.0, 0.1, estimator="ep_echo"),
    ]
    assert [r["seed"] for r in ROWS.pick(rows, max_wall_s=40)] == [1]
    assert [r["seed"] for r in ROWS.pick(rows, max_wall_s=60)] == [1, 3]


def test_check_demands_every_value_bit_for_bit(tmp_path: Path) -> None:
    docs = tmp_path / "rows.jsonl"
    loss = 0.1 + 0.2
    docs.write_text(json.dumps(_doc_row(0, 9.0, loss)) + "\n" + json.dumps(_doc_row(1, 9.0, loss)))
    store = RecordStore(tmp_path / "sweep")
    store.write(_record(0, loss))
    store.write(_record(1, loss))
    text, bits, shown = ROWS.check(tmp_path / "sweep", docs)
    assert bits and shown and "2 rows of the sweep" in text and "2 bit-identical" in text
    store.write(_record(1, 0.3))  # one ulp away from 0.1 + 0.2
    text, bits, shown = ROWS.check(tmp_path / "sweep", docs)
    assert not bits and shown and "NO: test_loss: 0.30000000000000004 → 0.3 | yes |" in text
    store.write(_record(1, 0.301))
    text, bits, shown = ROWS.check(tmp_path / "sweep", docs)
    assert not shown and "| NO: test_loss |" in text and "1 bit-identical, 1 equal as" in text
