"""The settler: when is one batch sample's response settled, and its measurement.

Per sample: upload the drive (only the channels that change), predict the transient the change
started — from the last settled response to the same input (`ResponseMemory`) when the ranging
policy allows plans from the history, else from the relative change of the force and of the
couplings — wait the settle time of the calibrated decay rate (`physlearn.systems.bench.settling`),
range the scopes on preview records while the transient decays, acquire, and verify with the
measured change of the response: wait and acquire again if it was too early. Non-T-periodic
responses are refused (`SteadyStateError`).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import SteadyStateError
from physlearn.systems.bench.instruments import BenchTime
from physlearn.systems.bench.journal import SampleRecord
from physlearn.systems.bench.options import BenchOptions
from physlearn.systems.bench.ranging import RangingPolicy
from physlearn.systems.bench.response_memory import Recalled, ResponseMemory
from physlearn.systems.bench.scopes import Acquired, Reranged, ScopeGroups
from physlearn.systems.bench.settling import (
    PeriodAssessment,
    assess_periods,
    contraction_from_decay,
    settle_time_s,
    settle_wait_s,
)
from physlearn.systems.safety import Interlock

Array = NDArray[np.float64]

__all__ = ["SettledSample", "Settler"]

#: factor on a transient predicted from a remembered response (`Settler.predicted_transient`)
_PREDICTION_CUSHION = 1.05
#: a remembered response this close (relative settings change) plans the ranging without previews
_CLOSE_RECALL = 0.01


@dataclass(frozen=True)
class SettledSample:
    """One sample's settled response x (M, d) (node units), the verdict on its periods, the
    time waited from the change to the first fitted sample (s), and its record."""

    x: Array
    assessment: PeriodAssessment
    waited_s: float
    record: SampleRecord


@dataclass(frozen=True)
class _Plan:
    """The settle plan of one sample (controller clock, s): when the bench last changed, the
    settled response before it, the remembered response (if any), the predicted relative
    transient (before margin), the calibrated decay rate σ and its per-period contraction, the
    settle decision (no fitted sample before it)."""

    t_change: float
    fresh: bool
    x_ref: Array | None
    recalled: Recalled | None
    rho_pred: float
    sigma: float | None
    r_known: float | None
    settle_end: float


@dataclass(frozen=True)
class _Judgement:
    """One acquisition judged: its periods' assessment, the time waited to its first fitted
    sample (s), the measured relative transient ρ (margin included), what is left of it."""

    a: PeriodAssessment
    waited: float
    rho: float
    remaining: float


@dataclass
class _Counts:
    """Scope records of one sample: re-ranges (of previews), fitted acquisitions, previews."""

    reranges: int = 0
    preview_reranges: int = 0
    acquisitions: int = 0
    previews: int = 0
    records: int = 0


class Settler:
    """Settles and measures one sample at a time (module docstring). Keeps the bookkeeping of
    the controller clock: when the bench last changed (end of the last write or DAC ramp), the
    last settled response before that change, the parameters α, the response memory."""

    def __init__(
        self,
        options: BenchOptions,
        period_s: float,
        decay_rate_per_s: float | None,
        alpha_unit: float,
        policy: RangingPolicy,
        scopes: ScopeGroups,
        time_: BenchTime,
        interlock: Interlock,
        upload: Callable[[Array], Awaitable[bool]],
    ) -> None:
        self.options = options
        self.period_s = period_s
        self.decay_rate_per_s = decay_rate_per_s
        self.alpha_unit = alpha_unit
        self.policy = policy
        self.scopes = scopes
        self.time = time_
        self.interlock = interlock
        self.upload = upload
        #: the parameters α last written (None: not set)
        self.alpha: Array | None = None
        self.t_change: float | None = None
        self.x_before: Array | None = None
        self.x_settled: Array | None = None
        self.changed_alpha = 0.0
        self.settled_since_change = True
        self.last_force: Array | None = None
        #: the last settled response per input: plans the settle wait and the scope ranging
        self.memory = ResponseMemory()
        #: the input of the last settled measurement
        self.last_key: bytes | None = None

    # ------------------------------------------------------------------ bookkeeping
    def at_rest(self, shape: tuple[int, int]) -> None:
        """The bench was just armed: at rest under zero drive, nothing changing."""
        self.x_settled = np.zeros(shape)
        self.settled_since_change = True
        self.t_change = None

    def mark_change(self, t: float) -> None:
        """The bench changed (a write takes effect, or a DAC ramp ends) at controller time t."""
        if self.t_change is None or self.x_before is None or self.settled_since_change:
            self.x_before = self.x_settled
        self.settled_since_change = False
        self.t_change = t if self.t_change is None else max(self.t_change, t)

    def parameters_written(self, alpha: Array, ramp_end: float | None) -> None:
        """New parameters α (P,) were written; ``ramp_end``: when the DAC ramp they started ends
        (controller clock; None: no DAC moved)."""
        if ramp_end is not None:
            self.mark_change(ramp_end)
            prev = self.alpha if self.alpha is not None else np.zeros(np.shape(alpha))
            change = float(np.max(np.abs(np.asarray(alpha) - prev)))
            self.changed_alpha += change / self.alpha_unit
        self.alpha = np.array(alpha, dtype=float)

    def predicted_transient(
        self, force: Array, x_ref: Array | None, recalled: Recalled | None, new_input: bool
    ) -> float:
        """A priori relative size of the transient the new settings start (before margin).
        With a remembered response to the same input: its relative change from the response
        settled before the change, ``x_ref``, plus how far the settings moved since it was
        measured; otherwise the relative change of the drive force plus the coupling change
        in units of m ω², at least 1 for an input not measured last (``new_input``: another
        sample's response differs by its own size; a force-based guess fell short by up to
        1.8× on the XOR bench; never set with canonical ranging, whose plans depend on the
        present change alone); 1 when nothing is known (first measurement, after a
        reconnect)."""
        if recalled is not None and x_ref is not None:
            amp = float(np.max(np.abs(recalled.x))) or 1.0
            rho = float(np.max(np.abs(recalled.x - x_ref))) / amp + recalled.distance
            # 5 % over the prediction: waits ln(1.05)/σ longer, where a prediction a fraction
            # of a percent short would cost a whole repeated acquisition
            rho *= _PREDICTION_CUSHION
        elif self.x_before is None or self.last_force is None:
            return 1.0
        else:
            nf = float(np.linalg.norm(force)) or 1.0
            rho = float(np.linalg.norm(force - self.last_force)) / nf + self.changed_alpha
            if new_input:
                rho = max(rho, 1.0)
        return min(max(rho, self.options.settle.tol), 1.0e3)

    # ------------------------------------------------------------------ one sample
    async def measure_sample(self, force: Array, key: bytes | None = None) -> SettledSample:
        """Upload, wait the predicted settle time, acquire, verify with the measured change of
        the response (`physlearn.systems.bench.settling`), wait and acquire again if it was too
        early.

        ``key``: the input's key in the response memory; with a remembered response to it, the
        settle time and the scope ranging are planned from that response (preview records only
        when the settings moved by more than 1 % since)."""
        with self.time.io():
            if await self.upload(force):
                self.mark_change(await self.time.now())
        plan = await self._plan(force, key)
        counts = _Counts()
        if plan.recalled is not None:
            await self.scopes.range_for(plan.recalled.x)
        # unless the remembered response is close (settings moved by < 1 %, e.g. a nudge),
        # scope ranging while the transient decays: preview acquisitions (not measurements)
        # once the transient is below 10 %, as long as one (its record ending K T after its
        # fit start, then T/4 to read it) ends before the measurement must be armed
        if (
            plan.sigma
            and not plan.fresh
            and (plan.recalled is None or plan.recalled.distance > _CLOSE_RECALL)
        ):
            await self._previews(plan, counts)
        self.scopes.forget_tried()  # previews saw the transient: only measurement records count
        return await self._settle(force, key, plan, counts)

    async def _plan(self, force: Array, key: bytes | None) -> _Plan:
        """The settle plan: the predicted transient and the settle decision it gives."""
        st, T = self.options.settle, self.period_s
        sigma = self.decay_rate_per_s
        r_known = contraction_from_decay(sigma, T) if sigma else None
        now = await self.time.now()
        t_change = self.t_change if self.t_change is not None else now
        fresh = self.settled_since_change  # nothing changed since the last settled response
        x_ref = self.x_settled if fresh else self.x_before
        recalled = None
        # canonical ranging promises a history-free measurement path (a resumed run measures
        # as the uninterrupted one did): plans from remembered responses would depend on
        # which responses this session has seen, so that mode does without them
        history = self.policy.plans_from_history
        if key is not None and not fresh and history:
            recalled = self.memory.recall(key, force, self.alpha, self.alpha_unit)
        # (canonical: not from which input this session measured last — a retry changes it)
        new_input = history and key is not None and key != self.last_key
        rho_pred = self.predicted_transient(force, x_ref, recalled, new_input)
        if st.first_wait_periods is not None:
            settle_end = t_change + st.first_wait_periods * T
        elif sigma:
            settle_end = t_change + settle_time_s(st.transient_margin * rho_pred, st.tol, sigma)
        else:
            settle_end = t_change + 10 * T
        if fresh:
            settle_end = min(settle_end, now)
        return _Plan(t_change, fresh, x_ref, recalled, rho_pred, sigma, r_known, settle_end)

    async def _previews(self, plan: _Plan, counts: _Counts) -> None:
        """Preview acquisitions while the transient decays (they range the scopes), at most 4,
        each ending before the measurement must be armed."""
        st, T = self.options.settle, self.period_s
        assert plan.sigma
        t_prev = plan.t_change + settle_time_s(st.transient_margin * plan.rho_pred, 0.1, plan.sigma)
        lead = self.scopes.window.lead_s()
        while counts.previews < 4 and (
            max(t_prev, await self.time.now() + lead) + st.acquire_periods * T + T / 4
            < plan.settle_end - lead
        ):
            counts.previews += 1
            counts.records += 1
            if isinstance(await self.scopes.acquire(t_prev, preview=True), Acquired):
                break
            counts.reranges += 1
            counts.preview_reranges += 1
            t_prev = await self.time.now()

    async def _settle(
        self, force: Array, key: bytes | None, plan: _Plan, counts: _Counts
    ) -> SettledSample:
        """Acquire from the settle decision on until the response is settled (re-ranged
        records and too-early ones acquired again)."""
        st = self.options.settle
        settle_end = plan.settle_end
        while True:
            counts.records += 1
            t_settle = settle_end  # the settle decision: no fitted sample before it
            got = await self.scopes.acquire(t_settle)
            if isinstance(got, Reranged):
                counts.reranges += 1
                # previews re-range while the transient decays: only the measurement's own
                # re-ranges count towards the limit
                if counts.reranges - counts.preview_reranges > 4:
                    raise SteadyStateError("scope ranging did not converge in 4 tries")
                settle_end = await self.time.now()
                continue
            counts.acquisitions += 1
            self.interlock.check(got.x, "measured response")
            j = self._judge(got, plan)
            if j.remaining <= st.tol or (
                plan.sigma is None and j.a.verdict == "settled" and got.x.shape[0] >= 2
            ):
                return self._accept(force, key, plan, got, j, t_settle, counts)
            if j.waited > st.max_wait_s:
                raise SteadyStateError(
                    f"bench response not settled after {j.waited:.3g} s (remaining "
                    f"{j.remaining:.3g} > tol {st.tol})"
                )
            if plan.sigma:
                settle_end = plan.t_change + settle_time_s(j.rho, st.tol, plan.sigma)
            else:
                settle_end = got.t_window + settle_wait_s(
                    j.remaining, st.tol, j.a.contraction, self.period_s
                )

    def _judge(self, got: Acquired, plan: _Plan) -> _Judgement:
        """The verdict on one acquisition: its periods' assessment, the time waited to its
        first fitted sample, the measured relative transient (margin included) and what is
        left of it. SteadyStateError when the response is not T-periodic."""
        st = self.options.settle
        c = st.transient_margin
        x = got.x
        waited = got.t_window - plan.t_change  # to the first fitted sample
        if x.shape[0] >= 2:
            a = assess_periods(x, tol=st.tol, noise_floor=got.noise, contraction=plan.r_known)
        else:  # one period: the calibrated decay rate judges (below)
            amp1 = float(np.max(np.abs(x[-1]))) * math.sqrt(x[-1].size)
            a = PeriodAssessment("settled", 0.0, plan.r_known or math.nan, False, math.nan, amp1)
        if x.shape[0] >= 2 and not a.periodic:
            raise SteadyStateError(
                f"bench response is not T-periodic ({a.verdict.replace('_', ' ')}; step "
                f"{a.step:.3g}, contraction {a.contraction:.3g}) after {waited:.3g} s"
            )
        # the transient started at t_change from the settled response before it: its size
        # is (with the margin c for velocity and modal mixing) the measured change
        xs = x[-1]
        amp = float(np.max(np.abs(xs))) or 1.0
        if plan.x_ref is not None:
            rho = c * float(np.max(np.abs(xs - plan.x_ref))) / amp
        else:
            rho = c * plan.rho_pred
        sigma = plan.sigma
        if sigma:
            remaining = rho * math.exp(-sigma * max(waited, 0.0))
            if x.shape[0] >= 3 and a.fitted:
                remaining = max(remaining, a.remaining)
        else:
            remaining = a.remaining
        return _Judgement(a, waited, rho, remaining)

    def _accept(
        self,
        force: Array,
        key: bytes | None,
        plan: _Plan,
        got: Acquired,
        j: _Judgement,
        t_settle: float,
        counts: _Counts,
    ) -> SettledSample:
        """The settled response: checked for periodicity beyond the noise, remembered."""
        st = self.options.settle
        # judged only on a response otherwise accepted: before, a decaying transient
        # (largest in the record's part before the fitted periods) is not periodic
        # either, and the next acquisition comes later anyway
        if got.fit_residual_rel > st.periodic_residual:
            raise SteadyStateError(
                "bench response is not T-periodic: beyond the noise, the harmonic fit "
                f"or the preceding part of the record leaves "
                f"{got.fit_residual_rel:.3g} of the swing (> "
                f"{st.periodic_residual}) after {j.waited:.3g} s"
            )
        xs = got.x[-1]
        self.x_settled = xs.copy()
        self.settled_since_change = True
        self.last_force = force.copy()
        self.changed_alpha = 0.0
        self.last_key = key
        if key is not None:
            self.memory.remember(key, xs, force, self.alpha)
        a = j.a
        record = SampleRecord(
            volts=got.volts,
            fit_residual_rel=got.fit_residual_rel,
            stitch_rel=got.stitch_rel,
            t_change=plan.t_change,
            t_trigger=got.t_edge,
            t_window=got.t_window,
            t_settle=t_settle,
            settle_s=j.waited,
            remaining=j.remaining,
            rho_predicted=st.transient_margin * plan.rho_pred,
            predicted_from_memory=plan.recalled is not None,
            rho_measured=j.rho,
            decay_rate_per_s=plan.sigma if plan.sigma else math.nan,
            contraction=a.contraction if a.fitted else (plan.r_known or math.nan),
            acquisitions=counts.acquisitions,
            reranges=counts.reranges,
            previews=counts.previews,
            records=counts.records,
        )
        return SettledSample(xs, replace(a, remaining=j.remaining), j.waited, record)
