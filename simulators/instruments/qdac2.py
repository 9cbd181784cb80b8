"""Emulator of the QDevil QDAC-II 24-channel DC voltage source (SCPI over USB serial).

Protocol subset, from the QDAC-II command reference (as used by the QCoDeS driver):

    SOURce<ch>[:DC]:VOLTage[:LEVel][:IMMediate][:AMPLitude] <V>|MIN|MAX|DEF   and ?
    SOURce[:DC]:VOLTage[...] <V>,(@<channels>)     /   SOURce[:DC]:VOLTage? (@<channels>)
    SOURce<ch>[:DC]:VOLTage:LAST?                  present output (while slewing: the ramp)
    SOURce<ch>[:DC]:VOLTage:MODE FIXed             and ?   (LIST/SWEep are not emulated: -224)
    SOURce<ch>[:DC]:VOLTage:SLEW[:IMMediate] <V/s>|MIN|MAX|INF|DEF   and ?
    SOURce<ch>:RANGe LOW|HIGH (±2 V / ±10 V)       and ?;  SOURce<ch>:RANGe:LOW|HIGH:MIN|MAX?
    SOURce<ch>:FILTer DC|MEDium|HIGH (10 Hz / 10 kHz / 300 kHz low-pass)   and ?
    *IDN? → `QDevil, QDAC-II, <serial>, <firmware>`; SYSTem:ERRor? → `-222, "Data out of range"`

Model: the setpoint is quantised on a 25-bit DAC grid spanning the selected range; the DAC
output ramps to it at the slew rate; the selected filter is a first-order low-pass. The output
as a function of time is exact (piecewise closed form), read by the twin through
`output_voltages(t_s)` — never through the protocol. Numbers are sent with up to 9
significant digits (`0.0999999046`, `-2`, `20000000`); enumerations in lower case.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from physlearn.simulators.clock import TimeSource
from physlearn.simulators.instruments.scpi import (
    CommandContext,
    ScpiCommandError,
    ScpiInstrument,
    format_significant,
    scpi,
)

logger = logging.getLogger(__name__)

N_CHANNELS = 24
DAC_BITS = 25
RANGE_LIMIT_V = {"LOW": 2.0, "HIGH": 10.0}
FILTER_CUTOFF_HZ = {"DC": 10.0, "MEDium": 10e3, "HIGH": 300e3}
MAX_SLEW_V_PER_S = 2e7
MIN_SLEW_V_PER_S = 0.01
_HISTORY = 64
_DIGITS = 9


def quantise(voltage_v: float, range_name: str) -> float:
    """The voltage the DAC actually produces for `voltage_v` in range LOW or HIGH."""
    lsb_v = 2.0 * RANGE_LIMIT_V[range_name] / 2**DAC_BITS
    return round(voltage_v / lsb_v) * lsb_v


@dataclass(frozen=True)
class _Segment:
    """Output from `t0_s` on: DAC value ramps from x0 to target at `rate`, filtered by tau."""

    t0_s: float
    x0_v: float
    y0_v: float
    target_v: float
    slew_v_per_s: float
    tau_s: float

    def ramp_s(self) -> float:
        return abs(self.target_v - self.x0_v) / self.slew_v_per_s

    def dac(self, s: NDArray[np.float64]) -> NDArray[np.float64]:
        """Unfiltered DAC value at `s` seconds after t0."""
        rate = math.copysign(self.slew_v_per_s, self.target_v - self.x0_v)
        return np.where(s >= self.ramp_s(), self.target_v, self.x0_v + rate * np.clip(s, 0.0, None))

    def output(self, s: NDArray[np.float64]) -> NDArray[np.float64]:
        """Filtered output voltage at `s` seconds after t0."""
        rate = math.copysign(self.slew_v_per_s, self.target_v - self.x0_v)
        if self.target_v == self.x0_v:
            rate = 0.0
        tau = self.tau_s
        t_r = self.ramp_s()
        s_in = np.minimum(s, t_r)
        y_ramp = (
            self.x0_v
            + rate * s_in
            - rate * tau
            + (self.y0_v - self.x0_v + rate * tau) * np.exp(-s_in / tau)
        )
        after = s > t_r
        y_after = self.target_v + (y_ramp - self.target_v) * np.exp(-np.maximum(s - t_r, 0.0) / tau)
        return np.where(after, y_after, y_ramp)


@dataclass
class _Channel:
    range_name: str = "HIGH"
    filter_name: str = "HIGH"
    slew_v_per_s: float = MAX_SLEW_V_PER_S
    setpoint_v: float = 0.0
    segments: list[_Segment] = field(default_factory=list)

    @property
    def tau_s(self) -> float:
        return 1.0 / (2.0 * math.pi * FILTER_CUTOFF_HZ[self.filter_name])


class Qdac2Emulator(ScpiInstrument):
    """QDevil QDAC-II: 24 DC channels, 25-bit DAC, slew limiting and output filters."""

    manufacturer = "QDevil"
    model = "QDAC-II"
    firmware = "13-1.57"
    idn_separator = ", "
    error_format = '{code}, "{message}"'

    def __init__(self, clock: TimeSource | None = None, *, serial: str = "00042") -> None:
        self.channels: list[_Channel] = []
        super().__init__(clock, serial=serial)

    # -- state -------------------------------------------------------------------------------

    def reset_state(self) -> None:
        """*RST: every channel 0 V, range high, filter high, maximum slew rate."""
        t = self.clock.now()
        self.channels = [_Channel() for _ in range(N_CHANNELS)]
        for ch in self.channels:
            ch.segments.append(_Segment(t, 0.0, 0.0, 0.0, MAX_SLEW_V_PER_S, ch.tau_s))

    def _restart(self, ch: _Channel, target_v: float) -> None:
        """Start a new output segment now from the present state towards `target_v`."""
        t = self.clock.now()
        last = ch.segments[-1]
        s = np.array([t - last.t0_s])
        x = float(last.dac(s)[0])
        y = float(last.output(s)[0])
        ch.segments.append(_Segment(t, x, y, target_v, ch.slew_v_per_s, ch.tau_s))
        del ch.segments[:-_HISTORY]

    def _set(self, index: int, voltage_v: float) -> None:
        ch = self.channels[index - 1]
        limit = RANGE_LIMIT_V[ch.range_name]
        if not -limit <= voltage_v <= limit:
            raise ScpiCommandError(-222)
        ch.setpoint_v = quantise(voltage_v, ch.range_name)
        self._restart(ch, ch.setpoint_v)

    # -- twin-side API (not reachable through the protocol) ------------------------------------

    def output_voltages(self, t_s: ArrayLike) -> NDArray[np.float64]:
        """Actual output voltages in volts at twin time(s) `t_s` (seconds).

        Scalar `t_s` → shape (24,); array of shape (n,) → shape (n, 24). Valid from the start
        of the oldest kept segment (the last 64 changes per channel) on; earlier times raise
        ValueError. Times after now assume no further command.
        """
        with self._lock:
            t = np.asarray(t_s, dtype=np.float64)
            flat = np.atleast_1d(t)
            out = np.empty((flat.size, N_CHANNELS))
            for j, ch in enumerate(self.channels):
                starts = np.array([seg.t0_s for seg in ch.segments])
                if flat.size and flat.min() < starts[0]:
                    raise ValueError(f"t_s={flat.min()} s is before the kept output history")
                which = np.searchsorted(starts, flat, side="right") - 1
                for k in np.unique(which):
                    seg = ch.segments[int(k)]
                    mask = which == k
                    out[mask, j] = seg.output(flat[mask] - seg.t0_s)
            return out[0] if t.ndim == 0 else out

    def lose_setpoints(self) -> None:
        """Fault: the DAC silently resets every channel to 0 V (setpoints and outputs)."""
        with self._lock:
            t = self.clock.now()
            logger.info("QDAC-II emulator: fault: all setpoints lost at t=%s s", t)
            for ch in self.channels:
                ch.setpoint_v = 0.0
                ch.segments.append(_Segment(t, 0.0, 0.0, 0.0, ch.slew_v_per_s, ch.tau_s))
                del ch.segments[:-_HISTORY]

    # -- protocol ------------------------------------------------------------------------------

    def _channel(self, ctx: CommandContext) -> int:
        return ctx.suffix("ch", maximum=N_CHANNELS)

    def _targets(self, ctx: CommandContext, list_index: int) -> tuple[int, ...]:
        if ctx.has(list_index):
            if ctx.suffixes.get("ch") is not None:
                raise ScpiCommandError(-108)
            return ctx.channel_list(list_index, maximum=N_CHANNELS)
        return (self._channel(ctx),)

    @scpi("SOURce<ch>[:DC]:VOLTage[:LEVel][:IMMediate][:AMPLitude]", params=(1, 2))
    def _volt(self, ctx: CommandContext) -> None:
        targets = self._targets(ctx, 1)
        values = []
        for index in targets:  # validate every channel before changing any
            limit = RANGE_LIMIT_V[self.channels[index - 1].range_name]
            values.append(ctx.number(0, minimum=-limit, maximum=limit, default=0.0))
        for index, value in zip(targets, values, strict=True):
            self._set(index, value)

    @scpi("SOURce<ch>[:DC]:VOLTage[:LEVel][:IMMediate][:AMPLitude]?", params=(0, 1))
    def _volt_q(self, ctx: CommandContext) -> str:
        targets = self._targets(ctx, 0)
        return ",".join(
            format_significant(self.channels[i - 1].setpoint_v, _DIGITS) for i in targets
        )

    @scpi("SOURce<ch>[:DC]:VOLTage:LAST?", params=(0, 1))
    def _last_q(self, ctx: CommandContext) -> str:
        t = self.clock.now()
        values = []
        for i in self._targets(ctx, 0):
            ch = self.channels[i - 1]
            seg = ch.segments[-1]
            dac_v = float(seg.dac(np.array([t - seg.t0_s]))[0])
            values.append(format_significant(quantise(dac_v, ch.range_name), _DIGITS))
        return ",".join(values)

    @scpi("SOURce<ch>[:DC]:VOLTage:MODE")
    def _mode(self, ctx: CommandContext) -> None:
        self._channel(ctx)
        mode = ctx.choice(0, ("FIXed", "LIST", "SWEep"))
        if mode != "FIXed":
            raise ScpiCommandError(-224, f"{mode.upper()} mode is not emulated")

    @scpi("SOURce<ch>[:DC]:VOLTage:MODE?")
    def _mode_q(self, ctx: CommandContext) -> str:
        self._channel(ctx)
        return "fix"

    @scpi("SOURce<ch>[:DC]:VOLTage:SLEW[:IMMediate]", "SOURce<ch>:DC:SLEW")
    def _slew(self, ctx: CommandContext) -> None:
        ch = self.channels[self._channel(ctx) - 1]
        tok = ctx.token(0)
        if tok.kind == "word" and tok.text in ("INF", "INFINITY"):
            rate = MAX_SLEW_V_PER_S
        else:
            rate = ctx.number(
                0, minimum=MIN_SLEW_V_PER_S, maximum=MAX_SLEW_V_PER_S, default=MAX_SLEW_V_PER_S
            )
        ch.slew_v_per_s = rate
        self._restart(ch, ch.setpoint_v)

    @scpi("SOURce<ch>[:DC]:VOLTage:SLEW[:IMMediate]?", "SOURce<ch>:DC:SLEW?")
    def _slew_q(self, ctx: CommandContext) -> str:
        return format_significant(self.channels[self._channel(ctx) - 1].slew_v_per_s, _DIGITS)

    @scpi("SOURce<ch>:RANGe")
    def _range(self, ctx: CommandContext) -> None:
        ch = self.channels[self._channel(ctx) - 1]
        name = ctx.choice(0, ("LOW", "HIGH"))
        if abs(ch.setpoint_v) > RANGE_LIMIT_V[name]:
            raise ScpiCommandError(-221, "output voltage outside the requested range")
        ch.range_name = name
        ch.setpoint_v = quantise(ch.setpoint_v, name)
        self._restart(ch, ch.setpoint_v)

    @scpi("SOURce<ch>:RANGe?")
    def _range_q(self, ctx: CommandContext) -> str:
        return self.channels[self._channel(ctx) - 1].range_name.lower()

    def _range_limit(self, ctx: CommandContext, range_name: str, sign: float) -> str:
        self._channel(ctx)
        return format_significant(sign * RANGE_LIMIT_V[range_name], _DIGITS)

    @scpi("SOURce<ch>:RANGe:LOW:MINimum?")
    def _low_min_q(self, ctx: CommandContext) -> str:
        return self._range_limit(ctx, "LOW", -1.0)

    @scpi("SOURce<ch>:RANGe:LOW:MAXimum?")
    def _low_max_q(self, ctx: CommandContext) -> str:
        return self._range_limit(ctx, "LOW", 1.0)

    @scpi("SOURce<ch>:RANGe:HIGH:MINimum?")
    def _high_min_q(self, ctx: CommandContext) -> str:
        return self._range_limit(ctx, "HIGH", -1.0)

    @scpi("SOURce<ch>:RANGe:HIGH:MAXimum?")
    def _high_max_q(self, ctx: CommandContext) -> str:
        return self._range_limit(ctx, "HIGH", 1.0)

    @scpi("SOURce<ch>:FILTer")
    def _filter(self, ctx: CommandContext) -> None:
        ch = self.channels[self._channel(ctx) - 1]
        ch.filter_name = ctx.choice(0, ("DC", "MEDium", "HIGH"))
        self._restart(ch, ch.setpoint_v)

    @scpi("SOURce<ch>:FILTer?")
    def _filter_q(self, ctx: CommandContext) -> str:
        return {"DC": "dc", "MEDium": "med", "HIGH": "high"}[
            self.channels[self._channel(ctx) - 1].filter_name
        ]
