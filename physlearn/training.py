"""The training loop of ``physlearn train``: estimator → optimizer → run directory, per mini-batch.

Per epoch: the training set is shuffled by a seeded Generator (``training.seed``) and cut into
mini-batches; for each batch the estimator measures the gradient of the task cost on the
`PhysicalSystem` (per-sample gradients averaged over the batch), the optimizer steps and projects
onto the parameter bounds (clipped parameters are logged and counted), and the checkpoint is
rewritten. After every epoch the train and test splits are evaluated on the *free* phase only
(loss = mean task cost, accuracy from the decoding of `physlearn.encoding`), and the metrics and
parameters are written. Optionally (ideal twin) the cosine between the estimator's batch gradient
and the exact adjoint gradient is logged per step.

Failures never write anything half-way:

* a non-finite gradient (`GradientError`, from the estimator or the optimizer's refusal) stops
  that step: parameters and optimizer state are kept, the step is counted in
  ``nonfinite_steps`` and logged;
* a steady state that cannot be found (`SolverError`: no convergence, or an orbit that does not
  attract) means the last update led the network somewhere the bench cannot settle: the
  parameters go back to the last ones whose steady states were measured, the step is counted in
  ``solver_failures`` and logged;
* ``training.max_consecutive_failures`` failed steps in a row stop the run with a `TrainingError`
  (the run directory then holds everything up to the last completed epoch and the checkpoint).

Bit-reproducible: the same config gives byte-identical parameters (all randomness is drawn from
Generators seeded by the config; the twin is deterministic).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.config import TrainConfig
from physlearn.datasets import Dataset, check_feature_count, get_dataset, iterate_minibatches
from physlearn.encoding import ClassTargets, check_inputs, make_targets
from physlearn.errors import ConfigError, GradientError, PhyslearnError, SolverError
from physlearn.estimators import Estimator, make_estimator
from physlearn.knowledge import ModelKnowledge
from physlearn.network import NetworkSpec
from physlearn.optimizers import Optimizer, make_optimizer
from physlearn.runstore import EpochMetrics, RunStore, atomic_write_bytes
from physlearn.system import PhysicalSystem

log = logging.getLogger(__name__)
Array = NDArray[np.float64]

__all__ = [
    "ProgressEvent",
    "TrainResult",
    "TrainSetup",
    "Trainer",
    "TrainingError",
    "default_run_name",
    "evaluate",
    "make_system",
    "prepare",
    "train",
]


class TrainingError(PhyslearnError):
    """Training could not go on (too many failed steps in a row)."""


@dataclass
class TrainSetup:
    """Everything a run needs, built and checked from a config before anything is written."""

    config: TrainConfig
    spec: NetworkSpec
    dataset: Dataset
    targets: ClassTargets
    knowledge: ModelKnowledge
    estimator: Estimator
    optimizer: Optimizer


def _dataset_targets(cfg: TrainConfig, ds: Dataset, spec: NetworkSpec) -> ClassTargets:
    kind = cfg.targets.kind
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


def prepare(cfg: TrainConfig) -> TrainSetup:
    """Build the network, data, targets, estimator and optimizer; every inconsistency is a
    ConfigError naming the field (nothing is written)."""
    try:
        spec = cfg.network.build()
    except ConfigError as exc:
        raise ConfigError(f"network: {exc}") from None
    if spec.boundary.kind != "periodic":
        raise ConfigError(
            f"network.spec.boundary.kind: training needs a periodic network, got "
            f"{spec.boundary.kind!r}"
        )
    if not spec.outputs.nodes or not spec.inputs.nodes:
        raise ConfigError("network: training needs input and output nodes")
    if spec.initial_parameters().size == 0:
        raise ConfigError("network: no trainable parameters")
    try:
        ds = get_dataset(cfg.data.name, **cfg.data.options)
    except ConfigError as exc:
        raise ConfigError(f"data.options: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"data.options: {exc}") from None
    try:
        check_feature_count(ds, len(spec.inputs.nodes))
    except ConfigError as exc:
        raise ConfigError(f"data.name / network inputs: {exc}") from None
    targets = _dataset_targets(cfg, ds, spec)
    targets.task(spec, ds.y_train[:1])  # refuses targets the spec's outputs cannot hold
    knowledge = ModelKnowledge.from_spec(spec)
    try:
        estimator = make_estimator(cfg.estimator.name, knowledge, **cfg.estimator.kwargs())
    except ConfigError as exc:
        raise ConfigError(f"estimator: {exc}") from None
    lo, hi = spec.parameter_bounds()
    okw: dict[str, Any] = dict(cfg.optimizer.options)
    if cfg.optimizer.schedule is not None:
        okw["schedule"] = dict(cfg.optimizer.schedule)
    try:
        optimizer = make_optimizer(cfg.optimizer.name, lr=cfg.optimizer.lr, bounds=(lo, hi), **okw)
    except ConfigError as exc:
        raise ConfigError(f"optimizer: {exc}") from None
    return TrainSetup(cfg, spec, ds, targets, knowledge, estimator, optimizer)


def make_system(cfg: TrainConfig, spec: NetworkSpec, floquet: str | None = None) -> PhysicalSystem:
    """The physical system of ``[system]`` (the ideal twin)."""
    from physlearn.ideal import IdealSystem

    fl = cfg.system.floquet if floquet is None else floquet
    assert fl in ("all", "free", "none")
    return IdealSystem(spec, cfg.system.points_per_period, floquet=fl, tol=cfg.system.tol)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ProgressEvent:
    """Reported after every step (``kind="step"``) and every epoch (``kind="epoch"``)."""

    kind: str
    epoch: int
    step: int
    total_steps: int
    batch_loss: float = math.nan
    metrics: dict[str, Any] | None = None


ProgressFn = Callable[[ProgressEvent], None]


@dataclass
class TrainResult:
    """The outcome: final parameters, per-epoch metrics (as written) and the summary."""

    params: Array
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    run_dir: Path | None = None


async def evaluate(
    system: PhysicalSystem,
    spec: NetworkSpec,
    targets: ClassTargets,
    params: Array,
    x: Array,
    y: NDArray[np.int64],
    batch_size: int = 64,
) -> tuple[float, float]:
    """(mean task cost, accuracy) of the free steady states of features x (n, n_in), labels y."""
    if x.shape[0] == 0:
        return math.nan, math.nan
    costs, correct = [], 0
    await system.set_parameters(params)
    for start in range(0, x.shape[0], batch_size):
        u = check_inputs(spec, x[start : start + batch_size])
        lab = y[start : start + batch_size]
        await system.set_input(u)
        await system.set_forces(None)
        obs = (await system.measure()).one_period()
        task = targets.task(spec, lab)
        costs.append(task.cost(obs.x, obs.t_s, obs.dt_s))
        correct += int(np.sum(targets.predict(obs, spec) == lab))
    return float(np.mean(np.concatenate(costs))), correct / x.shape[0]


def _cosine(a: Array, b: Array) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return math.nan
    return float(np.dot(a, b) / (na * nb))


class Trainer:
    """Runs a prepared setup on a system; see the module docstring.

    Args:
        setup: from `prepare`.
        system: the system trained on (default: the ``[system]`` twin).
        eval_system: the system evaluated on each epoch (default: a second twin, so that
            evaluation does not count as training experiments).
        reference_system: the ideal twin used for the adjoint cosine (default: a third twin).
    """

    def __init__(
        self,
        setup: TrainSetup,
        *,
        system: PhysicalSystem | None = None,
        eval_system: PhysicalSystem | None = None,
        reference_system: PhysicalSystem | None = None,
    ):
        self.setup = setup
        cfg, spec = setup.config, setup.spec
        self.system = system if system is not None else make_system(cfg, spec)
        self.eval_system = (
            eval_system if eval_system is not None else make_system(cfg, spec, "none")
        )
        self.reference_system = reference_system
        if cfg.training.log_cosine_to_adjoint and reference_system is None:
            self.reference_system = make_system(cfg, spec, "none")
        self.reference: Estimator | None = (
            make_estimator("adjoint", setup.knowledge)
            if cfg.training.log_cosine_to_adjoint
            else None
        )

    async def run(
        self, store: RunStore | None = None, progress: ProgressFn | None = None
    ) -> TrainResult:
        s, cfg = self.setup, self.setup.config
        tc = cfg.training
        spec, ds, targets, est, opt = s.spec, s.dataset, s.targets, s.estimator, s.optimizer
        rng = np.random.default_rng(tc.seed)
        params = spec.initial_parameters()
        last_good = params.copy()
        n_batches = math.ceil(ds.n_train / tc.batch_size)
        total_steps = tc.epochs * n_batches
        t0 = time.perf_counter()
        step = 0
        counters = {"nonfinite_steps": 0, "solver_failures": 0, "clipped_parameters": 0}
        consecutive = 0
        metrics: list[dict[str, Any]] = []
        initial = await self._evaluate(params)
        log.info(
            "initial: train loss %.4g acc %.3f, test loss %.4g acc %.3f",
            initial["train_loss"],
            initial["train_accuracy"],
            initial["test_loss"],
            initial["test_accuracy"],
        )
        stopped_early = False
        epochs_run = 0
        for epoch in range(tc.epochs):
            batch_losses: list[float] = []
            cosines: list[float] = []
            ep_counts = dict.fromkeys(counters, 0)
            for bi, idx in enumerate(
                iterate_minibatches(ds.n_train, tc.batch_size, rng, tc.shuffle)
            ):
                u = ds.x_train[idx]
                lab = ds.y_train[idx]
                task = targets.task(spec, lab)
                failed = None
                try:
                    g = await est.estimate(self.system, params, u, task)
                    grad = np.mean(g.grad, axis=0)
                    last_good = params.copy()
                    cos = math.nan
                    if self.reference is not None and self.reference_system is not None:
                        ref = await self.reference.estimate(self.reference_system, params, u, task)
                        cos = _cosine(grad, np.mean(ref.grad, axis=0))
                    new = opt.step(params, grad)
                except GradientError as exc:
                    failed = "nonfinite_steps"
                    log.warning(
                        "epoch %d batch %d: step refused, parameters kept: %s", epoch, bi, exc
                    )
                except SolverError as exc:
                    failed = "solver_failures"
                    log.warning(
                        "epoch %d batch %d: no attracting steady state (%s); parameters reverted "
                        "to the last measured ones",
                        epoch,
                        bi,
                        exc,
                    )
                    params = last_good.copy()
                if failed is not None:
                    counters[failed] += 1
                    ep_counts[failed] += 1
                    consecutive += 1
                    if consecutive >= tc.max_consecutive_failures:
                        raise TrainingError(
                            f"{consecutive} failed steps in a row (last: {failed}) at epoch "
                            f"{epoch}; stopping. The run directory holds the last completed epoch."
                        )
                    continue
                consecutive = 0
                params = new
                step += 1
                nclip = int(opt.last_clipped.size)
                if nclip:
                    names = spec.parameter_names()
                    log.info(
                        "step %d: %d parameter(s) projected onto their bounds: %s",
                        step,
                        nclip,
                        ", ".join(names[i] for i in opt.last_clipped[:10]),
                    )
                counters["clipped_parameters"] += nclip
                ep_counts["clipped_parameters"] += nclip
                batch_losses.append(float(np.mean(g.cost)))
                cosines.append(cos)
                if store is not None:
                    store.write_checkpoint(
                        params=params,
                        optimizer_state=opt.state_dict(),
                        rng=rng,
                        epoch=epoch,
                        step=step,
                        extra={"batch": bi, "batches_per_epoch": n_batches},
                    )
                if progress is not None:
                    progress(ProgressEvent("step", epoch, step, total_steps, batch_losses[-1]))
            ev = await self._evaluate(params)
            finite_cos = [c for c in cosines if math.isfinite(c)]
            record = EpochMetrics(
                epoch=epoch,
                train_loss=ev["train_loss"],
                train_accuracy=ev["train_accuracy"],
                test_loss=ev["test_loss"],
                test_accuracy=ev["test_accuracy"],
                wall_time_s=time.perf_counter() - t0,
                experiments=int(self.system.experiments),
                cosine_to_adjoint=float(np.mean(finite_cos)) if finite_cos else None,
                extra={
                    "steps": step,
                    "lr": opt.lr,
                    "mean_batch_loss": float(np.mean(batch_losses)) if batch_losses else math.nan,
                    "eval_failures": ev["failures"],
                    **{f"epoch_{k}": v for k, v in ep_counts.items()},
                    **({"step_cosines": cosines} if self.reference is not None else {}),
                },
            )
            rec = record.to_json()
            metrics.append(rec)
            if store is not None:
                store.save_params(epoch, params)
                store.append_metrics(record)
            epochs_run = epoch + 1
            if progress is not None:
                progress(ProgressEvent("epoch", epoch, step, total_steps, math.nan, rec))
            log.info(
                "epoch %d: train loss %.4g acc %.3f, test loss %.4g acc %.3f",
                epoch,
                ev["train_loss"],
                ev["train_accuracy"],
                ev["test_loss"],
                ev["test_accuracy"],
            )
            if self._reached(ev):
                stopped_early = epoch + 1 < tc.epochs
                break
        stability = await self._stability(params)
        summary = {
            "epochs_run": epochs_run,
            "epochs_configured": tc.epochs,
            "stopped_early": stopped_early,
            "steps": step,
            "wall_time_s": time.perf_counter() - t0,
            "experiments": int(self.system.experiments),
            "initial": initial,
            "final": metrics[-1] if metrics else None,
            "best_test_accuracy": max((m["test_accuracy"] or 0.0) for m in metrics)
            if metrics
            else None,
            **counters,
            "parameter_names": spec.parameter_names(),
            "final_params": params.tolist(),
            "dataset": {
                "name": ds.name,
                "description": ds.description,
                "n_train": ds.n_train,
                "n_test": ds.n_test,
                "n_classes": ds.n_classes,
            },
            "targets": targets.describe(),
            "estimator": cfg.estimator.name,
            "stability": stability,
        }
        if store is not None:
            store.write_summary(summary)
        return TrainResult(params, metrics, summary, store.run_dir if store else None)

    def _reached(self, ev: dict[str, Any]) -> bool:
        tc = self.setup.config.training
        if tc.target_accuracy is not None:
            acc = ev[f"{tc.target_split}_accuracy"]
            if math.isfinite(acc) and acc >= tc.target_accuracy - 1e-12:
                if tc.target_loss is None:
                    return True
                loss = ev[f"{tc.target_split}_loss"]
                return bool(math.isfinite(loss) and loss <= tc.target_loss)
        elif tc.target_loss is not None:
            loss = ev[f"{tc.target_split}_loss"]
            return bool(math.isfinite(loss) and loss <= tc.target_loss)
        return False

    async def _evaluate(self, params: Array) -> dict[str, Any]:
        s = self.setup
        ds, bs = s.dataset, s.config.training.eval_batch_size
        out: dict[str, Any] = {"failures": 0}
        for split in ("train", "test"):
            try:
                loss, acc = await evaluate(
                    self.eval_system,
                    s.spec,
                    s.targets,
                    params,
                    getattr(ds, f"x_{split}"),
                    getattr(ds, f"y_{split}"),
                    bs,
                )
            except SolverError as exc:
                log.warning("evaluation of the %s split failed: %s", split, exc)
                loss, acc = math.nan, math.nan
                out["failures"] += 1
            out[f"{split}_loss"], out[f"{split}_accuracy"] = loss, acc
        return out

    async def _stability(self, params: Array, max_samples: int = 64) -> dict[str, Any]:
        """Floquet check of the final free orbits (up to ``max_samples`` training samples)."""
        from physlearn.ideal import IdealSystem
        from physlearn.topology import mode_report

        s = self.setup
        twin = make_system(s.config, s.spec, "free")
        assert isinstance(twin, IdealSystem)
        u = s.dataset.x_train[:max_samples]
        out: dict[str, Any] = {"samples_checked": int(u.shape[0])}
        try:
            await twin.set_parameters(params)
            await twin.set_input(u)
            obs = await twin.measure()
            mult = np.asarray(obs.meta.get("max_floquet_multiplier"), dtype=float)
            out.update(stable=True, max_floquet_multiplier=float(np.max(mult)))
        except SolverError as exc:
            out.update(stable=False, error=str(exc))
        rep = mode_report(s.spec, params)
        out["linear_modes_at_rest"] = rep.as_dict()
        return out


def default_run_name(cfg: TrainConfig, config_path: Path | None = None) -> str:
    stem = config_path.stem if config_path is not None else cfg.data.name
    return f"{stem}-{cfg.estimator.name}-s{cfg.training.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(
    cfg: TrainConfig,
    *,
    root: Path | None = None,
    name: str | None = None,
    progress: ProgressFn | None = None,
    system: PhysicalSystem | None = None,
    write: bool = True,
) -> TrainResult:
    """Prepare, create the run directory (``root/name``; defaults from ``[output]``), train.

    Everything that can be checked is checked before the directory is created.
    """
    setup = prepare(cfg)
    store = None
    if write:
        root_dir = Path(root) if root is not None else cfg.output.root
        run_name = name or cfg.output.name or default_run_name(cfg)
        store = RunStore.create(root_dir, run_name, cfg.resolved())
        _write_network(store, setup.spec)
    trainer = Trainer(setup, system=system)
    return asyncio.run(trainer.run(store, progress))


def _write_network(store: RunStore, spec: NetworkSpec) -> None:
    """The built network (initial parameter values) as ``network.toml`` beside config.toml."""
    import tomli_w

    data = spec.model_dump(mode="json", exclude_none=True)
    atomic_write_bytes(store.run_dir / "network.toml", tomli_w.dumps({"network": data}).encode())
