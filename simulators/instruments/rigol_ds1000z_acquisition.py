"""The Rigol DS1000Z emulator's acquisition engine (`rigol_ds1000z` holds its command surface).

`Settings` snapshots everything an acquisition depends on; `AcquisitionEngine` arms, searches
the trigger edge on the emulator clock (`EdgeSearch`), keeps the single/run/stop state and the
last completed `Acquisition`, and renders its 8-bit ADC codes from the signal source: probe
ratio, coupling, high-resolution / peak-detect sub-samples, averaging over sweeps, seeded ADC
noise. Times are emulator-clock seconds, volts are probe-referred (as displayed).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from physlearn.drivers.rigol_ds1000z import CODES_PER_DIVISION, H_DIVISIONS, SCREEN_POINTS

logger = logging.getLogger(__name__)

SignalSource = Callable[[int, NDArray[np.float64]], NDArray[np.float64]]

Y_REFERENCE = 127
CODE_MIN, CODE_MAX = 0, 255
#: Maximum sample rate in Sa/s by number of enabled channels (3 and 4 share a rate).
MAX_SAMPLE_RATE = {1: 1e9, 2: 5e8, 3: 2.5e8, 4: 2.5e8}
#: Selectable memory depths by number of enabled channels (24 Mpts with the memory option).
MEMORY_DEPTHS = {
    1: (12_000, 120_000, 1_200_000, 12_000_000, 24_000_000),
    2: (6_000, 60_000, 600_000, 6_000_000, 12_000_000),
    3: (3_000, 30_000, 300_000, 3_000_000, 6_000_000),
    4: (3_000, 30_000, 300_000, 3_000_000, 6_000_000),
}

_NOISE_BLOCK = 4096
_SUB_SAMPLES = 8  # evaluation points of one high-res / peak-detect sample
_SEARCH_CHUNK = 65_536
_MAX_SEARCH_POINTS = 1 << 25  # per armed :SINGle
_RUN_SEARCH_POINTS = 1 << 20  # per RUN-mode look-back


@dataclass(frozen=True)
class ChannelState:
    """Vertical settings of one analog channel (volts are probe-referred, as displayed)."""

    display: bool = False
    scale_v: float = 1.0
    offset_v: float = 0.0
    coupling: str = "DC"
    probe: float = 10.0
    bw_limit: bool = False

    @property
    def yincrement_v(self) -> float:
        return self.scale_v / CODES_PER_DIVISION

    @property
    def yorigin(self) -> int:
        return round(self.offset_v / self.yincrement_v)


@dataclass(frozen=True)
class Settings:
    """Everything an acquisition depends on (snapshot at arm time or at a RUN-mode query)."""

    channels: tuple[ChannelState, ...]
    timebase_scale_s: float
    timebase_offset_s: float
    acquire_type: str
    averages: int
    memory_depth: int | None  # None: AUTO
    trigger_source: int  # 1..4 channel, 0 EXT, -1 AC line
    trigger_level_v: float
    trigger_slope: str

    @property
    def enabled(self) -> int:
        return max(1, sum(c.display for c in self.channels))

    @property
    def max_sample_rate(self) -> float:
        return MAX_SAMPLE_RATE[self.enabled]

    @property
    def screen_s(self) -> float:
        return H_DIVISIONS * self.timebase_scale_s

    @property
    def points(self) -> int:
        """Memory depth actually used (AUTO: as deep as the standard memory allows)."""
        if self.memory_depth is not None:
            return self.memory_depth
        deepest = MEMORY_DEPTHS[self.enabled][3]
        return max(1, min(deepest, round(self.max_sample_rate * self.screen_s)))

    @property
    def sample_rate(self) -> float:
        return min(self.max_sample_rate, self.points / self.screen_s)

    @property
    def pre_trigger_s(self) -> float:
        """Time from the left screen edge to the trigger point."""
        return max(0.0, H_DIVISIONS / 2 * self.timebase_scale_s - self.timebase_offset_s)

    @property
    def post_trigger_s(self) -> float:
        """Time from the trigger point to the right screen edge (≥ 0 by the offset range)."""
        return max(0.0, H_DIVISIONS / 2 * self.timebase_scale_s + self.timebase_offset_s)

    @property
    def oversampling(self) -> int:
        return max(1, math.floor(self.max_sample_rate / self.sample_rate + 1e-9))

    def view(self, raw: bool) -> tuple[float, float, int]:
        """(xincrement_s, xorigin_s, points) of the screen (NORMal) or memory (RAW) data."""
        if not raw:
            xinc = self.timebase_scale_s / (SCREEN_POINTS / H_DIVISIONS)
            return xinc, self.timebase_offset_s - self.screen_s / 2, SCREEN_POINTS
        xinc = 1.0 / self.sample_rate
        return xinc, self.timebase_offset_s - self.points * xinc / 2, self.points


@dataclass
class Acquisition:
    """One completed acquisition: its trigger instants (one per averaged sweep) and noise seed."""

    settings: Settings
    triggers_s: tuple[float, ...]
    seed: int
    triggered: bool = True
    _cache: dict[tuple[int, bool, int, int], NDArray[np.uint8]] = field(default_factory=dict)


class EdgeSearch:
    """First trigger crossing at or after `t0_s` on the grid t0 + k·h (resumable, anchored)."""

    def __init__(
        self,
        signal: Callable[[NDArray[np.float64]], NDArray[np.float64]],
        *,
        level: float,
        slope: str,
        t0_s: float,
        step_s: float,
    ) -> None:
        self.signal = signal
        self.level = level
        self.slope = slope
        self.t0_s = t0_s
        self.step_s = step_s
        self.k = 0  # next grid index to evaluate
        self.prev: float | None = None
        self.exhausted = False

    def advance(self, t_limit_s: float) -> float | None:
        """Search grid points up to `t_limit_s`; the crossing time, or None (state kept)."""
        while not self.exhausted:
            k_last = math.floor((t_limit_s - self.t0_s) / self.step_s + 1e-9)
            if k_last < self.k:
                return None
            if self.k > _MAX_SEARCH_POINTS:
                logger.warning("DS1000Z emulator: no trigger edge in %d points", self.k)
                self.exhausted = True
                return None
            k_stop = min(k_last + 1, self.k + _SEARCH_CHUNK)
            ks = np.arange(self.k, k_stop, dtype=np.float64)
            values = self.signal(self.t0_s + ks * self.step_s)
            head = np.array([np.nan if self.prev is None else self.prev])
            seq = np.concatenate([head, values])
            hit = crossings(seq, self.level, self.slope)
            if hit.size:
                j = int(hit[0])  # crossing between seq[j] and seq[j+1]
                frac = (self.level - seq[j]) / (seq[j + 1] - seq[j])
                return float(self.t0_s + (self.k - 1 + j + frac) * self.step_s)
            self.prev = float(values[-1])
            self.k = k_stop
        return None


def crossings(seq: NDArray[np.float64], level: float, slope: str) -> NDArray[np.intp]:
    """Indices j where seq crosses `level` between j and j+1 with the given slope."""
    a, b = seq[:-1], seq[1:]
    rising = (a < level) & (b >= level)
    falling = (a > level) & (b <= level)
    mask = rising if slope == "POSitive" else falling if slope == "NEGative" else rising | falling
    return np.flatnonzero(mask)


@dataclass
class _Armed:
    settings: Settings
    search: EdgeSearch
    triggers: list[float] = field(default_factory=list)


class AcquisitionEngine:
    """Arming, trigger search, single/run/stop state and waveform synthesis of the DS1000Z.

    `source(channel, times_s)`: volts at the BNC input of channel 1..4 (0: EXT); `rng` draws one
    noise seed per acquisition; `adc_noise_v` is the ADC noise σ referred to the BNC input. The
    state is `state` (RUN, STOP or SINGLE: armed), `armed`, `last` (the acquisition a read
    returns) and `run_status` (what :TRIGger:STATus? answers while running).
    """

    def __init__(
        self,
        source: SignalSource,
        rng: np.random.Generator,
        *,
        adc_noise_v: float,
        line_frequency_hz: float,
        trigger_step_s: float,
        auto_lookback_s: float,
    ) -> None:
        self.source = source
        self.rng = rng
        self.adc_noise_v = adc_noise_v
        self.line_frequency_hz = line_frequency_hz
        self.trigger_step_s = trigger_step_s
        self.auto_lookback_s = auto_lookback_s
        self.state = "RUN"
        self.run_start_s = 0.0
        self.armed: _Armed | None = None
        self.last: Acquisition | None = None
        self.run_status = "AUTO"

    # -- state ---------------------------------------------------------------------------------

    def reset(self, now_s: float) -> None:
        """*RST: running since `now_s`, nothing acquired."""
        self.state = "RUN"
        self.run_start_s = now_s
        self.armed = None
        self.last = None
        self.run_status = "AUTO"

    def run(self, now_s: float) -> None:
        """Free-running acquisitions from `now_s` on."""
        self.state = "RUN"
        self.armed = None
        self.run_start_s = now_s

    def stop(self) -> None:
        self.state = "STOP"
        self.armed = None

    def arm(self, settings: Settings, now_s: float) -> None:
        """Arm a single acquisition at `now_s`: the trigger is searched once the memory before
        the trigger point has filled."""
        t0 = now_s + settings.pre_trigger_s
        self.armed = _Armed(settings, self._new_search(settings, t0))
        self.state = "SINGLE"

    # -- trigger machinery ---------------------------------------------------------------------

    def _trigger_signal(
        self, settings: Settings
    ) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
        src = settings.trigger_source
        if src == -1:
            omega = 2 * math.pi * self.line_frequency_hz
            return lambda t: np.sin(omega * t)
        if src == 0:
            return lambda t: np.asarray(self.source(0, t), dtype=np.float64)
        ch = settings.channels[src - 1]

        def signal(t: NDArray[np.float64]) -> NDArray[np.float64]:
            return self._displayed(src, ch, t)

        return signal

    def _displayed(
        self, index: int, ch: ChannelState, t: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Noise-free displayed volts of channel `index` (probe ratio applied; GND → 0)."""
        if ch.coupling == "GND":
            return np.zeros_like(t)
        return ch.probe * np.asarray(self.source(index, t), dtype=np.float64)

    def _search_step(self, settings: Settings) -> float:
        return min(settings.timebase_scale_s / (SCREEN_POINTS / H_DIVISIONS), self.trigger_step_s)

    def _level(self, settings: Settings) -> float:
        return 0.0 if settings.trigger_source == -1 else settings.trigger_level_v

    def _new_search(self, settings: Settings, t0_s: float) -> EdgeSearch:
        return EdgeSearch(
            self._trigger_signal(settings),
            level=self._level(settings),
            slope=settings.trigger_slope,
            t0_s=t0_s,
            step_s=self._search_step(settings),
        )

    def _new_acquisition(
        self, settings: Settings, triggers: tuple[float, ...], triggered: bool = True
    ) -> Acquisition:
        seed = int(self.rng.integers(0, 2**63 - 1))
        return Acquisition(settings, triggers, seed, triggered)

    def update(self, now: float, current: Callable[[], Settings], sweep: str) -> None:
        """Bring the acquisition state up to clock time `now` (`current`: the instrument's
        present settings, read in RUN mode; `sweep`: AUTO, NORMal or SINGle)."""
        if self.state == "SINGLE" and self.armed is not None:
            armed = self.armed
        else:
            if self.state == "RUN":
                self._update_run(now, current(), sweep)
            return
        settings = armed.settings
        while len(armed.triggers) < settings.averages:
            edge = armed.search.advance(now - settings.post_trigger_s)
            if edge is None:
                return
            armed.triggers.append(edge)
            restart = edge + settings.post_trigger_s + settings.pre_trigger_s
            armed.search = self._new_search(settings, restart)
        self.last = self._new_acquisition(settings, tuple(armed.triggers))
        self.armed = None
        self.state = "STOP"
        logger.debug("DS1000Z emulator: acquisition complete, triggers %s", self.last.triggers_s)

    def _update_run(self, now: float, settings: Settings, sweep: str) -> None:
        span = settings.pre_trigger_s + settings.post_trigger_s
        t_hi = now - settings.post_trigger_s
        lookback = max(self.auto_lookback_s, 2 * settings.averages * span)
        t_lo = max(self.run_start_s + settings.pre_trigger_s, t_hi - lookback)
        triggers: list[float] = []
        if t_hi > t_lo:
            step = self._search_step(settings)
            n = min(math.floor((t_hi - t_lo) / step) + 1, _RUN_SEARCH_POINTS)
            t_grid = t_hi - step * np.arange(n - 1, -1, -1, dtype=np.float64)
            values = self._trigger_signal(settings)(t_grid)
            hits = crossings(values, self._level(settings), settings.trigger_slope)
            for j in hits[::-1]:
                frac = (self._level(settings) - values[j]) / (values[j + 1] - values[j])
                t_edge = float(t_grid[j] + frac * step)
                if not triggers or t_edge <= triggers[-1] - span:
                    triggers.append(t_edge)
                if len(triggers) == settings.averages:
                    break
        if triggers:
            key = tuple(sorted(triggers))
            self.run_status = "TD"
        elif sweep == "AUTO":
            key = (now - settings.post_trigger_s,)
            self.run_status = "AUTO"
        else:
            self.run_status = "WAIT"
            return
        if self.last is None or self.last.triggers_s != key or self.last.settings != settings:
            self.last = self._new_acquisition(settings, key, triggered=bool(triggers))

    # -- waveform synthesis --------------------------------------------------------------------

    def _noise(self, acq: Acquisition, ch: int, raw: bool, i0: int, i1: int) -> NDArray[np.float64]:
        """Standard normal noise for points i0..i1-1, independent of how reads are chunked."""
        b0, b1 = i0 // _NOISE_BLOCK, (i1 - 1) // _NOISE_BLOCK + 1
        blocks = [
            np.random.default_rng([acq.seed, ch, int(raw), b]).standard_normal(_NOISE_BLOCK)
            for b in range(b0, b1)
        ]
        start = i0 - b0 * _NOISE_BLOCK
        return np.concatenate(blocks)[start : start + (i1 - i0)]

    def _analog(
        self, acq: Acquisition, index: int, rel_s: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Noise-free displayed volts at times `rel_s` after each trigger, averaged over sweeps."""
        s = acq.settings
        ch = s.channels[index - 1]
        kind = s.acquire_type
        factor = s.oversampling
        if kind in ("HRESolution", "PEAK") and factor > 1:
            n_sub = min(factor, _SUB_SAMPLES)
            width = factor / s.max_sample_rate
            sub = ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * width
        else:
            sub = np.zeros(1)
        total = np.zeros_like(rel_s)
        screen_xinc, screen_x0, _ = s.view(raw=False)
        screen_rel = screen_x0 + screen_xinc * np.arange(SCREEN_POINTS, dtype=np.float64)
        for t_trig in acq.triggers_s:
            grid = t_trig + rel_s[:, None] + sub[None, :]
            values = self._displayed(index, ch, grid.ravel()).reshape(grid.shape)
            if kind == "PEAK" and sub.size > 1:
                is_max = (np.arange(rel_s.size) % 2).astype(bool)
                sample = np.where(is_max, values.max(axis=1), values.min(axis=1))
            else:
                sample = values.mean(axis=1)
            if ch.coupling == "AC":
                sample = sample - float(np.mean(self._displayed(index, ch, t_trig + screen_rel)))
            total += sample
        return total / len(acq.triggers_s)

    def codes(self, acq: Acquisition, index: int, raw: bool, i0: int, i1: int) -> NDArray[np.uint8]:
        """ADC codes of channel `index`, points i0..i1-1 (0-based) of the screen or memory view."""
        key = (index, raw, i0, i1)
        cached = acq._cache.get(key)
        if cached is not None:
            return cached
        s = acq.settings
        ch = s.channels[index - 1]
        xinc, x0, _ = s.view(raw)
        rel = x0 + xinc * np.arange(i0, i1, dtype=np.float64)
        volts = self._analog(acq, index, rel)
        sigma_v = self.adc_noise_v * ch.probe / math.sqrt(len(acq.triggers_s))
        if s.acquire_type == "HRESolution":
            sigma_v /= math.sqrt(s.oversampling)
        if sigma_v > 0.0 and ch.coupling != "GND":
            volts = volts + sigma_v * self._noise(acq, index, raw, i0, i1)
        codes = np.rint(volts / ch.yincrement_v + ch.yorigin + Y_REFERENCE)
        out = np.clip(codes, CODE_MIN, CODE_MAX).astype(np.uint8)
        if len(acq._cache) < 64:
            acq._cache[key] = out
        return out
