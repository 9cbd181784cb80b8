"""Run directory: layout, atomic writes, metrics, params, summary, exact checkpoints."""

from __future__ import annotations

import json
import math
import os
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from physlearn.errors import ConfigError, PhyslearnError
from physlearn.training.optimizers import make_optimizer
from physlearn.training.runstore import (
    EpochMetrics,
    RunStore,
    atomic_write_bytes,
    load_checkpoint,
    write_checkpoint,
)

CONFIG: dict[str, Any] = {
    "seed": 3,
    "dataset": {"name": "iris", "seed": 0},
    "optimizer": {"name": "adam", "lr": 0.01, "betas": [0.9, 0.999]},
    "estimator": {"name": "ep_symmetric", "beta": 0.05},
}


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def _metrics(epoch: int, **extra: Any) -> EpochMetrics:
    return EpochMetrics(
        epoch=epoch,
        train_loss=0.5 / (epoch + 1),
        train_accuracy=0.6,
        test_loss=0.7,
        test_accuracy=0.5,
        wall_time_s=1.5 * epoch,
        experiments=300 * (epoch + 1),
        extra=extra,
    )


def test_create_layout_and_config_round_trip(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path / "runs", "iris-ep", CONFIG)
    run = tmp_path / "runs" / "iris-ep"
    assert store.run_dir == run
    assert sorted(p.name for p in run.iterdir()) == ["config.toml", "metrics.jsonl", "params"]
    with (run / "config.toml").open("rb") as fh:
        assert tomllib.load(fh) == CONFIG
    assert store.load_config() == CONFIG
    assert (run / "metrics.jsonl").read_bytes() == b""


def test_config_values_are_normalised_or_refused(tmp_path: Path) -> None:
    cfg = {"a": np.float64(0.25), "b": (1, 2), "path": Path("x/y"), "n": np.int64(7)}
    store = RunStore.create(tmp_path, "norm", cfg)
    assert store.load_config() == {"a": 0.25, "b": [1, 2], "path": "x/y", "n": 7}
    with pytest.raises(ConfigError, match=r"'optimizer\.schedule'.*None"):
        RunStore.create(tmp_path, "nulls", {"optimizer": {"schedule": None}})
    assert not (tmp_path / "nulls").exists()  # refused before anything was written


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "sp ace"])
def test_bad_run_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="run name"):
        RunStore.create(tmp_path, name, CONFIG)
    assert list(tmp_path.iterdir()) == []


def test_existing_run_directory_is_refused_and_kept(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "r", CONFIG)
    store.append_metrics(_metrics(0))
    before = store.metrics_path.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        RunStore.create(tmp_path, "r", {"other": 1})
    assert store.load_config() == CONFIG
    assert store.metrics_path.read_bytes() == before


def test_resume_checks_existence_and_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        RunStore.create(tmp_path, "r", CONFIG, resume=True)
    RunStore.create(tmp_path, "r", CONFIG)
    again = RunStore.create(tmp_path, "r", CONFIG, resume=True)
    assert again.load_config() == CONFIG
    changed = json.loads(json.dumps(CONFIG))
    changed["optimizer"]["lr"] = 0.02
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):
        RunStore.create(tmp_path, "r", changed, resume=True)


def test_open_reports_missing_files(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "r", CONFIG)
    assert RunStore.open(store.run_dir).run_dir == store.run_dir
    store.metrics_path.unlink()
    store.params_dir.rmdir()
    with pytest.raises(ConfigError, match=r"missing metrics\.jsonl, params/"):
        RunStore.open(store.run_dir)
    with pytest.raises(ConfigError, match="does not exist"):
        RunStore.open(tmp_path / "nope")


def test_metrics_jsonl_one_object_per_epoch(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "r", CONFIG)
    store.append_metrics(_metrics(0, lr=0.01))
    m1 = _metrics(1)
    m1.cosine_to_adjoint = 0.999
    m1.test_loss = math.nan
    store.append_metrics(m1)
    store.append_metrics({"epoch": 2, "train_loss": np.float64(0.1), "experiments": np.int64(9)})
    lines = store.metrics_path.read_text().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert records == store.read_metrics()
    assert records[0]["lr"] == 0.01 and records[0]["cosine_to_adjoint"] is None
    assert records[1]["cosine_to_adjoint"] == 0.999
    assert records[1]["test_loss"] is None  # NaN is not JSON: written as null
    assert records[2] == {"epoch": 2, "train_loss": 0.1, "experiments": 9}
    assert {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"} <= set(
        records[0]
    )
    assert {"wall_time_s", "experiments"} <= set(records[0])


def test_metrics_refuse_non_increasing_epochs_and_clashes(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "r", CONFIG)
    store.append_metrics(_metrics(0))
    store.append_metrics(_metrics(1))
    before = store.metrics_path.read_bytes()
    with pytest.raises(PhyslearnError, match="not after"):
        store.append_metrics(_metrics(1))
    with pytest.raises(PhyslearnError, match="epoch"):
        store.append_metrics({"loss": 1.0})
    with pytest.raises(ConfigError, match="shadow"):
        store.append_metrics(_metrics(2, test_loss=5.0))
    assert store.metrics_path.read_bytes() == before
    assert store.truncate_metrics(0) == 1
    assert [r["epoch"] for r in store.read_metrics()] == [0]


def test_params_per_epoch_bit_exact(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "r", CONFIG)
    rng = np.random.default_rng(5)
    saved = {e: rng.standard_normal(7) for e in (0, 1, 12)}
    for e, p in saved.items():
        path = store.save_params(e, p)
        assert path.name == f"epoch_{e:04d}.npy"
    assert store.param_epochs() == [0, 1, 12]
    for e, p in saved.items():
        loaded = store.load_params(e)
        assert loaded.dtype == np.float64
        np.testing.assert_array_equal(loaded, p)
    with pytest.raises(ConfigError, match="epoch 3"):
        store.load_params(3)


def test_summary(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "r", CONFIG)
    with pytest.raises(ConfigError, match="summary"):
        store.read_summary()
    store.write_summary({"best_test_accuracy": 0.97, "epochs": 3, "diverged_at": math.inf})
    assert store.read_summary() == {"best_test_accuracy": 0.97, "epochs": 3, "diverged_at": None}


def test_no_temp_files_left_after_writes(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "r", CONFIG)
    rng = np.random.default_rng(0)
    opt = make_optimizer("adam", lr=0.1)
    p = np.zeros(3)
    for epoch in range(3):
        p = opt.step(p, rng.standard_normal(3))
        store.write_checkpoint(
            params=p, optimizer_state=opt.state_dict(), rng=rng, epoch=epoch, step=epoch + 1
        )
        store.append_metrics(_metrics(epoch))
        store.save_params(epoch, p)
    store.write_summary({"done": True})
    assert _temp_files(tmp_path) == []
    assert list(store.stray_temp_files()) == []
    names = sorted(p.name for p in store.run_dir.iterdir())
    assert names == ["checkpoint.npz", "config.toml", "metrics.jsonl", "params", "summary.json"]


def test_failed_replace_keeps_old_file_and_removes_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"old")

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert _temp_files(tmp_path) == []


@pytest.mark.parametrize("bit_generator", ["PCG64", "MT19937", "Philox", "SFC64", "PCG64DXSM"])
def test_checkpoint_restores_rng_so_next_draws_are_identical(
    tmp_path: Path, bit_generator: str
) -> None:
    store = RunStore.create(tmp_path, "r", CONFIG)
    rng = np.random.Generator(getattr(np.random, bit_generator)(1234))
    rng.standard_normal(17)
    rng.integers(0, 10, size=3)  # leaves buffered state (has_uint32) in some generators
    store.write_checkpoint(
        params=np.zeros(2), optimizer_state={"name": "none"}, rng=rng, epoch=0, step=0
    )
    expected = (rng.standard_normal(5), rng.permutation(20), rng.random(3))
    restored = load_checkpoint(store.run_dir).make_rng()
    got = (restored.standard_normal(5), restored.permutation(20), restored.random(3))
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_resumes_optimizer_bit_identically(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "r", CONFIG)
    cfg: dict[str, Any] = {
        "lr": 0.05,
        "schedule": {"name": "cosine", "total_steps": 9, "lr_min": 0.001},
        "beta1": 0.8,
    }
    bounds = (np.full(4, -0.2), np.full(4, 0.2))
    rng = np.random.default_rng(11)
    opt = make_optimizer("adam", bounds=bounds, **cfg)
    p = np.zeros(4)
    for step in range(4):
        p = opt.step(p, rng.standard_normal(4))
        write_checkpoint(
            store.run_dir,
            params=p,
            optimizer_state=opt.state_dict(),
            rng=rng,
            epoch=step // 2,
            step=step + 1,
            extra={"batch": step % 2, "big": 2**100, "x": np.arange(3.0), "nan": math.nan},
        )
    # Reference continuation.
    ref = p
    for _ in range(5):
        ref = opt.step(ref, rng.standard_normal(4))

    ck = store.load_checkpoint()
    assert (ck.epoch, ck.step) == (1, 4)
    assert ck.extra["batch"] == 1 and ck.extra["big"] == 2**100
    np.testing.assert_array_equal(ck.extra["x"], np.arange(3.0))
    assert math.isnan(ck.extra["nan"])
    resumed = make_optimizer(**ck.optimizer_state["config"], bounds=bounds)
    resumed.load_state_dict(ck.optimizer_state)
    rng2 = ck.make_rng()
    q = ck.params
    for _ in range(5):
        q = resumed.step(q, rng2.standard_normal(4))
    np.testing.assert_array_equal(q, ref)


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path, "r", CONFIG)
    with pytest.raises(ConfigError, match="nothing to resume"):
        load_checkpoint(store.run_dir)
    store.checkpoint_path.write_bytes(b"not an npz")
    with pytest.raises(ConfigError, match="not a physlearn checkpoint"):
        load_checkpoint(store.run_dir)
    with pytest.raises(ConfigError, match="does not exist"):
        write_checkpoint(
            tmp_path / "absent",
            params=np.zeros(1),
            optimizer_state={},
            rng=np.random.default_rng(0),
            epoch=0,
            step=0,
        )
