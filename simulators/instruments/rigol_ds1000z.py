"""Emulator of the Rigol DS1000Z digital oscilloscope (DS1054Z: 4 channels, LAN raw socket 5555).

Protocol subset, from the MSO1000Z/DS1000Z programming guide:

    *IDN? → `RIGOL TECHNOLOGIES,DS1054Z,DS1ZA<serial>,00.04.04.SP3`; *RST *CLS *OPC? *WAI ...
    :SYSTem:ERRor[:NEXT]?                          `-113,"Undefined header"`, `0,"No error"`
    :RUN  :STOP  :SINGle
    :CHANnel<n>:DISPlay|SCALe|OFFSet|COUPling|PROBe|BWLimit   and ?
    :TIMebase[:MAIN]:SCALe|OFFSet                  and ?
    :ACQuire:TYPE NORMal|AVERages|PEAK|HRESolution, :ACQuire:AVERages <2^n>,
    :ACQuire:MDEPth AUTO|<points>                  and ?;   :ACQuire:SRATe?
    :TRIGger:MODE EDGE, :TRIGger:SWEep AUTO|NORMal|SINGle, :TRIGger:STATus?
    :TRIGger:EDGe:SOURce CHANnel<n>|EXT|AC, :TRIGger:EDGe:SLOPe POSitive|NEGative|RFALl,
    :TRIGger:EDGe:LEVel                            and ?
    :WAVeform:SOURce|MODE|FORMat|STARt|STOP        and ?
    :WAVeform:DATA?  :WAVeform:PREamble?  :WAVeform:XINCrement?|XORigin?|XREFerence?|
                     YINCrement?|YORigin?|YREFerence?

Numbers are sent as the instrument sends them (`1.000000e-06`, C `%e`); enumerations in their
short upper-case form (`CHAN1`, `NORM`, `POS`). :WAVeform:DATA? answers with a `#9` TMC block
followed by the terminator `\\n`: BYTE one code per point, WORD two bytes per point (low byte the
code, high byte 0, as the guide says), ASCii the voltages as comma-separated `%e` values.
PREamble is `format,type,points,count,xincrement,xorigin,xreference,yincrement,yorigin,
yreference` with format 0/1/2 = BYTE/WORD/ASC and type 0/1/2 = NORMal/MAXimum/RAW.

Vertical model: 8-bit ADC codes, 25 codes per division, YREFerence 127 at screen centre,
YINCrement = scale/25, YORigin = round(offset/YINCrement); the channel offset is applied in
whole codes, so value = (code − YORigin − YREFerence) × YINCrement holds exactly for the data.
Inputs beyond the ADC range (±127/25 divisions around the centre, a little more than the
screen's ±4) saturate at codes 0 and 255.

Signal source (twin-facing, never reachable over SCPI): `source(channel, times_s)` gives the
volts at the BNC input of channel 1..4 (channel 0: the EXT trigger input) at emulator-clock
times; the displayed voltage is probe ratio × BNC volts. ADC noise: `adc_noise_v` (input-
referred, volts at the BNC) drawn from the seeded generator, independent per sample and per
acquisition; averaging N acquisitions divides it by √N, high resolution by √(oversampling
factor). See `RigolDs1000zEmulator` for the trigger and timing model.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from physlearn.drivers.rigol_ds1000z import (
    CODES_PER_DIVISION,
    H_DIVISIONS,
    SCREEN_POINTS,
    V_DIVISIONS,
)
from physlearn.simulators.clock import TimeSource
from physlearn.simulators.instruments.scpi import (
    CommandContext,
    ScpiCommandError,
    ScpiInstrument,
    format_block,
    format_bool,
    format_nr1,
    scpi,
)

logger = logging.getLogger(__name__)

SignalSource = Callable[[int, NDArray[np.float64]], NDArray[np.float64]]

N_CHANNELS = 4
Y_REFERENCE = 127
CODE_MIN, CODE_MAX = 0, 255
PROBE_RATIOS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
PROBE_RATIOS += (20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
CHANNEL_SCALE_RANGE_V = (1e-3, 10.0)  # per division, at probe ratio 1
TIMEBASE_SCALE_RANGE_S = (5e-9, 50.0)
TRIGGER_EXT_RANGE_V = 5.0
#: Maximum sample rate in Sa/s by number of enabled channels (3 and 4 share a rate).
MAX_SAMPLE_RATE = {1: 1e9, 2: 5e8, 3: 2.5e8, 4: 2.5e8}
#: Selectable memory depths by number of enabled channels (24 Mpts with the memory option).
MEMORY_DEPTHS = {
    1: (12_000, 120_000, 1_200_000, 12_000_000, 24_000_000),
    2: (6_000, 60_000, 600_000, 6_000_000, 12_000_000),
    3: (3_000, 30_000, 300_000, 3_000_000, 6_000_000),
    4: (3_000, 30_000, 300_000, 3_000_000, 6_000_000),
}
#: Points one :WAVeform:DATA? returns at most, by format.
MAX_READ_POINTS = {"BYTE": 250_000, "WORD": 125_000, "ASCii": 15_625}

_NOISE_BLOCK = 4096
_SUB_SAMPLES = 8  # evaluation points of one high-res / peak-detect sample
_SEARCH_CHUNK = 65_536
_MAX_SEARCH_POINTS = 1 << 25  # per armed :SINGle
_RUN_SEARCH_POINTS = 1 << 20  # per RUN-mode look-back
_VOLT_UNITS = {"V": 1.0, "MV": 1e-3}
_TIME_UNITS = {"S": 1.0, "MS": 1e-3, "US": 1e-6, "NS": 1e-9}
_CHANNEL_WORD = re.compile(r"CHAN(?:NEL)?([1-9])")


def _steps_125(lo: float, hi: float) -> list[float]:
    out = []
    for exponent in range(-10, 5):
        for mantissa in (1.0, 2.0, 5.0):
            value = float(f"{mantissa:g}e{exponent}")
            if lo * (1 - 1e-9) <= value <= hi * (1 + 1e-9):
                out.append(value)
    return out


def nearest_125(value: float, lo: float, hi: float) -> float:
    """The 1-2-5 step in [lo, hi] nearest to `value` on a log scale (coarse knob setting)."""
    steps = _steps_125(lo, hi)
    return min(steps, key=lambda s: abs(math.log(value / s)))


def format_real(value: float) -> str:
    """A real number as the DS1000Z sends it (C `%e`): `1.000000e-06`, `-2.500000e+00`."""
    return f"{value:e}"


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


class _EdgeSearch:
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
    search: _EdgeSearch
    triggers: list[float] = field(default_factory=list)


class RigolDs1000zEmulator(ScpiInstrument):
    """Rigol DS1054Z emulator: 4 channels, 8-bit ADC, edge trigger, single/run/stop.

    Args:
        clock: emulator time source (never wall time directly).
        source: volts at the BNC input, `source(channel, times_s)`; channel 1..4, or 0 for the
            EXT trigger input; times are emulator-clock seconds (arrays of any length). Must be
            vectorised and deterministic. Default: 0 V everywhere.
        rng: seeded generator for the ADC noise (one draw per acquisition, a seed).
        adc_noise_v: ADC noise σ in volts referred to the BNC input.
        serial: digits after `DS1ZA` in *IDN?.
        line_frequency_hz: mains frequency of the AC-line trigger source.
        trigger_step_s: coarsest sampling step of the trigger search (the step is
            min(timebase/100, this)); crossings are interpolated linearly between samples.
        auto_lookback_s: how far RUN mode looks back for the most recent trigger edge.

    Trigger and timing: :SINGle arms at the present clock time t_a; the trigger instant is the
    first crossing (slope, level) of the trigger source at or after t_a + pre-trigger time
    (the memory before the trigger point must fill first); the acquisition completes at trigger
    + post-trigger time (right screen edge). Until then :TRIGger:STATus? answers WAIT and
    :WAVeform:DATA? the previous acquisition; afterwards STOP. AVERages with N: N successive
    trigger instants, each searched from the end of the previous sweep; the data are the mean of
    the N sweeps. In RUN mode the data come from the most recent complete sweep (AUTO sweep
    without an edge: an untriggered sweep ending now; status AUTO). All channels of one
    acquisition share its trigger instants.
    """

    manufacturer = "RIGOL TECHNOLOGIES"
    model = "DS1054Z"
    firmware = "00.04.04.SP3"

    def __init__(
        self,
        clock: TimeSource | None = None,
        *,
        source: SignalSource | None = None,
        rng: np.random.Generator | None = None,
        adc_noise_v: float = 0.0,
        serial: str = "000000001",
        line_frequency_hz: float = 50.0,
        trigger_step_s: float = 1e-6,
        auto_lookback_s: float = 0.05,
    ) -> None:
        if not (adc_noise_v >= 0.0 and math.isfinite(adc_noise_v)):
            raise ValueError(f"adc_noise_v must be finite and >= 0, got {adc_noise_v!r}")
        if not (trigger_step_s > 0.0 and math.isfinite(trigger_step_s)):
            raise ValueError(f"trigger_step_s must be finite and > 0, got {trigger_step_s!r}")
        self.source: SignalSource = source if source is not None else _zero_source
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.adc_noise_v = float(adc_noise_v)
        self.line_frequency_hz = float(line_frequency_hz)
        self.trigger_step_s = float(trigger_step_s)
        self.auto_lookback_s = float(auto_lookback_s)
        self.channels: list[ChannelState] = []
        self._invalid: dict[str, int] = {"scale": 0, "data": 0}
        self._invalid_value = math.nan
        super().__init__(clock, serial=f"DS1ZA{serial}")

    # -- state ---------------------------------------------------------------------------------

    def reset_state(self) -> None:
        """*RST: CH1 on (others off), 1 V/div, probe 10×, DC; 1 µs/div; running, AUTO sweep."""
        self.channels = [ChannelState(display=(i == 0)) for i in range(N_CHANNELS)]
        self.timebase_scale_s = 1e-6
        self.timebase_offset_s = 0.0
        self.acquire_type = "NORMal"
        self.averages = 2
        self.memory_depth: int | None = None
        self.trigger_source = 1
        self.trigger_level_v = 0.0
        self.trigger_slope = "POSitive"
        self.sweep = "AUTO"
        self.wave_source = 1
        self.wave_mode = "NORMal"
        self.wave_format = "BYTE"
        self.wave_start = 1
        self.wave_stop = SCREEN_POINTS
        self.state = "RUN"  # RUN, STOP or SINGLE (armed, waiting)
        self.run_start_s = self.clock.now()
        self.armed: _Armed | None = None
        self.last: Acquisition | None = None
        self._run_status = "AUTO"

    def inject_invalid_readings(
        self, count: int = 1, value: float = math.nan, *, scale: bool = True, data: bool = True
    ) -> None:
        """Fault hook: corrupt the next `count` numeric waveform replies.

        `scale`: :WAVeform:PREamble? (its YINCrement field) and :WAVeform:YINCrement? report
        `value`; `data`: every point of an ASCii :WAVeform:DATA? reads `value`. The default NaN
        is sent as `nan` (C `%e`); 9.9E37 is the DS1000Z's own "invalid" marker. A driver must
        refuse such a reading, naming the instrument and channel, never pass it on.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count!r}")
        with self._lock:
            self._invalid = {"scale": count if scale else 0, "data": count if data else 0}
            self._invalid_value = float(value)

    def _take_invalid(self, kind: str) -> bool:
        if self._invalid[kind] > 0:
            self._invalid[kind] -= 1
            return True
        return False

    def settings(self) -> Settings:
        """The present settings as an immutable snapshot."""
        return Settings(
            channels=tuple(self.channels),
            timebase_scale_s=self.timebase_scale_s,
            timebase_offset_s=self.timebase_offset_s,
            acquire_type=self.acquire_type,
            averages=self.averages if self.acquire_type == "AVERages" else 1,
            memory_depth=self.memory_depth,
            trigger_source=self.trigger_source,
            trigger_level_v=self.trigger_level_v,
            trigger_slope=self.trigger_slope,
        )

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

    def _arm(self) -> None:
        settings = self.settings()
        t0 = self.clock.now() + settings.pre_trigger_s
        self.armed = _Armed(settings, self._new_search(settings, t0))
        self.state = "SINGLE"
        logger.debug("DS1000Z emulator: armed at t=%s s", self.clock.now())

    def _new_search(self, settings: Settings, t0_s: float) -> _EdgeSearch:
        return _EdgeSearch(
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

    def _update(self) -> None:
        """Bring the acquisition state up to the present clock time."""
        now = self.clock.now()
        if self.state == "SINGLE" and self.armed is not None:
            armed = self.armed
        else:
            if self.state == "RUN":
                self._update_run(now)
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

    def _update_run(self, now: float) -> None:
        settings = self.settings()
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
            self._run_status = "TD"
        elif self.sweep == "AUTO":
            key = (now - settings.post_trigger_s,)
            self._run_status = "AUTO"
        else:
            self._run_status = "WAIT"
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

    # -- twin-side API (not reachable through the protocol) ------------------------------------

    def last_acquisition(self) -> Acquisition | None:
        """The acquisition :WAVeform:DATA? reads now (after bringing time up to date)."""
        with self._lock:
            self._update()
            return self.last

    # -- protocol: run control -----------------------------------------------------------------

    @scpi("RUN", params=(0, 0))
    def _run(self, ctx: CommandContext) -> None:
        self._update()
        if self.sweep == "SINGle":
            self._arm()
            return
        self.state = "RUN"
        self.armed = None
        self.run_start_s = self.clock.now()

    @scpi("STOP", params=(0, 0))
    def _stop(self, ctx: CommandContext) -> None:
        self._update()
        self.state = "STOP"
        self.armed = None

    @scpi("SINGle", params=(0, 0))
    def _single(self, ctx: CommandContext) -> None:
        self._update()
        self.sweep = "SINGle"
        self._arm()

    @scpi("TRIGger:STATus?")
    def _trig_status(self, ctx: CommandContext) -> str:
        self._update()
        if self.state == "SINGLE":
            return "WAIT"
        if self.state == "STOP":
            return "STOP"
        return self._run_status

    @scpi("TRIGger:SWEep")
    def _sweep(self, ctx: CommandContext) -> None:
        self._update()
        self.sweep = ctx.choice(0, ("AUTO", "NORMal", "SINGle"))
        if self.sweep == "SINGle" and self.state == "RUN":
            self._arm()

    @scpi("TRIGger:SWEep?")
    def _sweep_q(self, ctx: CommandContext) -> str:
        return {"AUTO": "AUTO", "NORMal": "NORM", "SINGle": "SING"}[self.sweep]

    @scpi("TRIGger:MODE")
    def _trig_mode(self, ctx: CommandContext) -> None:
        mode = ctx.choice(0, ("EDGE", "PULSe", "RUNT", "WIND", "SLOPe", "NEDGe", "PATTern"))
        if mode != "EDGE":
            raise ScpiCommandError(-224, f"{mode.upper()} trigger is not emulated")

    @scpi("TRIGger:MODE?")
    def _trig_mode_q(self, ctx: CommandContext) -> str:
        return "EDGE"

    @scpi("TRIGger:EDGe:SOURce")
    def _trig_source(self, ctx: CommandContext) -> None:
        tok = ctx.token(0)
        if tok.kind != "word":
            raise ScpiCommandError(-104)
        if tok.text in ("EXT", "AC"):
            self.trigger_source = 0 if tok.text == "EXT" else -1
            return
        self.trigger_source = _channel_word(tok.text)

    @scpi("TRIGger:EDGe:SOURce?")
    def _trig_source_q(self, ctx: CommandContext) -> str:
        return {0: "EXT", -1: "AC"}.get(self.trigger_source, f"CHAN{self.trigger_source}")

    @scpi("TRIGger:EDGe:SLOPe")
    def _trig_slope(self, ctx: CommandContext) -> None:
        self.trigger_slope = ctx.choice(0, ("POSitive", "NEGative", "RFALl"))

    @scpi("TRIGger:EDGe:SLOPe?")
    def _trig_slope_q(self, ctx: CommandContext) -> str:
        return {"POSitive": "POS", "NEGative": "NEG", "RFALl": "RFAL"}[self.trigger_slope]

    def _level_range(self) -> tuple[float, float]:
        if self.trigger_source <= 0:
            return -TRIGGER_EXT_RANGE_V, TRIGGER_EXT_RANGE_V
        ch = self.channels[self.trigger_source - 1]
        half = V_DIVISIONS / 2 + 1
        return -half * ch.scale_v - ch.offset_v, half * ch.scale_v - ch.offset_v

    @scpi("TRIGger:EDGe:LEVel")
    def _trig_level(self, ctx: CommandContext) -> None:
        lo, hi = self._level_range()
        self.trigger_level_v = ctx.number(0, minimum=lo, maximum=hi, units=_VOLT_UNITS)

    @scpi("TRIGger:EDGe:LEVel?")
    def _trig_level_q(self, ctx: CommandContext) -> str:
        return format_real(self.trigger_level_v)

    # -- protocol: channels --------------------------------------------------------------------

    def _ch(self, ctx: CommandContext) -> int:
        return ctx.suffix("n", maximum=N_CHANNELS)

    def _set_ch(self, index: int, **changes: object) -> None:
        self.channels[index - 1] = replace(self.channels[index - 1], **changes)  # type: ignore[arg-type]

    @staticmethod
    def _offset_limit(scale_v: float, probe: float) -> float:
        return (100.0 if scale_v / probe >= 0.5 else 2.0) * probe

    @scpi("CHANnel<n>:DISPlay")
    def _ch_display(self, ctx: CommandContext) -> None:
        self._set_ch(self._ch(ctx), display=ctx.boolean(0))

    @scpi("CHANnel<n>:DISPlay?")
    def _ch_display_q(self, ctx: CommandContext) -> str:
        return format_bool(self.channels[self._ch(ctx) - 1].display)

    @scpi("CHANnel<n>:SCALe")
    def _ch_scale(self, ctx: CommandContext) -> None:
        index = self._ch(ctx)
        ch = self.channels[index - 1]
        lo, hi = (v * ch.probe for v in CHANNEL_SCALE_RANGE_V)
        scale = nearest_125(ctx.number(0, minimum=lo, maximum=hi, units=_VOLT_UNITS), lo, hi)
        limit = self._offset_limit(scale, ch.probe)
        offset = min(max(ch.offset_v, -limit), limit)
        self._set_ch(index, scale_v=scale, offset_v=offset)

    @scpi("CHANnel<n>:SCALe?")
    def _ch_scale_q(self, ctx: CommandContext) -> str:
        return format_real(self.channels[self._ch(ctx) - 1].scale_v)

    @scpi("CHANnel<n>:OFFSet")
    def _ch_offset(self, ctx: CommandContext) -> None:
        index = self._ch(ctx)
        ch = self.channels[index - 1]
        limit = self._offset_limit(ch.scale_v, ch.probe)
        value = ctx.number(0, minimum=-limit, maximum=limit, units=_VOLT_UNITS)
        self._set_ch(index, offset_v=value)

    @scpi("CHANnel<n>:OFFSet?")
    def _ch_offset_q(self, ctx: CommandContext) -> str:
        return format_real(self.channels[self._ch(ctx) - 1].offset_v)

    @scpi("CHANnel<n>:COUPling")
    def _ch_coupling(self, ctx: CommandContext) -> None:
        self._set_ch(self._ch(ctx), coupling=ctx.choice(0, ("AC", "DC", "GND")))

    @scpi("CHANnel<n>:COUPling?")
    def _ch_coupling_q(self, ctx: CommandContext) -> str:
        return self.channels[self._ch(ctx) - 1].coupling

    @scpi("CHANnel<n>:PROBe")
    def _ch_probe(self, ctx: CommandContext) -> None:
        index = self._ch(ctx)
        value = ctx.number(0, minimum=PROBE_RATIOS[0], maximum=PROBE_RATIOS[-1])
        match = [p for p in PROBE_RATIOS if math.isclose(p, value, rel_tol=1e-9)]
        if not match:
            raise ScpiCommandError(-224)
        ch = self.channels[index - 1]
        ratio = match[0] / ch.probe  # the displayed scale and offset follow the probe ratio
        self._set_ch(
            index, probe=match[0], scale_v=ch.scale_v * ratio, offset_v=ch.offset_v * ratio
        )

    @scpi("CHANnel<n>:PROBe?")
    def _ch_probe_q(self, ctx: CommandContext) -> str:
        return format_real(self.channels[self._ch(ctx) - 1].probe)

    @scpi("CHANnel<n>:BWLimit")
    def _ch_bwlimit(self, ctx: CommandContext) -> None:
        index = self._ch(ctx)
        tok = ctx.token(0)  # `20M` tokenises as the number 20 with the suffix M
        if tok.kind == "number" and tok.number == 20.0 and tok.unit == "M":
            self._set_ch(index, bw_limit=True)
        else:
            ctx.choice(0, ("OFF",))
            self._set_ch(index, bw_limit=False)

    @scpi("CHANnel<n>:BWLimit?")
    def _ch_bwlimit_q(self, ctx: CommandContext) -> str:
        return "20M" if self.channels[self._ch(ctx) - 1].bw_limit else "OFF"

    # -- protocol: timebase and acquisition ----------------------------------------------------

    @scpi("TIMebase[:MAIN]:SCALe")
    def _tb_scale(self, ctx: CommandContext) -> None:
        lo, hi = TIMEBASE_SCALE_RANGE_S
        value = ctx.number(0, minimum=lo, maximum=hi, units=_TIME_UNITS)
        self.timebase_scale_s = nearest_125(value, lo, hi)
        lo_off = -H_DIVISIONS / 2 * self.timebase_scale_s
        self.timebase_offset_s = max(self.timebase_offset_s, lo_off)

    @scpi("TIMebase[:MAIN]:SCALe?")
    def _tb_scale_q(self, ctx: CommandContext) -> str:
        return format_real(self.timebase_scale_s)

    @scpi("TIMebase[:MAIN]:OFFSet")
    def _tb_offset(self, ctx: CommandContext) -> None:
        lo = -H_DIVISIONS / 2 * self.timebase_scale_s
        hi = 1.0 if self.timebase_scale_s < 0.2 else 5000.0
        self.timebase_offset_s = ctx.number(0, minimum=lo, maximum=hi, units=_TIME_UNITS)

    @scpi("TIMebase[:MAIN]:OFFSet?")
    def _tb_offset_q(self, ctx: CommandContext) -> str:
        return format_real(self.timebase_offset_s)

    @scpi("ACQuire:TYPE")
    def _acq_type(self, ctx: CommandContext) -> None:
        self.acquire_type = ctx.choice(0, ("NORMal", "AVERages", "PEAK", "HRESolution"))

    @scpi("ACQuire:TYPE?")
    def _acq_type_q(self, ctx: CommandContext) -> str:
        return {"NORMal": "NORM", "AVERages": "AVER", "PEAK": "PEAK", "HRESolution": "HRES"}[
            self.acquire_type
        ]

    @scpi("ACQuire:AVERages")
    def _acq_averages(self, ctx: CommandContext) -> None:
        value = ctx.integer(0, minimum=2, maximum=1024)
        if value & (value - 1):
            raise ScpiCommandError(-224, "the number of averages is a power of 2")
        self.averages = value

    @scpi("ACQuire:AVERages?")
    def _acq_averages_q(self, ctx: CommandContext) -> str:
        return format_nr1(self.averages)

    @scpi("ACQuire:MDEPth")
    def _acq_mdepth(self, ctx: CommandContext) -> None:
        tok = ctx.token(0)
        if tok.kind == "word" and tok.text == "AUTO":
            self.memory_depth = None
            return
        value = ctx.integer(0, minimum=1, maximum=24_000_000)
        if value not in MEMORY_DEPTHS[self.settings().enabled]:
            raise ScpiCommandError(-224, "memory depth not available with these channels")
        self.memory_depth = value

    @scpi("ACQuire:MDEPth?")
    def _acq_mdepth_q(self, ctx: CommandContext) -> str:
        return "AUTO" if self.memory_depth is None else format_nr1(self.memory_depth)

    @scpi("ACQuire:SRATe?")
    def _acq_srate_q(self, ctx: CommandContext) -> str:
        return format_real(self.settings().sample_rate)

    # -- protocol: waveform readout ------------------------------------------------------------

    @scpi("WAVeform:SOURce")
    def _wav_source(self, ctx: CommandContext) -> None:
        tok = ctx.token(0)
        if tok.kind != "word":
            raise ScpiCommandError(-104)
        self.wave_source = _channel_word(tok.text)

    @scpi("WAVeform:SOURce?")
    def _wav_source_q(self, ctx: CommandContext) -> str:
        return f"CHAN{self.wave_source}"

    @scpi("WAVeform:MODE")
    def _wav_mode(self, ctx: CommandContext) -> None:
        self.wave_mode = ctx.choice(0, ("NORMal", "MAXimum", "RAW"))

    @scpi("WAVeform:MODE?")
    def _wav_mode_q(self, ctx: CommandContext) -> str:
        return {"NORMal": "NORM", "MAXimum": "MAX", "RAW": "RAW"}[self.wave_mode]

    @scpi("WAVeform:FORMat")
    def _wav_format(self, ctx: CommandContext) -> None:
        self.wave_format = ctx.choice(0, ("WORD", "BYTE", "ASCii"))

    @scpi("WAVeform:FORMat?")
    def _wav_format_q(self, ctx: CommandContext) -> str:
        return {"WORD": "WORD", "BYTE": "BYTE", "ASCii": "ASC"}[self.wave_format]

    def _raw_view(self) -> bool:
        if self.wave_mode == "MAXimum":
            return self.state != "RUN"
        return self.wave_mode == "RAW"

    def _view_points(self) -> int:
        acq_settings = self.last.settings if self.last is not None else self.settings()
        return acq_settings.view(self._raw_view())[2]

    @scpi("WAVeform:STARt")
    def _wav_start(self, ctx: CommandContext) -> None:
        self._update()
        self.wave_start = ctx.integer(0, minimum=1, maximum=self._view_points())

    @scpi("WAVeform:STARt?")
    def _wav_start_q(self, ctx: CommandContext) -> str:
        return format_nr1(self.wave_start)

    @scpi("WAVeform:STOP")
    def _wav_stop(self, ctx: CommandContext) -> None:
        self._update()
        self.wave_stop = ctx.integer(0, minimum=1, maximum=self._view_points())

    @scpi("WAVeform:STOP?")
    def _wav_stop_q(self, ctx: CommandContext) -> str:
        return format_nr1(self.wave_stop)

    def _readout(self) -> tuple[Settings, bool]:
        self._update()
        settings = self.last.settings if self.last is not None else self.settings()
        return settings, self._raw_view()

    @scpi("WAVeform:DATA?")
    def _wav_data(self, ctx: CommandContext) -> bytes:
        settings, raw = self._readout()
        acq = self.last
        index = self.wave_source
        if raw and self.state == "RUN":
            problem = "memory data can only be read while stopped"
        elif acq is None:
            problem = "no acquisition yet"
        elif not settings.channels[index - 1].display:
            problem = f"CHAN{index} was off during the acquisition"
        else:
            problem = ""
        if problem or acq is None:
            self.push_error(-221, problem)
            return format_block(b"", 9)
        points = settings.view(raw)[2]
        i0 = min(self.wave_start, points) - 1
        i1 = min(self.wave_stop, points, i0 + MAX_READ_POINTS[self.wave_format])
        if i1 <= i0:
            self.push_error(-221, "STARt is after STOP")
            return format_block(b"", 9)
        codes = self.codes(acq, index, raw, i0, i1)
        if self.wave_format == "BYTE":
            payload = codes.tobytes()
        elif self.wave_format == "WORD":
            payload = codes.astype("<u2").tobytes()
        else:
            ch = settings.channels[index - 1]
            volts = (codes.astype(np.float64) - ch.yorigin - Y_REFERENCE) * ch.yincrement_v
            if self._take_invalid("data"):
                volts = np.full(volts.shape, self._invalid_value)
            payload = ",".join(format_real(v) for v in volts.tolist()).encode("ascii")
        return format_block(payload, 9)

    @scpi("WAVeform:PREamble?")
    def _wav_preamble(self, ctx: CommandContext) -> str:
        settings, raw = self._readout()
        ch = settings.channels[self.wave_source - 1]
        xinc, x0, points = settings.view(raw)
        fields = [
            format_nr1({"BYTE": 0, "WORD": 1, "ASCii": 2}[self.wave_format]),
            format_nr1({"NORMal": 0, "MAXimum": 1, "RAW": 2}[self.wave_mode]),
            format_nr1(points),
            format_nr1(settings.averages),
            format_real(xinc),
            format_real(x0),
            "0",
            format_real(self._invalid_value if self._take_invalid("scale") else ch.yincrement_v),
            format_nr1(ch.yorigin),
            format_nr1(Y_REFERENCE),
        ]
        return ",".join(fields)

    @scpi("WAVeform:XINCrement?")
    def _wav_xinc(self, ctx: CommandContext) -> str:
        settings, raw = self._readout()
        return format_real(settings.view(raw)[0])

    @scpi("WAVeform:XORigin?")
    def _wav_xorigin(self, ctx: CommandContext) -> str:
        settings, raw = self._readout()
        return format_real(settings.view(raw)[1])

    @scpi("WAVeform:XREFerence?")
    def _wav_xref(self, ctx: CommandContext) -> str:
        return "0"

    @scpi("WAVeform:YINCrement?")
    def _wav_yinc(self, ctx: CommandContext) -> str:
        settings, _ = self._readout()
        if self._take_invalid("scale"):
            return format_real(self._invalid_value)
        return format_real(settings.channels[self.wave_source - 1].yincrement_v)

    @scpi("WAVeform:YORigin?")
    def _wav_yorigin(self, ctx: CommandContext) -> str:
        settings, _ = self._readout()
        return format_nr1(settings.channels[self.wave_source - 1].yorigin)

    @scpi("WAVeform:YREFerence?")
    def _wav_yref(self, ctx: CommandContext) -> str:
        return format_nr1(Y_REFERENCE)


def _zero_source(channel: int, t_s: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.zeros_like(t_s, dtype=np.float64)


def _channel_word(text: str) -> int:
    """CHAN<n> / CHANNEL<n> → n (1..4); other character data → -224, bad n → -114."""
    m = _CHANNEL_WORD.fullmatch(text.upper())
    if m is None:
        raise ScpiCommandError(-224)
    index = int(m.group(1))
    if not 1 <= index <= N_CHANNELS:
        raise ScpiCommandError(-114)
    return index
