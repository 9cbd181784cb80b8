"""Driver of the Keysight (Agilent) 33500B series waveform generator (33522B, LAN port 5025).

Voltages in this API are *real* voltages at a high-impedance input (the bench's node inputs),
in volts: `amplitude_v` is the peak of the waveform, `offset_v` its offset. The instrument is
programmed in the voltage it would show across the load named by OUTPut:LOAD
(`displayed = real·R/(R + 50 Ω)`; at the default LOAD 50 the real voltage is twice the displayed
one), so the driver converts with the channel's load setting, which it reads on connect and
tracks. Every output value passes the configured `OutputLimits` (on the whole waveform: offset
± peak, or the arb's extreme samples, plus the fed channel when channels are combined) and the
instrument's own range before anything is written; out of range or non-finite → LimitError.

async with Keysight33500B(config) as gen:
    f_hz = await gen.set_sine(1, 1e3, amplitude_v=0.5)          # 0.5 V peak at the node
    timing = plan_arb(f_hz, n_periods=2)                         # whole drive periods exactly
    info = await gen.upload_arb(2, "NUDGE", samples_v, timing.sample_rate_hz)
    await gen.play_arb(2, "NUDGE"); await gen.combine(1, 2); await gen.sync_phases()
    await gen.output(1, True)
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import Field

from physlearn.drivers.scpi_instrument import ScpiInstrument, ScpiInstrumentConfig
from physlearn.drivers.transport import Transport
from physlearn.errors import ConfigError, InstrumentProtocolError, LimitError
from physlearn.spec.limits import OutputLimits

logger = logging.getLogger(__name__)

N_CHANNELS = 2
SOURCE_IMPEDANCE_OHM = 50.0
#: Instrument range, open circuit (real voltage at a high-impedance input).
MAX_PEAK_V = 10.0
MIN_AMPLITUDE_V = 1e-3  # peak; 2 mVpp open circuit (1 mVpp into 50 Ω)
MIN_FREQUENCY_HZ = 1e-6
MAX_FREQUENCY_HZ = 30e6
FREQUENCY_RESOLUTION_HZ = 1e-6
MIN_SAMPLE_RATE_HZ = 1e-6
MAX_SAMPLE_RATE_HZ = 250e6
DAC_FULL_SCALE = 32767
MIN_ARB_POINTS = 8
MAX_ARB_POINTS = 1_000_000
MIN_LOAD_OHM = 1.0
MAX_LOAD_OHM = 10e3
_INFINITY_REPLY = 9.0e37
_ARB_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,11}")

FunctionName = Literal["SIN", "ARB", "DC"]


class Keysight33500BConfig(ScpiInstrumentConfig):
    """33500B configuration: transport, identity pattern and output limits (real volts)."""

    idn_pattern: str = r"^(Agilent|Keysight) Technologies,335\d\dB,"
    limits: OutputLimits
    default_points_per_period: int = Field(1000, ge=MIN_ARB_POINTS, le=MAX_ARB_POINTS)


@dataclass(frozen=True)
class ArbTiming:
    """Sample rate and length of an arb spanning exactly `n_periods` drive periods."""

    frequency_hz: float
    n_periods: int
    points_per_period: int
    sample_rate_hz: float
    n_points: int

    @property
    def period_s(self) -> float:
        """Arb period n_points / sample_rate in seconds (= n_periods / frequency)."""
        return self.n_points / self.sample_rate_hz

    def sample_times_s(self) -> NDArray[np.float64]:
        """Start time of each sample, seconds after the phase origin."""
        return np.arange(self.n_points, dtype=np.float64) / self.sample_rate_hz


@dataclass(frozen=True)
class ArbInfo:
    """An arb uploaded by this driver and the scaling that reproduces `samples_v`.

    `amplitude_v` is the peak (real volts) of DAC full scale, `offset_v` the real offset;
    sample i plays `offset_v + amplitude_v·codes[i]/32767`, within `step_v / 2` of the request.
    """

    channel: int
    name: str
    codes: NDArray[np.int16]
    sample_rate_hz: float
    amplitude_v: float
    offset_v: float

    @property
    def n_points(self) -> int:
        """Number of samples."""
        return len(self.codes)

    @property
    def period_s(self) -> float:
        """Arb period in seconds."""
        return self.n_points / self.sample_rate_hz

    @property
    def step_v(self) -> float:
        """Quantisation step (one DAC code) in real volts."""
        return self.amplitude_v / DAC_FULL_SCALE

    @property
    def samples_v(self) -> NDArray[np.float64]:
        """The real voltages the instrument plays (quantised)."""
        return self.offset_v + self.amplitude_v * (self.codes.astype(np.float64) / DAC_FULL_SCALE)

    @property
    def extremes(self) -> tuple[float, float]:
        """(min, max) of the codes as fractions of full scale."""
        return float(self.codes.min()) / DAC_FULL_SCALE, float(self.codes.max()) / DAC_FULL_SCALE


@dataclass
class ChannelSettings:
    """Every setting of one channel as read back (voltages real, at a high-impedance input)."""

    function: str
    frequency_hz: float
    amplitude_v: float
    offset_v: float
    phase_rad: float
    output_on: bool
    load_ohm: float
    combine_feed: int | None
    arb_name: str
    sample_rate_hz: float
    arb_points: int
    arb_filter: str


@dataclass
class _Mirror:
    """What the driver knows of a channel, for limit checks before writing."""

    function: str = "SIN"
    amplitude_v: float = 0.0
    offset_v: float = 0.0
    load_ohm: float = 50.0
    feed: int | None = None
    #: (min, max) of the waveform as fractions of full scale.
    shape: tuple[float, float] = (-1.0, 1.0)


def display_factor(load_ohm: float) -> float:
    """Displayed (programmed) voltage per real open-circuit voltage for a load setting."""
    if math.isinf(load_ohm):
        return 1.0
    return load_ohm / (load_ohm + SOURCE_IMPEDANCE_OHM)


def quantise_frequency(frequency_hz: float) -> float:
    """The frequency the instrument generates for `frequency_hz` (1 µHz resolution)."""
    return max(round(frequency_hz / FREQUENCY_RESOLUTION_HZ), 1) * FREQUENCY_RESOLUTION_HZ


def plan_arb(
    frequency_hz: float,
    n_periods: int = 1,
    points_per_period: int = 1000,
) -> ArbTiming:
    """Sample rate and length for an arb of exactly `n_periods` periods of `frequency_hz`.

    The frequency is first put on the instrument's 1 µHz grid (use the value `set_sine`
    returned); points per period are reduced if needed to fit the sample-rate and memory
    limits. sample_rate = points_per_period · f, n_points = points_per_period · n_periods, so
    the arb period n_points / sample_rate is n_periods / f.
    """
    if not (math.isfinite(frequency_hz) and MIN_FREQUENCY_HZ <= frequency_hz <= MAX_FREQUENCY_HZ):
        raise LimitError(f"33500B: drive frequency {frequency_hz!r} Hz outside the range")
    if n_periods < 1 or points_per_period < 1:
        raise LimitError("33500B: n_periods and points_per_period must be >= 1")
    f = quantise_frequency(frequency_hz)
    m = min(points_per_period, MAX_ARB_POINTS // n_periods, int(MAX_SAMPLE_RATE_HZ // f))
    m = max(m, -(-MIN_ARB_POINTS // n_periods))
    rate = m * f
    if m * n_periods > MAX_ARB_POINTS or not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise LimitError(
            f"33500B: no arb of {n_periods} periods of {f} Hz fits the sample-rate range and "
            f"{MAX_ARB_POINTS} points"
        )
    return ArbTiming(f, n_periods, m, rate, m * n_periods)


def _fmt(value: float) -> str:
    """Shortest repr that round-trips the float (e.g. 0.1, 2.5, 1e-06)."""
    return repr(float(value))


def _finite(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise LimitError(f"33500B: {name} {value!r} is not a number") from None
    if not math.isfinite(v):
        raise LimitError(f"33500B: {name} {v!r} is not finite; refused, nothing was written")
    return v


class Keysight33500B(ScpiInstrument):
    """Async driver of a two-channel 33500B; channels 1 and 2 as on the front panel."""

    config: Keysight33500BConfig

    def __init__(self, config: Keysight33500BConfig, transport: Transport | None = None) -> None:
        super().__init__(config, transport)
        self.limits = config.limits
        self._mirror = {c: _Mirror() for c in range(1, N_CHANNELS + 1)}
        self._arbs: dict[tuple[int, str], ArbInfo] = {}

    async def connect(self) -> str:
        """Open, check the identity, and read every channel's settings (for limit checks)."""
        idn = await super().connect()
        await self.refresh()
        return idn

    # -- checks --------------------------------------------------------------------------------

    @staticmethod
    def _check_channel(channel: int) -> int:
        if channel not in range(1, N_CHANNELS + 1):
            raise LimitError(f"33500B has channels 1..{N_CHANNELS}, not {channel}")
        return channel

    def _check_outputs(self, proposed: dict[int, _Mirror], only: int | None = None) -> None:
        """Check the real voltage range of every output a `proposed` change affects.

        Affected: the changed channels and the outputs they feed (or just output `only`).
        """
        state = {c: proposed.get(c, m) for c, m in self._mirror.items()}
        for c, m in state.items():
            if only is not None and c != only:
                continue
            if only is None and c not in proposed and m.feed not in proposed:
                continue
            parts = [m] if m.feed is None else [m, state[m.feed]]
            low = sum(p.offset_v + p.amplitude_v * p.shape[0] for p in parts)
            high = sum(p.offset_v + p.amplitude_v * p.shape[1] for p in parts)
            bound = abs(sum(p.offset_v for p in parts)) + sum(
                0.0 if p.function == "DC" else p.amplitude_v for p in parts
            )
            if bound > MAX_PEAK_V * (1 + 1e-12):
                raise LimitError(
                    f"33500B channel {c}: |offset| + peak = {bound} V exceeds the instrument's "
                    f"{MAX_PEAK_V} V open-circuit range; refused, nothing was written"
                )
            self.limits.check(c, low)
            self.limits.check(c, high)

    def _check_amplitude(self, channel: int, amplitude_v: float, offset_v: float) -> None:
        a = _finite("amplitude_v", amplitude_v)
        o = _finite("offset_v", offset_v)
        if not MIN_AMPLITUDE_V <= a <= MAX_PEAK_V:
            raise LimitError(
                f"33500B channel {channel}: amplitude {a!r} V (peak) outside "
                f"[{MIN_AMPLITUDE_V}, {MAX_PEAK_V}] V; refused, nothing was written"
            )
        if abs(o) + a > MAX_PEAK_V * (1 + 1e-12):
            raise LimitError(
                f"33500B channel {channel}: |offset| + peak = {abs(o) + a} V exceeds "
                f"{MAX_PEAK_V} V; refused, nothing was written"
            )

    def _level_commands(self, channel: int, new: _Mirror) -> list[str]:
        """VOLT/OFFS in an order whose intermediate state the instrument accepts."""
        old = self._mirror[channel]
        k = display_factor(old.load_ohm)
        volt = f":SOUR{channel}:VOLT {_fmt(2.0 * new.amplitude_v * k)}"
        offs = f":SOUR{channel}:VOLT:OFFS {_fmt(new.offset_v * k)}"
        if old.function == "DC" or abs(old.offset_v) + new.amplitude_v <= MAX_PEAK_V:
            return [volt, offs]
        return [offs, volt]

    # -- sine, DC, arbs ------------------------------------------------------------------------

    async def set_sine(
        self,
        channel: int,
        frequency_hz: float,
        amplitude_v: float,
        offset_v: float = 0.0,
        phase_rad: float = 0.0,
    ) -> float:
        """Sine `offset_v + amplitude_v·sin(2π f (t - t0) + phase_rad)`, t0 the phase origin.

        Returns the generated frequency (on the 1 µHz grid).
        """
        self._check_channel(channel)
        f = _finite("frequency_hz", frequency_hz)
        phase = _finite("phase_rad", phase_rad)
        if not MIN_FREQUENCY_HZ <= f <= MAX_FREQUENCY_HZ:
            raise LimitError(
                f"33500B channel {channel}: frequency {f!r} Hz outside "
                f"[{MIN_FREQUENCY_HZ}, {MAX_FREQUENCY_HZ}] Hz; refused, nothing was written"
            )
        self._check_amplitude(channel, amplitude_v, offset_v)
        old = self._mirror[channel]
        new = _Mirror("SIN", float(amplitude_v), float(offset_v), old.load_ohm, old.feed)
        self._check_outputs({channel: new})
        phase_deg = math.remainder(math.degrees(phase), 360.0)
        f_q = quantise_frequency(f)
        commands = [
            *self._level_commands(channel, new),
            f":SOUR{channel}:FUNC SIN",
            f":SOUR{channel}:FREQ {_fmt(f_q)}",
            f":SOUR{channel}:PHAS {_fmt(phase_deg)}",
        ]
        await self.write(";".join(commands))
        self._mirror[channel] = new
        return f_q

    async def set_dc(self, channel: int, voltage_v: float) -> None:
        """DC level `voltage_v` (real volts)."""
        self._check_channel(channel)
        v = _finite("voltage_v", voltage_v)
        if abs(v) > MAX_PEAK_V:
            raise LimitError(f"33500B channel {channel}: DC {v!r} V outside ±{MAX_PEAK_V} V")
        old = self._mirror[channel]
        new = _Mirror("DC", old.amplitude_v, v, old.load_ohm, old.feed, (0.0, 0.0))
        self._check_outputs({channel: new})
        k = display_factor(old.load_ohm)
        await self.write(f":SOUR{channel}:FUNC DC;:SOUR{channel}:VOLT:OFFS {_fmt(v * k)}")
        self._mirror[channel] = new

    async def upload_arb(
        self, channel: int, name: str, samples_v: ArrayLike, sample_rate_hz: float
    ) -> ArbInfo:
        """Upload `samples_v` (real volts) as 16-bit DAC codes spanning the full DAC range.

        The scaling (offset = mid-range, full scale = half the span) is remembered for
        `play_arb`; the returned ArbInfo reports the quantisation step. Name: a letter then up
        to 11 letters, digits or `_` (upper case). Reusing a name needs `clear_arbs` first.
        """
        self._check_channel(channel)
        key = name.upper()
        if _ARB_NAME.fullmatch(key) is None:
            raise ConfigError(f"33500B: arb name {name!r} must be a letter + up to 11 [A-Z0-9_]")
        if (channel, key) in self._arbs:
            raise ConfigError(f"33500B channel {channel}: arb {key} exists; call clear_arbs")
        samples = np.asarray(samples_v, dtype=np.float64).ravel()
        if not MIN_ARB_POINTS <= samples.size <= MAX_ARB_POINTS:
            raise LimitError(
                f"33500B: an arb has {MIN_ARB_POINTS}..{MAX_ARB_POINTS} points, not {samples.size}"
            )
        if not np.all(np.isfinite(samples)):
            raise LimitError(f"33500B channel {channel}: arb {key} has non-finite samples")
        rate = _finite("sample_rate_hz", sample_rate_hz)
        if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
            raise LimitError(f"33500B: sample rate {rate!r} Sa/s outside the instrument range")
        low, high = float(samples.min()), float(samples.max())
        offset = 0.5 * (low + high)
        amplitude = max(0.5 * (high - low), MIN_AMPLITUDE_V)
        self._check_amplitude(channel, amplitude, offset)
        self.limits.check(channel, low)
        self.limits.check(channel, high)
        codes = np.clip(np.rint((samples - offset) / amplitude * DAC_FULL_SCALE), -32767, 32767)
        info = ArbInfo(channel, key, codes.astype(np.int16), rate, amplitude, offset)
        await self.write_binary_block(
            f"FORM:BORD SWAP;:SOUR{channel}:DATA:ARB:DAC {key},", info.codes.astype("<i2").tobytes()
        )
        self._arbs[(channel, key)] = info
        logger.info(
            "%s: arb %s on channel %d: %d points, step %.3g V",
            self.name,
            key,
            channel,
            info.n_points,
            info.step_v,
        )
        return info

    async def play_arb(self, channel: int, name: str) -> ArbInfo:
        """Play an uploaded arb on `channel` at its sample rate, scaled to its real volts."""
        self._check_channel(channel)
        info = self._arbs.get((channel, name.upper()))
        if info is None:
            raise ConfigError(f"33500B channel {channel}: no arb {name!r} uploaded by this driver")
        old = self._mirror[channel]
        new = _Mirror("ARB", info.amplitude_v, info.offset_v, old.load_ohm, old.feed, info.extremes)
        self._check_outputs({channel: new})
        commands = [
            f":SOUR{channel}:FUNC:ARB {info.name}",
            f":SOUR{channel}:FUNC:ARB:SRAT {_fmt(info.sample_rate_hz)}",
            f":SOUR{channel}:FUNC:ARB:FILT OFF",
            *self._level_commands(channel, new),
            f":SOUR{channel}:FUNC ARB",
        ]
        await self.write(";".join(commands))
        self._mirror[channel] = new
        return info

    async def clear_arbs(self, channel: int) -> None:
        """Clear the channel's volatile arb memory (DATA:VOLatile:CLEar)."""
        self._check_channel(channel)
        await self.write(f":SOUR{channel}:DATA:VOL:CLE")
        for key in [k for k in self._arbs if k[0] == channel]:
            del self._arbs[key]
        if self._mirror[channel].function == "ARB":
            self._mirror[channel].shape = (-1.0, 1.0)  # the built-in arb plays now

    # -- channels, outputs, phase, reference ---------------------------------------------------

    async def combine(self, channel: int, feed: int | None) -> None:
        """Add channel `feed`'s signal to output `channel` (None: stop combining)."""
        self._check_channel(channel)
        if feed is not None and (self._check_channel(feed) == channel):
            raise LimitError(f"33500B: channel {channel} cannot be combined with itself")
        old = self._mirror[channel]
        new = _Mirror(old.function, old.amplitude_v, old.offset_v, old.load_ohm, feed, old.shape)
        self._check_outputs({channel: new})
        await self.write(f":SOUR{channel}:COMB:FEED {'NONE' if feed is None else f'CH{feed}'}")
        self._mirror[channel] = new

    async def sync_phases(self) -> None:
        """Zero both channels' phase accumulators together (PHASe:SYNChronize)."""
        await self.write("PHAS:SYNC")

    async def output(self, channel: int, on: bool) -> None:
        """Switch output `channel` on (after re-checking its limits) or off."""
        self._check_channel(channel)
        if on:
            self._check_outputs({}, only=channel)
        await self.write(f"OUTP{channel} {'ON' if on else 'OFF'}")

    async def set_load(self, channel: int, load_ohm: float) -> None:
        """Load setting in Ω (1..10 kΩ, or math.inf for high-Z); the real output is unchanged."""
        self._check_channel(channel)
        try:
            high_z = float(load_ohm) == math.inf
        except (TypeError, ValueError):
            high_z = False
        if high_z:
            value, text = math.inf, "INF"
        else:
            value = _finite("load_ohm", load_ohm)
            if not MIN_LOAD_OHM <= value <= MAX_LOAD_OHM:
                raise LimitError(f"33500B: load {value!r} Ω outside 1 Ω..10 kΩ (or inf)")
            text = _fmt(value)
        await self.write(f"OUTP{channel}:LOAD {text}")
        self._mirror[channel].load_ohm = value

    async def set_sync(self, on: bool, source_channel: int = 1) -> None:
        """Sync connector on/off, tracking `source_channel`."""
        self._check_channel(source_channel)
        await self.write(f"OUTP:SYNC {'ON' if on else 'OFF'};:OUTP:SYNC:SOUR CH{source_channel}")

    async def set_reference(self, source: Literal["INT", "EXT"], output_on: bool = True) -> None:
        """10 MHz reference: internal or external input; reference output on/off."""
        if source not in ("INT", "EXT"):
            raise ValueError(f"reference source must be 'INT' or 'EXT', not {source!r}")
        await self.write(f"ROSC:SOUR {source};:ROSC:OUTP {'ON' if output_on else 'OFF'}")

    async def safe_state(self) -> None:
        """Both outputs off."""
        await self.write("OUTP1 OFF;:OUTP2 OFF")

    async def reset(self) -> None:
        """*RST and forget the tracked state (volatile arbs stay in the instrument)."""
        await self.write("*RST")
        await self.refresh()

    # -- queries -------------------------------------------------------------------------------

    async def get_settings(self, channel: int) -> ChannelSettings:
        """Read every setting of `channel` in one compound query."""
        c = self._check_channel(channel)
        reply = await self.query(
            f"SOUR{c}:FUNC?;:SOUR{c}:FREQ?;:SOUR{c}:VOLT?;:SOUR{c}:VOLT:OFFS?;:SOUR{c}:PHAS?;"
            f":OUTP{c}?;:OUTP{c}:LOAD?;:SOUR{c}:COMB:FEED?;:SOUR{c}:FUNC:ARB?;"
            f":SOUR{c}:FUNC:ARB:SRAT?;:SOUR{c}:FUNC:ARB:POIN?;:SOUR{c}:FUNC:ARB:FILT?"
        )
        fields = reply.split(";")
        if len(fields) != 12:
            raise InstrumentProtocolError(f"{self.name}: unexpected settings reply {reply!r}")
        try:
            load = float(fields[6])
            load_ohm = math.inf if load >= _INFINITY_REPLY else load
            k = display_factor(load_ohm)
            return ChannelSettings(
                function=fields[0],
                frequency_hz=float(fields[1]),
                amplitude_v=float(fields[2]) / (2.0 * k),
                offset_v=float(fields[3]) / k,
                phase_rad=math.radians(float(fields[4])),
                output_on=fields[5] == "1",
                load_ohm=load_ohm,
                combine_feed=None if fields[7] == "NONE" else int(fields[7][-1]),
                arb_name=fields[8].strip('"'),
                sample_rate_hz=float(fields[9]),
                arb_points=int(fields[10]),
                arb_filter=fields[11],
            )
        except (ValueError, IndexError):
            raise InstrumentProtocolError(
                f"{self.name}: unparsable settings reply {reply!r}"
            ) from None

    async def refresh(self) -> None:
        """Re-read both channels' settings into the state used for limit checks."""
        for c in range(1, N_CHANNELS + 1):
            s = await self.get_settings(c)
            info = self._arbs.get((c, s.arb_name.upper()))
            shape = {"SIN": (-1.0, 1.0), "DC": (0.0, 0.0)}.get(
                s.function, info.extremes if info is not None else (-1.0, 1.0)
            )
            self._mirror[c] = _Mirror(
                s.function, s.amplitude_v, s.offset_v, s.load_ohm, s.combine_feed, shape
            )

    async def get_frequency(self, channel: int) -> float:
        """Sine frequency in Hz."""
        return await self.query_float(f"SOUR{self._check_channel(channel)}:FREQ?")

    async def get_amplitude(self, channel: int) -> float:
        """Peak amplitude in real volts at a high-impedance input."""
        c = self._check_channel(channel)
        vpp = await self.query_float(f"SOUR{c}:VOLT?")
        return vpp / (2.0 * display_factor(await self.get_load(c)))

    async def get_offset(self, channel: int) -> float:
        """Offset in real volts at a high-impedance input."""
        c = self._check_channel(channel)
        return await self.query_float(f"SOUR{c}:VOLT:OFFS?") / display_factor(
            await self.get_load(c)
        )

    async def get_phase(self, channel: int) -> float:
        """Phase in radians."""
        return math.radians(await self.query_float(f"SOUR{self._check_channel(channel)}:PHAS?"))

    async def get_function(self, channel: int) -> str:
        """'SIN', 'ARB' or 'DC'."""
        return await self.query(f"SOUR{self._check_channel(channel)}:FUNC?")

    async def get_output(self, channel: int) -> bool:
        """True if the output is on."""
        return await self.query(f"OUTP{self._check_channel(channel)}?") == "1"

    async def get_load(self, channel: int) -> float:
        """Load setting in Ω (math.inf for high-Z)."""
        value = await self.query_float(f"OUTP{self._check_channel(channel)}:LOAD?")
        return math.inf if value >= _INFINITY_REPLY else value

    async def get_combine(self, channel: int) -> int | None:
        """The channel fed into `channel`, or None."""
        reply = await self.query(f"SOUR{self._check_channel(channel)}:COMB:FEED?")
        return None if reply == "NONE" else int(reply[-1])

    async def get_arb(self, channel: int) -> str:
        """Name of the selected arb."""
        return (await self.query(f"SOUR{self._check_channel(channel)}:FUNC:ARB?")).strip('"')

    async def get_sample_rate(self, channel: int) -> float:
        """Arb sample rate in Sa/s."""
        return await self.query_float(f"SOUR{self._check_channel(channel)}:FUNC:ARB:SRAT?")

    async def get_sync(self) -> tuple[bool, int]:
        """(sync output on, source channel)."""
        on, source = (await self.query("OUTP:SYNC?;:OUTP:SYNC:SOUR?")).split(";")
        return on == "1", int(source[-1])

    async def get_reference(self) -> tuple[str, str, bool]:
        """(selected source, source in use, reference output on)."""
        sel, cur, out = (await self.query("ROSC:SOUR?;:ROSC:SOUR:CURR?;:ROSC:OUTP?")).split(";")
        return sel, cur, out == "1"
