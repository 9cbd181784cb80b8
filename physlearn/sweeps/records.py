"""What a sweep keeps of each point, and the one table gathered from them.

Every finished point — done or failed — leaves one record, ``<root>/_sweep/points/<name>.json``,
written atomically by whoever finished it (the worker, or the sweep's client for a point whose
task was lost). One file per point name: a point run twice (a worker killed mid-point, its task
rescheduled) still has one record, so the table never holds a duplicate row. ``_sweep`` cannot
be a run name (run names start with a letter or digit).

The tidy table ``<root>/results.csv`` has one row per finished point, in plan order: ``point``
(the run directory's name), ``status`` (``done``/``failed``), the point's labels (override
values, tags), its metrics, ``wall_s`` (seconds on the worker), ``worker``, ``resumed`` (it
continued a run directory a killed worker left) and ``error``. Floats are written with their
shortest exact repr, so the file round-trips bit for bit; it is rewritten atomically after
every point (``pandas.read_csv``; ``.to_xarray()`` for named dimensions).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from physlearn.spec.files import atomic_write_bytes

__all__ = ["PointRecord", "RecordStore", "markdown_table", "tidy_csv", "write_tables"]

RECORDS_DIR = Path("_sweep") / "points"
LOCKS_DIR = Path("_sweep") / "locks"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"


def _plain(value: Any) -> Any:
    """JSON-able scalars (numpy scalars unwrapped; non-finite floats kept as strings)."""
    if hasattr(value, "item") and not isinstance(value, list | dict | str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _float(value: Any) -> Any:
    return float(value) if value in ("nan", "inf", "-inf") else value


@dataclass
class PointRecord:
    """The outcome of one point.

    Attributes:
        point: the point's name (its run directory under the sweep root).
        status: ``"done"`` or ``"failed"``.
        labels: the point's table columns (override values, tags).
        metrics: scalar results (for a training point, from its summary.json).
        wall_s: wall seconds the point took on its worker (the last attempt).
        worker: the Dask worker that finished it (``"serial"`` in one process).
        resumed: it continued a partial run directory (a killed worker's).
        error: the failure, ``"Type: message"`` (empty when done).
    """

    point: str
    status: str
    labels: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    wall_s: float = math.nan
    worker: str = ""
    resumed: bool = False
    error: str = ""

    def to_json(self) -> bytes:
        return json.dumps(_plain(asdict(self)), allow_nan=False, indent=1).encode() + b"\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> PointRecord:
        data = json.loads(text)
        data["metrics"] = {k: _float(v) for k, v in data.get("metrics", {}).items()}
        data["wall_s"] = float(_float(data.get("wall_s", math.nan)))
        return cls(**data)


class RecordStore:
    """The records of one sweep root (module docstring)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.dir = self.root / RECORDS_DIR

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def write(self, record: PointRecord) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path(record.point), record.to_json())

    def read(self, name: str) -> PointRecord | None:
        p = self.path(name)
        try:
            return PointRecord.from_json(p.read_bytes())
        except FileNotFoundError:
            return None

    def read_all(self, names: Iterable[str]) -> dict[str, PointRecord]:
        """The records of ``names`` that exist."""
        out = {}
        for n in names:
            r = self.read(n)
            if r is not None:
                out[n] = r
        return out

    def forget(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)


def _columns(records: Sequence[PointRecord]) -> tuple[list[str], list[str]]:
    labels = list(dict.fromkeys(k for r in records for k in r.labels))
    metrics = list(dict.fromkeys(k for r in records for k in r.metrics))
    return labels, metrics


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest exact form
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def tidy_csv(records: Sequence[PointRecord]) -> str:
    """The tidy table (module docstring) as CSV text."""
    labels, metrics = _columns(records)
    metric_cols = [m for m in metrics if m not in labels]
    head = ["point", "status", *labels, *metric_cols, "wall_s", "worker", "resumed", "error"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for r in records:
        w.writerow(
            [r.point, r.status]
            + [_cell(r.labels.get(k)) for k in labels]
            + [_cell(r.metrics.get(k)) for k in metric_cols]
            + [_cell(r.wall_s), r.worker, _cell(r.resumed), r.error]
        )
    return buf.getvalue()


def _md(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


#: metric columns of the Markdown table when a record has them (a training point's)
MD_METRICS = (
    "test_accuracy",
    "test_loss",
    "train_accuracy",
    "validation_accuracy",
    "epochs_run",
    "selected_epoch",
    "solver_failures",
)


def markdown_table(records: Sequence[PointRecord], metrics: Sequence[str] = MD_METRICS) -> str:
    """One row per point: labels, status, the chosen metrics, wall time, worker, error."""
    labels, have = _columns(records)
    cols = [m for m in metrics if m in have]
    head = ["point", *labels, "status", *cols, "wall s", "worker"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        cells = [r.point, *(_md(r.labels.get(k)) for k in labels), r.status]
        cells += [_md(r.metrics.get(m)) for m in cols] + [_md(r.wall_s), r.worker or "—"]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in records if r.status != "done"]
    for r in failed:
        lines.append(f"\n- failed: {r.point}: {r.error}")
    return "\n".join(lines) + "\n"


def write_tables(root: Path, records: Sequence[PointRecord], title: str = "Sweep results") -> Path:
    """Rewrite ``results.csv`` and ``results.md`` under ``root`` atomically; return the CSV."""
    root.mkdir(parents=True, exist_ok=True)
    csv_path = root / RESULTS_CSV
    atomic_write_bytes(csv_path, tidy_csv(records).encode())
    done = sum(r.status == "done" for r in records)
    md = (
        f"# {title}\n\n{done} done, {len(records) - done} failed. Tidy table: "
        f"`{RESULTS_CSV}` (one row per point).\n\n" + markdown_table(records)
    )
    atomic_write_bytes(root / RESULTS_MD, md.encode())
    return csv_path
