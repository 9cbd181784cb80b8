"""`prepare`: a train config checked and built into a `TrainSetup` — network, data, targets, the
estimator (with the knowledge the config's level gives it, built once) and the optimizer —
before anything is written; plus the run directory's name and network file."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError
from physlearn.estimators import Estimator, make_estimator
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.gp_field_network import GPFieldNetworkSpec
from physlearn.spec.gp_network import GPNetworkSpec
from physlearn.spec.gp_system import GPKnowledge
from physlearn.systems.factory import level_knowledge
from physlearn.training.config import TrainConfig
from physlearn.training.datasets import Dataset, check_feature_count, get_dataset
from physlearn.training.encoding import ClassTargets, TrainNetwork, input_count, make_targets
from physlearn.training.init_from import InitFrom
from physlearn.training.optimizers import Optimizer, make_optimizer
from physlearn.training.runstore import RunStore, atomic_write_bytes

Array = NDArray[np.float64]

__all__ = ["TrainSetup", "default_run_name", "n_fit_samples", "prepare", "write_network"]


@dataclass
class TrainSetup:
    """Everything a run needs, built and checked from a config before anything is written."""

    config: TrainConfig
    spec: TrainNetwork
    dataset: Dataset
    targets: ClassTargets
    knowledge: ModelKnowledge | GPKnowledge
    estimator: Estimator
    optimizer: Optimizer
    #: ``physlearn train --init-from``: start from another run's parameters (not the spec's)
    init_from: InitFrom | None = None

    def initial_parameters(self) -> Array:
        """The run's starting parameters (P,): ``init_from``'s, else the spec's initial values."""
        if self.init_from is not None:
            return np.array(self.init_from.values, dtype=float)
        return np.asarray(self.spec.initial_parameters(), dtype=float)


def _build_spec(cfg: TrainConfig) -> TrainNetwork:
    try:
        built = cfg.network.build()
    except ConfigError as exc:
        raise ConfigError(f"network: {exc}") from None
    if isinstance(built, GPNetworkSpec | GPFieldNetworkSpec):
        return built  # inputs, outputs and parameters are required by its own validation
    spec = built
    if spec.boundary.kind != "periodic":
        raise ConfigError(
            f"network.spec.boundary.kind: training needs a periodic network, got "
            f"{spec.boundary.kind!r}"
        )
    if not spec.outputs.nodes or not spec.inputs.nodes:
        raise ConfigError("network: training needs input and output nodes")
    if spec.initial_parameters().size == 0:
        raise ConfigError("network: no trainable parameters")
    return spec


def _load_dataset(cfg: TrainConfig, spec: TrainNetwork) -> Dataset:
    try:
        ds = get_dataset(cfg.data.name, **cfg.data.options)
    except ConfigError as exc:
        raise ConfigError(f"data.options: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"data.options: {exc}") from None
    try:
        check_feature_count(ds, input_count(spec))
    except ConfigError as exc:
        raise ConfigError(f"data.name / network inputs: {exc}") from None
    return ds


def _dataset_targets(cfg: TrainConfig, ds: Dataset, spec: TrainNetwork) -> ClassTargets:
    kind = cfg.targets.kind
    if isinstance(spec, GPNetworkSpec | GPFieldNetworkSpec):
        from physlearn.training.gp_targets import make_density_targets

        return make_density_targets(cfg.targets, ds, spec)
    if kind == "density":
        raise ConfigError(
            'targets.kind: "density" targets need [network.gp_lattice] or [network.gp_field]'
        )
    if kind == "level":
        from physlearn.training.orbit_targets import make_level_targets

        return make_level_targets(cfg.targets, ds, spec)
    if kind is None:
        kind = "sine" if ds.metadata.get("task") == "waveform" else "inphase"
    encoding = str(ds.metadata.get("encoding", "phase"))
    if kind == "sine" and encoding not in ("phase", "frequency"):
        raise ConfigError(f"targets.kind: 'sine' needs the sine data set, not {ds.name!r}")
    try:
        return make_targets(
            kind,
            ds.n_classes,
            len(spec.outputs.nodes),
            on=cfg.targets.on,
            off=cfg.targets.off,
            amplitude=cfg.targets.amplitude,
            encoding="frequency" if encoding == "frequency" else "phase",
        )
    except ConfigError as exc:
        raise ConfigError(f"targets: {exc}") from None


def n_fit_samples(cfg: TrainConfig, ds: Dataset) -> int:
    """Training samples left after the validation hold-out (see `validation_split`)."""
    tc = cfg.training
    if tc.validation_fraction <= 0:
        return ds.n_train
    return ds.n_train - max(ds.n_classes, math.ceil(tc.validation_fraction * ds.n_train))


def _optimizer(cfg: TrainConfig, spec: TrainNetwork, ds: Dataset) -> Optimizer:
    lo, hi = spec.parameter_bounds()
    okw: dict[str, Any] = dict(cfg.optimizer.options)
    if cfg.optimizer.schedule is not None:
        okw["schedule"] = dict(cfg.optimizer.schedule)
        if okw["schedule"].get("name") == "cosine" and "total_steps" not in okw["schedule"]:
            tc = cfg.training
            n_fit = n_fit_samples(cfg, ds)
            okw["schedule"]["total_steps"] = max(1, tc.epochs * math.ceil(n_fit / tc.batch_size))
    try:
        return make_optimizer(cfg.optimizer.name, lr=cfg.optimizer.lr, bounds=(lo, hi), **okw)
    except ConfigError as exc:
        raise ConfigError(f"optimizer: {exc}") from None


def prepare(cfg: TrainConfig, config_dir: Path | None = None) -> TrainSetup:
    """Build the network, data, targets, estimator and optimizer; every inconsistency is a
    ConfigError naming the field (nothing is written). The estimator knows what the config's
    level gives (`physlearn.systems.factory.level_knowledge`: the spec on the twin, the
    calibration on a bench, whose relative paths resolve against ``config_dir``)."""
    spec = _build_spec(cfg)
    ds = _load_dataset(cfg, spec)
    targets = _dataset_targets(cfg, ds, spec)
    targets.task(spec, ds.y_train[:1])  # refuses targets the spec's outputs cannot hold
    knowledge = level_knowledge(cfg, spec, config_dir)
    try:
        estimator = make_estimator(cfg.estimator.name, knowledge, **cfg.estimator.kwargs())
    except ConfigError as exc:
        raise ConfigError(f"estimator: {exc}") from None
    optimizer = _optimizer(cfg, spec, ds)
    return TrainSetup(cfg, spec, ds, targets, knowledge, estimator, optimizer)


def default_run_name(cfg: TrainConfig, config_path: Path | None = None) -> str:
    stem = config_path.stem if config_path is not None else cfg.data.name
    return f"{stem}-{cfg.estimator.name}-s{cfg.training.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


#: in a run directory, written at its start: the trainable parameters' names, units, bounds and
#: initial values, in parameter order (the order of params/epoch_*.npy and of the checkpoint)
PARAMETERS_FILE = "parameters.json"


def write_network(store: RunStore, spec: TrainNetwork, init_from: InitFrom | None = None) -> None:
    """The built network (initial parameter values) as ``network.toml`` beside config.toml (a
    GP lattice: ``gp_lattice.toml``; a GP field: ``gp_field.toml``), and its trainable parameters
    described in ``parameters.json`` (with ``init_from``: the initial values are that run's, and
    ``init_from`` says which run and epoch)."""
    import json
    import math

    import tomli_w

    data = spec.model_dump(mode="json", exclude_none=True)
    if isinstance(spec, GPNetworkSpec | GPFieldNetworkSpec):
        text = tomli_w.dumps({spec.kind: data})
        atomic_write_bytes(store.run_dir / f"{spec.kind}.toml", text.encode())
    else:
        atomic_write_bytes(
            store.run_dir / "network.toml", tomli_w.dumps({"network": data}).encode()
        )
    lo, hi = spec.parameter_bounds()

    def bound(v: float) -> float | None:
        return float(v) if math.isfinite(v) else None

    params = {
        "names": spec.parameter_names(),
        "units": spec.parameter_units(),
        "lower": [bound(v) for v in lo],
        "upper": [bound(v) for v in hi],
        "initial": (spec.initial_parameters() if init_from is None else init_from.values).tolist(),
    }
    if init_from is not None:
        params["init_from"] = init_from.describe()
    text = json.dumps(params, indent=2) + "\n"
    atomic_write_bytes(store.run_dir / PARAMETERS_FILE, text.encode())
