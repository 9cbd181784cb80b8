"""The run directory of ``physlearn train``; every file is written atomically.

Layout of ``<root>/<name>/``::

    config.toml          the resolved config (tomli_w), written once at creation
    metrics.jsonl        one JSON object per epoch (see EpochMetrics), in epoch order
    params/epoch_0000.npy  parameters (P,) float64 after every epoch
    checkpoint.npz       resume point, rewritten after every update (training.checkpoint_interval_s
                         may space them out): params, optimizer state, rng state, epoch and step
                         counters (one file, so one atomic replace)
    summary.json         written at the end of the run
    steps.h5             reserved for per-step bench records (written by a later layer)

Atomic write: the bytes go to a temporary file in the same directory (``.<name>.<random>.tmp``),
which is flushed, fsync'ed and ``os.replace``d onto the target; the directory is then fsync'ed.
A reader therefore sees the old file or the new one, never a torn one, and a crash leaves no
partial target (at worst a stale ``.tmp`` file, which :meth:`RunStore.open` ignores).

JSON cannot hold NaN/inf: non-finite floats in metrics and summary are written as ``null``.
The checkpoint stores arrays as npz entries and everything else as JSON metadata in the same
npz (Python ints of any size, exact float repr), so ``Generator.bit_generator.state``
round-trips exactly.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import shutil
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
from numpy.typing import ArrayLike, NDArray

from physlearn.errors import ConfigError, PhyslearnError
from physlearn.spec.files import atomic_write_bytes

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]

CONFIG_FILE = "config.toml"
METRICS_FILE = "metrics.jsonl"
PARAMS_DIR = "params"
CHECKPOINT_FILE = "checkpoint.npz"
SUMMARY_FILE = "summary.json"
STEPS_FILE = "steps.h5"

CHECKPOINT_FORMAT = 1
_META_KEY = "__meta__"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "METRICS_FILE",
    "PARAMS_DIR",
    "STEPS_FILE",
    "SUMMARY_FILE",
    "Checkpoint",
    "EpochMetrics",
    "RunStore",
    "atomic_write_bytes",
    "load_checkpoint",
    "write_checkpoint",
]


# --------------------------------------------------------------------------------------------
# Atomic writes


# --------------------------------------------------------------------------------------------
# Value conversion


def _json_value(value: Any, where: str) -> Any:
    """Plain-JSON form of ``value``: numpy scalars → Python, non-finite floats → None."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_value(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(f"{where}: cannot store a {type(value).__name__} as JSON")


def _toml_value(value: Any, where: str) -> Any:
    """TOML-writable form of ``value``; TOML has no null, so None is an error naming the field."""
    if value is None:
        raise ConfigError(
            f"config field {where!r} is None: TOML has no null; leave the field out "
            "(e.g. model_dump(exclude_none=True))"
        )
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {
            str(k): _toml_value(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()
        }
    if isinstance(value, list | tuple | np.ndarray):
        return [_toml_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(f"config field {where!r}: cannot write a {type(value).__name__} to TOML")


# --------------------------------------------------------------------------------------------
# Checkpoints


@dataclass
class Checkpoint:
    """A resume point.

    Attributes:
        params: parameters (P,) float64 after the last applied update.
        optimizer_state: ``Optimizer.state_dict()``.
        rng_state: ``Generator.bit_generator.state`` of the training rng.
        epoch: epoch the run is in (0-based).
        step: number of updates applied so far.
        extra: any further JSON-able facts (e.g. batch index within the epoch); arrays allowed.
    """

    params: FloatArray
    optimizer_state: dict[str, Any]
    rng_state: dict[str, Any]
    epoch: int
    step: int
    extra: dict[str, Any] = field(default_factory=dict)

    def make_rng(self) -> np.random.Generator:
        """A Generator whose next draws equal those the checkpointed rng would have made."""
        name = self.rng_state.get("bit_generator")
        bit_gen_cls = getattr(np.random, str(name), None)
        if bit_gen_cls is None or not isinstance(bit_gen_cls, type):
            raise ConfigError(f"checkpoint: unknown bit generator {name!r}")
        bit_gen = bit_gen_cls()
        bit_gen.state = self.rng_state
        return np.random.Generator(bit_gen)


def _encode(value: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    """JSON-able tree with arrays moved into ``arrays`` and replaced by references."""
    if isinstance(value, np.ndarray):
        # named by where it sits (e.g. ``extra.best_params``), unique by construction
        key = where if where not in arrays else f"{where}#{len(arrays)}"
        arrays[key] = value
        return {"__ndarray__": key}
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        # repr round-trips exactly; non-finite as tagged strings (json would write NaN tokens).
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"checkpoint {where}: key {k!r} is not a string")
            out[k] = _encode(v, arrays, f"{where}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(f"checkpoint {where}: cannot store a {type(value).__name__}")


def _decode(value: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__ndarray__"}:
            return np.array(arrays[value["__ndarray__"]], copy=True)
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: _decode(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    return value


def write_checkpoint(
    run_dir: Path | str,
    *,
    params: ArrayLike,
    optimizer_state: Mapping[str, Any],
    rng: np.random.Generator,
    epoch: int,
    step: int,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Atomically (re)write ``<run_dir>/checkpoint.npz``; return its path.

    Args:
        params: parameters (P,) after the last applied update.
        optimizer_state: ``Optimizer.state_dict()``.
        rng: the training Generator; its ``bit_generator.state`` is stored exactly.
        epoch: current epoch (0-based); step: updates applied so far.
        extra: further JSON-able facts; numpy arrays allowed.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"checkpoint: run directory {run_dir} does not exist")
    p = np.array(params, dtype=np.float64, copy=True)
    if p.ndim != 1:
        raise PhyslearnError(f"checkpoint: params must be 1-D (P,), got shape {p.shape}")
    arrays: dict[str, np.ndarray] = {}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "step": int(step),
        "params": _encode(p, arrays, "params"),
        "optimizer_state": _encode(dict(optimizer_state), arrays, "optimizer_state"),
        "rng_state": _encode(rng.bit_generator.state, arrays, "rng_state"),
        "extra": _encode(dict(extra or {}), arrays, "extra"),
    }
    arrays[_META_KEY] = np.array(json.dumps(meta, allow_nan=False))
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    path = run_dir / CHECKPOINT_FILE
    atomic_write_bytes(path, buf.getvalue())
    logger.debug("checkpoint written: epoch %d, step %d", epoch, step)
    return path


def load_checkpoint(run_dir: Path | str) -> Checkpoint:
    """Read ``<run_dir>/checkpoint.npz``.

    Raises:
        ConfigError: no checkpoint in the run directory, or an unreadable/foreign file.
    """
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError(f"checkpoint: {path} does not exist; nothing to resume from")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(str(arrays.pop(_META_KEY)[()]))
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"checkpoint: {path} is not a physlearn checkpoint ({exc})") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"checkpoint: {path} has format {meta.get('format')!r}, expected 1")
    return Checkpoint(
        params=np.asarray(_decode(meta["params"], arrays), dtype=np.float64),
        optimizer_state=_decode(meta["optimizer_state"], arrays),
        rng_state=_decode(meta["rng_state"], arrays),
        epoch=int(meta["epoch"]),
        step=int(meta["step"]),
        extra=_decode(meta["extra"], arrays),
    )


# --------------------------------------------------------------------------------------------
# Metrics record


@dataclass
class EpochMetrics:
    """One line of metrics.jsonl.

    Attributes:
        epoch: epoch index (0-based; strictly increasing in the file).
        train_loss, test_loss: mean cost over the split (units of the cost).
        train_accuracy, test_accuracy: fraction correct in [0, 1].
        wall_time_s: wall-clock seconds since the start of the run.
        experiments: steady-state experiments used so far (cumulative).
        cosine_to_adjoint: mean cosine between estimator and adjoint over the epoch, if logged.
        level: the fidelity level that produced the observations (``physlearn.spec.system.Level``:
            "ideal", "emulated-memory", "emulated-served" or "bench").
        extra: further scalar facts (e.g. lr, clipped parameter count).
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    wall_time_s: float
    experiments: int
    cosine_to_adjoint: float | None = None
    level: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Flat JSON object (extra keys merged in; they may not shadow the named fields)."""
        record = asdict(self)
        extra = record.pop("extra")
        clash = sorted(set(extra) & set(record))
        if clash:
            raise ConfigError(f"metrics: extra keys {clash} shadow named fields")
        record.update(extra)
        return record


# --------------------------------------------------------------------------------------------
# Run store


class RunStore:
    """A run directory; create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, run_dir: Path, *, resumed: bool = False) -> None:
        self.run_dir = Path(run_dir)
        #: opened by ``create(..., resume=True)``: `Trainer.run` continues from the checkpoint
        self.resumed = resumed

    # -- paths ---------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.run_dir / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / METRICS_FILE

    @property
    def params_dir(self) -> Path:
        return self.run_dir / PARAMS_DIR

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    @property
    def summary_path(self) -> Path:
        return self.run_dir / SUMMARY_FILE

    @property
    def steps_path(self) -> Path:
        """Reserved for the per-step bench records (HDF5)."""
        return self.run_dir / STEPS_FILE

    def params_path(self, epoch: int) -> Path:
        """``params/epoch_NNNN.npy`` (4 digits, more beyond epoch 9999)."""
        if epoch < 0:
            raise PhyslearnError(f"epoch must be >= 0, got {epoch}")
        return self.params_dir / f"epoch_{epoch:04d}.npy"

    # -- creation / opening --------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: Path | str,
        name: str,
        resolved_config: Mapping[str, Any],
        *,
        resume: bool = False,
    ) -> RunStore:
        """Make ``<root>/<name>/`` with config.toml, an empty metrics.jsonl and params/.

        With ``resume=True`` the directory must already exist: it is opened (see
        :meth:`open`) and its stored config must equal ``resolved_config``.

        Raises:
            ConfigError: bad name, a config TOML cannot hold (the field is named), the
                directory exists (and not resuming), or resuming something absent/different.
        """
        if not _NAME_RE.match(name):
            raise ConfigError(
                f"run name {name!r}: use letters, digits, '.', '_' and '-' "
                "(no path separators; not starting with '.')"
            )
        toml_bytes = tomli_w.dumps(_toml_value(dict(resolved_config), "")).encode()
        run_dir = Path(root) / name
        if resume:
            return cls._resume(run_dir, name, toml_bytes)
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"cannot create run directory {run_dir}: a file is in its place")
        try:
            Path(root).mkdir(parents=True, exist_ok=True)
            run_dir.mkdir()
        except FileExistsError:
            raise ConfigError(
                f"run directory {run_dir} already exists; choose another run name or resume it"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
        try:
            (run_dir / PARAMS_DIR).mkdir()
            atomic_write_bytes(run_dir / METRICS_FILE, b"")
            atomic_write_bytes(run_dir / CONFIG_FILE, toml_bytes)
        except OSError as exc:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing half-written
            raise ConfigError(f"cannot write into {run_dir}: {exc.strerror}") from None
        logger.info("created run directory %s", run_dir)
        return cls(run_dir)

    @classmethod
    def _resume(cls, run_dir: Path, name: str, toml_bytes: bytes) -> RunStore:
        """Open a run to continue it: its files must be writable and its config equal, but for
        the changes a resumed run can take (`EXTENDABLE`: more epochs), which are written."""
        if not run_dir.exists():
            raise ConfigError(f"cannot resume run {name!r}: {run_dir} does not exist")
        store = cls.open(run_dir)
        unwritable = [
            str(p)
            for p in (run_dir, run_dir / PARAMS_DIR, *run_dir.glob("*"))
            if not os.access(p, os.W_OK) and not p.name.startswith(".")
        ]
        if unwritable:
            raise ConfigError(
                f"cannot resume run {name!r}: not writable: {', '.join(sorted(unwritable)[:4])}"
            )
        stored = store.load_config()
        expected = tomllib.loads(toml_bytes.decode())
        diff = _diff_keys(stored, expected)
        refused = [k for k in diff if _extendable(k) is None]
        if refused:
            raise ConfigError(
                f"cannot resume run {name!r}: its config differs in {', '.join(refused)}"
                + (
                    " (on --resume only training.epochs and bench addresses may change)"
                    if diff != refused
                    else ""
                )
            )
        for key in diff:
            old_v, new_v = _lookup(stored, key), _lookup(expected, key)
            if not EXTENDABLE[_extendable(key) or key](old_v, new_v):
                raise ConfigError(
                    f"cannot resume run {name!r}: {key} can only grow ({old_v} → {new_v})"
                )
            logger.warning("resuming run %s with %s %s → %s", run_dir, key, old_v, new_v)
        if diff:
            atomic_write_bytes(run_dir / CONFIG_FILE, toml_bytes)
        logger.info("resuming run in %s", run_dir)
        store.resumed = True
        return store

    @classmethod
    def open(cls, run_dir: Path | str) -> RunStore:
        """Open an existing run directory, checking that config, metrics and params/ exist."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise ConfigError(f"run directory {run_dir} does not exist")
        missing = [
            n
            for n, ok in (
                (CONFIG_FILE, (run_dir / CONFIG_FILE).is_file()),
                (METRICS_FILE, (run_dir / METRICS_FILE).is_file()),
                (PARAMS_DIR + "/", (run_dir / PARAMS_DIR).is_dir()),
            )
            if not ok
        ]
        if missing:
            raise ConfigError(f"run directory {run_dir} is missing {', '.join(missing)}")
        return cls(run_dir)

    # -- config --------------------------------------------------------------------------

    def load_config(self) -> dict[str, Any]:
        """The resolved config as written at creation."""
        with self.config_path.open("rb") as fh:
            return tomllib.load(fh)

    # -- metrics -------------------------------------------------------------------------

    def read_metrics(self) -> list[dict[str, Any]]:
        """All metrics records, in file order."""
        text = self.metrics_path.read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def append_metrics(self, record: EpochMetrics | Mapping[str, Any]) -> None:
        """Append one epoch record (atomic: the whole file is rewritten and replaced).

        The record must have an integer ``epoch`` greater than every epoch already stored.
        """
        obj = record.to_json() if isinstance(record, EpochMetrics) else dict(record)
        epoch = obj.get("epoch")
        if not isinstance(epoch, int | np.integer) or isinstance(epoch, bool) or epoch < 0:
            raise PhyslearnError(f"metrics: record needs an integer epoch >= 0, got {epoch!r}")
        existing = self.metrics_path.read_bytes()
        lines = [json.loads(x) for x in existing.decode().splitlines() if x.strip()]
        if lines and int(epoch) <= int(lines[-1]["epoch"]):
            raise PhyslearnError(
                f"metrics: epoch {epoch} is not after the last stored epoch {lines[-1]['epoch']}"
            )
        line = json.dumps(_json_value(obj, "metrics"), allow_nan=False, sort_keys=False)
        if existing and not existing.endswith(b"\n"):
            existing += b"\n"
        atomic_write_bytes(self.metrics_path, existing + line.encode() + b"\n")

    def truncate_metrics(self, last_epoch: int) -> int:
        """Drop records with epoch > ``last_epoch`` (for resuming); return how many were dropped."""
        records = self.read_metrics()
        keep = [r for r in records if int(r["epoch"]) <= last_epoch]
        if len(keep) != len(records):
            data = "".join(json.dumps(r, allow_nan=False) + "\n" for r in keep).encode()
            atomic_write_bytes(self.metrics_path, data)
        return len(records) - len(keep)

    # -- parameters ----------------------------------------------------------------------

    def save_params(self, epoch: int, params: ArrayLike) -> Path:
        """Write ``params`` (P,) float64 to ``params/epoch_NNNN.npy`` atomically."""
        p = np.asarray(params, dtype=np.float64)
        if p.ndim != 1:
            raise PhyslearnError(f"params must be 1-D (P,), got shape {p.shape}")
        buf = io.BytesIO()
        np.save(buf, p, allow_pickle=False)
        path = self.params_path(epoch)
        atomic_write_bytes(path, buf.getvalue())
        return path

    def load_params(self, epoch: int) -> FloatArray:
        """Parameters saved after ``epoch``."""
        path = self.params_path(epoch)
        if not path.is_file():
            raise ConfigError(f"run {self.run_dir}: no parameters for epoch {epoch} ({path})")
        return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)

    def param_epochs(self) -> list[int]:
        """Sorted epochs for which parameters exist."""
        out = []
        for p in self.params_dir.glob("epoch_*.npy"):
            m = re.fullmatch(r"epoch_(\d+)\.npy", p.name)
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    # -- summary / checkpoint ------------------------------------------------------------

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """Write ``summary.json`` atomically (non-finite floats as null)."""
        data = json.dumps(_json_value(dict(summary), "summary"), allow_nan=False, indent=2)
        atomic_write_bytes(self.summary_path, data.encode() + b"\n")
        return self.summary_path

    def read_summary(self) -> dict[str, Any]:
        """The summary written at the end of the run."""
        if not self.summary_path.is_file():
            raise ConfigError(f"run {self.run_dir} has no {SUMMARY_FILE} (unfinished run?)")
        result: dict[str, Any] = json.loads(self.summary_path.read_text())
        return result

    def write_checkpoint(
        self,
        *,
        params: ArrayLike,
        optimizer_state: Mapping[str, Any],
        rng: np.random.Generator,
        epoch: int,
        step: int,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """See :func:`write_checkpoint`."""
        return write_checkpoint(
            self.run_dir,
            params=params,
            optimizer_state=optimizer_state,
            rng=rng,
            epoch=epoch,
            step=step,
            extra=extra,
        )

    def load_checkpoint(self) -> Checkpoint:
        """See :func:`load_checkpoint`."""
        return load_checkpoint(self.run_dir)

    def stray_temp_files(self) -> Iterator[Path]:
        """Temporary files left by an interrupted write (``.*.tmp``), for cleanup or checks."""
        for directory in (self.run_dir, self.params_dir):
            yield from directory.glob(".*.tmp")


def _same_kind_of_clock(old: Any, new: Any) -> bool:
    """twin_control may move to another served twin's address, never change the level."""

    def kind(v: Any) -> str:
        return "bench" if v is None else "memory" if v == "memory" else "served"

    return kind(old) == kind(new)


#: Config keys (and key prefixes) a resumed run may change, with the check the change must pass
#: (old, new; None where absent): more epochs; the addresses of the instruments and of a served
#: twin's control, which change between sessions while the bench stays the same; telemetry and
#: suspenders.
EXTENDABLE: dict[str, Callable[[Any, Any], bool]] = {
    "training.epochs": lambda old, new: int(new) >= int(old),
    "system.bench.resources": lambda old, new: True,
    "system.bench.twin_control": _same_kind_of_clock,
    # how the run is watched and what pauses it by itself never change what it computes
    "telemetry": lambda old, new: True,
    "suspenders": lambda old, new: True,
}


def _extendable(key: str) -> str | None:
    """The `EXTENDABLE` entry covering ``key`` (itself or a prefix), if any."""
    for k in EXTENDABLE:
        if key == k or key.startswith(k + "."):
            return k
    return None


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted key (None where absent)."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _diff_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths where two nested mappings differ."""
    out: list[str] = []
    for k in sorted(set(a) | set(b)):
        path = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out.extend(_diff_keys(va, vb, path + "."))
        elif va != vb:
            out.append(path)
    return out
