"""Stability as part of training (``training.stability_check``): after every optimizer step the
free orbits of the mini-batch at the new parameters are solved on an ideal twin and their
largest Floquet multiplier checked; a step that leaves an orbit non-attracting (or without a
steady state) is halved until it does not, or refused.

A gradient step can carry the network across a bifurcation (a parametric resonance, a fold)
where the orbit it trains on stops attracting: the twin's Newton solver still converges there,
a bench would not settle. The final stability report finds that only at the end of the run;
this guard keeps every step on attracting orbits of the inputs it trains on. It works at any
level (the check runs on a twin of the spec, whatever system measured the gradient); the twin's
solves are not counted as experiments. The twin warm-starts every check from the orbits it last
found for those inputs; that cache is not in the checkpoint, so a resumed run re-solves its
first checks from rest (the same orbits unless the network has several attractors there).

Cost: a free-phase solve of the mini-batch plus its Floquet check per trial (up to
1 + ``stability_backtracks`` per step); the full RK4 check is the cheaper method at every d
measured (docs/benchmarks.md, "Floquet check").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError, SolverError
from physlearn.spec.system import StabilityCheck
from physlearn.spec.task import Task
from physlearn.training.events import EventStream, StabilityGuarded
from physlearn.training.stability import STABILITY_TOL
from physlearn.training.state import TrainerState

Array = NDArray[np.float64]
log = logging.getLogger(__name__)

__all__ = ["StabilityGuard", "make_stability_guard"]

#: the counters the guard adds to the run's (summary, metrics rows) when it is on
COUNTERS = ("stability_shortened", "stability_refusals")


@dataclass
class StabilityGuard:
    """Checks the free orbits of a mini-batch at proposed parameters on ``twin``."""

    twin: StabilityCheck
    method: str
    margin: float
    backtracks: int

    @property
    def threshold(self) -> float:
        """The largest |μ| allowed: 1 − margin, or 1 + `STABILITY_TOL` with no margin."""
        return 1.0 - self.margin if self.margin > 0 else 1.0 + STABILITY_TOL

    async def worst(self, params: Array, u: Array, task: Task) -> float:
        """max |μ_dom| over the mini-batch at ``params`` (inf if a sample has no steady state)."""
        try:
            mult = await self.twin.floquet_check(params, u, task, method=self.method)
        except SolverError as exc:
            log.info("stability guard: no attracting steady state (%s)", exc)
            return float("inf")
        return float(np.max(mult))

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
        free orbit of the mini-batch attracts with the margin, else st.params (refused).
        Counts and reports what it changed (``where``: epoch, batch) and keeps
        ``st.refused_streak``, the refused steps in a row (``training.stability_stall_steps``)."""
        for name in COUNTERS:
            st.counters.setdefault(name, 0)
            st.ep_counts.setdefault(name, 0)
        params = st.params
        delta = proposal - params
        if not np.any(delta):
            return proposal
        first = float("nan")
        frac = 1.0
        for k in range(self.backtracks + 1):
            frac = 0.5**k
            trial = params + frac * delta if k else proposal
            w = await self.worst(trial, u, task)
            first = w if k == 0 else first
            if w <= self.threshold:
                st.refused_streak = 0
                if k == 0:
                    return proposal
                return await self._report(st, events, where, "shortened", frac, first, trial)
        st.refused_streak += 1
        return await self._report(st, events, where, "refused", 0.0, first, params.copy())

    async def _report(
        self,
        st: TrainerState,
        events: EventStream,
        where: tuple[int, int],
        outcome: str,
        frac: float,
        first: float,
        result: Array,
    ) -> Array:
        counter = "stability_shortened" if outcome == "shortened" else "stability_refusals"
        st.counters[counter] += 1
        st.ep_counts[counter] += 1
        log.info(
            "step %d: stability guard %s the update (×%g; |μ| %.6g at the full step > %.6g)",
            st.step + 1,
            outcome,
            frac,
            first,
            self.threshold,
        )
        await events.emit(
            StabilityGuarded(
                epoch=where[0],
                batch=where[1],
                step=st.step + 1,
                outcome=outcome,
                fraction=frac,
                max_multiplier=first,
                threshold=self.threshold,
            )
        )
        return result


def make_stability_guard(cfg: object, twin: StabilityCheck | None) -> StabilityGuard | None:
    """The guard of ``training.stability_check`` on ``twin`` (None when the option is off)."""
    tc = cfg.training  # type: ignore[attr-defined]
    if tc.stability_check == "none":
        return None
    if cfg.system.kind == "autonomous":  # type: ignore[attr-defined]
        raise ConfigError("training.stability_check: not for [system] kind = autonomous")
    if getattr(cfg.network, "is_gp", False):  # type: ignore[attr-defined]
        raise ConfigError(
            "training.stability_check: not for a GP lattice or field ([system] floquet checks "
            "its stationary states' Bogoliubov spectra)"
        )
    assert twin is not None
    return StabilityGuard(
        twin, tc.stability_check, float(tc.stability_margin), int(tc.stability_backtracks)
    )
