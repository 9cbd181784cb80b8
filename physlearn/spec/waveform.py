"""`SampledWaveform`: a periodic waveform given by its samples over one period, evaluated at any
time (trigonometric interpolation, zero-order hold or linear)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

__all__ = ["SampledWaveform"]


@dataclass(frozen=True)
class SampledWaveform:
    """A periodic waveform given by samples (B,M,d) over one period, evaluated at any time.

    ``interp``: ``spectral`` (trigonometric interpolation; exact for band-limited signals),
    ``zoh`` (zero-order hold, as an arbitrary-waveform generator's DAC), or ``linear``.
    """

    samples: Array
    period_s: float
    interp: Literal["spectral", "zoh", "linear"] = "spectral"

    def __call__(self, t: Array) -> Array:
        t = np.asarray(t, dtype=float)
        m = self.samples.shape[1]
        if self.interp == "spectral":
            X = np.fft.fft(self.samples, axis=1) / m
            k = np.fft.fftfreq(m, 1.0 / m)
            if m % 2 == 0:
                k[m // 2] = 0.0  # Nyquist: take the real (cosine) part only
            E = np.exp(2j * np.pi * np.outer(t / self.period_s, k))
            return np.real(np.einsum("nk,bkd->bnd", E, X))
        pos = np.mod(t, self.period_s) / self.period_s * m
        i0 = np.floor(pos).astype(int) % m
        if self.interp == "zoh":
            return self.samples[:, i0, :]
        frac = (pos - np.floor(pos))[None, :, None]
        return (1 - frac) * self.samples[:, i0, :] + frac * self.samples[:, (i0 + 1) % m, :]
