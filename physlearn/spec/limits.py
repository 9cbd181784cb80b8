"""Output limits enforced by the drivers before any write: refuse, never clamp.

limits = OutputLimits(instrument="qdac", default=VoltageLimit(min_v=-1.0, max_v=1.0),
                      channels={3: VoltageLimit(min_v=0.0, max_v=2.5)})
limits.check(3, 1.2)   # returns 1.2; 3.0 or nan → LimitError naming qdac, channel 3, ...
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from physlearn.errors import LimitError


class VoltageLimit(BaseModel):
    """Allowed closed interval [min_v, max_v] of one output, in volts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_v: float
    max_v: float

    @field_validator("min_v", "max_v")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"limit must be finite, got {value!r}")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> VoltageLimit:
        if self.min_v > self.max_v:
            raise ValueError(f"min_v={self.min_v} V is above max_v={self.max_v} V")
        return self

    def contains(self, value_v: float) -> bool:
        """True if `value_v` is finite and inside the interval."""
        return math.isfinite(value_v) and self.min_v <= value_v <= self.max_v


class OutputLimits(BaseModel):
    """Per-channel voltage limits of one instrument; channels without an entry use `default`.

    A channel with neither an entry nor a default is refused entirely.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    instrument: str
    default: VoltageLimit | None = None
    channels: dict[int, VoltageLimit] = {}

    def limit_for(self, channel: int) -> VoltageLimit:
        """The limit of `channel` (LimitError if none is configured)."""
        limit = self.channels.get(channel, self.default)
        if limit is None:
            raise LimitError(f"{self.instrument}: channel {channel} has no configured limit")
        return limit

    def check(self, channel: int, value_v: float) -> float:
        """Return `value_v` unchanged if allowed on `channel`; otherwise raise LimitError."""
        limit = self.limit_for(channel)
        try:
            value = float(value_v)
        except (TypeError, ValueError):
            raise LimitError(
                f"{self.instrument}: channel {channel}: value {value_v!r} is not a number"
            ) from None
        if not math.isfinite(value):
            raise LimitError(
                f"{self.instrument}: channel {channel}: value {value!r} V is not finite "
                f"(limit [{limit.min_v}, {limit.max_v}] V)"
            )
        if not limit.min_v <= value <= limit.max_v:
            raise LimitError(
                f"{self.instrument}: channel {channel}: value {value!r} V outside the limit "
                f"[{limit.min_v}, {limit.max_v}] V; refused, nothing was written"
            )
        return value
