"""Issue 16, must-show 4: a bench-realisable Iris recipe. examples/bench-iris.toml (the layered
[4, 6, 3] network + bias oscillator without node biases, 51 DAC-tuned couplings) passes the dry
run against the emulated Iris bench (examples/bench-iris-bench.toml: 4 generators, 5 scopes,
3 QDACs, 3 mV scope noise); parameters trained on its ideal twin (`--on-twin`) deploy through
the emulated bench (`--init-from … --arm --epochs 0`) and classify as on the twin.

The evaluation is on a stratified subset of the Iris splits (5 train and 2 test samples per
class, standardised with the full training statistics) so that the bench part stays short; the
twin is evaluated on the same subset (`--on-twin --epochs 0`). Measured on a loaded 2-core
machine: ≈ 45 s for the deployment test, ≈ 10 s for the dry run; the full evaluation
(docs/results.md, "Iris on the emulated bench") takes ≈ 3 minutes. With every coupling span of
the calibration file off by 15 % the subset's bench losses fall 8–9 % below the twin's, and the
loss check fails."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from physlearn.cli import main
from physlearn.training import datasets

ROOT = Path(__file__).resolve().parents[2]
BENCH_IRIS = ROOT / "examples" / "bench-iris.toml"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _train(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["train", "--quiet", "--no-report", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def _summary(run: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((run / "summary.json").read_text())
    return summary


def _subset(train_per_class: int, test_per_class: int) -> Any:
    """The registered Iris factory restricted to the first samples of each class."""
    full = datasets.DATASETS["iris"]

    def iris(seed: int = 0, scaling: datasets.ScalingName = "minmax") -> datasets.Dataset:
        ds = full(seed=seed, scaling=scaling)

        def pick(y: np.ndarray, n: int) -> np.ndarray:
            return np.sort(np.concatenate([np.flatnonzero(y == c)[:n] for c in range(3)]))

        tr, te = pick(ds.y_train, train_per_class), pick(ds.y_test, test_per_class)
        return dataclasses.replace(
            ds,
            x_train=ds.x_train[tr],
            y_train=ds.y_train[tr],
            x_test=ds.x_test[te],
            y_test=ds.y_test[te],
        )

    return iris


def test_bench_iris_config_passes_the_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    bench = tomllib.loads((ROOT / "examples" / "bench-iris-bench.toml").read_text())
    assert bench["twin"]["truth"]["noise"]["scope_sigma_v"] >= 1e-3  # a noisy emulated bench
    code, out = _train(capsys, "--config", str(BENCH_IRIS), "--dry-run")
    assert code == 0, out
    assert "dry run: 153 DAC settings" in out and "for 150 inputs within the limits" in out


def test_twin_trained_iris_deploys_through_the_noisy_emulated_bench(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ("--config", str(BENCH_IRIS), "--run-dir", str(tmp_path))
    code, out = _train(capsys, *config, "--on-twin", "--epochs", "6", "--name", "twin")
    assert code == 0, out
    twin_run = tmp_path / "twin"
    assert _summary(twin_run)["level"] == "ideal"

    monkeypatch.setitem(datasets.DATASETS, "iris", _subset(5, 2))
    runs = {}
    for name, extra in (("on-twin", ("--on-twin",)), ("on-bench", ("--arm",))):
        code, out = _train(
            capsys, *config, *extra, "--init-from", str(twin_run), "--epochs", "0", "--name", name
        )
        assert code == 0, out
        runs[name] = _summary(tmp_path / name)
    twin, bench = runs["on-twin"], runs["on-bench"]
    assert twin["level"] == "ideal" and bench["level"] == "emulated-memory"
    params = json.loads((tmp_path / "on-bench" / "parameters.json").read_text())
    assert params["init_from"]["run"] == str(twin_run.resolve())
    t, b = twin["final"], bench["final"]
    assert b == bench["initial"] and b["unsolved"] == 0 and b["failures"] == 0
    # a trained network (chance: 1/3), classified on the bench as on the twin
    assert t["train_accuracy"] >= 0.6, t
    for split, n in (("train", 15), ("test", 6)):  # one sample at most
        assert abs(b[f"{split}_accuracy"] - t[f"{split}_accuracy"]) <= 1.0 / n + 1e-12, (t, b)
        assert b[f"{split}_loss"] == pytest.approx(t[f"{split}_loss"], rel=0.05), (t, b)
