"""Per-step HDF5 records: content and units, and readability after a SIGKILL of the writer
(at most the in-flight step is missing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from journal_helpers import measurement

from physlearn.training.records import StepRecorder, next_records_path, read_records

pytestmark = pytest.mark.timeout(120)


def test_rows_units_and_padding(tmp_path: Path) -> None:
    rec = StepRecorder(
        tmp_path / "r.h5",
        parameter_names=["a", "b"],
        max_phases=3,
        max_batch=2,
        waveform_channels=["scope1/ch1"],
        waveform_samples=4,
        calibration_version="cal-7",
    )
    journal = [measurement([1.0, 2.0], [1e-5, 2e-5], [{"scope1/ch1": [1, 2, 3, 4]}])]
    rec.append(
        step=1,
        epoch=0,
        batch=0,
        params=np.array([0.1, 0.2]),
        gradient=np.array([1.0, -1.0]),
        loss=0.5,
        journal=journal,
        faults=[{"kind": "InstrumentTimeoutError"}],
        settings={"dac_v": {"qdac/ch1": 0.1}},
    )
    rec.close()
    data = read_records(tmp_path / "r.h5")
    assert data["step"].tolist() == [1]
    assert data["params"][0].tolist() == [0.1, 0.2]
    assert data["settle_s"][0, 0].tolist() == [1.0, 2.0] and np.isnan(data["settle_s"][0, 1]).all()
    assert data["waveforms"][0, 0, 0, 0].tolist() == [1, 2, 3, 4]
    assert np.isnan(data["waveforms"][0, 0, 1]).all()
    assert data["attrs"]["calibration_version"] == "cal-7"
    assert data["attrs"]["units_settle_s"] == "s"
    assert b"InstrumentTimeoutError" in data["faults"][0]
    assert data["level"][0] in (b"emulated-memory", "emulated-memory")
    assert next_records_path(tmp_path).name == "records.h5"


def test_records_open_in_xarray_with_named_dimensions(tmp_path: Path) -> None:
    """Every axis of the records is a named dimension with its coordinate (it used to open with
    phony_dim_0…5); the node waveforms of each measurement are recorded on the period grid."""
    xr = pytest.importorskip("xarray")
    t = np.linspace(0.0, 2.0, 5, endpoint=False)
    rec = StepRecorder(
        tmp_path / "r.h5",
        parameter_names=["a", "b"],
        max_phases=3,
        max_batch=2,
        waveform_channels=["scope1/ch1"],
        waveform_samples=4,
        grid_t_s=t,
        n_nodes=3,
    )
    x_free = np.arange(2 * 5 * 3, dtype=float).reshape(2, 5, 3)
    journal = [
        measurement([1.0, 2.0], x=x_free),
        measurement([0.5, 0.5], x=x_free + 1.0, nudged=True),
    ]
    for step in (1, 2):
        rec.append(
            step=step,
            epoch=0,
            batch=step - 1,
            params=np.array([0.1, 0.2]),
            gradient=np.zeros(2),
            loss=0.5,
            journal=journal,
        )
    rec.close()
    ds = xr.open_dataset(tmp_path / "r.h5", engine="h5netcdf")
    try:
        assert dict(ds.sizes) == {
            "step": 2,
            "phase": 3,
            "sample": 2,
            "parameter": 2,
            "channel": 1,
            "record_point": 4,
            "time_s": 5,
            "node": 3,
        }
        assert ds["x"].dims == ("step", "phase", "sample", "time_s", "node")
        assert ds["params"].dims == ("step", "parameter")
        assert list(ds["parameter"].values) == ["a", "b"]
        assert np.array_equal(ds["time_s"].values, t) and ds["step"].values.tolist() == [1, 2]
        assert np.array_equal(ds["x"].sel(step=2, phase=1).values, x_free + 1.0)
        assert np.isnan(ds["x"].sel(phase=2).values).all()
        assert ds["nudged"].sel(step=1).values.tolist() == [0, 1, -1]
    finally:
        ds.close()
    data = read_records(tmp_path / "r.h5")
    assert data["x"].shape == (2, 3, 2, 5, 3) and "parameter" in data["coordinates"]


WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from journal_helpers import measurement
    from physlearn.training.records import StepRecorder
    rec = StepRecorder(sys.argv[1], parameter_names=[f"p{i}" for i in range(50)], max_phases=3,
                       max_batch=4, waveform_channels=["a", "b"], waveform_samples=2000)
    rng = np.random.default_rng(0)
    step = 0
    while True:
        step += 1
        rec.append(step=step, epoch=0, batch=step, params=np.full(50, float(step)),
                   gradient=rng.standard_normal(50), loss=1.0 / step,
                   journal=[measurement([1.0] * 4, volts=[{"a": rng.standard_normal(2000)}] * 4)])
        print(step, flush=True)
    """
)


@pytest.mark.parametrize("delay_s", [0.4, 0.9])
def test_sigkill_leaves_a_readable_file_missing_at_most_the_inflight_step(
    tmp_path: Path, delay_s: float
) -> None:
    path = tmp_path / "records.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(Path(__file__).resolve().parents[1])],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # at least one step written
        assert first.strip() == "1"
        time.sleep(delay_s)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        printed = [int(x) for x in [first, *proc.stdout.read().split()] if str(x).strip()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    data = read_records(path)
    steps = data["step"].tolist()
    assert steps == list(range(1, len(steps) + 1))  # no gap, no duplicate
    assert len(steps) >= max(printed)  # every step reported as written is there
    assert np.all(data["params"][:, 0] == np.arange(1, len(steps) + 1))
