"""The training loop of ``physlearn train``: estimator → optimizer → run directory, per mini-batch.

Per epoch: the training set is shuffled by a seeded Generator (``training.seed``) and cut into
mini-batches; for each batch the estimator measures the gradient of the task cost on the
`PhysicalSystem` (per-sample gradients averaged over the batch), the optimizer steps and projects
onto the parameter bounds (clipped parameters are logged and counted), and the checkpoint is
rewritten (for ordinary steps at most every ``training.checkpoint_interval_s``). After every
epoch the train and test splits are evaluated on the *free* phase only (loss = mean task cost,
accuracy from the decoding of `physlearn.training.encoding`), and the metrics and parameters are written.
Optionally (ideal twin) the cosine between the estimator's batch gradient and the exact adjoint
gradient is logged per step.

Failures never write anything half-way:

* a non-finite gradient (`GradientError`, from the estimator or the optimizer's refusal) stops
  that step: parameters and optimizer state are kept, the step is counted in
  ``nonfinite_steps`` and logged;
* a steady state that cannot be found (`SolverError`: no convergence, or an orbit that does not
  attract) means the last update led the network somewhere the bench cannot settle: the
  parameters go back to the last ones whose steady states were measured, the step is counted in
  ``solver_failures`` and logged;
* the step length is then multiplied by ``training.failure_backoff`` (down to 1/1024) and grows
  back ×2 every ``training.recovery_steps`` successful steps; a second failure in a row goes
  back further, to the last epoch-end parameters whose evaluation solved every sample;
* an epoch-end evaluation in which some samples have no steady state (they count as
  misclassified; the batch is split to isolate them) sends the parameters back to that last
  fully solved epoch too, with the same step shortening (``training.revert_unsolved``);
* a failure of either kind at the smallest step length (``MIN_STEP_SCALE``) ends the run early
  (``summary["stop_reason"]``): the network sits at a bifurcation that shorter steps cannot avoid;
* ``training.max_consecutive_failures`` failed steps in a row stop the run with a `TrainingError`
  (the run directory then holds everything up to the last completed epoch and the checkpoint).

Selection: ``training.select`` keeps the parameters of the best epoch by the accuracy (then loss)
of the train, validation (a stratified hold-out, ``training.validation_fraction``) or test split,
with ``training.patience`` for early stopping; ``summary["final"]`` is that epoch's record.
``training.min_mode_margin`` shortens or refuses updates that would move a linear mode at rest
near ω or 2ω.

Bit-reproducible: the same config gives byte-identical parameters (all randomness is drawn from
Generators seeded by the config; the twin is deterministic).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError, GradientError, PhyslearnError, SolverError
from physlearn.estimators import Estimator, make_estimator
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import PhysicalSystem
from physlearn.training.config import TrainConfig
from physlearn.training.datasets import (
    Dataset,
    check_feature_count,
    get_dataset,
    iterate_minibatches,
)
from physlearn.training.encoding import ClassTargets, check_inputs, make_targets
from physlearn.training.optimizers import Optimizer, make_optimizer
from physlearn.training.runstore import Checkpoint, EpochMetrics, RunStore, atomic_write_bytes

log = logging.getLogger(__name__)
Array = NDArray[np.float64]

__all__ = [
    "EvalResult",
    "ProgressEvent",
    "TrainResult",
    "TrainSetup",
    "Trainer",
    "TrainerState",
    "TrainingError",
    "default_run_name",
    "evaluate",
    "evaluate_split",
    "make_system",
    "prepare",
    "train",
    "validation_split",
]


#: A free orbit attracts when every Floquet multiplier has modulus ≤ 1 + STABILITY_TOL.
STABILITY_TOL = 1e-6

#: Smallest step-length factor after repeated failures; one more failure there stops the run.
MIN_STEP_SCALE = 1.0 / 1024.0


#: Version of the trainer state kept in a checkpoint's ``extra`` (see `TrainerState`).
TRAINER_STATE_VERSION = 1

_COUNTERS = (
    "nonfinite_steps",
    "solver_failures",
    "clipped_parameters",
    "mode_guard_refusals",
    "evaluation_reverts",
)


@dataclass
class TrainerState:
    """Everything `Trainer.run` carries from one mini-batch to the next, so that a run resumed
    from a checkpoint continues exactly as the uninterrupted run would have.

    Position: ``epoch`` and ``next_batch`` (the first mini-batch not yet done; equal to the
    number of batches when only the epoch-end evaluation is left); ``epoch_rng`` is the shuffle
    Generator *at the start of that epoch* (the resumed run draws the same order and skips the
    batches done). The rest: parameters, the last measured ones (``last_good``, for reverts),
    the last fully solved epoch-end ones (``anchor``), step count, failure counters, the
    step-length factor and its recovery streak, best-epoch selection and patience, the epoch's
    batch losses, cosines and counts so far, the stop decision, wall time (s) and experiments
    so far, the state of the systems (warm starts of the ideal twin) and of the estimator's rng.
    """

    params: Array
    last_good: Array
    anchor: Array
    epoch_rng: np.random.Generator
    epoch: int = 0
    next_batch: int = 0
    step: int = 0
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    consecutive: int = 0
    step_scale: float = 1.0
    good_streak: int = 0
    best: tuple[float, float] | None = None
    best_epoch: int = -1
    best_params: Array | None = None
    since_best: int = 0
    stuck: bool = False
    epochs_run: int = 0
    stopped_early: bool = False
    stop_reason: str = ""
    finished: bool = False
    batch_losses: list[float] = field(default_factory=list)
    cosines: list[float] = field(default_factory=list)
    ep_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    initial: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    experiments: int = 0
    systems: dict[str, Any] = field(default_factory=dict)
    estimator_rng: dict[str, Any] | None = None

    @classmethod
    def fresh(cls, params: Array, seed: int) -> TrainerState:
        p = np.array(params, dtype=float)
        return cls(p, p.copy(), p.copy(), np.random.default_rng(seed), best_params=p.copy())

    def extra(self) -> dict[str, Any]:
        """The checkpoint's ``extra``: every field but params and the Generator (stored apart)."""
        return {
            "trainer_state": TRAINER_STATE_VERSION,
            "next_batch": self.next_batch,
            "last_good": self.last_good,
            "anchor": self.anchor,
            "counters": dict(self.counters),
            "consecutive": self.consecutive,
            "step_scale": self.step_scale,
            "good_streak": self.good_streak,
            "best": list(self.best) if self.best is not None else None,
            "best_epoch": self.best_epoch,
            "best_params": self.best_params,
            "since_best": self.since_best,
            "stuck": self.stuck,
            "epochs_run": self.epochs_run,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "finished": self.finished,
            "batch_losses": list(self.batch_losses),
            "cosines": list(self.cosines),
            "ep_counts": dict(self.ep_counts),
            "initial": dict(self.initial),
            "elapsed_s": self.elapsed_s,
            "systems": self.systems,
            "estimator_rng": self.estimator_rng,
        }

    @classmethod
    def from_checkpoint(cls, ck: Checkpoint, n_batches: int) -> TrainerState:
        """The state a checkpoint holds; ConfigError if it was written without one (or by a run
        cut into another number of mini-batches per epoch)."""
        x = ck.extra
        if x.get("trainer_state") != TRAINER_STATE_VERSION:
            raise ConfigError(
                "checkpoint: no trainer state (written by an older physlearn); cannot resume "
                "this run"
            )
        if int(x.get("batches_per_epoch", -1)) != n_batches:
            raise ConfigError(
                f"checkpoint: written with {x.get('batches_per_epoch')} mini-batches per epoch, "
                f"the config gives {n_batches}"
            )
        best = x["best"]
        return cls(
            params=np.array(ck.params, dtype=float),
            last_good=np.asarray(x["last_good"], dtype=float),
            anchor=np.asarray(x["anchor"], dtype=float),
            epoch_rng=ck.make_rng(),
            epoch=ck.epoch,
            next_batch=int(x["next_batch"]),
            step=ck.step,
            counters={k: int(v) for k, v in x["counters"].items()},
            consecutive=int(x["consecutive"]),
            step_scale=float(x["step_scale"]),
            good_streak=int(x["good_streak"]),
            best=(float(best[0]), float(best[1])) if best is not None else None,
            best_epoch=int(x["best_epoch"]),
            best_params=np.asarray(x["best_params"], dtype=float),
            since_best=int(x["since_best"]),
            stuck=bool(x["stuck"]),
            epochs_run=int(x["epochs_run"]),
            stopped_early=bool(x["stopped_early"]),
            stop_reason=str(x["stop_reason"]),
            finished=bool(x["finished"]),
            batch_losses=[float(v) for v in x["batch_losses"]],
            cosines=[float(v) for v in x["cosines"]],
            ep_counts={k: int(v) for k, v in x["ep_counts"].items()},
            initial=dict(x["initial"]),
            elapsed_s=float(x["elapsed_s"]),
            experiments=int(x["experiments"]),
            systems=dict(x.get("systems") or {}),
            estimator_rng=x.get("estimator_rng"),
        )


def _get_rng_state(obj: object) -> dict[str, Any] | None:
    """``bit_generator.state`` of an object's ``rng`` Generator (e.g. SPSA's), if it has one."""
    rng = getattr(obj, "rng", None)
    if isinstance(rng, np.random.Generator):
        return dict(rng.bit_generator.state)
    inner = getattr(obj, "inner", None)  # wrappers (bench step records)
    return _get_rng_state(inner) if inner is not None and inner is not obj else None


def _set_rng_state(obj: object, state: dict[str, Any]) -> None:
    rng = getattr(obj, "rng", None)
    if isinstance(rng, np.random.Generator):
        rng.bit_generator.state = state
        return
    inner = getattr(obj, "inner", None)
    if inner is not None and inner is not obj:
        _set_rng_state(inner, state)


def _system_method(system: object, name: str) -> Callable[..., Any] | None:
    """``system.<name>`` if callable, else that of the system it wraps (``inner``, as in
    `DelegatingSystem`), outermost first; None if no layer has it."""
    seen: set[int] = set()
    obj: object | None = system
    while obj is not None and id(obj) not in seen:
        seen.add(id(obj))
        fn = getattr(obj, name, None)
        if callable(fn):
            return fn
        obj = getattr(obj, "inner", None)
    return None


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
        if okw["schedule"].get("name") == "cosine" and "total_steps" not in okw["schedule"]:
            tc = cfg.training
            n_fit = ds.n_train - (
                max(ds.n_classes, math.ceil(tc.validation_fraction * ds.n_train))
                if tc.validation_fraction > 0
                else 0
            )
            okw["schedule"]["total_steps"] = max(1, tc.epochs * math.ceil(n_fit / tc.batch_size))
    try:
        optimizer = make_optimizer(cfg.optimizer.name, lr=cfg.optimizer.lr, bounds=(lo, hi), **okw)
    except ConfigError as exc:
        raise ConfigError(f"optimizer: {exc}") from None
    return TrainSetup(cfg, spec, ds, targets, knowledge, estimator, optimizer)


def make_system(cfg: TrainConfig, spec: NetworkSpec, floquet: str | None = None) -> PhysicalSystem:
    """The physical system of ``[system]`` (the ideal twin)."""
    from physlearn.systems.ideal import IdealSystem

    fl = cfg.system.floquet if floquet is None else floquet
    assert fl in ("all", "free", "none")
    return IdealSystem(
        spec,
        cfg.system.points_per_period,
        floquet=fl,  # type: ignore[arg-type]
        tol=cfg.system.tol,
        echo_settle=cfg.system.echo_settle,
    )


@dataclass(frozen=True)
class ProgressEvent:
    """Reported after every step (``kind="step"``) and every epoch (``kind="epoch"``)."""

    kind: str
    epoch: int
    step: int
    total_steps: int
    batch_loss: float = math.nan
    metrics: dict[str, Any] | None = None
    batch: int = -1  # index of the mini-batch within the epoch (step events)


ProgressFn = Callable[[ProgressEvent], None]


@dataclass
class TrainResult:
    """The outcome: final parameters, per-epoch metrics (as written) and the summary."""

    params: Array
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    run_dir: Path | None = None


@dataclass(frozen=True)
class EvalResult:
    """Free-phase evaluation of a split: mean task cost over the solved samples, accuracy over
    all samples (a sample without an attracting steady state counts as misclassified), and the
    number of such unsolved samples."""

    loss: float
    accuracy: float
    unsolved: int


async def _free_outputs(
    system: PhysicalSystem, spec: NetworkSpec, targets: ClassTargets, x: Array, y: NDArray[np.int64]
) -> tuple[Array, NDArray[np.int64]]:
    """Costs (n,) and predictions (n,) of one batch. A sample without a steady state gets cost NaN
    and prediction −1: when the error names the failing samples they are set aside and the rest is
    solved again (one more solve); otherwise the batch is split in halves."""
    try:
        await system.set_input(check_inputs(spec, x))
        await system.set_forces(None)
        obs = (await system.measure()).one_period()
    except SolverError as exc:
        n = x.shape[0]
        if n == 1:
            log.warning("evaluation: input %s has no steady state: %s", x[0].tolist(), exc)
            return np.full(1, math.nan), np.full(1, -1, dtype=np.int64)
        bad = [i for i in getattr(exc, "samples", ()) if isinstance(i, int) and 0 <= i < n]
        if bad:
            keep = np.ones(n, dtype=bool)
            keep[bad] = False
            cost = np.full(n, math.nan)
            pred = np.full(n, -1, dtype=np.int64)
            if keep.any():
                cost[keep], pred[keep] = await _free_outputs(
                    system, spec, targets, x[keep], y[keep]
                )
            return cost, pred
        h = n // 2
        c1, p1 = await _free_outputs(system, spec, targets, x[:h], y[:h])
        c2, p2 = await _free_outputs(system, spec, targets, x[h:], y[h:])
        return np.concatenate([c1, c2]), np.concatenate([p1, p2])
    cost = np.asarray(targets.task(spec, y).cost(obs.x, obs.t_s, obs.dt_s), dtype=float)
    return cost, np.asarray(targets.predict(obs, spec), dtype=np.int64)


async def evaluate_split(
    system: PhysicalSystem,
    spec: NetworkSpec,
    targets: ClassTargets,
    params: Array,
    x: Array,
    y: NDArray[np.int64],
    batch_size: int = 128,
) -> EvalResult:
    """Evaluate features x (n, n_in), labels y on the free steady states, ``batch_size`` samples
    per batched solve (the twin solves a batch as one Newton–Krylov problem)."""
    if x.shape[0] == 0:
        return EvalResult(math.nan, math.nan, 0)
    await system.set_parameters(params)
    costs, preds = [], []
    for start in range(0, x.shape[0], batch_size):
        c, p = await _free_outputs(
            system, spec, targets, x[start : start + batch_size], y[start : start + batch_size]
        )
        costs.append(c)
        preds.append(p)
    cost, pred = np.concatenate(costs), np.concatenate(preds)
    solved = np.isfinite(cost)
    loss = float(np.mean(cost[solved])) if solved.any() else math.nan
    return EvalResult(loss, float(np.mean(pred == y)), int(np.sum(~solved)))


async def evaluate(
    system: PhysicalSystem,
    spec: NetworkSpec,
    targets: ClassTargets,
    params: Array,
    x: Array,
    y: NDArray[np.int64],
    batch_size: int = 128,
) -> tuple[float, float]:
    """(mean task cost, accuracy) of the free steady states of features x (n, n_in), labels y
    (see `evaluate_split`)."""
    r = await evaluate_split(system, spec, targets, params, x, y, batch_size)
    return r.loss, r.accuracy


def _cosine(a: Array, b: Array) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return math.nan
    return float(np.dot(a, b) / (na * nb))


def validation_split(
    ds: Dataset, fraction: float, seed: int
) -> tuple[Array, NDArray[np.int64], Array, NDArray[np.int64]]:
    """(x_fit, y_fit, x_val, y_val): a stratified hold-out of ``fraction`` of the training split
    (``sklearn.model_selection.train_test_split``, ``random_state=seed``); no hold-out for 0."""
    if fraction <= 0.0:
        return ds.x_train, ds.y_train, ds.x_train[:0], ds.y_train[:0]
    from sklearn.model_selection import train_test_split

    idx = np.arange(ds.n_train)
    n_val = max(ds.n_classes, math.ceil(fraction * ds.n_train))
    if n_val >= ds.n_train:
        raise ConfigError(
            f"training.validation_fraction: {fraction} leaves no training samples of {ds.n_train}"
        )
    try:
        fit, val = train_test_split(idx, test_size=n_val, stratify=ds.y_train, random_state=seed)
    except ValueError as exc:
        raise ConfigError(f"training.validation_fraction: {exc}") from None
    fit, val = np.sort(fit), np.sort(val)
    return ds.x_train[fit], ds.y_train[fit], ds.x_train[val], ds.y_train[val]


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
        # the per-epoch evaluation checks its free orbits' Floquet multipliers whenever the
        # training steps are checked: an unstable orbit counts as unsolved (misclassified)
        self.eval_system = (
            eval_system
            if eval_system is not None
            else make_system(cfg, spec, "none" if cfg.system.floquet == "none" else "free")
        )
        self.reference_system = reference_system
        if cfg.training.log_cosine_to_adjoint and reference_system is None:
            self.reference_system = make_system(cfg, spec, "none")
        self.reference: Estimator | None = (
            make_estimator("adjoint", setup.knowledge)
            if cfg.training.log_cosine_to_adjoint
            else None
        )
        tc = cfg.training
        self.x_fit, self.y_fit, self.x_val, self.y_val = validation_split(
            setup.dataset, tc.validation_fraction, tc.seed
        )
        self.guard = None
        if tc.min_mode_margin is not None:
            from physlearn.spec.topology import ModeGuard

            self.guard = ModeGuard(spec)

    def _systems(self) -> dict[str, PhysicalSystem]:
        """The distinct systems of this trainer, by role."""
        out: dict[str, PhysicalSystem] = {}
        for role, sy in (
            ("system", self.system),
            ("eval", self.eval_system),
            ("reference", self.reference_system),
        ):
            if sy is not None and all(sy is not o for o in out.values()):
                out[role] = sy
        return out

    def _system_states(self) -> dict[str, Any]:
        """``state_dict()`` of every system that has one, found through wrappers (retries,
        corrections: `DelegatingSystem`) — the ideal twin's warm starts; a bench's physical
        state cannot be stored: it settles again after a resume."""
        out: dict[str, Any] = {}
        for role, sy in self._systems().items():
            fn = _system_method(sy, "state_dict")
            if fn is not None:
                out[role] = fn()
        return out

    def _load_system_states(self, states: dict[str, Any]) -> None:
        systems = self._systems()
        for role, state in states.items():
            sy = systems.get(role)
            fn = _system_method(sy, "load_state_dict") if sy is not None else None
            if fn is not None:
                fn(state)
            else:
                log.warning("resume: the %s system cannot take its checkpointed state", role)

    def _guarded(self, params: Array, proposal: Array) -> tuple[Array, bool]:
        """The update params → proposal, shortened (½, ¼, ⅛) until no linear mode at rest comes
        within ``min_mode_margin``·ω of ω or 2ω (or at least no closer than before); (params,
        False) if no shortening does."""
        tc = self.setup.config.training
        if self.guard is None or tc.min_mode_margin is None:
            return proposal, True
        floor = min(tc.min_mode_margin, self.guard.margin(params))
        delta = proposal - params
        for frac in (1.0, 0.5, 0.25, 0.125):
            trial = params + frac * delta
            if self.guard.margin(trial) >= floor:
                return trial, True
        return params, False

    async def run(
        self,
        store: RunStore | None = None,
        progress: ProgressFn | None = None,
        *,
        resume: bool | None = None,
    ) -> TrainResult:
        """Train; with ``resume`` (default: ``store.resumed``) continue from the store's checkpoint
        exactly where it was written (see `TrainerState`), else start from the spec's initial
        parameters."""
        s, cfg = self.setup, self.setup.config
        tc = cfg.training
        spec, ds, targets, est, opt = s.spec, s.dataset, s.targets, s.estimator, s.optimizer
        if resume is None:
            resume = store is not None and store.resumed
        ck: Checkpoint | None = None
        if resume:
            if store is None:
                raise ConfigError("resume: needs a run directory")
            if store.checkpoint_path.is_file():
                ck = store.load_checkpoint()
            else:
                log.info("resume: %s has no checkpoint yet; starting over", store.run_dir)
                store.truncate_metrics(-1)
        n_fit = int(self.x_fit.shape[0])
        n_batches = math.ceil(n_fit / tc.batch_size)
        total_steps = tc.epochs * n_batches
        # experiments already counted by the system (a resumed session's system starts at 0)
        exp_base = int(self.system.experiments) if ck is not None else 0
        if ck is None:
            st = TrainerState.fresh(spec.initial_parameters(), tc.seed)
            st.initial = await self._evaluate(st.params)
            log.info(
                "initial: train loss %.4g acc %.3f, test loss %.4g acc %.3f",
                st.initial["train_loss"],
                st.initial["train_accuracy"],
                st.initial["test_loss"],
                st.initial["test_accuracy"],
            )
            metrics: list[dict[str, Any]] = []
        else:
            assert store is not None
            st = TrainerState.from_checkpoint(ck, n_batches)
            opt.load_state_dict(ck.optimizer_state)
            self._load_system_states(st.systems)
            if st.estimator_rng is not None:
                _set_rng_state(est, st.estimator_rng)
            # rows written after this checkpoint (an epoch evaluated but not yet checkpointed)
            dropped = store.truncate_metrics(ck.epoch - 1)
            metrics = store.read_metrics()
            log.info(
                "resuming at epoch %d, batch %d of %d (%d updates done%s)",
                st.epoch,
                st.next_batch,
                n_batches,
                st.step,
                f"; {dropped} later metrics row(s) dropped" if dropped else "",
            )
        t0 = time.perf_counter() - st.elapsed_s

        def experiments() -> int:
            return st.experiments + int(self.system.experiments) - exp_base

        last_checkpoint = -math.inf  # perf_counter of the last checkpoint written

        def checkpoint(epoch: int, next_batch: int, *, step_only: bool = False) -> None:
            """Commit the trainer state; ``step_only`` (an ordinary step) may be skipped while
            the last checkpoint is younger than ``training.checkpoint_interval_s``."""
            nonlocal last_checkpoint
            if store is None:
                return
            now = time.perf_counter()
            if step_only and now - last_checkpoint < tc.checkpoint_interval_s:
                return
            last_checkpoint = now
            st.epoch, st.next_batch = epoch, next_batch
            st.elapsed_s = time.perf_counter() - t0
            st.systems = self._system_states()
            st.estimator_rng = _get_rng_state(est)
            exp_now = experiments()
            store.write_checkpoint(
                params=st.params,
                optimizer_state=opt.state_dict(),
                rng=st.epoch_rng,
                epoch=epoch,
                step=st.step,
                extra={**st.extra(), "experiments": exp_now, "batches_per_epoch": n_batches},
            )

        if ck is None:
            checkpoint(0, 0)
        # aliases of the state's fields, written back before every checkpoint (_sync)
        params, last_good, anchor = st.params, st.last_good, st.anchor
        step, counters, consecutive = st.step, st.counters, st.consecutive
        step_scale, good_streak = st.step_scale, st.good_streak
        best, best_epoch, best_params, since_best = (
            st.best,
            st.best_epoch,
            st.best_params,
            st.since_best,
        )
        stuck, epochs_run = st.stuck, st.epochs_run
        stopped_early, stop_reason = st.stopped_early, st.stop_reason
        initial = st.initial
        rng = st.epoch_rng
        first_epoch, skip = st.epoch, st.next_batch
        resumed_epoch = ck is not None

        def sync() -> None:
            st.params, st.last_good, st.anchor = params, last_good, anchor
            st.step, st.counters, st.consecutive = step, counters, consecutive
            st.step_scale, st.good_streak = step_scale, good_streak
            st.best, st.best_epoch, st.best_params, st.since_best = (
                best,
                best_epoch,
                best_params,
                since_best,
            )
            st.stuck, st.epochs_run = stuck, epochs_run
            st.stopped_early, st.stop_reason = stopped_early, stop_reason
            st.batch_losses, st.cosines, st.ep_counts = batch_losses, cosines, ep_counts

        batch_losses: list[float] = st.batch_losses
        cosines: list[float] = st.cosines
        ep_counts: dict[str, int] = st.ep_counts
        for epoch in range(first_epoch, first_epoch if st.finished else tc.epochs):
            t_ep = time.perf_counter()
            # the shuffle Generator as it was at the start of this epoch (a checkpoint taken
            # mid-epoch stores it: a resumed run draws the same order and skips the batches done)
            st.epoch_rng = copy.deepcopy(rng)
            if resumed_epoch:
                resumed_epoch = False
            else:
                skip = 0
                batch_losses, cosines = [], []
                ep_counts = dict.fromkeys(counters, 0)
            for bi, idx in enumerate(iterate_minibatches(n_fit, tc.batch_size, rng, tc.shuffle)):
                if bi < skip:
                    continue
                u = self.x_fit[idx]
                lab = self.y_fit[idx]
                task = targets.task(spec, lab)
                failed, stuck = None, False
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
                    stuck = step_scale <= MIN_STEP_SCALE
                    step_scale = max(step_scale * tc.failure_backoff, MIN_STEP_SCALE)
                    good_streak = 0
                    log.warning(
                        "epoch %d batch %d: no attracting steady state (%s); parameters reverted "
                        "to the last measured ones, step length × %.3g",
                        epoch,
                        bi,
                        exc,
                        step_scale,
                    )
                    # first failure: undo the last update; repeated failures: go back to the
                    # parameters of the last epoch whose evaluation solved every sample
                    params = (last_good if consecutive == 0 else anchor).copy()
                    last_good = params.copy()
                if failed is not None:
                    counters[failed] += 1
                    ep_counts[failed] += 1
                    consecutive += 1
                    sync()
                    checkpoint(epoch, n_batches if stuck else bi + 1)
                    if stuck:
                        break
                    if consecutive >= tc.max_consecutive_failures:
                        raise TrainingError(
                            f"{consecutive} failed steps in a row (last: {failed}) at epoch "
                            f"{epoch}; stopping. The run directory holds the last completed epoch."
                        )
                    continue
                consecutive = 0
                if step_scale < 1.0:
                    # a convex combination of in-bounds points stays in bounds
                    new = params + step_scale * (new - params)
                    good_streak += 1
                    if good_streak >= tc.recovery_steps:
                        step_scale, good_streak = min(1.0, 2.0 * step_scale), 0
                new, accepted = self._guarded(params, new)
                if not accepted:
                    counters["mode_guard_refusals"] += 1
                    ep_counts["mode_guard_refusals"] += 1
                    log.info("step %d: update refused (a linear mode would near ω or 2ω)", step)
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
                # the step's report first (a bench session writes its per-step record from it),
                # then the checkpoint that commits the step: a kill in between makes the resumed
                # run redo the step (its record then appears twice, the later one applied), never
                # commit a step whose record is lost
                if progress is not None:
                    progress(
                        ProgressEvent("step", epoch, step, total_steps, batch_losses[-1], batch=bi)
                    )
                sync()
                checkpoint(epoch, bi + 1, step_only=True)
            t_train = time.perf_counter() - t_ep
            ev = await self._evaluate(params)
            t_eval = time.perf_counter() - t_ep - t_train
            reverted = False
            if ev["unsolved"] == 0:
                anchor = params.copy()
            elif tc.revert_unsolved and not np.array_equal(params, anchor):
                stuck = stuck or step_scale <= MIN_STEP_SCALE
                # some samples have no steady state at these parameters: never train on from
                # here; go back to the last epoch whose evaluation solved every sample
                log.warning(
                    "epoch %d: %d evaluation samples without a steady state; parameters "
                    "reverted to the last fully solved epoch, step length × %.3g",
                    epoch,
                    ev["unsolved"],
                    tc.failure_backoff,
                )
                step_scale = max(step_scale * tc.failure_backoff, MIN_STEP_SCALE)
                good_streak, reverted = 0, True
                counters["evaluation_reverts"] += 1
            finite_cos = [c for c in cosines if math.isfinite(c)]
            improved = False
            if tc.select != "last":
                key = self._selection_key(ev)
                if best is None or key > best:
                    best, best_epoch, best_params, since_best = key, epoch, params.copy(), 0
                    improved = True
                else:
                    since_best += 1
            record = EpochMetrics(
                epoch=epoch,
                train_loss=ev["train_loss"],
                train_accuracy=ev["train_accuracy"],
                test_loss=ev["test_loss"],
                test_accuracy=ev["test_accuracy"],
                wall_time_s=time.perf_counter() - t0,
                experiments=experiments(),
                cosine_to_adjoint=float(np.mean(finite_cos)) if finite_cos else None,
                extra={
                    "steps": step,
                    "lr": opt.lr,
                    "step_scale": step_scale,
                    "mean_batch_loss": float(np.mean(batch_losses)) if batch_losses else math.nan,
                    "eval_failures": ev["failures"],
                    "eval_unsolved": ev["unsolved"],
                    "reverted_after_evaluation": reverted,
                    "train_time_s": t_train,
                    "eval_time_s": t_eval,
                    **(
                        {
                            "validation_loss": ev["validation_loss"],
                            "validation_accuracy": ev["validation_accuracy"],
                        }
                        if self.x_val.shape[0]
                        else {}
                    ),
                    **({"best_so_far": improved} if tc.select != "last" else {}),
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
                "epoch %d: train loss %.4g acc %.3f, test loss %.4g acc %.3f (%.1f s train, "
                "%.1f s evaluation)",
                epoch,
                ev["train_loss"],
                ev["train_accuracy"],
                ev["test_loss"],
                ev["test_accuracy"],
                t_train,
                t_eval,
            )
            if reverted:
                params = anchor.copy()
            stop = True
            if stuck:
                stopped_early = epoch + 1 < tc.epochs
                stop_reason = (
                    "steady states keep failing at the smallest step length "
                    f"({MIN_STEP_SCALE:g} of the optimizer's): the network sits at a bifurcation"
                )
                log.warning("epoch %d: %s; stopping", epoch, stop_reason)
            elif self._reached(ev):
                stopped_early, stop_reason = epoch + 1 < tc.epochs, "target reached"
            elif tc.patience is not None and since_best >= tc.patience:
                stopped_early = epoch + 1 < tc.epochs
                stop_reason = f"no improvement of the {tc.select} selection in {tc.patience} epochs"
            else:
                stop = False
            # epoch done: the next one starts from the shuffle Generator as it is now
            batch_losses, cosines, ep_counts = [], [], dict.fromkeys(counters, 0)
            sync()
            st.finished = stop
            st.epoch_rng = rng
            checkpoint(epoch + 1, 0)
            if stop:
                break
        final: dict[str, Any] | None = metrics[-1] if metrics else None
        if tc.select != "last" and best_epoch >= 0 and best_params is not None:
            params = best_params
            final = next(m for m in metrics if m["epoch"] == best_epoch)
        stability = await self._stability(params)
        summary = {
            "epochs_run": epochs_run,
            "epochs_configured": tc.epochs,
            "stopped_early": stopped_early,
            "stop_reason": stop_reason,
            "steps": step,
            "wall_time_s": time.perf_counter() - t0,
            "experiments": experiments(),
            "initial": initial,
            "select": tc.select,
            "selected_epoch": best_epoch if tc.select != "last" else epochs_run - 1,
            "final": final,
            "last": metrics[-1] if metrics else None,
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
                "n_fit": n_fit,
                "n_validation": int(self.x_val.shape[0]),
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

    def _selection_key(self, ev: dict[str, Any]) -> tuple[float, float]:
        """(accuracy, −loss) of the selection split; NaN counts as worst."""
        split = self.setup.config.training.select
        acc, loss = ev[f"{split}_accuracy"], ev[f"{split}_loss"]
        return (
            acc if math.isfinite(acc) else -math.inf,
            -loss if math.isfinite(loss) else -math.inf,
        )

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
        out: dict[str, Any] = {"failures": 0, "unsolved": 0}
        splits = [("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)]
        if self.x_val.shape[0]:
            splits.append(("validation", self.x_val, self.y_val))
        for split, x, y in splits:
            r = await evaluate_split(self.eval_system, s.spec, s.targets, params, x, y, bs)
            if r.unsolved:
                log.warning(
                    "evaluation of the %s split: %d of %d samples have no attracting steady "
                    "state (counted as misclassified)",
                    split,
                    r.unsolved,
                    x.shape[0],
                )
                out["failures"] += 1
                out["unsolved"] += r.unsolved
            out[f"{split}_loss"], out[f"{split}_accuracy"] = r.loss, r.accuracy
        return out

    async def _stability(self, params: Array, max_samples: int = 64) -> dict[str, Any]:
        """Floquet multipliers of the final free orbits of up to ``max_samples`` training samples
        — the orbits the evaluation measured (warm-started on the evaluation twin, as a bench
        would have them), not a fresh solve from rest, which can fail or land elsewhere."""
        from physlearn.simulators.floquet import floquet_multipliers
        from physlearn.spec.topology import mode_report
        from physlearn.systems.ideal import IdealSystem

        s = self.setup
        twin = self.eval_system
        if not isinstance(twin, IdealSystem):
            twin = make_system(s.config, s.spec, "none")
        assert isinstance(twin, IdealSystem)
        u = s.dataset.x_train[:max_samples]
        lab = s.dataset.y_train[:max_samples]
        out: dict[str, Any] = {"samples_checked": int(u.shape[0]), "orbits": "evaluated"}
        try:
            await twin.set_parameters(params)
            await twin.set_input(u)
            await twin.set_forces(None)
            await twin.measure()
            sol = twin.last_solution
            assert sol is not None
            exc = twin.task_excitation(u, s.targets.task(s.spec, lab))
            theta = twin.model.full_theta(np.asarray(params, dtype=float), batch=u.shape[0])
            mult = np.abs(floquet_multipliers(twin.model, theta, exc, twin.grid, sol.x, 0.0)[:, 0])
            worst = float(np.max(mult))
            out.update(
                stable=bool(worst <= 1.0 + STABILITY_TOL),
                max_floquet_multiplier=worst,
                unstable_samples=int(np.sum(mult > 1.0 + STABILITY_TOL)),
            )
        except SolverError as exc_:
            out.update(stable=False, error=str(exc_))
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
    resume: bool = False,
) -> TrainResult:
    """Prepare, create the run directory (``root/name``; defaults from ``[output]``), train.

    Everything that can be checked is checked before the directory is created. With ``resume``
    the run directory must exist with the same resolved config; training continues from its
    checkpoint (bit-identical to the uninterrupted run on the ideal twin).
    """
    setup = prepare(cfg)
    store = None
    if write:
        root_dir = Path(root) if root is not None else cfg.output.root
        run_name = name or cfg.output.name or default_run_name(cfg)
        store = RunStore.create(root_dir, run_name, cfg.resolved(), resume=resume)
        if not resume:
            _write_network(store, setup.spec)
    elif resume:
        raise ConfigError("resume: needs a run directory (write=True)")
    trainer = Trainer(setup, system=system)
    return asyncio.run(trainer.run(store, progress))


def _write_network(store: RunStore, spec: NetworkSpec) -> None:
    """The built network (initial parameter values) as ``network.toml`` beside config.toml."""
    import tomli_w

    data = spec.model_dump(mode="json", exclude_none=True)
    atomic_write_bytes(store.run_dir / "network.toml", tomli_w.dumps({"network": data}).encode())
