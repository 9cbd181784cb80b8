"""Per-step records of a training run in HDF5 (h5py; readable with h5py or xarray).

One file per session, ``records.h5`` (a resumed session writes ``records-<n>.h5`` beside it;
`read_run_records` merges a run's sessions by step),
opened in SWMR mode (HDF5 single-writer/multiple-reader, ``libver="latest"``): fixed-row
datasets are created up front and *appended* to (resize + write) after every step, then flushed.
SWMR's ordered metadata writes keep the file readable after the writer dies at any point — a
SIGKILL loses at most the in-flight step. Readers open with ``h5py.File(path, "r", swmr=True)``.

Datasets (first axis: the step; every axis is a named dimension — HDF5 dimension scales, so
``xarray.open_dataset(path, engine="h5netcdf")`` shows dimensions ``step``, ``phase``,
``sample``, ``parameter``, ``channel``, ``record_point``, ``time_s``, ``node`` and ``input`` with their
coordinates): ``step``, ``epoch``, ``batch`` (int64); ``params``,
``gradient`` (P); ``loss``; ``settle_s``, ``remaining`` (phases × batch, NaN-padded);
``waveforms`` (raw measured volts, phases × batch × samples, float32, NaN-padded; the column
names are in the attribute ``waveform_channels``); ``conjugates`` (phases × batch × P: the
conjugate quantities A = ∫ ∂L/∂α dt of every measured steady state); per measurement (phases ×
batch) ``decay_rate_per_s`` (the decay rate the settle rule used), ``initial_transient`` (the
measured relative transient the settling started from), ``t_change`` and ``t_trigger`` (bench
clock: last change of the settings, trigger of the acquisition); ``level`` (string: the fidelity
level that measured the step, `physlearn.spec.system.Level`, e.g. ``emulated-memory``; several
levels comma-separated, empty when nothing was measured); ``faults`` and ``settings``
(JSON strings: faults seen since the previous step, instrument settings snapshot); ``x`` (the
node coordinates each measurement returned on the period grid, phases × batch × time × node)
``nudged`` (per phase: 1 with a nudge force on, 0 without, −1 no such phase) and ``inputs``
(the mini-batch's input vectors, sample × input). File
attributes: the calibration version, parameter names, and ``units_*`` for every dataset.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from physlearn.systems.bench.journal import MeasurementRecord

log = logging.getLogger(__name__)
Array = NDArray[np.float64]

__all__ = ["StepRecorder", "read_records", "read_run_records", "records_paths"]

UNITS = {
    "params": "SI (N/m for couplings)",
    "gradient": "cost units per parameter unit",
    "loss": "m^2 s",
    "settle_s": "s",
    "remaining": "1 (relative transient)",
    "waveforms": "V",
    "conjugates": "J s (N/m per unit α: m^2 s)",
    "decay_rate_per_s": "1/s",
    "initial_transient": "1 (relative)",
    "t_change": "s (bench clock)",
    "t_trigger": "s (bench clock)",
    "x": "m (node coordinate)",
}

#: per-measurement (phases × batch) scalars taken from the journal's measurement records
PHASE_FIELDS = (
    "settle_s",
    "remaining",
    "decay_rate_per_s",
    "initial_transient",
    "t_change",
    "t_trigger",
)


class StepRecorder:
    """Appends one row per training step; see the module docstring."""

    def __init__(
        self,
        path: Path | str,
        *,
        parameter_names: list[str],
        max_phases: int = 5,
        max_batch: int = 4,
        waveform_channels: list[str] | None = None,
        waveform_samples: int = 0,
        calibration_version: str = "",
        grid_t_s: Array | None = None,
        n_nodes: int = 0,
        n_inputs: int = 0,
    ):
        import h5py

        self.path = Path(path)
        self.n_params = len(parameter_names)
        self.max_phases, self.max_batch = max_phases, max_batch
        self.channels = list(waveform_channels or [])
        self.n_samples = int(waveform_samples)
        self.grid_t = np.asarray(grid_t_s if grid_t_s is not None else [], dtype=float)
        self.n_nodes = int(n_nodes)
        self.n_inputs = int(n_inputs)
        f = h5py.File(self.path, "w", libver="latest")
        f.attrs["calibration_version"] = calibration_version
        f.attrs["parameter_names"] = json.dumps(parameter_names)
        f.attrs["waveform_channels"] = json.dumps(self.channels)
        for k, v in UNITS.items():
            f.attrs[f"units_{k}"] = v
        rows = _row_datasets(self, h5py.string_dtype())
        for name, (shape, dtype, _dims) in rows.items():
            f.create_dataset(
                name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, chunks=(1, *shape)
            )
        _dimension_scales(f, self, parameter_names, rows)
        f.swmr_mode = True
        self._f = f
        self.rows = 0

    def append(
        self,
        *,
        step: int,
        epoch: int,
        batch: int,
        params: Array,
        gradient: Array,
        loss: float,
        journal: Sequence[MeasurementRecord] | None = None,
        faults: list[dict[str, Any]] | None = None,
        settings: dict[str, Any] | None = None,
        inputs: Array | None = None,
    ) -> None:
        f, n = self._f, self.rows
        ph, B = self.max_phases, self.max_batch
        per = {k: np.full((ph, B), np.nan) for k in PHASE_FIELDS}
        conj = np.full((ph, B, self.n_params), np.nan)
        wave = None
        if "waveforms" in f:
            wave = np.full((ph, B, len(self.channels), self.n_samples), np.nan, np.float32)
        records = list(journal or [])
        for p, entry in enumerate(records[:ph]):
            for k, values in _phase_fields(entry).items():
                a = np.asarray(values, dtype=float).ravel()[:B]
                per[k][p, : a.size] = a
            if entry.conjugates is not None:
                cj = np.asarray(entry.conjugates, dtype=float)[:B]
                conj[p, : cj.shape[0]] = cj
            if wave is not None:
                for b, volts in enumerate(entry.volts[:B]):
                    for c, name in enumerate(self.channels):
                        v = volts.get(name)
                        if v is not None:
                            v = np.asarray(v, dtype=np.float32)[: self.n_samples]
                            wave[p, b, c, : v.size] = v
        nudged = np.full(ph, -1, dtype=np.int8)
        x = None
        if "x" in f:
            x = np.full((ph, B, self.grid_t.size, self.n_nodes), np.nan)
        for p, entry in enumerate(records[:ph]):
            nudged[p] = int(entry.nudged)
            if x is not None and entry.x.shape[1:] == x.shape[2:]:
                x[p, : entry.x.shape[0]] = entry.x[:B]
        row: dict[str, Any] = {
            "step": step,
            "epoch": epoch,
            "batch": batch,
            "params": np.asarray(params, dtype=float),
            "gradient": np.asarray(gradient, dtype=float),
            "loss": float(loss),
            **per,
            "conjugates": conj,
            "level": ",".join(sorted({str(e.level) for e in records})),
            "faults": json.dumps(faults or []),
            "settings": json.dumps(settings or {}, default=str),
        }
        if wave is not None:
            row["waveforms"] = wave
        row["nudged"] = nudged
        if x is not None:
            row["x"] = x
        if "inputs" in f:
            u = np.full((B, self.n_inputs), np.nan)
            if inputs is not None:
                a = np.asarray(inputs, dtype=float)[:B]
                u[: a.shape[0], : a.shape[1]] = a
            row["inputs"] = u
        for name, value in row.items():
            ds = f[name]
            ds.resize(n + 1, axis=0)
            ds[n] = value
        self.rows = n + 1
        f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()


#: the dimension names of the records (HDF5 dimension scales: xarray and netCDF readers see
#: named dimensions with coordinates): the first axis of every row dataset is ``step``
_PHASE_DIMS = ("step", "phase", "sample")


def _row_datasets(
    rec: StepRecorder, text: Any
) -> dict[str, tuple[tuple[int, ...], Any, tuple[str, ...]]]:
    """name → (shape of one row, dtype, dimension names) of every dataset with a row per step."""
    P, ph, B = rec.n_params, rec.max_phases, rec.max_batch
    rows: dict[str, tuple[tuple[int, ...], Any, tuple[str, ...]]] = {
        "step": ((), np.int64, ("step",)),
        "epoch": ((), np.int64, ("step",)),
        "batch": ((), np.int64, ("step",)),
        "params": ((P,), np.float64, ("step", "parameter")),
        "gradient": ((P,), np.float64, ("step", "parameter")),
        "loss": ((), np.float64, ("step",)),
        **{k: ((ph, B), np.float64, _PHASE_DIMS) for k in PHASE_FIELDS},
        "conjugates": ((ph, B, P), np.float64, (*_PHASE_DIMS, "parameter")),
        "nudged": ((ph,), np.int8, ("step", "phase")),
        "level": ((), text, ("step",)),
        "faults": ((), text, ("step",)),
        "settings": ((), text, ("step",)),
    }
    if rec.channels and rec.n_samples:
        rows["waveforms"] = (
            (ph, B, len(rec.channels), rec.n_samples),
            np.float32,
            (*_PHASE_DIMS, "channel", "record_point"),
        )
    if rec.n_inputs:
        rows["inputs"] = ((B, rec.n_inputs), np.float64, ("step", "sample", "input"))
    if rec.grid_t.size and rec.n_nodes:
        rows["x"] = (
            (ph, B, rec.grid_t.size, rec.n_nodes),
            np.float64,
            (*_PHASE_DIMS, "time_s", "node"),
        )
    return rows


def _dimension_scales(
    f: Any,
    rec: StepRecorder,
    parameter_names: list[str],
    rows: dict[str, tuple[tuple[int, ...], Any, tuple[str, ...]]],
) -> None:
    """Coordinate datasets (marked ``coordinate``) made dimension scales and attached to every
    row dataset's axes, so that the records open with named dimensions."""
    import h5py

    coords: dict[str, Any] = {
        "phase": np.arange(rec.max_phases, dtype=np.int64),
        "sample": np.arange(rec.max_batch, dtype=np.int64),
        "parameter": np.array(parameter_names, dtype=object),
        "channel": np.array(rec.channels, dtype=object),
        "record_point": np.arange(rec.n_samples, dtype=np.int64),
        "time_s": rec.grid_t,
        "node": np.arange(rec.n_nodes, dtype=np.int64),
        "input": np.arange(rec.n_inputs, dtype=np.int64),
    }
    used = {d for _, _, dims in rows.values() for d in dims}
    for name, values in coords.items():
        if name not in used:
            continue
        dtype = h5py.string_dtype() if values.dtype == object else values.dtype
        ds = f.create_dataset(name, data=values, dtype=dtype)
        ds.attrs["coordinate"] = 1
    for name in used:
        f[name].make_scale(name)
    for name, (_shape, _dtype, dims) in rows.items():
        for axis, dim in enumerate(dims):
            if name != dim:
                f[name].dims[axis].attach_scale(f[dim])


def _phase_fields(entry: MeasurementRecord) -> dict[str, Any]:
    """The per-measurement scalars of `PHASE_FIELDS`, (B,) each."""
    return {
        "settle_s": entry.settle_s,
        "remaining": entry.remaining,
        "decay_rate_per_s": entry.decay_rate_per_s,
        "initial_transient": entry.initial_transient,
        "t_change": entry.t_change,
        "t_trigger": entry.t_trigger,
    }


def next_records_path(run_dir: Path | str) -> Path:
    """``records.h5``, or ``records-<n>.h5`` if earlier sessions wrote records already."""
    d = Path(run_dir)
    p = d / "records.h5"
    n = 1
    while p.exists():
        p = d / f"records-{n}.h5"
        n += 1
    return p


def read_records(path: Path | str) -> dict[str, Any]:
    """Every dataset of a records file as arrays, cut to the rows complete in every dataset
    (SWMR read: works while it is being written and after the writer was killed — a row the
    writer was appending when it died is dropped)."""
    import h5py

    with h5py.File(path, "r", swmr=True) as f:
        rows = [k for k in f if "coordinate" not in f[k].attrs]
        n = min(f[k].shape[0] for k in rows)
        out: dict[str, Any] = {k: f[k][:n] for k in rows}
        out["attrs"] = dict(f.attrs)
        out["coordinates"] = {k: f[k][()] for k in f if "coordinate" in f[k].attrs}
    return out


def records_paths(run_dir: Path | str) -> list[Path]:
    """The records files of a run's sessions, in session order (``records.h5``,
    ``records-1.h5``, ...; see `next_records_path`)."""
    d = Path(run_dir)
    out = []
    p, n = d / "records.h5", 1
    while p.exists():
        out.append(p)
        p, n = d / f"records-{n}.h5", n + 1
    return out


def read_run_records(run_dir: Path | str) -> dict[str, Any]:
    """The per-step records of every session of a run (``physlearn train`` and each
    ``--resume``), merged by step. The trainer writes a step's record before the checkpoint
    that commits the step, so a session killed in between has a row for a step the resumed
    session did again: the later session's row (the measurement that was applied) is kept.
    A session killed while appending loses at most that row (`read_records`). Rows are sorted
    by step; ``session`` gives the index of the file each row came from; ``attrs`` are the
    first file's. Datasets whose shape differs between sessions are left out."""
    paths = records_paths(run_dir)
    if not paths:
        raise FileNotFoundError(f"no records file in {run_dir}")
    parts = [read_records(p) for p in paths]
    keys = [
        k
        for k in parts[0]
        if k not in ("attrs", "coordinates")
        and all(k in r and r[k].shape[1:] == parts[0][k].shape[1:] for r in parts)
    ]
    last: dict[int, tuple[int, int]] = {}
    for i, r in enumerate(parts):
        for j, step in enumerate(np.asarray(r["step"]).tolist()):
            last[int(step)] = (i, j)
    order = sorted(last)
    out: dict[str, Any] = {
        k: np.array([parts[i][k][j] for i, j in (last[s] for s in order)]).reshape(
            (len(order), *parts[0][k].shape[1:])
        )
        for k in keys
    }
    out["session"] = np.array([last[s][0] for s in order], dtype=np.int64)
    out["attrs"] = parts[0]["attrs"]
    out["coordinates"] = parts[0]["coordinates"]
    return out
