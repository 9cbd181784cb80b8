"""Time modulations μ(t), ν(t), δ(t), γ(t): constant, cosine, gaussian pulse, square.

Each is a pydantic model (a TOML table with a ``kind`` key) and a vectorised function of time
``f(t, period_s)``. With a period (the drive period T of a periodic problem) pulses and squares
repeat with that period; without one (problems on [t_i, t_f]) they are single events.
Times in seconds, phases in radians.
"""

from __future__ import annotations

from typing import Annotated, Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat

Array = NDArray[np.float64]


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __call__(self, t: Array, period_s: float | None) -> Array:  # pragma: no cover - abstract
        raise TypeError("use a concrete modulation")


class Constant(_Base):
    """f(t) = value."""

    kind: Literal["constant"] = "constant"
    value: float = 1.0

    def __call__(self, t: Array, period_s: float | None) -> Array:
        return np.full(np.shape(t), self.value, dtype=float)


class Cosine(_Base):
    """f(t) = offset + amplitude cos(2π harmonic t / P + phase_rad), P = period_s or the drive period."""

    kind: Literal["cosine"] = "cosine"
    offset: float = 1.0
    amplitude: float = 0.0
    harmonic: int = Field(1, ge=0)
    phase_rad: float = 0.0
    period_s: PositiveFloat | None = None

    def __call__(self, t: Array, period_s: float | None) -> Array:
        p = self.period_s if self.period_s is not None else period_s
        if p is None:
            raise ValueError("cosine modulation needs period_s on a non-periodic problem")
        arg = 2.0 * np.pi * self.harmonic * np.asarray(t, dtype=float) / p + self.phase_rad
        return self.offset + self.amplitude * np.cos(arg)


class GaussianPulse(_Base):
    """f(t) = baseline + amplitude exp(−(t − center_s)² / (2 width_s²)), summed over periods."""

    kind: Literal["gaussian"] = "gaussian"
    baseline: float = 0.0
    amplitude: float = 1.0
    center_s: float = 0.0
    width_s: PositiveFloat = 1.0

    def __call__(self, t: Array, period_s: float | None) -> Array:
        t = np.asarray(t, dtype=float)
        if period_s is None:
            g = np.exp(-0.5 * ((t - self.center_s) / self.width_s) ** 2)
        else:
            # Periodic images; enough of them that the truncation is below 1e-16 for width ≤ T.
            n_img = int(np.ceil(8.0 * self.width_s / period_s)) + 1
            shifts = period_s * np.arange(-n_img, n_img + 1)
            dt = (t[..., None] - self.center_s - shifts) / self.width_s
            g = np.exp(-0.5 * dt**2).sum(axis=-1)
        return self.baseline + self.amplitude * g


class Square(_Base):
    """Square wave: ``high`` on [start_s, start_s + duty·P) (mod P), ``low`` elsewhere.

    Without a period (problems on [t_i, t_f]) it is one window [start_s, start_s + width_s).
    ``rise_s`` > 0 smooths the edges with tanh ramps (a hard square breaks spectral accuracy).
    """

    kind: Literal["square"] = "square"
    low: float = 0.0
    high: float = 1.0
    duty: float = Field(0.5, gt=0.0, lt=1.0)
    start_s: float = 0.0
    width_s: PositiveFloat | None = None
    rise_s: float = Field(0.0, ge=0.0)

    def __call__(self, t: Array, period_s: float | None) -> Array:
        t = np.asarray(t, dtype=float)
        if period_s is None:
            if self.width_s is None:
                raise ValueError("square modulation needs width_s on a non-periodic problem")
            a, w = t - self.start_s, self.width_s
        else:
            a = np.mod(t - self.start_s, period_s)
            w = self.duty * period_s
        if self.rise_s == 0.0:
            on = ((a >= 0.0) & (a < w)).astype(float)
        elif period_s is None:
            on = 0.5 * (np.tanh(a / self.rise_s) - np.tanh((a - w) / self.rise_s))
        else:
            # Smooth periodic window: sum of edge pairs over neighbouring periods.
            on = np.zeros_like(a)
            for k in (-1, 0, 1):
                b = a + k * period_s
                on += 0.5 * (np.tanh(b / self.rise_s) - np.tanh((b - w) / self.rise_s))
        return self.low + (self.high - self.low) * on


class ModulationFn(Protocol):
    """What a model needs of a time modulation: f(t, period_s) → values (N,). Every `Modulation`
    is one; so are derived ones such as a time-reversed modulation."""

    def __call__(self, t: Array, period_s: float | None) -> Array: ...


Modulation = Annotated[Constant | Cosine | GaussianPulse | Square, Field(discriminator="kind")]
