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

This module holds the command surface; the acquisition engine (trigger search, single/run/stop
state, waveform synthesis) is `rigol_ds1000z_acquisition.AcquisitionEngine`.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from physlearn.drivers.rigol_ds1000z import H_DIVISIONS, SCREEN_POINTS, V_DIVISIONS
from physlearn.simulators.clock import TimeSource
from physlearn.simulators.instruments.rigol_ds1000z_acquisition import (
    MEMORY_DEPTHS,
    Y_REFERENCE,
    Acquisition,
    AcquisitionEngine,
    ChannelState,
    Settings,
    SignalSource,
)
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

N_CHANNELS = 4
PROBE_RATIOS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
PROBE_RATIOS += (20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
CHANNEL_SCALE_RANGE_V = (1e-3, 10.0)  # per division, at probe ratio 1
TIMEBASE_SCALE_RANGE_S = (5e-9, 50.0)
TRIGGER_EXT_RANGE_V = 5.0
#: Points one :WAVeform:DATA? returns at most, by format.
MAX_READ_POINTS = {"BYTE": 250_000, "WORD": 125_000, "ASCii": 15_625}

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
        self.engine = AcquisitionEngine(
            source if source is not None else _zero_source,
            rng if rng is not None else np.random.default_rng(0),
            adc_noise_v=float(adc_noise_v),
            line_frequency_hz=float(line_frequency_hz),
            trigger_step_s=float(trigger_step_s),
            auto_lookback_s=float(auto_lookback_s),
        )
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
        self.engine.reset(self.clock.now())  # running, nothing acquired

    # -- the signal side (twin-facing; the engine holds it) ------------------------------------

    @property
    def source(self) -> SignalSource:
        """Volts at the BNC inputs, `source(channel, times_s)` (channel 0: EXT)."""
        return self.engine.source

    @source.setter
    def source(self, source: SignalSource) -> None:
        self.engine.source = source

    @property
    def rng(self) -> np.random.Generator:
        """The generator of each acquisition's noise seed."""
        return self.engine.rng

    @rng.setter
    def rng(self, rng: np.random.Generator) -> None:
        self.engine.rng = rng

    @property
    def adc_noise_v(self) -> float:
        """ADC noise σ in volts referred to the BNC input."""
        return self.engine.adc_noise_v

    @adc_noise_v.setter
    def adc_noise_v(self, sigma_v: float) -> None:
        self.engine.adc_noise_v = sigma_v

    @property
    def last(self) -> Acquisition | None:
        """The last completed acquisition (as of the last update)."""
        return self.engine.last

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

    # -- acquisition (the engine) --------------------------------------------------------------

    def _arm(self) -> None:
        self.engine.arm(self.settings(), self.clock.now())
        logger.debug("DS1000Z emulator: armed at t=%s s", self.clock.now())

    def _update(self) -> None:
        """Bring the acquisition state up to the present clock time."""
        self.engine.update(self.clock.now(), self.settings, self.sweep)

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
        self.engine.run(self.clock.now())

    @scpi("STOP", params=(0, 0))
    def _stop(self, ctx: CommandContext) -> None:
        self._update()
        self.engine.stop()

    @scpi("SINGle", params=(0, 0))
    def _single(self, ctx: CommandContext) -> None:
        self._update()
        self.sweep = "SINGle"
        self._arm()

    @scpi("TRIGger:STATus?")
    def _trig_status(self, ctx: CommandContext) -> str:
        self._update()
        if self.engine.state == "SINGLE":
            return "WAIT"
        if self.engine.state == "STOP":
            return "STOP"
        return self.engine.run_status

    @scpi("TRIGger:SWEep")
    def _sweep(self, ctx: CommandContext) -> None:
        self._update()
        self.sweep = ctx.choice(0, ("AUTO", "NORMal", "SINGle"))
        if self.sweep == "SINGle" and self.engine.state == "RUN":
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
        self.channels[index - 1] = replace(self.channels[index - 1], **changes)

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
            return self.engine.state != "RUN"
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
        if raw and self.engine.state == "RUN":
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
        codes = self.engine.codes(acq, index, raw, i0, i1)
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
