"""From the twin to the bench: `physlearn train --on-twin` trains a bench config's network on
its ideal twin; `--init-from RUN[:EPOCH]` starts a run (here the emulated XOR bench) from that
run's selected parameters, whose initial evaluation is then the twin-trained network's accuracy
on the bench. Wrong runs, epochs and out-of-bound values are refused by name, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from physlearn.cli import main

ROOT = Path(__file__).resolve().parents[2]
BENCH_XOR = ROOT / "examples" / "bench-xor.toml"


def _train(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["train", "--quiet", "--no-report", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture(scope="module")
def twin_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    code = main(
        [
            *("train", "--quiet", "--no-report", "--config", str(BENCH_XOR), "--on-twin"),
            *("--run-dir", str(runs), "--name", "twin"),
        ]
    )
    assert code == 0
    return runs / "twin"


def test_on_twin_trains_the_bench_network_on_the_ideal_twin(twin_run: Path) -> None:
    summary = json.loads((twin_run / "summary.json").read_text())
    assert summary["level"] == "ideal" and summary["final"]["train_accuracy"] == 1.0
    assert 'kind = "ideal"' in (twin_run / "config.toml").read_text()
    assert not (twin_run / "source.json").exists()  # not a bench run


def test_twin_trained_parameters_deployed_on_the_emulated_bench(
    twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    twin = json.loads((twin_run / "summary.json").read_text())
    selected = np.load(twin_run / "params" / f"epoch_{twin['selected_epoch']:04d}.npy")
    code, out = _train(
        capsys,
        *("--config", str(BENCH_XOR), "--init-from", str(twin_run), "--arm", "--epochs", "0"),
        *("--run-dir", str(tmp_path), "--name", "bench"),
    )
    assert code == 0, out
    run = tmp_path / "bench"
    params = json.loads((run / "parameters.json").read_text())
    assert params["init_from"] == {"run": str(twin_run.resolve()), "epoch": twin["selected_epoch"]}
    assert np.array_equal(np.array(params["initial"]), selected)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["level"] == "emulated-memory"
    initial = summary["initial"]  # the deployed network, evaluated through the bench
    assert initial["train_accuracy"] == 1.0
    assert initial["train_loss"] == pytest.approx(twin["final"]["train_loss"], rel=0.05)
    # epochs = 0: an evaluation only, reported as the run's result
    assert summary["epochs_run"] == 0 and summary["selected_epoch"] is None
    assert summary["final"] == initial and summary["stop_reason"].startswith("evaluation only")
    assert "epochs 0: train loss" in out and "acc 1," in out
    # an explicit epoch
    code, out = _train(
        capsys,
        *("--config", str(BENCH_XOR), "--on-twin", "--init-from", f"{twin_run}:3"),
        *("--epochs", "1", "--run-dir", str(tmp_path), "--name", "ep3"),
    )
    assert code == 0, out
    p3 = json.loads((tmp_path / "ep3" / "parameters.json").read_text())
    assert p3["init_from"]["epoch"] == 3
    assert np.array_equal(np.array(p3["initial"]), np.load(twin_run / "params" / "epoch_0003.npy"))


def test_an_evaluation_only_run_counts_its_evaluation_in_the_wall_time(
    twin_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--epochs 0` is all evaluation: the summary's wall time (the "epochs 0: … s" line) must
    include it, not only the (empty) training loop after it."""
    import asyncio

    from physlearn.training.loop import Trainer

    evaluate = Trainer._evaluate

    async def slow(self: Trainer, params: np.ndarray) -> dict[str, object]:
        await asyncio.sleep(1.0)  # an evaluation that takes a measurable second
        return await evaluate(self, params)

    monkeypatch.setattr(Trainer, "_evaluate", slow)
    code, out = _train(
        capsys,
        *("--config", str(BENCH_XOR), "--on-twin", "--init-from", str(twin_run), "--epochs", "0"),
        *("--run-dir", str(tmp_path), "--name", "eval"),
    )
    assert code == 0, out
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["wall_time_s"] >= 1.0, summary["wall_time_s"]


def test_wrong_sources_are_refused_by_name_and_nothing_is_written(
    twin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = ("--config", str(BENCH_XOR), "--on-twin", "--run-dir", str(tmp_path))
    # a run of another network (examples/xor.toml)
    code, out = _train(
        capsys,
        *("--config", str(ROOT / "examples" / "xor.toml"), "--epochs", "1"),
        *("--run-dir", str(tmp_path), "--name", "other"),
    )
    assert code == 0, out
    cases = {
        "other": (str(tmp_path / "other"), "not the same network"),
        "missing": (str(tmp_path / "nowhere"), "does not exist"),
        "epoch": (f"{twin_run}:999", "no parameters for epoch 999"),
    }
    # out of the bench config's bounds (couplings within ±0.9 N/m)
    bad = tmp_path / "bad"
    shutil.copytree(twin_run, bad)
    last = sorted((bad / "params").glob("*.npy"))[-1]
    values = np.load(last)
    values[4] = 1.7
    np.save(last, values)
    (bad / "summary.json").unlink()  # unfinished: its last saved epoch is taken
    cases["bounds"] = (str(bad), "couplings[4]:product:5-2 = 1.7 N/m (allowed [-0.9, 0.9])")
    # a run that ended on its initial parameters (every epoch reverted): no epoch to take
    initial = tmp_path / "initial"
    shutil.copytree(twin_run, initial)
    summary = json.loads((initial / "summary.json").read_text())
    summary["selected_epoch"] = None
    (initial / "summary.json").write_text(json.dumps(summary))
    cases["initial"] = (str(initial), "the run ended on its initial parameters")
    for name, (source, message) in cases.items():
        code, out = _train(capsys, *bench, "--init-from", source, "--name", f"to-{name}")
        assert code == 2 and message in out, (name, out)
        assert not (tmp_path / f"to-{name}").exists(), name
    code, out = _train(capsys, "--resume", str(twin_run), "--init-from", str(twin_run))
    assert code == 2 and "leave out --init-from" in out
    code, out = _train(capsys, "--config", str(ROOT / "examples" / "xor.toml"), "--on-twin")
    assert code == 2 and '--on-twin applies to [system] kind = "bench" configs' in out
