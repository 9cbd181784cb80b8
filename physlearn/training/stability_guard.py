"""Stability as part of training (``training.stability_check``): after every optimizer step the
free orbits of the mini-batch at the new parameters are solved on an ideal twin and their
largest Floquet multiplier checked; a step that leaves an orbit non-attracting (or without a
steady state) is halved until it does not, or refused.

``training.max_loss_increase`` adds a second test on the same solves: the mini-batch's mean
free-phase cost at the new parameters may exceed the cost at the current ones by at most that
fraction. It catches what the Floquet test cannot: at a fold the orbit a step was computed on
ends, and the network jumps to another attractor, which may well attract — the loss then jumps
(XOR, conservative regime: from 1.8e-3 to 4.0e-2 and 100 % to 50 % in one step). It is a
backtracking line search on the free phase alone, so a bench could run it too.

A gradient step can carry the network across a bifurcation (a parametric resonance, a fold)
where the orbit it trains on stops attracting: the twin's Newton solver still converges there,
a bench would not settle. The final stability report finds that only at the end of the run;
this guard keeps every step on attracting orbits of the inputs it trains on. It works at any
level (the check runs on a twin of the spec, whatever system measured the gradient); the twin's
solves are not counted as experiments. The twin warm-starts every check from the orbits it last
found for those inputs; that cache is not in the checkpoint, so a resumed run re-solves its
first checks from rest (the same orbits unless the network has several attractors there).

Every trial starts from the orbits the twin had for the mini-batch before the step (the
continuation of the current state, as a bench would follow it): a trial that is then shortened
or refused leaves no trace in later warm starts. Without that, a refused trial's orbit (on a
branch the run never enters) seeded the next check, and the guard and the evaluation could
follow different branches at the same parameters.

Cost: a free-phase solve of the mini-batch plus its Floquet check per trial (up to
1 + ``stability_backtracks`` per step); the full RK4 check is the cheaper method at every d
measured (docs/benchmarks.md, "Floquet check").
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError, SolverError
from physlearn.estimators import measure_free
from physlearn.spec.system import PhysicalSystem, StabilityCheck
from physlearn.spec.task import Task
from physlearn.systems.ideal import IdealSystem, restore_warm_starts, warm_starts
from physlearn.training.events import EventStream, StabilityGuarded
from physlearn.training.stability import STABILITY_TOL
from physlearn.training.state import TrainerState

Array = NDArray[np.float64]
log = logging.getLogger(__name__)

__all__ = ["StabilityGuard", "guard_wanted", "make_stability_guard"]

#: the counters the guard adds to the run's (summary, metrics rows) when it is on
COUNTERS = ("stability_shortened", "stability_refusals")


@dataclass
class StabilityGuard:
    """Checks the free orbits of a mini-batch at proposed parameters on ``twin``."""

    twin: StabilityCheck
    method: str  # "full", "collocation", or "none" (the cost test only)
    margin: float
    backtracks: int
    max_loss_increase: float | None = None

    @property
    def threshold(self) -> float:
        """The largest |μ| allowed: 1 − margin, or 1 + `STABILITY_TOL` with no margin."""
        return 1.0 - self.margin if self.margin > 0 else 1.0 + STABILITY_TOL

    async def worst(self, params: Array, u: Array, task: Task) -> float:
        """max |μ_dom| over the mini-batch at ``params`` (inf if a sample has no steady state;
        −inf when the guard checks the cost only)."""
        if self.method == "none":
            return -math.inf
        try:
            mult = await self.twin.floquet_check(params, u, task, method=self.method)
        except SolverError as exc:
            log.info("stability guard: no attracting steady state (%s)", exc)
            return math.inf
        return float(np.max(mult))

    async def cost(self, params: Array, u: Array, task: Task) -> float:
        """The mini-batch's mean free-phase cost at ``params`` on the guard's twin (inf if a
        sample has no steady state); after `worst` at the same parameters the solve starts
        from the orbits just found."""
        assert isinstance(self.twin, PhysicalSystem)
        try:
            _, cost = await measure_free(self.twin, params, u, task)
        except SolverError as exc:
            log.info("stability guard: no steady state for the cost (%s)", exc)
            return math.inf
        return float(np.mean(cost))

    def _accepts(self, worst: float, ratio: float) -> bool:
        if worst > self.threshold:
            return False
        return self.max_loss_increase is None or ratio <= 1.0 + self.max_loss_increase

    async def apply(
        self,
        st: TrainerState,
        events: EventStream,
        where: tuple[int, int],
        proposal: Array,
        u: Array,
        task: Task,
    ) -> Array:
        """The update st.params → ``proposal``, halved up to ``backtracks`` times until every
        free orbit of the mini-batch attracts with the margin (and the mini-batch cost has not
        risen by more than ``max_loss_increase``), else st.params (refused). Counts and reports
        what it changed (``where``: epoch, batch) and keeps ``st.refused_streak``, the refused
        steps in a row (``training.stability_stall_steps``)."""
        for name in COUNTERS:
            st.counters.setdefault(name, 0)
            st.ep_counts.setdefault(name, 0)
        params = st.params
        delta = proposal - params
        if not np.any(delta):
            return proposal
        base = math.nan
        if self.max_loss_increase is not None:
            base = await self.cost(params, u, task)
        memory = _WarmStarts(self.twin, u)
        first = (math.nan, math.nan)
        frac = 1.0
        for k in range(self.backtracks + 1):
            frac = 0.5**k
            trial = params + frac * delta if k else proposal
            memory.restore()
            w = await self.worst(trial, u, task)
            ratio = math.nan
            if self.max_loss_increase is not None and w <= self.threshold:
                ratio = _ratio(await self.cost(trial, u, task), base)
            first = (w, ratio) if k == 0 else first
            if self._accepts(w, ratio):
                st.refused_streak = 0
                if k == 0:
                    return proposal
                return await self._report(st, events, where, "shortened", frac, first, trial)
        memory.restore()
        st.refused_streak += 1
        return await self._report(st, events, where, "refused", 0.0, first, params.copy())

    async def _report(
        self,
        st: TrainerState,
        events: EventStream,
        where: tuple[int, int],
        outcome: str,
        frac: float,
        first: tuple[float, float],
        result: Array,
    ) -> Array:
        counter = "stability_shortened" if outcome == "shortened" else "stability_refusals"
        st.counters[counter] += 1
        st.ep_counts[counter] += 1
        mu, ratio = first
        log.info(
            "step %d: stability guard %s the update (×%g; at the full step |μ| %.6g, bound "
            "%.6g; cost ratio %.4g, bound %s)",
            st.step + 1,
            outcome,
            frac,
            mu,
            self.threshold,
            ratio,
            "none" if self.max_loss_increase is None else f"{1 + self.max_loss_increase:.4g}",
        )
        await events.emit(
            StabilityGuarded(
                epoch=where[0],
                batch=where[1],
                step=st.step + 1,
                outcome=outcome,
                fraction=frac,
                max_multiplier=mu,
                threshold=self.threshold,
                cost_ratio=None if math.isnan(ratio) else ratio,
            )
        )
        return result


def guard_wanted(tc: object) -> bool:
    """Whether ``training`` asks for the guard (``stability_check`` or ``max_loss_increase``)."""
    return tc.stability_check != "none" or tc.max_loss_increase is not None  # type: ignore[attr-defined]


def make_stability_guard(cfg: object, twin: StabilityCheck | None) -> StabilityGuard | None:
    """The guard of ``training.stability_check`` / ``max_loss_increase`` on ``twin`` (None
    when both are off)."""
    tc = cfg.training  # type: ignore[attr-defined]
    if not guard_wanted(tc):
        return None
    option = "stability_check" if tc.stability_check != "none" else "max_loss_increase"
    if cfg.system.kind == "autonomous":  # type: ignore[attr-defined]
        raise ConfigError(f"training.{option}: not for [system] kind = autonomous")
    if getattr(cfg.network, "is_gp", False):  # type: ignore[attr-defined]
        raise ConfigError(
            f"training.{option}: not for a GP lattice or field ([system] floquet checks "
            "its stationary states' Bogoliubov spectra)"
        )
    assert twin is not None
    return StabilityGuard(
        twin,
        tc.stability_check,
        float(tc.stability_margin),
        int(tc.stability_backtracks),
        None if tc.max_loss_increase is None else float(tc.max_loss_increase),
    )


class _WarmStarts:
    """The guard twin's warm starts for a mini-batch's inputs, kept to be put back before each
    trial (where the twin has them: the ideal twin, `physlearn.systems.ideal.warm_starts`)."""

    def __init__(self, twin: object, u: Array) -> None:
        self.twin = twin if isinstance(twin, IdealSystem) else None
        self.saved = warm_starts(self.twin, u) if self.twin is not None else None

    def restore(self) -> None:
        if self.twin is not None and self.saved is not None:
            restore_warm_starts(self.twin, self.saved)


def _ratio(cost: float, base: float) -> float:
    """cost / base, with a zero base: 1 for a zero cost, inf otherwise."""
    if base > 0.0:
        return cost / base
    return 1.0 if cost <= 0.0 else math.inf
