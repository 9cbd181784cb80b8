"""The training loop: `Trainer` runs a prepared setup on a system — estimator → optimizer → run
directory, per mini-batch — and reports through its `EventStream`.

Per epoch: the training set is shuffled by a seeded Generator (``training.seed``) and cut into
mini-batches; for each batch the estimator measures the gradient of the task cost on the
`PhysicalSystem` (per-sample gradients averaged over the batch), the optimizer steps and projects
onto the parameter bounds (clipped parameters are logged and counted), and the checkpoint is
rewritten (for ordinary steps at most every ``training.checkpoint_interval_s``). After every
epoch the train and test splits are evaluated on the *free* phase only
(`physlearn.training.evaluation`), and the metrics and parameters are written. Optionally (ideal
twin) the cosine between the estimator's batch gradient and the exact adjoint gradient is
logged per step.

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
* an epoch-end evaluation in which some training or validation samples have no steady state
  (they count as misclassified; the batch is split to isolate them) sends the parameters back to
  that last fully solved epoch too, with the same step shortening (``training.revert_unsolved``);
  unsolved *test* samples count as misclassified but never steer the run (the test split takes
  no part in training decisions);
* a failure of either kind at the smallest step length (``MIN_STEP_SCALE``) ends the run early
  (``summary["stop_reason"]``): the network sits at a bifurcation that shorter steps cannot avoid;
  so does a stability guard that refuses ``training.stability_stall_steps`` steps in a row;
* ``training.max_consecutive_failures`` failed steps in a row stop the run with a `TrainingError`
  (the run directory then holds everything up to the last completed epoch and the checkpoint).

Selection: ``training.select`` keeps the parameters of the best epoch by the accuracy (then loss)
of the train, validation (a stratified hold-out, ``training.validation_fraction``) or test split,
with ``training.patience`` for early stopping; ``summary["final"]`` is that epoch's record.
``training.min_mode_margin`` shortens or refuses updates that would move a linear mode at rest
near ω or 2ω (`physlearn.training.rules`).

State: everything carried from one mini-batch to the next lives in ``Trainer.state`` (a
`TrainerState`), which the loop's methods read and write directly and every checkpoint stores;
a run resumed from a checkpoint continues exactly as the uninterrupted one. Bit-reproducible:
the same config gives byte-identical parameters (all randomness is drawn from Generators seeded
by the config; the twin is deterministic).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError, GradientError, PhyslearnError, SafetyError, SolverError
from physlearn.estimators import Estimator, GradientEstimate, make_estimator
from physlearn.spec.system import Pausable, PhysicalSystem, StabilityCheck
from physlearn.spec.task import Task
from physlearn.systems.factory import make_twin
from physlearn.systems.safety import PersistentFault
from physlearn.training.control import Command, ControlRequest, RunControl, RunStopped
from physlearn.training.datasets import iterate_minibatches
from physlearn.training.evaluation import evaluate_splits, validation_split
from physlearn.training.events import (
    EpochDone,
    EventStream,
    Fault,
    RunFinished,
    RunPaused,
    RunResumed,
    RunStarted,
    StepDone,
)
from physlearn.training.rules import (
    MIN_STEP_SCALE,
    Guard,
    backed_off,
    cosine,
    decision_unsolved,
    guard_stalled,
    guarded_update,
    selection_key,
    stop_reason,
)
from physlearn.training.runstore import Checkpoint, RunStore
from physlearn.training.setup import TrainSetup
from physlearn.training.stability import stability_report
from physlearn.training.stability_guard import guard_wanted, make_stability_guard
from physlearn.training.state import (
    TrainerState,
    get_rng_state,
    load_system_states,
    set_rng_state,
    system_states,
)
from physlearn.training.summary import (
    EpochTiming,
    dataset_summary,
    epoch_metrics,
    run_summary,
    selected,
)

if TYPE_CHECKING:
    from physlearn.training.suspenders import Suspenders

log = logging.getLogger(__name__)
Array = NDArray[np.float64]
T = TypeVar("T")

__all__ = ["MIN_STEP_SCALE", "TrainResult", "Trainer", "TrainingError"]


def pausable(system: object) -> Pausable | None:
    """The `Pausable` system itself or the one it wraps (``inner``, as in `DelegatingSystem`)."""
    seen: set[int] = set()
    obj: object | None = system
    while obj is not None and id(obj) not in seen:
        if isinstance(obj, Pausable):
            return obj
        seen.add(id(obj))
        obj = getattr(obj, "inner", None)
    return None


def make_guard(cfg: Any, spec: Any, x_fit: Array) -> tuple[Guard | None, float | None]:
    """The update guard of ``training.min_mode_margin`` (`ModeGuard`) or, on an autonomous
    system, ``training.min_orbit_stiffness`` (`OrbitGuard` over the fitted inputs ``x_fit``)."""
    tc = cfg.training
    if tc.min_orbit_stiffness is not None:
        if cfg.system.autonomous is None:
            raise ConfigError("training.min_orbit_stiffness: needs [system] kind = autonomous")
        from physlearn.systems.autonomous_guard import OrbitGuard

        return OrbitGuard(spec, cfg.system.autonomous, x_fit), float(tc.min_orbit_stiffness)
    if tc.min_mode_margin is not None:
        from physlearn.spec.topology import ModeGuard

        return ModeGuard(spec), float(tc.min_mode_margin)
    return None, None


class TrainingError(PhyslearnError):
    """Training could not go on (too many failed steps in a row)."""


@dataclass
class TrainResult:
    """The outcome: final parameters, per-epoch metrics (as written) and the summary."""

    params: Array
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    run_dir: Path | None = None


@dataclass
class _Session:
    """What one call of `Trainer.run` needs besides the state: the run directory, the batches,
    the live shuffle Generator, the metrics rows so far, the clocks."""

    store: RunStore | None
    n_batches: int
    total_steps: int
    rng: np.random.Generator
    metrics: list[dict[str, Any]]
    exp_base: int  # experiments the system had counted when this session took over
    t0: float = 0.0  # perf_counter of the run's start (earlier sessions' time subtracted)
    last_checkpoint: float = -math.inf  # perf_counter of the last checkpoint written
    resumed_at: int | None = None  # first batch of the first epoch of a resumed session


class Trainer:
    """Runs a prepared setup on a system; see the module docstring.

    Args:
        setup: from `prepare`.
        system: the system trained on (default: the ``[system]`` twin).
        eval_system: the system evaluated on each epoch (default: a second twin, so that
            evaluation does not count as training experiments).
        reference_system: the ideal twin used for the adjoint cosine (default: a third twin).
        events: the stream its events go to (default: a new one; subscribe to ``events``).
        control: the mailbox of stop/pause/resume/abort requests it looks at before every
            mini-batch and evaluation (`physlearn.training.control`; default: a new one).
        suspenders: conditions that pause the run by themselves (`physlearn.training.suspenders`).
    """

    def __init__(
        self,
        setup: TrainSetup,
        *,
        system: PhysicalSystem | None = None,
        eval_system: PhysicalSystem | None = None,
        reference_system: PhysicalSystem | None = None,
        events: EventStream | None = None,
        control: RunControl | None = None,
        suspenders: Suspenders | None = None,
    ):
        self.setup, self.suspenders = setup, suspenders
        cfg, spec = setup.config, setup.spec
        tc = cfg.training
        self.system = system if system is not None else make_twin(cfg, spec)
        # the per-epoch evaluation checks its free orbits' Floquet multipliers whenever the
        # training steps are checked: an unstable orbit counts as unsolved (misclassified)
        self.eval_system = (
            eval_system
            if eval_system is not None
            else make_twin(cfg, spec, "none" if cfg.system.floquet == "none" else "free")
        )
        self.reference_system = reference_system
        if tc.log_cosine_to_adjoint and reference_system is None:
            self.reference_system = make_twin(cfg, spec, "none")
        self.reference: Estimator | None = (
            make_estimator("adjoint", setup.knowledge) if tc.log_cosine_to_adjoint else None
        )
        self.x_fit, self.y_fit, self.x_val, self.y_val = validation_split(
            setup.dataset, tc.validation_fraction, tc.seed
        )
        self.guard, self.guard_margin = make_guard(cfg, spec, self.x_fit)
        on = guard_wanted(tc)
        self.stability = make_stability_guard(cfg, make_twin(cfg, spec, "none") if on else None)
        self.events = events if events is not None else EventStream()
        self.control = control if control is not None else RunControl()
        self.state: TrainerState | None = None
        self._current: _Session | None = None

    def _initial_parameters(self) -> Array:
        """The setup's initial parameters (another run's with ``--init-from``, used as they are),
        else the spec's scaled by ½ⁿ until the `OrbitGuard` accepts them and every training
        input has its free orbit at the set point."""
        p = self.setup.initial_parameters()
        tc = self.setup.config.training
        if tc.min_orbit_stiffness is None or self.guard is None or self.setup.init_from is not None:
            return p
        from physlearn.systems.autonomous_guard import OrbitGuard, shrink_to_margin

        assert isinstance(self.guard, OrbitGuard)
        p, n = shrink_to_margin(self.guard, p, float(tc.min_orbit_stiffness), orbits=True)
        if n:
            log.info("orbit guard: initial parameters scaled by 2^-%d", n)
        return p

    # ------------------------------------------------------------------ plumbing
    @property
    def level(self) -> str:
        """The level of the system trained on (what produced the observations)."""
        return str(self.system.level)

    @property
    def _st(self) -> TrainerState:
        assert self.state is not None, "the trainer has not started"
        return self.state

    @property
    def _session(self) -> _Session:
        assert self._current is not None, "the trainer has not started"
        return self._current

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

    def experiments(self) -> int:
        """Steady states measured by the training system over the whole run so far."""
        return self._st.experiments + int(self.system.experiments) - self._session.exp_base

    def _checkpoint(self, epoch: int, next_batch: int, *, step_only: bool = False) -> None:
        """Commit the state at (epoch, next_batch); ``step_only`` (an ordinary step) may be
        skipped while the last checkpoint is younger than ``training.checkpoint_interval_s``."""
        run, st = self._session, self._st
        if run.store is None:
            return
        now = time.perf_counter()
        if (
            step_only
            and now - run.last_checkpoint < self.setup.config.training.checkpoint_interval_s
        ):
            return
        run.last_checkpoint = now
        st.epoch, st.next_batch = epoch, next_batch
        st.elapsed_s = time.perf_counter() - run.t0
        st.systems = system_states(self._systems())
        st.estimator_rng = get_rng_state(self.setup.estimator)
        run.store.write_checkpoint(
            params=st.params,
            optimizer_state=self.setup.optimizer.state_dict(),
            rng=st.epoch_rng,
            epoch=epoch,
            step=st.step,
            extra={
                **st.extra(),
                "experiments": self.experiments(),
                "batches_per_epoch": run.n_batches,
            },
        )

    async def _evaluate(self, params: Array) -> dict[str, Any]:
        s = self.setup
        ds = s.dataset
        splits = [("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)]
        if self.x_val.shape[0]:
            splits.append(("validation", self.x_val, self.y_val))
        bs = s.config.training.eval_batch_size
        return await evaluate_splits(self.eval_system, s.spec, s.targets, params, splits, bs)

    # ------------------------------------------------------------------ the run
    async def run(
        self, store: RunStore | None = None, *, resume: bool | None = None
    ) -> TrainResult:
        """Train; with ``resume`` (default: ``store.resumed``) continue from the store's checkpoint
        exactly where it was written (see `TrainerState`), else start from the spec's initial
        parameters. A persistent instrument fault or SIGINT/SIGTERM (cancellation) emit
        `RunPaused` and propagate (the last checkpoint stands)."""
        try:
            await self._start(store, self._checkpoint_to_resume(store, resume))
            n_epochs = self.setup.config.training.epochs
            first = self._st.epoch
            for epoch in range(first, first if self._st.finished else n_epochs):
                if await self._epoch(epoch):
                    break
        except (PersistentFault, asyncio.CancelledError, KeyboardInterrupt) as exc:
            await self._paused(exc)
            raise
        return await self._finish()

    @staticmethod
    def _checkpoint_to_resume(store: RunStore | None, resume: bool | None) -> Checkpoint | None:
        if resume is None:
            resume = store is not None and store.resumed
        if not resume:
            return None
        if store is None:
            raise ConfigError("resume: needs a run directory")
        if store.checkpoint_path.is_file():
            return store.load_checkpoint()
        log.info("resume: %s has no checkpoint yet; starting over", store.run_dir)
        store.truncate_metrics(-1)
        return None

    async def _start(self, store: RunStore | None, ck: Checkpoint | None) -> None:
        """The state to start from — fresh after the initial evaluation, or the checkpoint's —
        and the run's bookkeeping; emits `RunStarted` (and commits) or `RunResumed`."""
        tc = self.setup.config.training
        n_batches = math.ceil(int(self.x_fit.shape[0]) / tc.batch_size)
        # experiments already counted by the system (a resumed session's system starts at 0)
        exp_base = int(self.system.experiments) if ck is not None else 0
        metrics: list[dict[str, Any]] = []
        if ck is None:
            t_initial = time.perf_counter()  # the run's wall time includes its first evaluation
            self.state = TrainerState.fresh(self._initial_parameters(), tc.seed)
            self.state.initial = await self._evaluate(self.state.params)
            self.state.elapsed_s = time.perf_counter() - t_initial
            _log_initial(self.state.initial)
        else:
            assert store is not None
            self.state = self._restore(ck, n_batches)
            # rows written after this checkpoint (an epoch evaluated but not yet checkpointed)
            dropped = store.truncate_metrics(ck.epoch - 1)
            metrics = store.read_metrics()
            log.info(
                "resuming at epoch %d, batch %d of %d (%d updates done%s)",
                self.state.epoch,
                self.state.next_batch,
                n_batches,
                self.state.step,
                f"; {dropped} later metrics row(s) dropped" if dropped else "",
            )
        st = self.state
        self._current = _Session(
            store, n_batches, tc.epochs * n_batches, st.epoch_rng, metrics, exp_base
        )
        self._current.t0 = time.perf_counter() - st.elapsed_s
        if ck is None:
            total = self._current.total_steps
            await self.events.emit(RunStarted(self.level, total, dict(st.initial)))
            self._checkpoint(0, 0)
        else:
            self._current.resumed_at = st.next_batch
            await self.events.emit(
                RunResumed(self.level, self._current.total_steps, st.epoch, st.next_batch, st.step)
            )

    def _restore(self, ck: Checkpoint, n_batches: int) -> TrainerState:
        """The checkpoint's state, with the optimizer, systems and estimator rng restored."""
        st = TrainerState.from_checkpoint(ck, n_batches)
        self.setup.optimizer.load_state_dict(ck.optimizer_state)
        load_system_states(self._systems(), st.systems)
        if st.estimator_rng is not None:
            set_rng_state(self.setup.estimator, st.estimator_rng)
        return st

    async def _epoch(self, epoch: int) -> bool:
        """One epoch: its mini-batches (from ``next_batch`` on a resumed epoch), then the
        evaluation; True if the run stops after it."""
        st, run, tc = self._st, self._session, self.setup.config.training
        t_ep = time.perf_counter()
        # the shuffle Generator as it was at the start of this epoch (a checkpoint taken
        # mid-epoch stores it: a resumed run draws the same order and skips the batches done)
        st.epoch_rng = copy.deepcopy(run.rng)
        skip, run.resumed_at = run.resumed_at, None
        if skip is None:
            skip = 0
            st.batch_losses, st.cosines = [], []
            st.ep_counts = dict.fromkeys(st.counters, 0)
        n_fit = int(self.x_fit.shape[0])
        for bi, idx in enumerate(iterate_minibatches(n_fit, tc.batch_size, run.rng, tc.shuffle)):
            if bi < skip:
                continue
            if await self._guarded(epoch, bi, functools.partial(self._step, epoch, bi, idx)):
                break
        t_train = time.perf_counter() - t_ep
        ev = await self._guarded(epoch, run.n_batches, lambda: self._evaluate(st.params))
        return await self._end_epoch(epoch, t_ep, t_train, ev)

    async def _guarded(self, epoch: int, next_batch: int, op: Callable[[], Awaitable[T]]) -> T:
        """The control point, then ``op`` (a step or the evaluation); a suspender
        (`physlearn.training.suspenders`) may turn an interlock trip or a persistent fault
        into a pause: ``op`` is then abandoned and done again after the resume."""
        while True:
            await self.control_point(epoch, next_batch)
            sus = self.suspenders
            if sus is not None and await sus.before(epoch, self._st.step):
                continue
            rng = get_rng_state(self.setup.estimator)
            try:
                return await op()
            except (SafetyError, PersistentFault) as exc:
                if sus is None or not await sus.tripped(exc, epoch, self._st.step):
                    raise
                if rng is not None:  # the abandoned step's draws are drawn again
                    set_rng_state(self.setup.estimator, rng)

    # ------------------------------------------------------------------ requests
    async def control_point(self, epoch: int, next_batch: int) -> None:
        """Act on the pending requests (`physlearn.training.control`) before mini-batch
        ``next_batch`` of ``epoch`` (the number of batches: before the evaluation)."""
        while (req := self.control.take()) is not None:
            if req.command == Command.RESUME:
                log.info("resume request from %s ignored: the run is not paused", req.source)
            elif req.command == Command.PAUSE:
                await self._hold(epoch, next_batch, req)
            else:
                await self._stop_on(epoch, next_batch, req)

    async def _stop_on(self, epoch: int, next_batch: int, req: ControlRequest) -> None:
        """Commit where the run stands, report it, raise `RunStopped`."""
        self._checkpoint(epoch, next_batch)
        reason = "aborted" if req.command == Command.ABORT else "stopped"
        stopped = RunStopped(req, epoch, self._st.step)
        await self.events.emit(
            RunPaused(reason, str(stopped), epoch, self._st.step, source=req.source)
        )
        raise stopped

    async def _hold(self, epoch: int, next_batch: int, req: ControlRequest) -> None:
        """Pause: commit, report, the system in its safe state; wait for resume (re-arm,
        report, go on) or stop/abort (`_stop_on`)."""
        st = self._st
        self._checkpoint(epoch, next_batch)
        message = f"paused by {req.source} at epoch {epoch}, step {st.step}"
        if req.reason:
            message += f": {req.reason}"
        log.warning("%s", message)
        holder = pausable(self.system)
        if holder is not None:
            await holder.pause()  # the safe state first, then the report
        await self.events.emit(RunPaused("paused", message, epoch, st.step, source=req.source))
        while True:
            nxt = await self.control.next_request()
            if nxt.command == Command.RESUME:
                break
            if nxt.command in (Command.STOP, Command.ABORT):
                await self._stop_on(epoch, next_batch, nxt)
            log.info("%s request from %s ignored: the run is paused", nxt.command, nxt.source)
        if holder is not None:
            await holder.unpause()
        log.warning("resumed by %s at epoch %d, step %d", nxt.source, epoch, st.step)
        await self.events.emit(
            RunResumed(
                self.level, self._session.total_steps, epoch, next_batch, st.step, nxt.source
            )
        )

    # ------------------------------------------------------------------ one mini-batch
    async def _step(self, epoch: int, bi: int, idx: NDArray[np.int64]) -> bool:
        """Mini-batch ``bi``: measure, step, commit; True if failures at the smallest step
        length end the epoch (and the run)."""
        s, st = self.setup, self._st
        t_step = time.perf_counter()
        u, task = self.x_fit[idx], s.targets.task(s.spec, self.y_fit[idx])
        st.stuck = False
        try:
            g = await s.estimator.estimate(self.system, st.params, u, task)
            grad = np.mean(g.grad, axis=0)
            st.last_good = st.params.copy()
            cos = math.nan
            if self.reference is not None and self.reference_system is not None:
                ref = await self.reference.estimate(self.reference_system, st.params, u, task)
                cos = cosine(grad, np.mean(ref.grad, axis=0))
            new = s.optimizer.step(st.params, grad)
        except GradientError as exc:
            log.warning("epoch %d batch %d: step refused, parameters kept: %s", epoch, bi, exc)
            return await self._failed(epoch, bi, "nonfinite_steps", exc)
        except SolverError as exc:
            self._revert_after_solver_failure(epoch, bi, exc)
            return await self._failed(epoch, bi, "solver_failures", exc)
        await self._apply(epoch, bi, g, grad, new, cos, t_step, u, task)
        return False

    def _revert_after_solver_failure(self, epoch: int, bi: int, exc: SolverError) -> None:
        """Shorten the steps and undo the last update (first failure) or go back to the last
        fully solved epoch (repeated failures); stuck if already at the smallest step."""
        st, tc = self._st, self.setup.config.training
        st.stuck = st.step_scale <= MIN_STEP_SCALE
        st.step_scale = backed_off(st.step_scale, tc.failure_backoff)
        st.good_streak = 0
        log.warning(
            "epoch %d batch %d: no attracting steady state (%s); parameters reverted "
            "to the last measured ones, step length × %.3g",
            epoch,
            bi,
            exc,
            st.step_scale,
        )
        st.params = (st.last_good if st.consecutive == 0 else st.anchor).copy()
        st.last_good = st.params.copy()

    async def _failed(self, epoch: int, bi: int, fault: str, exc: Exception) -> bool:
        """Count and report a failed step, commit; TrainingError after too many in a row."""
        st, tc = self._st, self.setup.config.training
        st.counters[fault] += 1
        st.ep_counts[fault] += 1
        st.consecutive += 1
        await self.events.emit(
            Fault(fault, str(exc), epoch, bi, st.step, st.consecutive, st.step_scale)
        )
        self._checkpoint(epoch, self._session.n_batches if st.stuck else bi + 1)
        if st.stuck:
            return True
        if st.consecutive >= tc.max_consecutive_failures:
            raise TrainingError(
                f"{st.consecutive} failed steps in a row (last: {fault}) at epoch "
                f"{epoch}; stopping. The run directory holds the last completed epoch."
            )
        return False

    async def _apply(
        self,
        epoch: int,
        bi: int,
        g: GradientEstimate,
        grad: Array,
        new: Array,
        cos: float,
        t_step: float,
        u: Array,
        task: Task,
    ) -> None:
        """Apply a measured step (shortened while recovering, mode-guarded), report it, then
        commit it: the report comes first, so a kill in between makes the resumed run redo
        the step (its per-step record then appears twice, the later one applied), never
        commit a step whose report is lost."""
        st, tc = self._st, self.setup.config.training
        st.consecutive = 0
        if st.step_scale < 1.0:
            # a convex combination of in-bounds points stays in bounds
            new = st.params + st.step_scale * (new - st.params)
            st.good_streak += 1
            if st.good_streak >= tc.recovery_steps:
                st.step_scale, st.good_streak = min(1.0, 2.0 * st.step_scale), 0
        new, accepted = guarded_update(self.guard, self.guard_margin, st.params, new)
        if not accepted:
            self._count("mode_guard_refusals", 1)
            log.info("step %d: update refused (the guard's margin would fall)", st.step)
        if self.stability is not None:
            new = await self.stability.apply(st, self.events, (epoch, bi), new, u, task)
        measured_at, st.params = st.params, new
        st.step += 1
        self._count_clipped()
        st.batch_losses.append(float(np.mean(g.cost)))
        st.cosines.append(cos)
        await self.events.emit(
            StepDone(
                epoch=epoch,
                batch=bi,
                step=st.step,
                total_steps=self._session.total_steps,
                params=np.array(measured_at, dtype=float),
                gradient=np.array(grad, dtype=float),
                loss=st.batch_losses[-1],
                new_params=np.array(st.params, dtype=float),
                cosine=None if self.reference is None else cos,
                experiments=self.experiments(),
                wall_time_s=time.perf_counter() - t_step,
                inputs=np.array(u, dtype=float),
            )
        )
        self._checkpoint(epoch, bi + 1, step_only=True)

    def _count(self, counter: str, n: int) -> None:
        self._st.counters[counter] += n
        self._st.ep_counts[counter] += n

    def _count_clipped(self) -> None:
        clipped = self.setup.optimizer.last_clipped
        nclip = int(clipped.size)
        if nclip:
            names = self.setup.spec.parameter_names()
            log.info(
                "step %d: %d parameter(s) projected onto their bounds: %s",
                self._st.step,
                nclip,
                ", ".join(names[i] for i in clipped[:10]),
            )
        self._count("clipped_parameters", nclip)

    # ------------------------------------------------------------------ epoch end
    async def _end_epoch(self, epoch: int, t_ep: float, t_train: float, ev: dict[str, Any]) -> bool:
        """Judge, select, write and report the epoch's evaluation ``ev``; commit; True to
        stop."""
        st, run, s = self._st, self._session, self.setup
        tc = s.config.training
        t_eval = time.perf_counter() - t_ep - t_train
        reverted = await self._judge_evaluation(epoch, ev)
        improved = self._select(epoch, ev, reverted)
        record = epoch_metrics(
            st,
            ev,
            epoch=epoch,
            timing=EpochTiming(time.perf_counter() - run.t0, t_train, t_eval),
            experiments=self.experiments(),
            lr=s.optimizer.lr,
            level=self.level,
            reverted=reverted,
            improved=improved,
            select=tc.select,
            has_validation=bool(self.x_val.shape[0]),
            step_cosines=self.reference is not None,
        )
        rec = record.to_json()
        run.metrics.append(rec)
        if run.store is not None:
            run.store.save_params(epoch, st.params)
            run.store.append_metrics(record)
        st.epochs_run = epoch + 1
        await self.events.emit(
            EpochDone(epoch, st.step, run.total_steps, dict(rec), np.array(st.params, dtype=float))
        )
        _log_epoch(epoch, ev, t_train, t_eval)
        if reverted:
            st.params = st.anchor.copy()
        stop = self._stop(epoch, ev)
        # epoch done: the next one starts from the shuffle Generator as it is now
        st.batch_losses, st.cosines, st.ep_counts = [], [], dict.fromkeys(st.counters, 0)
        st.finished = stop
        st.epoch_rng = run.rng
        self._checkpoint(epoch + 1, 0)
        return stop

    async def _judge_evaluation(self, epoch: int, ev: dict[str, Any]) -> bool:
        """An evaluation that solved every training (and validation) sample becomes the anchor;
        one with unsolved samples there sends the parameters back to it with shorter steps
        (``training.revert_unsolved``): True then. Test samples decide nothing."""
        st, tc = self._st, self.setup.config.training
        unsolved = decision_unsolved(ev)
        if unsolved == 0:
            st.anchor = st.params.copy()
            return False
        if not tc.revert_unsolved or np.array_equal(st.params, st.anchor):
            return False
        st.stuck = st.stuck or st.step_scale <= MIN_STEP_SCALE
        # some samples have no steady state at these parameters: never train on from
        # here; go back to the last epoch whose evaluation solved every sample
        message = (
            f"epoch {epoch}: {unsolved} training/validation samples without a steady state; "
            f"parameters reverted to the last fully solved epoch, step length × "
            f"{tc.failure_backoff:.3g}"
        )
        log.warning("%s", message)
        st.step_scale = backed_off(st.step_scale, tc.failure_backoff)
        st.good_streak = 0
        st.counters["evaluation_reverts"] += 1
        await self.events.emit(
            Fault(
                "evaluation_reverts",
                message,
                epoch,
                -1,
                st.step,
                st.consecutive,
                st.step_scale,
                unsolved=unsolved,
            )
        )
        return True

    def _select(self, epoch: int, ev: dict[str, Any], reverted: bool) -> bool:
        """Best-epoch selection (``training.select``); True if this epoch is the best so far.
        An epoch whose evaluation reverted (a sample without a steady state) is never chosen:
        the run would return parameters it has walked back from."""
        st, select = self._st, self.setup.config.training.select
        if select == "last":
            return False
        key = selection_key(ev, select)
        if not reverted and (st.best is None or key > st.best):
            st.best, st.best_epoch, st.best_params, st.since_best = key, epoch, st.params.copy(), 0
            return True
        st.since_best += 1
        return False

    def _stop(self, epoch: int, ev: dict[str, Any]) -> bool:
        st, tc = self._st, self.setup.config.training
        reason = stop_reason(
            tc, ev, stuck=st.stuck, since_best=st.since_best, refused_streak=st.refused_streak
        )
        if reason is None:
            return False
        st.stopped_early, st.stop_reason = epoch + 1 < tc.epochs, reason
        if st.stuck or guard_stalled(tc, st.refused_streak):
            log.warning("epoch %d: %s; stopping", epoch, reason)
        return True

    # ------------------------------------------------------------------ the end
    async def _finish(self) -> TrainResult:
        """The selected parameters, their stability, the summary (written), `RunFinished`."""
        st, run, s = self._st, self._session, self.setup
        params, final = selected(st, run.metrics, s.config.training.select)
        stability = await self._stability(params)
        summary = run_summary(
            st,
            run.metrics,
            s.config,
            params=params,
            final=final,
            dataset=dataset_summary(s.dataset, int(self.x_fit.shape[0]), int(self.x_val.shape[0])),
            targets=s.targets,
            parameter_names=s.spec.parameter_names(),
            wall_time_s=time.perf_counter() - run.t0,
            experiments=self.experiments(),
            level=self.level,
            stability=stability,
        )
        if run.store is not None:
            run.store.write_summary(summary)
        await self.events.emit(RunFinished(summary, st.stop_reason))
        return TrainResult(params, run.metrics, summary, run.store.run_dir if run.store else None)

    async def _stability(self, params: Array) -> dict[str, Any]:
        """The stability report (`physlearn.training.stability`) on the evaluation twin — the
        orbits the evaluation measured — or, when evaluation runs elsewhere, an extra twin."""
        s = self.setup
        twin = self.eval_system
        if not isinstance(twin, StabilityCheck):
            twin = make_twin(s.config, s.spec, "none")
        assert isinstance(twin, StabilityCheck)
        method = s.config.training.stability_check
        method = "full" if method == "none" else method
        return await stability_report(twin, s.spec, s.dataset, s.targets, params, method=method)

    async def _paused(self, exc: BaseException) -> None:
        reason = "persistent_fault" if isinstance(exc, PersistentFault) else "interrupted"
        st = self.state
        epoch, step = (st.epoch, st.step) if st is not None else (0, 0)
        await self.events.emit(RunPaused(reason, str(exc) or type(exc).__name__, epoch, step))


def _log_initial(ev: dict[str, Any]) -> None:
    log.info(
        "initial: train loss %.4g acc %.3f, test loss %.4g acc %.3f",
        ev["train_loss"],
        ev["train_accuracy"],
        ev["test_loss"],
        ev["test_accuracy"],
    )


def _log_epoch(epoch: int, ev: dict[str, Any], t_train: float, t_eval: float) -> None:
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
