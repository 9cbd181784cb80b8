"""What a report reads of a run directory, loaded once: the resolved config, the built network
(names, units and bounds of the parameters), metrics per epoch, parameters per epoch, the summary
(absent while a run is unfinished) and, for bench runs, the per-step records.

Nothing is written; a run in progress (metrics growing, records open for writing) can be read.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError
from physlearn.spec.network import NetworkSpec
from physlearn.training.runstore import RunStore

Array = NDArray[np.float64]

__all__ = ["ParameterInfo", "RunData", "load_run"]


@dataclass(frozen=True)
class ParameterInfo:
    """The trainable parameters: names, units and bounds (P,) each."""

    names: list[str]
    units: list[str]
    lower: Array
    upper: Array


@dataclass
class RunData:
    """One run directory, loaded for a report (see the module docstring)."""

    run_dir: Path
    name: str
    config: dict[str, Any]
    parameters: ParameterInfo
    metrics: list[dict[str, Any]]
    epochs: list[int]
    params: Array  # (epochs, P), in the order of ``epochs``
    summary: dict[str, Any] | None
    records: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def cost_unit(self) -> str:
        """The unit of the task cost (loss) the run reports: GP networks' occupations are
        dimensionless; an autonomous orbit's time-averaged ⟨c⟩ is in m²; otherwise the cost
        ∫ γ ½ Σ (x − y)² dt over a period is in m²·s."""
        network = self.config.get("network", {})
        if "gp_lattice" in network or "gp_field" in network:
            return "occupation², dimensionless"
        orbit_cost = self.config.get("targets", {}).get("orbit_cost", "averaged")
        if self.config.get("system", {}).get("kind") == "autonomous" and orbit_cost == "averaged":
            return "m²"
        return "m²·s"

    @property
    def level(self) -> str:
        """The fidelity level that produced the observations (as recorded; else from the config)."""
        for source in (self.summary or {}, *(reversed(self.metrics))):
            if isinstance(source.get("level"), str):
                return str(source["level"])
        system = self.config.get("system", {})
        if system.get("kind") != "bench":
            return "ideal"
        control = system.get("bench", {}).get("twin_control")
        return (
            "bench"
            if control is None
            else "emulated-memory"
            if control == "memory"
            else ("emulated-served")
        )

    @property
    def is_bench(self) -> bool:
        return self.config.get("system", {}).get("kind") == "bench"

    @property
    def seed(self) -> int | None:
        seed = self.config.get("training", {}).get("seed")
        return int(seed) if isinstance(seed, int) else None

    @property
    def estimator(self) -> str:
        return str(self.config.get("estimator", {}).get("name", "?"))

    def column(self, key: str) -> Array:
        """A metrics column per epoch (NaN where absent or null)."""
        out = []
        for m in self.metrics:
            v = m.get(key)
            out.append(
                float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan
            )
        return np.asarray(out, dtype=float)

    def metric_epochs(self) -> Array:
        return np.asarray([int(m["epoch"]) for m in self.metrics], dtype=float)

    def step_series(self, key: str) -> tuple[Array, Array]:
        """A per-step list stored in every metrics row (e.g. ``step_cosines``), flattened:
        (fractional epoch of each step, values)."""
        xs: list[float] = []
        ys: list[float] = []
        for m in self.metrics:
            vals = m.get(key) or []
            n = len(vals)
            for i, v in enumerate(vals):
                xs.append(int(m["epoch"]) + (i + 1) / n)
                ys.append(float(v) if v is not None else math.nan)
        return np.asarray(xs), np.asarray(ys)


def _parameters(run_dir: Path, config: dict[str, Any], n_params: int) -> ParameterInfo:
    """Names, units and bounds from the built network (``network.toml``, written at the start
    of every run), else from ``parameters.json`` (a GP lattice's run)."""
    path = run_dir / "network.toml"
    if path.is_file():
        try:
            spec = NetworkSpec.model_validate(tomllib.loads(path.read_text())["network"])
        except (tomllib.TOMLDecodeError, KeyError, ValueError) as exc:
            raise ConfigError(f"{path}: not a network written by physlearn train ({exc})") from None
        lo, hi = spec.parameter_bounds()
        return ParameterInfo(spec.parameter_names(), spec.parameter_units(), lo, hi)
    described = run_dir / "parameters.json"  # a GP lattice's run has no network.toml
    if described.is_file():
        import json

        info = json.loads(described.read_text())
        if len(info.get("names", [])) == n_params:

            def bounds(key: str, default: float) -> np.ndarray:
                return np.array([default if v is None else float(v) for v in info[key]])

            return ParameterInfo(
                list(info["names"]),
                list(info["units"]),
                bounds("lower", -np.inf),
                bounds("upper", np.inf),
            )
    names = [f"p{i}" for i in range(n_params)]
    return ParameterInfo(
        names, ["?"] * n_params, np.full(n_params, -np.inf), np.full(n_params, np.inf)
    )


def load_run(run_dir: Path | str) -> RunData:
    """Load a run directory for a report; ConfigError naming the directory when it is not one."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.toml)")
    store = RunStore.open(run_dir)
    config = store.load_config()
    metrics = store.read_metrics()
    epochs = store.param_epochs()
    params = (
        np.stack([store.load_params(e) for e in epochs])
        if epochs
        else np.zeros((0, 0), dtype=float)
    )
    notes: list[str] = []
    summary: dict[str, Any] | None = None
    if store.summary_path.is_file():
        summary = json.loads(store.summary_path.read_text())
    else:
        notes.append("no summary.json: the run is unfinished (or was stopped before its end)")
    info = _parameters(run_dir, config, params.shape[1] if params.size else 0)
    data = RunData(
        run_dir, run_dir.name, config, info, metrics, epochs, params, summary, None, notes
    )
    if any(run_dir.glob("records*.h5")):
        from physlearn.training.records import read_run_records

        try:
            data.records = read_run_records(run_dir)
        except (OSError, KeyError, ValueError) as exc:
            notes.append(f"per-step records unreadable: {exc}")
    return data
