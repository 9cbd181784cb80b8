"""Driver of the QDevil QDAC-II 24-channel DC voltage source (SCPI, USB serial 115200 8N1, LF).

Every voltage passes `OutputLimits.check` before anything is written; the instrument's own
range (±2 V low, ±10 V high) is enforced by the instrument and reported through the error
queue (`InstrumentCommandError`, code -222) when `check_errors` is on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from physlearn.drivers.scpi_instrument import ScpiInstrument, ScpiInstrumentConfig
from physlearn.drivers.transport import Transport
from physlearn.errors import InstrumentProtocolError, LimitError
from physlearn.spec.limits import OutputLimits

N_CHANNELS = 24
RangeName = Literal["low", "high"]
FilterName = Literal["dc", "med", "high"]


class Qdac2Config(ScpiInstrumentConfig):
    """QDAC-II configuration: transport, identity pattern and per-channel output limits."""

    idn_pattern: str = r"^QDevil, QDAC-II, "
    limits: OutputLimits
    safe_voltage_v: float = Field(0.0, allow_inf_nan=False)


def _format_volts(value_v: float) -> str:
    """Shortest repr that round-trips the float (e.g. 0.1, -2.5, 1e-06)."""
    return repr(float(value_v))


class Qdac2(ScpiInstrument):
    """Async QDAC-II driver; channels are numbered 1..24 as on the front panel."""

    config: Qdac2Config

    def __init__(self, config: Qdac2Config, transport: Transport | None = None) -> None:
        super().__init__(config, transport)
        self.limits = config.limits

    @staticmethod
    def _check_channel(channel: int) -> int:
        if not 1 <= channel <= N_CHANNELS:
            raise LimitError(f"QDAC-II has channels 1..{N_CHANNELS}, not {channel}")
        return channel

    async def set_voltage(self, channel: int, voltage_v: float) -> None:
        """Set the DC level of `channel` in volts (fixed mode), after the limit check."""
        value = self.limits.check(self._check_channel(channel), voltage_v)
        await self.write(
            f"sour{channel}:dc:volt:mode fix;:sour{channel}:volt {_format_volts(value)}"
        )

    async def set_voltages(self, voltages_v: Mapping[int, float]) -> None:
        """Set several channels; every value is checked before the first write."""
        checked = {
            ch: self.limits.check(self._check_channel(ch), v) for ch, v in voltages_v.items()
        }
        for channel, value in checked.items():
            await self.set_voltage(channel, value)

    async def get_voltage(self, channel: int) -> float:
        """Programmed DC level of `channel` in volts (as quantised by the DAC)."""
        return await self.query_float(f"sour{self._check_channel(channel)}:volt?")

    async def get_voltages(self, channels: Iterable[int] | None = None) -> NDArray[np.float64]:
        """Programmed DC levels in volts of `channels` (default all 24), in one query."""
        chans = [self._check_channel(c) for c in (channels or range(1, N_CHANNELS + 1))]
        values = await self.query_floats(f"sour:volt? (@{','.join(map(str, chans))})")
        if len(values) != len(chans):
            raise InstrumentProtocolError(
                f"{self.name} ({self.resource}): asked {len(chans)} channels, got {len(values)}"
            )
        return np.asarray(values, dtype=np.float64)

    async def get_output_voltage(self, channel: int) -> float:
        """Present output of `channel` in volts (differs from the setpoint while slewing)."""
        return await self.query_float(f"sour{self._check_channel(channel)}:volt:last?")

    async def set_range(self, channel: int, range_name: RangeName) -> None:
        """Select the output range: 'low' (±2 V) or 'high' (±10 V)."""
        if range_name not in ("low", "high"):
            raise ValueError(f"range must be 'low' or 'high', not {range_name!r}")
        await self.write(f"sour{self._check_channel(channel)}:rang {range_name}")

    async def get_range(self, channel: int) -> str:
        """Selected output range: 'low' or 'high'."""
        return await self.query(f"sour{self._check_channel(channel)}:rang?")

    async def set_filter(self, channel: int, filter_name: FilterName) -> None:
        """Select the output low-pass: 'dc' (10 Hz), 'med' (10 kHz) or 'high' (300 kHz)."""
        if filter_name not in ("dc", "med", "high"):
            raise ValueError(f"filter must be 'dc', 'med' or 'high', not {filter_name!r}")
        await self.write(f"sour{self._check_channel(channel)}:filt {filter_name}")

    async def get_filter(self, channel: int) -> str:
        """Selected output filter: 'dc', 'med' or 'high'."""
        return await self.query(f"sour{self._check_channel(channel)}:filt?")

    async def set_slew_rate(self, channel: int, slew_v_per_s: float) -> None:
        """Maximum slew rate of `channel` in V/s (finite, > 0)."""
        if not (math.isfinite(slew_v_per_s) and slew_v_per_s > 0):
            raise LimitError(f"QDAC-II channel {channel}: slew rate {slew_v_per_s!r} V/s refused")
        await self.write(
            f"sour{self._check_channel(channel)}:dc:volt:slew {_format_volts(slew_v_per_s)}"
        )

    async def get_slew_rate(self, channel: int) -> float:
        """Maximum slew rate of `channel` in V/s."""
        return await self.query_float(f"sour{self._check_channel(channel)}:dc:volt:slew?")

    async def safe_state(self) -> None:
        """Put every channel that has a limit at `safe_voltage_v` (checked like any value)."""
        channels = [
            c
            for c in range(1, N_CHANNELS + 1)
            if c in self.limits.channels or self.limits.default is not None
        ]
        await self.set_voltages({c: self.config.safe_voltage_v for c in channels})
