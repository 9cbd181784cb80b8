"""Emulator of the Keysight (Agilent) 33500B series waveform generator, model 33522B.

Two channels, SCPI over a raw LAN socket (port 5025 on the instrument), LF-terminated in both
directions. Protocol subset, after the 33500B/33600A programming reference:

    [SOURce<ch>:]FUNCtion[:SHAPe] SINusoid|ARBitrary|DC         and ?   (SIN, ARB, DC)
    [SOURce<ch>:]FREQuency[:CW|:FIXed] <Hz>|MIN|MAX|DEF           and ?   (1 µHz resolution)
    [SOURce<ch>:]VOLTage[:LEVel][:IMMediate][:AMPLitude] <Vpp>    and ?   (also FUNC:ARB:PTPeak)
    [SOURce<ch>:]VOLTage[...]:OFFSet <V>                          and ?
    [SOURce<ch>:]VOLTage:UNIT VPP                                 and ?   (VRMS/DBM: not emulated)
    [SOURce<ch>:]PHASe[:ADJust] <deg>  and ?;   [SOURce:]PHASe:SYNChronize
    [SOURce<ch>:]COMBine:FEED CH1|CH2|NONE                        and ?
    [SOURce<ch>:]FUNCtion:ARBitrary <name>|"<name>"                and ?   (quoted name)
    [SOURce<ch>:]FUNCtion:ARBitrary:SRATe|FREQuency|PERiod <x>    and ?;  :POINts?
    [SOURce<ch>:]FUNCtion:ARBitrary:FILTer NORMal|STEP|OFF        and ?
    [SOURce<ch>:]DATA:ARBitrary[:DAC] <name>, <block>|<v>,<v>,...  (float32 / int16 blocks)
    [SOURce<ch>:]DATA:VOLatile:CLEar;  :CATalog?;  :FREE?
    FORMat:BORDer NORMal|SWAPped                                  and ?
    OUTPut<ch>[:STATe] ON|OFF;  OUTPut<ch>:LOAD <Ω>|INF|MIN|MAX|DEF;  OUTPut[<ch>]:SYNC ON|OFF;
    OUTPut:SYNC:SOURce CH1|CH2                                    and the queries
    ROSCillator:SOURce INT|EXT;  ROSCillator:SOURce:CURRent?;  ROSCillator:OUTPut ON|OFF
    *IDN? → `Agilent Technologies,33522B,MY53000042,2.09-1.19-2.00-52-00`
    SYSTem:ERRor? → `+0,"No error"`, `-113,"Undefined header"`, `-222,"Data out of range;value
    clipped to upper limit"`; numbers as `+1.000000000000000E+03`.

Model. The output has a 50 Ω source impedance. The instrument shows (and is programmed in)
the voltage across the load named by OUTPut:LOAD; the emulator stores the open-circuit voltage
(what a high-impedance node input sees), so the displayed value is `emf·R/(R+50 Ω)` (×1 at
INF): at LOAD 50 the real voltage is twice the displayed one, and changing the load changes the
displayed values, not the output. Limits as the hardware: 2 mVpp..20 Vpp and |offset|+peak ≤ 10 V
open circuit (1 mVpp..10 Vpp, ±5 V into 50 Ω); a value out of range is clipped and queued as
-222; an amplitude/offset pair that does not fit changes the other one with -221.

Each channel has a phase accumulator (cycles) running at FREQ (sine) or SRATe/points (arb),
continuous across frequency/sample-rate changes; PHASe:SYNChronize and *RST zero both
accumulators at the same instant. Sine: `offset + amp/2·sin(2π·cycles + PHAS)`. Arb: 16-bit DAC
codes (±32767 full scale = ±amp/2), zero-order hold at SRATe, repeating, PHAS shifting by a
fraction of the arb period. COMBine:FEED adds the other channel's signal to this output.
Output OFF → 0 V. The sync output is high during the first half of each accumulator cycle of
its source channel (rising edge at accumulator zero). The timebase error (internal oscillator or
the external 10 MHz reference) scales every rate. Twin-facing methods (not reachable through the
protocol): `output_voltage`, `sync_output`, `sync_phase_origin_s`, `cycle_rate_hz`,
`set_timebase`.

Not modelled: sine DDS sampling and the analog reconstruction filter (the sine is exact; arbs
play as a zero-order hold for every FUNC:ARB:FILTer setting), amplitude resolution, other
waveform shapes, modulation, sweep, burst, triggers, VRMS/DBM units.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from physlearn.simulators.clock import TimeSource
from physlearn.simulators.instruments.scpi import (
    CommandContext,
    ScpiCommandError,
    ScpiInstrument,
    format_bool,
    format_nr3,
    scpi,
)

logger = logging.getLogger(__name__)

N_CHANNELS = 2
SOURCE_IMPEDANCE_OHM = 50.0
#: Open-circuit limits: |offset| + peak ≤ MAX_EMF_V; amplitude in [MIN_EMF_VPP, MAX_EMF_VPP].
MAX_EMF_V = 10.0
MAX_EMF_VPP = 20.0
MIN_EMF_VPP = 2e-3
MIN_FREQUENCY_HZ = 1e-6
MAX_FREQUENCY_HZ = 30e6
FREQUENCY_RESOLUTION_HZ = 1e-6
MIN_SAMPLE_RATE_HZ = 1e-6
MAX_SAMPLE_RATE_HZ = 250e6
DAC_FULL_SCALE = 32767
MIN_ARB_POINTS = 8
#: Volatile arb memory per channel, in points (1 MSa standard memory).
ARB_MEMORY_POINTS = 1_000_000
MAX_ARB_NAME_LENGTH = 12
MIN_LOAD_OHM = 1.0
MAX_LOAD_OHM = 10e3
DEFAULT_LOAD_OHM = 50.0
#: What the instrument sends for an infinite load (and accepts as INF).
INFINITY_REPLY = 9.9e37
#: Sync output high level into a high-impedance input (TTL-compatible logic level).
SYNC_HIGH_V = 3.0
BUILTIN_ARB = "INT:\\BUILTIN\\EXP_RISE.ARB"
_BUILTIN_POINTS = 8192
_TOLERANCE = 1e-12

_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_FUNCTIONS = ("SINusoid", "SQUare", "TRIangle", "RAMP", "PULSe", "PRBS", "NOISe", "ARBitrary", "DC")
_EMULATED = {"SINusoid": "SIN", "ARBitrary": "ARB", "DC": "DC"}
_VOLT_UNITS = {"V": 1.0, "MV": 1e-3, "VPP": 1.0, "MVPP": 1e-3}
_FREQ_UNITS = {"HZ": 1.0, "KHZ": 1e3, "MHZ": 1e6, "MAHZ": 1e6}
_TIME_UNITS = {"S": 1.0, "MS": 1e-3, "US": 1e-6, "NS": 1e-9}

ERROR_MESSAGES: dict[int, str] = {
    781: "Not enough memory to store new arb waveform; use DATA:VOLatile:CLEar",
    784: "Name of downloaded arb waveform is too long",
    785: "Specified arb waveform does not exist",
}


def _builtin_codes() -> NDArray[np.int16]:
    """EXP_RISE, approximated as an exponential rise from -full scale to +full scale."""
    x = np.arange(_BUILTIN_POINTS) / _BUILTIN_POINTS
    shape = 2.0 * np.expm1(5.0 * x) / np.expm1(5.0) - 1.0
    return np.rint(shape * DAC_FULL_SCALE).astype(np.int16)


def display_factor(load_ohm: float) -> float:
    """Displayed voltage per open-circuit voltage for a load setting (1 for INF)."""
    if math.isinf(load_ohm):
        return 1.0
    return load_ohm / (load_ohm + SOURCE_IMPEDANCE_OHM)


def _nr3(value: float) -> str:
    return format_nr3(value, 15)


@dataclass
class _Channel:
    function: str = "SIN"
    frequency_hz: float = 1e3
    amplitude_emf_vpp: float = 0.2  # 0.1 Vpp displayed into 50 Ω
    offset_emf_v: float = 0.0
    phase_deg: float = 0.0
    load_ohm: float = DEFAULT_LOAD_OHM
    output_on: bool = False
    combine_feed: str = "NONE"
    arb_name: str = BUILTIN_ARB
    sample_rate_hz: float = 40e3
    arb_filter: str = "NORM"
    t_ref_s: float = 0.0
    cycles_at_ref: float = 0.0
    arbs: dict[str, NDArray[np.int16]] = field(default_factory=dict)


class Keysight33500BEmulator(ScpiInstrument):
    """Keysight/Agilent 33522B two-channel function/arbitrary waveform generator."""

    manufacturer = "Agilent Technologies"
    model = "33522B"
    firmware = "2.09-1.19-2.00-52-00"
    error_messages = ERROR_MESSAGES

    def __init__(self, clock: TimeSource | None = None, *, serial: str = "MY53000042") -> None:
        self.channels: list[_Channel] = [_Channel() for _ in range(N_CHANNELS)]
        self._builtin = _builtin_codes()
        self.internal_timebase_error = 0.0
        self.external_reference_present = False
        self.external_reference_error = 0.0
        super().__init__(clock, serial=serial)

    # -- state -------------------------------------------------------------------------------

    def reset_state(self) -> None:
        """*RST: 1 kHz sine, 0.1 Vpp, 0 V, 50 Ω, outputs off; volatile arbs are kept."""
        now = self.clock.now()
        kept = [ch.arbs for ch in self.channels]
        self.channels = [_Channel(t_ref_s=now, arbs=arbs) for arbs in kept]
        self.byte_order = "NORM"
        self.sync_enabled = True
        self.sync_source = 1
        self.reference_source = "INT"
        self.reference_output_enabled = True

    def format_error(self, code: int, message: str) -> str:
        """`+0,"No error"`, `-222,"Data out of range;value clipped to upper limit"`."""
        return f'{code:+d},"{message}"'

    def _timebase_error(self) -> float:
        if self.reference_source == "EXT" and self.external_reference_present:
            return self.external_reference_error
        return self.internal_timebase_error

    def _codes(self, ch: _Channel) -> NDArray[np.int16]:
        if ch.arb_name == BUILTIN_ARB:
            return self._builtin
        return ch.arbs[ch.arb_name]

    def _nominal_rate_hz(self, ch: _Channel) -> float:
        if ch.function == "ARB":
            return ch.sample_rate_hz / len(self._codes(ch))
        return ch.frequency_hz

    def _cycles(self, ch: _Channel, t: NDArray[np.float64]) -> NDArray[np.float64]:
        rate = self._nominal_rate_hz(ch) * (1.0 + self._timebase_error())
        result: NDArray[np.float64] = ch.cycles_at_ref + (t - ch.t_ref_s) * rate
        return result

    def _rebase(self, ch: _Channel) -> None:
        """Restart the accumulator bookkeeping now, phase-continuously (before a rate change)."""
        now = self.clock.now()
        ch.cycles_at_ref = float(self._cycles(ch, np.array(now))) % 1.0
        ch.t_ref_s = now

    # -- twin-side API (not reachable through the protocol) ------------------------------------

    def cycle_rate_hz(self, channel: int) -> float:
        """Accumulator rate of `channel` in Hz (sine frequency or arb repetition rate)."""
        with self._lock:
            ch = self.channels[channel - 1]
            return self._nominal_rate_hz(ch) * (1.0 + self._timebase_error())

    def sync_phase_origin_s(self, channel: int | None = None) -> float:
        """A twin time (s) at which `channel`'s accumulator is zero (default: the sync source).

        The sync output rises at this time plus any whole number of periods; a sine with
        PHASe φ is `offset + amp/2·sin(2π f (t - origin) + φ)`; arb sample 0 starts there.
        """
        with self._lock:
            ch = self.channels[(channel or self.sync_source) - 1]
            rate = self._nominal_rate_hz(ch) * (1.0 + self._timebase_error())
            return ch.t_ref_s - ch.cycles_at_ref / rate

    def set_timebase(
        self,
        *,
        internal_error: float | None = None,
        external_present: bool | None = None,
        external_error: float | None = None,
    ) -> None:
        """Set the fractional frequency errors of the internal oscillator / external reference."""
        with self._lock:
            for ch in self.channels:
                self._rebase(ch)
            if internal_error is not None:
                self.internal_timebase_error = float(internal_error)
            if external_present is not None:
                self.external_reference_present = bool(external_present)
            if external_error is not None:
                self.external_reference_error = float(external_error)

    def _signal_emf(self, index: int, t: NDArray[np.float64]) -> NDArray[np.float64]:
        ch = self.channels[index - 1]
        if ch.function == "DC":
            return np.full(t.shape, ch.offset_emf_v)
        half = ch.amplitude_emf_vpp / 2.0
        if ch.function == "SIN":
            phase = 2.0 * np.pi * self._cycles(ch, t) + math.radians(ch.phase_deg)
            result: NDArray[np.float64] = ch.offset_emf_v + half * np.sin(phase)
            return result
        codes = self._codes(ch)
        n = len(codes)
        rate = ch.sample_rate_hz * (1.0 + self._timebase_error())
        position = (t - ch.t_ref_s) * rate + (ch.cycles_at_ref + ch.phase_deg / 360.0) * n
        index_ = np.floor(position).astype(np.int64) % n
        return ch.offset_emf_v + half * (codes[index_].astype(np.float64) / DAC_FULL_SCALE)

    def output_voltage(self, channel: int, t_s: ArrayLike) -> NDArray[np.float64]:
        """Real voltage (V) at output `channel` into a high-impedance input at twin times `t_s`.

        Uses the present settings (evaluate times after the last command). Output off → 0 V.
        """
        if channel not in range(1, N_CHANNELS + 1):
            raise ValueError(f"33522B has channels 1..{N_CHANNELS}, not {channel}")
        with self._lock:
            t = np.asarray(t_s, dtype=np.float64)
            ch = self.channels[channel - 1]
            if not ch.output_on:
                return np.zeros(t.shape)
            v = self._signal_emf(channel, t)
            if ch.combine_feed != "NONE":
                v = v + self._signal_emf(int(ch.combine_feed[-1]), t)
            return v

    def sync_output(self, t_s: ArrayLike) -> NDArray[np.float64]:
        """Sync connector voltage (0 V or SYNC_HIGH_V) at twin times `t_s`."""
        with self._lock:
            t = np.asarray(t_s, dtype=np.float64)
            if not self.sync_enabled:
                return np.zeros(t.shape)
            ch = self.channels[self.sync_source - 1]
            high = np.mod(self._cycles(ch, t), 1.0) < 0.5
            return np.where(high, SYNC_HIGH_V, 0.0)

    # -- helpers -------------------------------------------------------------------------------

    def _channel(self, ctx: CommandContext) -> _Channel:
        return self.channels[ctx.suffix("ch", maximum=N_CHANNELS) - 1]

    def _clipped(
        self,
        ctx: CommandContext,
        index: int,
        low: float,
        high: float,
        *,
        default: float,
        units: dict[str, float] | None = None,
    ) -> float:
        """A number clipped into [low, high], queuing -222 as the instrument does."""
        value = ctx.number(
            index, minimum=low, maximum=high, default=default, units=units, check_range=False
        )
        if value > high + _TOLERANCE * abs(high):
            self.push_error(-222, "value clipped to upper limit")
        elif value < low - _TOLERANCE * abs(low):
            self.push_error(-222, "value clipped to lower limit")
        return min(max(value, low), high)

    @staticmethod
    def _peak_emf(ch: _Channel) -> float:
        half = 0.0 if ch.function == "DC" else ch.amplitude_emf_vpp / 2.0
        return abs(ch.offset_emf_v) + half

    def _combined_fits(self) -> bool:
        for ch in self.channels:
            if ch.combine_feed == "NONE":
                continue
            other = self.channels[int(ch.combine_feed[-1]) - 1]
            halves = sum(
                0.0 if c.function == "DC" else c.amplitude_emf_vpp / 2.0 for c in (ch, other)
            )
            if abs(ch.offset_emf_v + other.offset_emf_v) + halves > MAX_EMF_V * (1 + _TOLERANCE):
                return False
        return True

    def _check_combined(self, ch: _Channel, saved: tuple[float, float, str, str]) -> None:
        """Undo a change that makes a combined output exceed the range (-221)."""
        if not self._combined_fits():
            ch.amplitude_emf_vpp, ch.offset_emf_v, ch.function, ch.combine_feed = saved
            raise ScpiCommandError(-221, "combined output would exceed the output range")

    @staticmethod
    def _saved(ch: _Channel) -> tuple[float, float, str, str]:
        return ch.amplitude_emf_vpp, ch.offset_emf_v, ch.function, ch.combine_feed

    # -- function, frequency, amplitude, offset, phase -----------------------------------------

    @scpi("[SOURce<ch>]:FUNCtion[:SHAPe]")
    def _function(self, ctx: CommandContext) -> None:
        ch = self._channel(ctx)
        choice = ctx.choice(0, _FUNCTIONS)
        if choice not in _EMULATED:
            raise ScpiCommandError(-224, f"{choice.upper()} is not emulated")
        saved = self._saved(ch)
        self._rebase(ch)
        was_dc = ch.function == "DC"
        ch.function = _EMULATED[choice]
        if was_dc and ch.function != "DC" and self._peak_emf(ch) > MAX_EMF_V * (1 + _TOLERANCE):
            limit = MAX_EMF_V - ch.amplitude_emf_vpp / 2.0
            ch.offset_emf_v = math.copysign(limit, ch.offset_emf_v)
            self.push_error(-221, "offset changed on exit from DC function")
        self._check_combined(ch, saved)

    @scpi("[SOURce<ch>]:FUNCtion[:SHAPe]?")
    def _function_q(self, ctx: CommandContext) -> str:
        return self._channel(ctx).function

    @scpi("[SOURce<ch>]:FREQuency[:CW]", "[SOURce<ch>]:FREQuency:FIXed")
    def _frequency(self, ctx: CommandContext) -> None:
        ch = self._channel(ctx)
        value = self._clipped(
            ctx, 0, MIN_FREQUENCY_HZ, MAX_FREQUENCY_HZ, default=1e3, units=_FREQ_UNITS
        )
        self._rebase(ch)
        ch.frequency_hz = max(round(value / FREQUENCY_RESOLUTION_HZ), 1) * FREQUENCY_RESOLUTION_HZ

    @scpi("[SOURce<ch>]:FREQuency[:CW]?", "[SOURce<ch>]:FREQuency:FIXed?")
    def _frequency_q(self, ctx: CommandContext) -> str:
        return _nr3(self._channel(ctx).frequency_hz)

    @scpi(
        "[SOURce<ch>]:VOLTage[:LEVel][:IMMediate][:AMPLitude]",
        "[SOURce<ch>]:FUNCtion:ARBitrary:PTPeak",
    )
    def _amplitude(self, ctx: CommandContext) -> None:
        ch = self._channel(ctx)
        k = display_factor(ch.load_ohm)
        value = self._clipped(
            ctx, 0, MIN_EMF_VPP * k, MAX_EMF_VPP * k, default=0.1, units=_VOLT_UNITS
        )
        saved = self._saved(ch)
        ch.amplitude_emf_vpp = value / k
        if ch.function != "DC" and self._peak_emf(ch) > MAX_EMF_V * (1 + _TOLERANCE):
            limit = MAX_EMF_V - ch.amplitude_emf_vpp / 2.0
            ch.offset_emf_v = math.copysign(limit, ch.offset_emf_v)
            self.push_error(-221, "offset changed due to amplitude")
        self._check_combined(ch, saved)

    @scpi(
        "[SOURce<ch>]:VOLTage[:LEVel][:IMMediate][:AMPLitude]?",
        "[SOURce<ch>]:FUNCtion:ARBitrary:PTPeak?",
    )
    def _amplitude_q(self, ctx: CommandContext) -> str:
        ch = self._channel(ctx)
        return _nr3(ch.amplitude_emf_vpp * display_factor(ch.load_ohm))

    @scpi("[SOURce<ch>]:VOLTage[:LEVel][:IMMediate]:OFFSet")
    def _offset(self, ctx: CommandContext) -> None:
        ch = self._channel(ctx)
        k = display_factor(ch.load_ohm)
        limit_emf = MAX_EMF_V if ch.function == "DC" else MAX_EMF_V - MIN_EMF_VPP / 2.0
        value = self._clipped(ctx, 0, -limit_emf * k, limit_emf * k, default=0.0, units=_VOLT_UNITS)
        saved = self._saved(ch)
        ch.offset_emf_v = value / k
        if ch.function != "DC" and self._peak_emf(ch) > MAX_EMF_V * (1 + _TOLERANCE):
            ch.amplitude_emf_vpp = 2.0 * (MAX_EMF_V - abs(ch.offset_emf_v))
            self.push_error(-221, "amplitude changed due to offset")
        self._check_combined(ch, saved)

    @scpi("[SOURce<ch>]:VOLTage[:LEVel][:IMMediate]:OFFSet?")
    def _offset_q(self, ctx: CommandContext) -> str:
        ch = self._channel(ctx)
        return _nr3(ch.offset_emf_v * display_factor(ch.load_ohm))

    @scpi("[SOURce<ch>]:VOLTage:UNIT")
    def _unit(self, ctx: CommandContext) -> None:
        self._channel(ctx)
        unit = ctx.choice(0, ("VPP", "VRMS", "DBM"))
        if unit != "VPP":
            raise ScpiCommandError(-224, f"{unit} is not emulated")

    @scpi("[SOURce<ch>]:VOLTage:UNIT?")
    def _unit_q(self, ctx: CommandContext) -> str:
        self._channel(ctx)
        return "VPP"

    @scpi("[SOURce<ch>]:PHASe[:ADJust]")
    def _phase(self, ctx: CommandContext) -> None:
        ch = self._channel(ctx)
        ch.phase_deg = self._clipped(ctx, 0, -360.0, 360.0, default=0.0, units={"DEG": 1.0})

    @scpi("[SOURce<ch>]:PHASe[:ADJust]?")
    def _phase_q(self, ctx: CommandContext) -> str:
        return _nr3(self._channel(ctx).phase_deg)

    @scpi("[SOURce<ch>]:PHASe:SYNChronize", params=(0, 0))
    def _phase_sync(self, ctx: CommandContext) -> None:
        self._channel(ctx)
        now = self.clock.now()
        for ch in self.channels:
            ch.t_ref_s = now
            ch.cycles_at_ref = 0.0
        logger.debug("33522B emulator: phase accumulators synchronised at t=%s s", now)

    @scpi("[SOURce<ch>]:COMBine:FEED")
    def _combine(self, ctx: CommandContext) -> None:
        index = ctx.suffix("ch", maximum=N_CHANNELS)
        ch = self.channels[index - 1]
        feed = ctx.choice(0, ("CH1", "CH2", "NONE"))
        if feed == f"CH{index}":
            raise ScpiCommandError(-224, "a channel cannot be combined with itself")
        saved = self._saved(ch)
        ch.combine_feed = feed
        self._check_combined(ch, saved)

    @scpi("[SOURce<ch>]:COMBine:FEED?")
    def _combine_q(self, ctx: CommandContext) -> str:
        return self._channel(ctx).combine_feed

    # -- outputs, sync, reference -------------------------------------------------------------

    @scpi("OUTPut<ch>[:STATe]")
    def _output(self, ctx: CommandContext) -> None:
        ch = self._channel(ctx)
        ch.output_on = ctx.boolean(0)

    @scpi("OUTPut<ch>[:STATe]?")
    def _output_q(self, ctx: CommandContext) -> str:
        return format_bool(self._channel(ctx).output_on)

    @scpi("OUTPut<ch>:LOAD", "OUTPut<ch>:IMPedance")
    def _load(self, ctx: CommandContext) -> None:
        ch = self._channel(ctx)
        tok = ctx.token(0)
        if tok.kind == "word" and tok.text in ("INF", "INFINITY"):
            ch.load_ohm = math.inf
            return
        if tok.kind == "number" and not tok.unit and tok.number >= INFINITY_REPLY:
            ch.load_ohm = math.inf
            return
        ch.load_ohm = self._clipped(
            ctx, 0, MIN_LOAD_OHM, MAX_LOAD_OHM, default=DEFAULT_LOAD_OHM, units={"OHM": 1.0}
        )

    @scpi("OUTPut<ch>:LOAD?", "OUTPut<ch>:IMPedance?")
    def _load_q(self, ctx: CommandContext) -> str:
        load = self._channel(ctx).load_ohm
        return _nr3(INFINITY_REPLY if math.isinf(load) else load)

    @scpi("OUTPut<ch>:SYNC[:STATe]")
    def _sync(self, ctx: CommandContext) -> None:
        self._channel(ctx)
        self.sync_enabled = ctx.boolean(0)

    @scpi("OUTPut<ch>:SYNC[:STATe]?")
    def _sync_q(self, ctx: CommandContext) -> str:
        self._channel(ctx)
        return format_bool(self.sync_enabled)

    @scpi("OUTPut:SYNC:SOURce")
    def _sync_source(self, ctx: CommandContext) -> None:
        self.sync_source = int(ctx.choice(0, ("CH1", "CH2"))[-1])

    @scpi("OUTPut:SYNC:SOURce?")
    def _sync_source_q(self, ctx: CommandContext) -> str:
        return f"CH{self.sync_source}"

    @scpi("ROSCillator:SOURce")
    def _rosc(self, ctx: CommandContext) -> None:
        for ch in self.channels:
            self._rebase(ch)
        self.reference_source = ctx.choice(0, ("INTernal", "EXTernal"))[:3].upper()

    @scpi("ROSCillator:SOURce?")
    def _rosc_q(self, ctx: CommandContext) -> str:
        return self.reference_source

    @scpi("ROSCillator:SOURce:CURRent?")
    def _rosc_current_q(self, ctx: CommandContext) -> str:
        used = self.reference_source == "EXT" and self.external_reference_present
        return "EXT" if used else "INT"

    @scpi("ROSCillator:OUTPut[:STATe]")
    def _rosc_out(self, ctx: CommandContext) -> None:
        self.reference_output_enabled = ctx.boolean(0)

    @scpi("ROSCillator:OUTPut[:STATe]?")
    def _rosc_out_q(self, ctx: CommandContext) -> str:
        return format_bool(self.reference_output_enabled)

    @scpi("FORMat:BORDer")
    def _border(self, ctx: CommandContext) -> None:
        self.byte_order = ctx.choice(0, ("NORMal", "SWAPped"))[:4].upper()

    @scpi("FORMat:BORDer?")
    def _border_q(self, ctx: CommandContext) -> str:
        return self.byte_order

    # -- arbitrary waveforms -------------------------------------------------------------------

    def _arb_name(self, ctx: CommandContext, index: int) -> str:
        tok = ctx.token(index)
        if tok.kind == "word":
            name = tok.text
        elif tok.kind == "string":
            name = tok.data.decode("ascii").upper()
        else:
            raise ScpiCommandError(-104)
        return name

    def _upload(self, ctx: CommandContext, *, dac: bool) -> None:
        ch = self._channel(ctx)
        name = self._arb_name(ctx, 0)
        if len(name) > MAX_ARB_NAME_LENGTH:
            raise ScpiCommandError(784)
        if _NAME.fullmatch(name) is None:
            raise ScpiCommandError(-151, "arb name must start with a letter")
        if name in ch.arbs:
            raise ScpiCommandError(-221, "arb waveform name already in volatile memory")
        data = ctx.token(1)
        if data.kind == "block":
            if len(ctx.params) > 2:
                raise ScpiCommandError(-108)
            width = 2 if dac else 4
            if len(data.data) % width:
                raise ScpiCommandError(-161, f"block length must be a multiple of {width} bytes")
            order = ">" if self.byte_order == "NORM" else "<"
            values = np.frombuffer(data.data, dtype=f"{order}{'i2' if dac else 'f4'}")
            values = values.astype(np.float64)
        else:
            values = np.array([ctx.number(i) for i in range(1, len(ctx.params))])
        if not np.all(np.isfinite(values)):
            raise ScpiCommandError(-222, "non-finite arb value")
        if dac:
            if np.any(np.abs(values) > DAC_FULL_SCALE) or np.any(values != np.rint(values)):
                raise ScpiCommandError(-222, "DAC codes must be integers in -32767..32767")
            codes = values.astype(np.int16)
        else:
            if np.any(np.abs(values) > 1.0):
                raise ScpiCommandError(-222, "arb values must be within -1.0..+1.0")
            codes = np.rint(values * DAC_FULL_SCALE).astype(np.int16)
        if len(codes) < MIN_ARB_POINTS:
            raise ScpiCommandError(-222, f"an arb needs at least {MIN_ARB_POINTS} points")
        if len(codes) > ARB_MEMORY_POINTS:
            raise ScpiCommandError(-223)
        used = sum(len(c) for c in ch.arbs.values())
        if used + len(codes) > ARB_MEMORY_POINTS:
            raise ScpiCommandError(781)
        ch.arbs[name] = codes
        logger.debug("33522B emulator: arb %s, %d points", name, len(codes))

    @scpi("[SOURce<ch>]:DATA:ARBitrary:DAC", params=(2, ARB_MEMORY_POINTS + 1))
    def _data_dac(self, ctx: CommandContext) -> None:
        self._upload(ctx, dac=True)

    @scpi("[SOURce<ch>]:DATA:ARBitrary", params=(2, ARB_MEMORY_POINTS + 1))
    def _data_float(self, ctx: CommandContext) -> None:
        self._upload(ctx, dac=False)

    @scpi("[SOURce<ch>]:DATA:VOLatile:CLEar", params=(0, 0))
    def _clear(self, ctx: CommandContext) -> None:
        ch = self._channel(ctx)
        if ch.arb_name != BUILTIN_ARB:
            self._rebase(ch)
            ch.arb_name = BUILTIN_ARB
        ch.arbs.clear()

    @scpi("[SOURce<ch>]:DATA:VOLatile:CATalog?")
    def _catalog_q(self, ctx: CommandContext) -> str:
        names = [BUILTIN_ARB, *self._channel(ctx).arbs]
        return ",".join(f'"{n}"' for n in names)

    @scpi("[SOURce<ch>]:DATA:VOLatile:FREE?")
    def _free_q(self, ctx: CommandContext) -> str:
        used = sum(len(c) for c in self._channel(ctx).arbs.values())
        return f"{ARB_MEMORY_POINTS - used:+d}"

    @scpi("[SOURce<ch>]:FUNCtion:ARBitrary")
    def _arb(self, ctx: CommandContext) -> None:
        ch = self._channel(ctx)
        name = self._arb_name(ctx, 0)
        if name != BUILTIN_ARB and name not in ch.arbs:
            raise ScpiCommandError(785)
        self._rebase(ch)
        ch.arb_name = name

    @scpi("[SOURce<ch>]:FUNCtion:ARBitrary?")
    def _arb_q(self, ctx: CommandContext) -> str:
        return f'"{self._channel(ctx).arb_name}"'

    def _set_rate(self, ch: _Channel, rate_hz: float) -> None:
        self._rebase(ch)
        ch.sample_rate_hz = rate_hz

    @scpi("[SOURce<ch>]:FUNCtion:ARBitrary:SRATe")
    def _srate(self, ctx: CommandContext) -> None:
        ch = self._channel(ctx)
        rate = self._clipped(
            ctx,
            0,
            MIN_SAMPLE_RATE_HZ,
            MAX_SAMPLE_RATE_HZ,
            default=40e3,
            units={"SA/S": 1.0, "KSA/S": 1e3},
        )
        self._set_rate(ch, rate)

    @scpi("[SOURce<ch>]:FUNCtion:ARBitrary:SRATe?")
    def _srate_q(self, ctx: CommandContext) -> str:
        return _nr3(self._channel(ctx).sample_rate_hz)

    @scpi("[SOURce<ch>]:FUNCtion:ARBitrary:FREQuency")
    def _arb_frequency(self, ctx: CommandContext) -> None:
        ch = self._channel(ctx)
        n = len(self._codes(ch))
        f = self._clipped(
            ctx,
            0,
            MIN_SAMPLE_RATE_HZ / n,
            MAX_SAMPLE_RATE_HZ / n,
            default=40e3 / n,
            units=_FREQ_UNITS,
        )
        self._set_rate(ch, f * n)

    @scpi("[SOURce<ch>]:FUNCtion:ARBitrary:FREQuency?")
    def _arb_frequency_q(self, ctx: CommandContext) -> str:
        ch = self._channel(ctx)
        return _nr3(ch.sample_rate_hz / len(self._codes(ch)))

    @scpi("[SOURce<ch>]:FUNCtion:ARBitrary:PERiod")
    def _arb_period(self, ctx: CommandContext) -> None:
        ch = self._channel(ctx)
        n = len(self._codes(ch))
        p = self._clipped(
            ctx,
            0,
            n / MAX_SAMPLE_RATE_HZ,
            n / MIN_SAMPLE_RATE_HZ,
            default=n / 40e3,
            units=_TIME_UNITS,
        )
        self._set_rate(ch, n / p)

    @scpi("[SOURce<ch>]:FUNCtion:ARBitrary:PERiod?")
    def _arb_period_q(self, ctx: CommandContext) -> str:
        ch = self._channel(ctx)
        return _nr3(len(self._codes(ch)) / ch.sample_rate_hz)

    @scpi("[SOURce<ch>]:FUNCtion:ARBitrary:POINts?")
    def _points_q(self, ctx: CommandContext) -> str:
        return f"{len(self._codes(self._channel(ctx))):+d}"

    @scpi("[SOURce<ch>]:FUNCtion:ARBitrary:FILTer")
    def _filter(self, ctx: CommandContext) -> None:
        choice = ctx.choice(0, ("NORMal", "STEP", "OFF"))
        self._channel(ctx).arb_filter = choice[:4].upper()

    @scpi("[SOURce<ch>]:FUNCtion:ARBitrary:FILTer?")
    def _filter_q(self, ctx: CommandContext) -> str:
        return self._channel(ctx).arb_filter
