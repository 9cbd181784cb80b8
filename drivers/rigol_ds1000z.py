"""Driver of the Rigol DS1000Z oscilloscopes (DS1054Z; LAN raw socket `TCPIP0::<ip>::5555::SOCKET`).

async with RigolDs1000z(RigolDs1000zConfig(name="scope", transport=...)) as scope:
    await scope.configure_channel(1, scale_v_per_div=0.5, offset_v=0.0, coupling="DC", probe=1)
    await scope.set_timebase(scale_s_per_div=100e-6, offset_s=0.0)
    await scope.set_trigger_edge("CHAN4", level_v=0.0, slope="POS")
    await scope.single()
    await scope.wait_triggered(timeout_s=1.0, poll_s=0.01, sleep=clock_sleep)
    waves = await scope.read_channels([1, 2])          # all from the one acquisition

Every numeric setting is checked to be finite before anything is written (`LimitError`);
the instrument's own ranges are enforced by the instrument (error queue → InstrumentCommandError
when `check_errors` is on). Waveforms are scaled with the :WAVeform:PREamble? of the same read:
volts = (code − YORigin − YREFerence) × YINCrement, t = (i − XREFerence) × XINCrement + XORigin
(relative to the trigger point). A waveform is `clipped` when any point sits at an ADC limit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from physlearn.drivers.scpi_instrument import ScpiInstrument, ScpiInstrumentConfig
from physlearn.drivers.transport import Transport
from physlearn.errors import (
    InstrumentError,
    InstrumentProtocolError,
    InstrumentTimeoutError,
    LimitError,
)

logger = logging.getLogger(__name__)

N_CHANNELS = 4
#: Screen geometry: a screen record is 1200 points over 12 horizontal divisions; the 8-bit ADC
#: spans 8 vertical divisions at 25 codes per division.
SCREEN_POINTS = 1200
H_DIVISIONS = 12
V_DIVISIONS = 8
CODES_PER_DIVISION = 25.0
SCREEN_POINTS_PER_DIVISION = SCREEN_POINTS // H_DIVISIONS
#: What the DS1000Z sends for an invalid or unavailable value.
INVALID_MARKER = 9.9e37
CODE_MIN, CODE_MAX = 0, 255
WaveFormat = Literal["BYTE", "WORD", "ASCii"]
WaveMode = Literal["NORMal", "RAW"]
Coupling = Literal["DC", "AC", "GND"]
AcquireKind = Literal["NORMal", "AVERages", "PEAK", "HRESolution"]
Slope = Literal["POS", "NEG", "RFAL"]
#: Points per :WAVeform:DATA? read, by format (programming guide).
MAX_READ_POINTS = {"BYTE": 250_000, "WORD": 125_000, "ASCii": 15_625}
_ACQUIRE_SHORT = {"NORMal": "NORM", "AVERages": "AVER", "PEAK": "PEAK", "HRESolution": "HRES"}
_FORMAT_SHORT = {"BYTE": "BYTE", "WORD": "WORD", "ASCii": "ASC"}


class RigolDs1000zConfig(ScpiInstrumentConfig):
    """DS1000Z configuration: transport and identity pattern."""

    idn_pattern: str = r"^RIGOL TECHNOLOGIES,(DS|MSO)1\d{3}Z"


@dataclass(frozen=True)
class Preamble:
    """:WAVeform:PREamble? fields (times in s, volts in V)."""

    format: int  # 0 BYTE, 1 WORD, 2 ASCii
    kind: int  # 0 NORMal, 1 MAXimum, 2 RAW
    points: int
    count: int
    xincrement_s: float
    xorigin_s: float
    xreference: int
    yincrement_v: float
    yorigin: int
    yreference: int

    @classmethod
    def parse(cls, text: str) -> Preamble:
        """Parse the ten comma-separated fields."""
        parts = text.strip().split(",")
        if len(parts) != 10:
            raise InstrumentProtocolError(f"preamble {text!r} does not have 10 fields")
        try:
            ints = [int(float(parts[i])) for i in (0, 1, 2, 3, 6, 8, 9)]
            xinc, xorg, yinc = (float(parts[i]) for i in (4, 5, 7))
        except ValueError:
            raise InstrumentProtocolError(f"preamble {text!r} is not numeric") from None
        if not all(_valid(v) for v in (xinc, xorg, yinc)) or xinc <= 0 or yinc <= 0:
            raise InstrumentProtocolError(
                f"preamble {text!r} has a non-finite, invalid (9.9E37) or non-positive "
                "increment or origin"
            )
        fmt, kind, points, count, xref, yorg, yref = ints
        return cls(fmt, kind, points, count, xinc, xorg, xref, yinc, yorg, yref)

    def volts(self, codes: NDArray[np.float64]) -> NDArray[np.float64]:
        """Voltages of ADC codes: (code − YORigin − YREFerence) × YINCrement."""
        return (codes - self.yorigin - self.yreference) * self.yincrement_v

    def codes(self, volts: NDArray[np.float64]) -> NDArray[np.float64]:
        """ADC codes of voltages (inverse of `volts`, rounded)."""
        return np.rint(volts / self.yincrement_v + self.yorigin + self.yreference)

    def times(self, first_index: int, n: int) -> NDArray[np.float64]:
        """Times in s (relative to the trigger) of points first_index..first_index+n-1 (0-based)."""
        index = np.arange(first_index, first_index + n, dtype=np.float64)
        return (index - self.xreference) * self.xincrement_s + self.xorigin_s


@dataclass(frozen=True)
class Waveform:
    """One channel of one acquisition: times in s relative to the trigger, volts, clipping."""

    channel: int
    t_s: NDArray[np.float64]
    volts: NDArray[np.float64]
    clipped: bool
    preamble: Preamble


@dataclass(frozen=True)
class ChannelSettings:
    """Vertical settings of one channel as the instrument reports them."""

    display: bool
    scale_v_per_div: float
    offset_v: float
    coupling: str
    probe: float
    bw_limit: str


@dataclass(frozen=True)
class AcquisitionSettings:
    """Acquisition settings as the instrument reports them."""

    kind: str
    averages: int
    memory_depth: str
    sample_rate_sa_per_s: float


@dataclass(frozen=True)
class TriggerSettings:
    """Edge-trigger settings as the instrument reports them."""

    mode: str
    source: str
    level_v: float
    slope: str
    sweep: str


def _valid(value: float) -> bool:
    """False for NaN, ±inf and the instrument's "invalid" marker (|value| >= 9.9E37)."""
    return math.isfinite(value) and abs(value) < INVALID_MARKER


def _finite(name: str, value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LimitError(f"DS1000Z: {name} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise LimitError(f"DS1000Z: {name} {value!r} is not finite; refused, nothing was written")
    return number


def _number(value: float) -> str:
    return repr(float(value))


class RigolDs1000z(ScpiInstrument):
    """Async DS1000Z driver; channels 1..4 as on the front panel; SI units throughout."""

    config: RigolDs1000zConfig

    def __init__(self, config: RigolDs1000zConfig, transport: Transport | None = None) -> None:
        super().__init__(config, transport)

    @staticmethod
    def _check_channel(channel: int) -> int:
        if not (isinstance(channel, int) and 1 <= channel <= N_CHANNELS):
            raise LimitError(f"DS1000Z has channels 1..{N_CHANNELS}, not {channel!r}")
        return channel

    # -- vertical ------------------------------------------------------------------------------

    async def configure_channel(
        self,
        channel: int,
        scale_v_per_div: float,
        offset_v: float = 0.0,
        coupling: Coupling = "DC",
        probe: float = 1.0,
        *,
        display: bool = True,
        bw_limit: bool = False,
    ) -> ChannelSettings:
        """Set probe ratio, scale (V/div, probe-referred), offset, coupling; return readback.

        The instrument sets the scale to the nearest 1-2-5 step; the returned settings show it.
        """
        ch = self._check_channel(channel)
        scale = _finite("scale_v_per_div", scale_v_per_div)
        offset = _finite("offset_v", offset_v)
        ratio = _finite("probe", probe)
        if coupling not in ("DC", "AC", "GND"):
            raise ValueError(f"coupling must be DC, AC or GND, not {coupling!r}")
        await self.write(
            f":CHAN{ch}:DISP {int(display)};:CHAN{ch}:PROB {_number(ratio)};"
            f":CHAN{ch}:SCAL {_number(scale)};:CHAN{ch}:OFFS {_number(offset)};"
            f":CHAN{ch}:COUP {coupling};:CHAN{ch}:BWL {'20M' if bw_limit else 'OFF'}"
        )
        return await self.get_channel(ch)

    async def set_channel_display(self, channel: int, on: bool) -> None:
        """Show or hide a channel (only displayed channels are acquired)."""
        await self.write(f":CHAN{self._check_channel(channel)}:DISP {int(on)}")

    async def get_channel(self, channel: int) -> ChannelSettings:
        """Query every vertical setting of `channel` in one message."""
        ch = self._check_channel(channel)
        reply = await self.query(
            f":CHAN{ch}:DISP?;:CHAN{ch}:SCAL?;:CHAN{ch}:OFFS?;:CHAN{ch}:COUP?;"
            f":CHAN{ch}:PROB?;:CHAN{ch}:BWL?"
        )
        parts = reply.split(";")
        if len(parts) != 6:
            raise InstrumentProtocolError(f"{self.name}: channel query reply {reply!r}")
        try:
            return ChannelSettings(
                parts[0] == "1",
                float(parts[1]),
                float(parts[2]),
                parts[3],
                float(parts[4]),
                parts[5],
            )
        except ValueError:
            raise InstrumentProtocolError(f"{self.name}: channel query reply {reply!r}") from None

    # -- horizontal, acquisition, trigger ------------------------------------------------------

    async def set_timebase(
        self, scale_s_per_div: float, offset_s: float = 0.0
    ) -> tuple[float, float]:
        """Main timebase scale (s/div, nearest 1-2-5 step) and offset (s); return readback."""
        scale = _finite("scale_s_per_div", scale_s_per_div)
        offset = _finite("offset_s", offset_s)
        await self.write(f":TIM:MAIN:SCAL {_number(scale)};:TIM:MAIN:OFFS {_number(offset)}")
        return await self.get_timebase()

    async def get_timebase(self) -> tuple[float, float]:
        """(scale in s/div, offset in s)."""
        values = await self.query_floats(":TIM:MAIN:SCAL?;:TIM:MAIN:OFFS?")
        if len(values) != 2:
            raise InstrumentProtocolError(f"{self.name}: timebase reply {values!r}")
        return values[0], values[1]

    async def query_floats(self, command: str) -> list[float]:
        """Send a query; parse a `;`- or `,`-separated list of floats."""
        reply = await self.query(command)
        try:
            return [float(x) for x in reply.replace(";", ",").split(",")]
        except ValueError:
            raise InstrumentProtocolError(
                f"{self.name} ({self.resource}): reply {reply!r} to {command!r} is not numeric"
            ) from None

    async def set_acquisition(
        self, kind: AcquireKind = "NORMal", averages: int = 2, memory_depth: int | None = None
    ) -> AcquisitionSettings:
        """Acquisition type, number of averages (power of 2, 2..1024), memory depth (None: AUTO)."""
        if kind not in _ACQUIRE_SHORT:
            raise ValueError(
                f"acquisition kind must be one of {list(_ACQUIRE_SHORT)}, not {kind!r}"
            )
        if not (isinstance(averages, int) and 2 <= averages <= 1024):
            raise LimitError(f"DS1000Z: averages {averages!r} outside 2..1024")
        depth = "AUTO" if memory_depth is None else str(int(memory_depth))
        await self.write(f":ACQ:TYPE {_ACQUIRE_SHORT[kind]};:ACQ:AVER {averages};:ACQ:MDEP {depth}")
        return await self.get_acquisition()

    async def get_acquisition(self) -> AcquisitionSettings:
        """Acquisition type, averages, memory depth (`AUTO` or points) and sample rate (Sa/s)."""
        reply = await self.query(":ACQ:TYPE?;:ACQ:AVER?;:ACQ:MDEP?;:ACQ:SRAT?")
        parts = reply.split(";")
        try:
            return AcquisitionSettings(parts[0], int(parts[1]), parts[2], float(parts[3]))
        except (ValueError, IndexError):
            raise InstrumentProtocolError(f"{self.name}: acquisition reply {reply!r}") from None

    async def set_trigger_edge(
        self, source: str | int, level_v: float, slope: Slope = "POS"
    ) -> TriggerSettings:
        """Edge trigger on a channel (1..4 or `CHAN<n>`), `EXT` or `AC`, level in V, slope."""
        level = _finite("trigger level_v", level_v)
        if isinstance(source, int):
            src = f"CHAN{self._check_channel(source)}"
        elif source.upper() in ("EXT", "AC") or source.upper().startswith("CHAN"):
            src = source.upper()
        else:
            raise ValueError(f"trigger source must be a channel, EXT or AC, not {source!r}")
        if slope not in ("POS", "NEG", "RFAL"):
            raise ValueError(f"slope must be POS, NEG or RFAL, not {slope!r}")
        await self.write(
            f":TRIG:MODE EDGE;:TRIG:EDG:SOUR {src};:TRIG:EDG:SLOP {slope};"
            f":TRIG:EDG:LEV {_number(level)}"
        )
        return await self.get_trigger()

    async def get_trigger(self) -> TriggerSettings:
        """Trigger mode, edge source, level (V), slope and sweep."""
        reply = await self.query(
            ":TRIG:MODE?;:TRIG:EDG:SOUR?;:TRIG:EDG:LEV?;:TRIG:EDG:SLOP?;:TRIG:SWE?"
        )
        parts = reply.split(";")
        try:
            return TriggerSettings(parts[0], parts[1], float(parts[2]), parts[3], parts[4])
        except (ValueError, IndexError):
            raise InstrumentProtocolError(f"{self.name}: trigger reply {reply!r}") from None

    async def trigger_status(self) -> str:
        """TD, WAIT, RUN, AUTO or STOP."""
        return await self.query(":TRIG:STAT?")

    # -- run control ---------------------------------------------------------------------------

    async def single(self) -> None:
        """Arm one acquisition (:SINGle); all channels of it share one trigger instant."""
        await self.write(":SING")

    async def run(self) -> None:
        """Run continuously."""
        await self.write(":RUN")

    async def stop(self) -> None:
        """Stop acquiring; the last complete acquisition stays readable."""
        await self.write(":STOP")

    async def wait_triggered(
        self,
        timeout_s: float,
        poll_s: float,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        """After `single()`: poll :TRIGger:STATus? until STOP (acquisition complete).

        Waits through `sleep` (the controller's clock); InstrumentTimeoutError after
        `timeout_s` seconds of that clock.
        """
        timeout = _finite("timeout_s", timeout_s)
        poll = _finite("poll_s", poll_s)
        if poll <= 0:
            raise LimitError(f"DS1000Z: poll_s must be > 0, got {poll_s!r}")
        waited = 0.0
        while True:
            status = await self.trigger_status()
            if status == "STOP":
                return
            if waited >= timeout:
                raise InstrumentTimeoutError(
                    f"{self.name} ({self.resource}): no complete acquisition within "
                    f"{timeout_s} s (trigger status {status})"
                )
            await sleep(poll)
            waited += poll

    # -- waveform readout ----------------------------------------------------------------------

    async def read_preamble(self) -> Preamble:
        """:WAVeform:PREamble? of the present source/mode/format."""
        return Preamble.parse(await self.query(":WAV:PRE?"))

    async def read_waveform(
        self, channel: int, fmt: WaveFormat = "BYTE", mode: WaveMode = "NORMal"
    ) -> Waveform:
        """Read one channel of the last acquisition (screen data, or memory in RAW mode)."""
        ch = self._check_channel(channel)
        if fmt not in _FORMAT_SHORT:
            raise ValueError(f"format must be BYTE, WORD or ASCii, not {fmt!r}")
        if mode not in ("NORMal", "RAW"):
            raise ValueError(f"mode must be NORMal or RAW, not {mode!r}")
        await self.write(
            f":WAV:SOUR CHAN{ch};:WAV:MODE {mode[:4].upper()};:WAV:FORM {_FORMAT_SHORT[fmt]}"
        )
        try:
            pre = await self.read_preamble()
        except InstrumentProtocolError as exc:
            raise InstrumentProtocolError(
                f"{self.name} ({self.resource}) channel {ch}: invalid waveform scaling: {exc}; "
                "the reading is refused"
            ) from exc
        chunk = MAX_READ_POINTS[fmt]
        pieces: list[NDArray[np.float64]] = []
        for start in range(1, pre.points + 1, chunk):
            stop = min(pre.points, start + chunk - 1)
            await self.write(f":WAV:STAR {start};:WAV:STOP {stop}")
            pieces.append(await self._read_data(fmt, pre, stop - start + 1))
        codes_or_volts = np.concatenate(pieces) if pieces else np.zeros(0)
        if fmt == "ASCii":
            volts = codes_or_volts
            bad = ~(np.isfinite(volts) & (np.abs(volts) < INVALID_MARKER))
            if np.any(bad):
                first = int(np.argmax(bad))
                raise InstrumentProtocolError(
                    f"{self.name} ({self.resource}) channel {ch}: {int(bad.sum())} of "
                    f"{volts.size} ASCii points are NaN, infinite or invalid (first: point "
                    f"{first} = {volts[first]!r}); the reading is refused"
                )
            codes = pre.codes(volts)
        else:
            codes = codes_or_volts
            volts = pre.volts(codes)
        clipped = bool(np.any(codes <= CODE_MIN) or np.any(codes >= CODE_MAX))
        if clipped:
            logger.info("%s: channel %d clipped (signal beyond the ADC range)", self.name, ch)
        return Waveform(ch, pre.times(0, volts.size), volts, clipped, pre)

    async def _read_data(self, fmt: WaveFormat, pre: Preamble, n: int) -> NDArray[np.float64]:
        payload = await self.query_binary_block(":WAV:DATA?")
        if fmt == "BYTE":
            data = np.frombuffer(payload, dtype=np.uint8).astype(np.float64)
        elif fmt == "WORD":
            if len(payload) % 2:
                raise InstrumentProtocolError(f"{self.name}: WORD block of odd length")
            data = np.frombuffer(payload, dtype="<u2").astype(np.float64)
        else:
            try:
                text = payload.decode("ascii").strip().rstrip(",")
                data = np.array([float(x) for x in text.split(",")] if text else [])
            except (UnicodeDecodeError, ValueError):
                raise InstrumentProtocolError(f"{self.name}: bad ASCii waveform data") from None
        if data.size != n:
            raise InstrumentProtocolError(
                f"{self.name} ({self.resource}): asked {n} points, got {data.size}"
            )
        return data

    async def read_channels(
        self,
        channels: Iterable[int],
        fmt: WaveFormat = "BYTE",
        mode: WaveMode = "NORMal",
        *,
        allow_clipped: bool = True,
    ) -> dict[int, Waveform]:
        """Read several channels of the one (last) acquisition; the scope must be stopped.

        After `single()` + `wait_triggered()` the scope is stopped, so every channel comes from
        the same acquisition; if it is running this stops it first (the last complete sweep).
        `allow_clipped=False`: a channel whose signal left the ADC range (overload) raises
        `InstrumentError` naming the instrument and channel instead of returning clipped data.
        """
        chans = [self._check_channel(c) for c in channels]
        if await self.trigger_status() != "STOP":
            await self.stop()
        waves = {c: await self.read_waveform(c, fmt, mode) for c in chans}
        clipped = [c for c, w in waves.items() if w.clipped]
        if clipped and not allow_clipped:
            raise InstrumentError(
                f"{self.name} ({self.resource}): channel(s) {clipped} clipped — the signal "
                "exceeds the ADC range (overload); increase the volts/div or move the offset"
            )
        return waves
