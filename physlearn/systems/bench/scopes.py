"""The scope groups of the bench: configuration, V/div ranging, and one acquisition of all of them.

A *group* is every sensed channel of one oscilloscope: one triggered :SINGle acquisition (all
scopes concurrently) on the drive generator's sync, placed by `AcquisitionWindow`; each channel's
record is fitted on the period grid and turned into node coordinates
(`physlearn.systems.bench.acquisition`), groups are stitched on a reference node measured by
every scope (the stitch is checked). A channel whose V/div must change (`RangingPolicy`) is
re-programmed and the acquisition returns `Reranged`: acquire again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from physlearn.drivers.rigol_ds1000z import (
    CODES_PER_DIVISION,
    V_DIVISIONS,
    RigolDs1000z,
    Waveform,
)
from physlearn.errors import ConfigError, SafetyError
from physlearn.systems.bench.acquisition import AcquisitionMode, choose_mode, fit_periods
from physlearn.systems.bench.instruments import BenchTime, Instruments
from physlearn.systems.bench.planner import Planner
from physlearn.systems.bench.ranging import (
    CENTRED,
    MEASURING,
    ChannelPeak,
    RangingPolicy,
    ranged_scale,
)
from physlearn.systems.bench.window import AcquisitionWindow

log = logging.getLogger(__name__)
Array = NDArray[np.float64]

__all__ = ["Acquired", "Reranged", "ScopeGroup", "ScopeGroups"]


@dataclass
class ScopeGroup:
    """One scope as programmed: its channels (scope channel → sense wire index), V/div per
    channel, acquisition mode, timebase offset (s; NaN: unknown)."""

    name: str
    driver: RigolDs1000z
    channels: dict[int, int]
    scale_v: dict[int, float] = field(default_factory=dict)
    mode: AcquisitionMode = "NORMal"
    offset_s: float = math.nan


@dataclass(frozen=True)
class Acquired:
    """One acquisition of every group: node coordinates x (K, M, d), raw volts per channel
    (``"<scope>/ch<n>"``, float32), the largest unexplained fit residual relative to the
    channel's swing, the stitch difference, the noise norm of a period difference (node
    units), the fit start t_window and trigger edge t_edge (controller clock, s)."""

    x: Array
    volts: dict[str, NDArray[np.float32]]
    fit_residual_rel: float
    stitch_rel: float
    noise: float
    t_window: float
    t_edge: float


@dataclass(frozen=True)
class Reranged:
    """A scope channel's V/div was changed: acquire again."""


@dataclass
class _Fitted:
    """What the channels of one acquisition gave so far (`ScopeGroups._process`)."""

    x: Array
    seen: NDArray[np.bool_]
    volts: dict[str, NDArray[np.float32]] = field(default_factory=dict)
    fit_residual_rel: float = 0.0
    noise2: float = 0.0
    refs: list[Array] = field(default_factory=list)


class ScopeGroups:
    """Every scope of the bench (see the module docstring). ``groups`` is empty until
    `configure`; ``pending_scales`` are checkpointed V/div programmed before the next
    acquisition; ``tried_scales`` the V/div each channel had in the present measurement's
    records (no oscillation)."""

    def __init__(
        self,
        planner: Planner,
        policy: RangingPolicy,
        instruments: Instruments,
        time_: BenchTime,
    ) -> None:
        self.planner = planner
        self.options = planner.options
        self.policy = policy
        self.instruments = instruments
        self.time = time_
        self.window = AcquisitionWindow(
            planner.period_s, self.options.settle.acquire_periods, policy
        )
        self.groups: dict[str, ScopeGroup] = {}
        self.pending_scales: dict[str, dict[int, float]] = {}
        self.tried_scales: dict[tuple[str, int], dict[float, float]] = {}

    # ------------------------------------------------------------------ configuration
    async def configure(self, scales_v: dict[str, dict[int, float]] | None = None) -> None:
        """Program every scope: channels (V/div from ``scales_v`` where given — a reconnect
        keeps the ranging — else full range), timebase, trigger, acquisition mode. The mode is
        chosen from the full-range resolution whatever the scales, so that it never depends on
        the ranging history."""
        scale_t = self.window.set_screen()
        # the record ends K periods after the trigger (the offset is set per acquisition:
        # `AcquisitionWindow.place`); within the scope's range −screen/2 ≤ offset
        offset0 = self.window.first_offset_s
        for name, chans in self.planner.layout.scope_channels.items():
            scope = self.instruments.scope(name)
            group = ScopeGroup(name, scope, chans)
            for ch in range(1, 5):
                if ch not in chans:
                    await scope.set_channel_display(ch, False)
            kept = (scales_v or {}).get(name, {})
            for ch, i in chans.items():
                scale = kept.get(ch, self.planner.max_scale_v(i))
                await self._program(scope, ch, i, scale)
                group.scale_v[ch] = scale
            await scope.set_timebase(scale_t, offset0)
            group.offset_s = offset0
            await scope.set_trigger_edge("EXT", 1.0, "POS")
            group.mode = await self._set_mode(scope, chans)
            self.groups[name] = group

    async def _program(self, scope: RigolDs1000z, ch: int, i: int, scale_v: float) -> None:
        """Channel ``ch`` (sense wire ``i``) at ``scale_v`` V/div, offset −(calibrated offset)."""
        await scope.configure_channel(
            ch, scale_v, -float(self.planner.chains.sense_offset[i]), "DC", 1.0
        )

    async def _set_mode(self, scope: RigolDs1000z, chans: dict[int, int]) -> AcquisitionMode:
        """The acquisition mode giving β × the interlock amplitude's resolution at full range."""
        p, opts = self.planner, self.options
        lsb = min(p.max_scale_v(i) for i in chans.values()) / CODES_PER_DIVISION
        needed = (
            opts.beta_resolution
            * opts.safety.max_response
            * min(abs(p.chains.sense_gain[i]) for i in chans.values())
        )
        acq = await scope.get_acquisition()
        over = max(1, int(1e9 / max(acq.sample_rate_sa_per_s, 1.0)))
        mode, avg = choose_mode(lsb, needed, over)
        await scope.set_acquisition(mode, avg)
        return mode

    def scales(self) -> dict[str, dict[int, float]]:
        """The V/div of every configured channel, per scope."""
        return {n: dict(g.scale_v) for n, g in self.groups.items()}

    def modes(self) -> dict[str, str]:
        """The acquisition mode of every configured scope."""
        return {n: g.mode for n, g in self.groups.items()}

    def load_scales(self, scales: dict[str, Any]) -> None:
        """Checkpointed V/div per scope and channel (``{scope: {"<ch>": V/div}}``) to program
        before the next acquisition; checked: known scope and channel, 0 < V/div ≤ the
        channel's full range (ConfigError)."""
        pending: dict[str, dict[int, float]] = {}
        layout = self.planner.layout
        for name, chans in scales.items():
            if name not in layout.scope_channels:
                raise ConfigError(f"bench state: scope {name!r} is not in this bench's wiring")
            for ch_s, v in dict(chans).items():
                ch = int(ch_s)
                i = layout.scope_channels[name].get(ch)
                if i is None:
                    raise ConfigError(f"bench state: {name} channel {ch} senses no node")
                top = self.planner.max_scale_v(i)
                if not (math.isfinite(float(v)) and 0 < float(v) <= top):
                    raise ConfigError(
                        f"bench state: {name} channel {ch} scale {v!r} V/div is outside (0, {top}]"
                    )
                pending.setdefault(name, {})[ch] = float(v)
        self.pending_scales = pending

    async def _apply_pending_scales(self) -> None:
        pending, self.pending_scales = self.pending_scales, {}
        for name, chans in pending.items():
            group = self.groups[name]
            for ch, v in chans.items():
                if group.scale_v.get(ch) != v:
                    await self._program(group.driver, ch, group.channels[ch], v)
                    group.scale_v[ch] = v

    # ------------------------------------------------------------------ ranging
    async def range_for(self, x: Array) -> None:
        """Set every scope channel's V/div for a predicted response x (M, d) before it is
        acquired: 1-2-5 ≥ 1.4 × the predicted peak where the predicted peak is outside 0.3–0.8
        of the present full scale (near clipping, or near the 0.2 at which the measurement
        would re-range down). The acquisition checks the real peak as usual. (Canonical
        ranging plans without remembered responses: never called there.)"""
        p = self.planner

        async def one(group: ScopeGroup) -> None:
            for ch, i in group.channels.items():
                node = p.config.wiring.sense[i].node
                peak_v = abs(float(p.chains.sense_gain[i])) * float(np.max(np.abs(x[:, node])))
                full_v = V_DIVISIONS / 2 * group.scale_v[ch]
                lo, hi = CENTRED
                if lo * full_v <= peak_v <= hi * full_v:
                    continue
                new = ranged_scale(
                    peak_v, group.scale_v[ch], p.max_scale_v(i), clipped=False, canonical=True
                )
                if new != group.scale_v[ch]:
                    await self._program(group.driver, ch, i, new)
                    group.scale_v[ch] = new

        with self.time.io():
            await asyncio.gather(*(one(g) for g in self.groups.values()))

    def forget_tried(self) -> None:
        """A new measurement: only its own records count for the no-oscillation rule."""
        self.tried_scales = {}

    # ------------------------------------------------------------------ acquisition
    async def acquire(self, not_before: float, *, preview: bool = False) -> Acquired | Reranged:
        """One :SINGle per scope (concurrently) whose record ends K periods after the fit start
        ``not_before`` (later if the scope cannot be armed in time; `AcquisitionWindow.place`),
        fitted into node coordinates; `Reranged` after re-programming the channels whose V/div
        must change (a ``preview`` during the transient also re-centres channels whose peak is
        outside 0.3–0.8 of full scale, so that the measurement after it does not have to)."""
        if self.pending_scales:
            await self._apply_pending_scales()
        k = self.options.settle.acquire_periods
        T = self.planner.period_s
        now = await self.time.now()
        win = self.window.place(max(not_before, now + self.window.lead_s()))

        async def position(g: ScopeGroup) -> None:
            # while the scope is stopped (the last record is read already): the timebase
            # offset that puts the record's end at w0 + K T, off the arming's critical path
            if g.offset_s != win.offset_s:
                g.offset_s = math.nan  # unknown if the command fails
                await g.driver.set_timebase(self.window.tb_scale_s, win.offset_s)
                g.offset_s = win.offset_s

        with self.time.io():
            await asyncio.gather(*(position(g) for g in self.groups.values()))
        await self.time.wait(win.t_arm - await self.time.now())
        with self.time.io():
            await asyncio.gather(*(g.driver.single() for g in self.groups.values()))
        now = await self.time.now()
        await self.time.wait(win.w0 + k * T + T / 256 - now)

        async def read(g: ScopeGroup) -> dict[int, Waveform]:
            await g.driver.wait_triggered(timeout_s=4 * T, poll_s=T / 32, sleep=self.time.wait)
            return await g.driver.read_channels(sorted(g.channels))

        with self.time.io():
            results = await asyncio.gather(*(read(g) for g in self.groups.values()))
        # small least-squares fits: a multithreaded BLAS only adds overhead (and contention
        # with the twin's thread on the emulated bench)
        with threadpool_limits(1, "blas"):
            fitted = await self._process(results, win.w0 - win.edge, preview=preview)
        if fitted is None:
            return Reranged()
        got, stitch = fitted
        return Acquired(
            got.x,
            got.volts,
            got.fit_residual_rel,
            stitch,
            math.sqrt(got.noise2),
            win.w0,
            win.edge,
        )

    async def _process(
        self, results: list[dict[int, Waveform]], start_s: float, *, preview: bool
    ) -> tuple[_Fitted, float] | None:
        """The channels' records fitted into node coordinates, and the stitch difference; None
        after re-programming the channels whose V/div must change."""
        p = self.planner
        k, m = self.options.settle.acquire_periods, p.grid_t.size
        harmonics = self.options.harmonics or (m - 1) // 2
        got = _Fitted(np.zeros((k, m, p.n_nodes)), np.zeros(p.n_nodes, bool))
        rerange: list[tuple[ScopeGroup, int, int, float]] = []
        for g, waves in zip(self.groups.values(), results, strict=True):
            for ch, wf in waves.items():
                new = self._channel(got, g, ch, wf, k, harmonics, start_s, preview)
                if new != g.scale_v[ch]:
                    rerange.append((g, ch, g.channels[ch], new))
        stitch = 0.0
        if len(got.refs) > 1 and not rerange:
            base = got.refs[0]
            nb = float(np.linalg.norm(base)) or 1.0
            stitch = max(float(np.linalg.norm(r - base)) / nb for r in got.refs[1:])
            if stitch > self.options.stitch_tol:
                log.warning(
                    "stitch check: reference node %s differs by %.3g between scope groups",
                    p.layout.reference_node,
                    stitch,
                )
        if rerange:
            for g, ch, i, new in rerange:
                await self._program(g.driver, ch, i, new)
                g.scale_v[ch] = new
            return None
        return got, stitch

    def _channel(
        self,
        got: _Fitted,
        g: ScopeGroup,
        ch: int,
        wf: Waveform,
        k: int,
        harmonics: int,
        start_s: float,
        preview: bool,
    ) -> float:
        """Fit channel ``ch`` of group ``g`` into ``got``; returns the V/div its next record
        needs (the present one: keep). SafetyError when it clipped at its coarsest V/div."""
        p = self.planner
        i = g.channels[ch]
        node = p.config.wiring.sense[i].node
        offset_v = p.chains.sense_offset[i]
        gain = p.chains.sense_gain[i]
        scale = g.scale_v[ch]
        top = p.max_scale_v(i)
        peak_v = float(np.max(np.abs(wf.volts - offset_v)))
        if wf.clipped and scale >= top:
            raise SafetyError(
                f"interlock: {g.name} channel {ch} (node {node}) clipped: the response "
                f"exceeds the interlock amplitude {self.options.safety.max_response}"
            )
        got.volts[f"{g.name}/ch{ch}"] = np.asarray(wf.volts, dtype=np.float32)
        fit = fit_periods(
            wf.t_s,
            wf.volts,
            p.period_s,
            k,
            p.grid_t,
            harmonics,
            p.chains.sense_delay[i],
            start_s,
            lattice_s=self.window.lattice_s,
        )
        xn = (fit.values - offset_v) / gain
        fit_peak_v = float(np.max(np.abs(fit.values - offset_v)))
        tried = self.tried_scales.setdefault((g.name, ch), {})
        band = CENTRED if preview else MEASURING
        new = self.policy.next_scale(
            tried, scale, ChannelPeak(peak_v, fit_peak_v, wf.clipped), top, band
        )
        if new != scale:
            log.debug(
                "%s ch%d: scale %g -> %g V/div (peak %g V, clipped %s)",
                *(g.name, ch, scale, new, peak_v, wf.clipped),
            )
        # a response that is not T-periodic (subharmonic, quasi-periodic) leaves what the
        # harmonic fit cannot follow, and the record before the fitted periods differs from
        # their periodic extension: the part of either that the channel's noise (white part of
        # the residual, or quantisation) cannot explain, relative to the channel's swing
        lsb_v = scale / CODES_PER_DIVISION
        fit_rel = fit.unexplained_rms_v(lsb_v) / max(peak_v, lsb_v)
        got.fit_residual_rel = max(float(got.fit_residual_rel), fit_rel)
        sig = fit.residual_rms_v / abs(gain)
        m = p.grid_t.size
        got.noise2 += sig**2 * m * (2 * harmonics + 1) / max(fit.points_per_period, 1) * 2
        if node == p.layout.reference_node:
            got.refs.append(xn)
        if not got.seen[node]:
            got.x[:, :, node] = xn
            got.seen[node] = True
        return new
