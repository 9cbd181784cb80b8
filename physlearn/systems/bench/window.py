"""When a scope acquisition is armed and where its record lies, on the controller clock.

The sync edges (trigger instants) fall on phase_origin + n T. An acquisition's K fitted periods
start at w0; its screen (≥ K T, 1-2-5 timebase) is placed to END at w0 + K T, so the record
[w0 + K T − screen, w0 + K T] holds the K fitted periods and, before them, what the 1-2-5
rounding adds (up to a period) for the periodicity check."""

from __future__ import annotations

import math
from typing import NamedTuple

from physlearn.drivers.rigol_ds1000z import H_DIVISIONS, SCREEN_POINTS_PER_DIVISION
from physlearn.systems.bench.acquisition import scale_125_at_least
from physlearn.systems.bench.ranging import RangingPolicy

__all__ = ["AcquisitionWindow", "Window"]


class Window(NamedTuple):
    """One acquisition (controller clock, s): fit start w0, trigger edge, timebase offset
    (trigger → screen centre), arm time."""

    w0: float
    edge: float
    offset_s: float
    t_arm: float


class AcquisitionWindow:
    """The trigger lattice and the screen of the scopes' acquisitions (module docstring)."""

    def __init__(self, period_s: float, acquire_periods: int, policy: RangingPolicy) -> None:
        self.period_s = period_s
        self.acquire_periods = acquire_periods
        self.policy = policy
        #: controller time of a sync edge (set when the generators are phase-synchronised)
        self.phase_origin_s = 0.0
        #: screen length and timebase scale (s, s/div), set when the scopes are configured
        self.screen_s = 0.0
        self.tb_scale_s = 0.0

    def set_screen(self) -> float:
        """Choose the screen: the 1-2-5 timebase scale (s/div) whose screen holds K periods."""
        screen = self.acquire_periods * self.period_s
        scale_t = scale_125_at_least(screen / H_DIVISIONS)
        self.screen_s = H_DIVISIONS * scale_t
        self.tb_scale_s = scale_t
        return scale_t

    @property
    def first_offset_s(self) -> float:
        """The timebase offset of a record ending K periods after its trigger."""
        return self.acquire_periods * self.period_s - self.screen_s / 2

    @property
    def lattice_s(self) -> float | None:
        """The sample lattice (s) of the records under the ranging policy (None: none)."""
        return self.policy.lattice_s(self.tb_scale_s / SCREEN_POINTS_PER_DIVISION)

    def next_edge(self, t: float) -> float:
        """The first sync edge (trigger instant) at or after controller time t."""
        T = self.period_s
        n = math.ceil((t - self.phase_origin_s) / T - 1e-9)
        return self.phase_origin_s + n * T

    def lead_s(self) -> float:
        """How long before the fit start an acquisition must be armed: the pre-trigger part of
        the record (screen − K T), the T/8 margin before the trigger edge, and T/64 for the
        arming command."""
        T = self.period_s
        return self.screen_s - self.acquire_periods * T + T / 8 + T / 64

    def place(self, not_before: float) -> Window:
        """The acquisition whose K fitted periods start at controller time w0 = ``not_before``.

        The scope triggers on e, the first sync edge at or after w0 (so e − T < w0 ≤ e ≤
        w0 + K T): the record before e is pre-trigger memory, the offset is
        w0 + K T − screen/2 − e ∈ [−screen/2, screen/2], within the scope's range. No time
        is spent waiting for an edge: the record ends, and the acquisition completes, exactly
        when the K fitted periods end. A :SINGle searches for the edge from its arming +
        the pre-trigger time, so arming at the record start − T/8 makes the search begin at
        e − T/8, after the edge before e.

        On a sample lattice (canonical ranging) the offset is rounded up to a whole
        screen-sample interval (timebase/100; ≤ T/800 at a 1.5 T screen, inside the T/256 read
        margin): the samples then sit on one lattice relative to the sync edges whatever
        ``not_before`` was, so the same steady response is quantised the same way in every
        acquisition (a resumed run measures what the uninterrupted one did on a noise-free
        bench)."""
        T = self.period_s
        k = self.acquire_periods
        w0 = not_before
        start = w0 + k * T - self.screen_s
        e = self.next_edge(w0)
        offset = max(w0 + k * T - self.screen_s / 2 - e, -self.screen_s / 2)
        dt = self.lattice_s
        if dt:
            offset = math.ceil(offset / dt - 1e-6) * dt
        return Window(w0, e, offset, start - T / 8)
