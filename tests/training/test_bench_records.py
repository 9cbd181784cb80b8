"""`physlearn train --arm` on the in-memory emulated XOR bench writes per-step HDF5 records in
the run directory: one row per training step with parameters, gradient, loss, the raw scope
volts of every measurement, conjugate quantities, settle times and decay estimates, faults,
the instrument settings, the calibration version and units."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from physlearn.training.records import read_records

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "bench-xor.toml"

pytestmark = pytest.mark.timeout(300)


def test_bench_run_records_every_step(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("epochs = 40", "epochs = 2", 1)
    for name in ("bench-xor-bench.toml", "bench-xor-calibration.json"):
        text = text.replace(f'"{name}"', json.dumps(str(EXAMPLE.parent / name)))
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(text)
    r = subprocess.run(
        [
            *(sys.executable, "-m", "physlearn.cli", "train", "--config", str(cfg), "--arm"),
            *("--run-dir", str(tmp_path / "runs"), "--quiet"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    rec = read_records(run / "records.h5")
    steps = int(summary["steps"])
    assert steps == 2
    # the level that produced the observations, in the summary and every metrics row
    assert summary["level"] == "emulated-memory"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["level"] for r in rows] == ["emulated-memory"] * 2
    assert rec["step"].tolist() == list(range(1, steps + 1))
    assert rec["epoch"].tolist() == [0, 1]
    attrs = rec["attrs"]
    assert attrs["calibration_version"] == "xor-bench@2025-01-01T00:00:00+00:00"
    assert json.loads(attrs["parameter_names"])[0].startswith("coupling")
    assert attrs["units_waveforms"] == "V" and attrs["units_settle_s"] == "s"
    channels = json.loads(attrs["waveform_channels"])
    assert "scope1/ch1" in channels and "scope2/ch1" in channels
    # ep_symmetric: free, +β, −β phases; the whole XOR batch (4 samples) per phase
    w = rec["waveforms"]
    assert w.shape[:3] == (steps, 3, 4) and np.all(np.isfinite(w))
    assert np.all(np.ptp(w, axis=-1) > 0)  # real scope traces, not padding
    assert np.all(np.isfinite(rec["conjugates"])) and rec["conjugates"].shape[-1] == 9
    assert np.all(np.isfinite(rec["gradient"])) and np.any(rec["gradient"] != 0)
    assert np.all(rec["loss"] > 0)
    # every measurement was taken after its predicted settle time, at the calibrated decay
    decay = rec["decay_rate_per_s"]
    assert np.allclose(decay, 0.47123889803846897 / 2)
    assert np.all(rec["remaining"] <= 1e-4)
    assert np.all(rec["t_trigger"] - rec["t_change"] >= rec["settle_s"] - 1e-9)
    left = rec["initial_transient"] * np.exp(-decay * rec["settle_s"])
    assert np.all(left <= 1e-4)
    # parameters recorded are those the gradient was measured at: step 2's are step 1's after
    # the update, and the checkpoint holds the parameters after the last one
    assert not np.array_equal(rec["params"][0], rec["params"][1])
    settings = json.loads(rec["settings"][-1])
    assert settings["armed"] is True and len(settings["dac_v"]) == 9
    assert json.loads(rec["faults"][0]) == []
