"""Uniform periodic time grids: spectral differentiation, time reversal, interpolation, quadrature.

A grid has an odd number of points N on [0, T): t_n = n T / N. With N odd the Fourier
differentiation matrix D is real and antisymmetric (no Nyquist mode), so the collocated
Lagrangian is exactly variational (m D² symmetric) and the discrete EP identity holds.
Arrays are (batch, time, node); the time axis is axis 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


@dataclass(frozen=True)
class PeriodicGrid:
    """N (odd) equispaced points over one period T (seconds)."""

    n: int
    period_s: float
    t: Array = field(init=False, repr=False)
    harmonics: Array = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.n < 3 or self.n % 2 == 0:
            raise ValueError(f"points per period must be odd and ≥ 3, got {self.n}")
        if not self.period_s > 0:
            raise ValueError(f"period must be positive, got {self.period_s}")
        object.__setattr__(self, "t", self.period_s * np.arange(self.n) / self.n)
        object.__setattr__(self, "harmonics", np.arange(self.n // 2 + 1, dtype=float))

    @property
    def omega(self) -> float:
        return 2.0 * np.pi / self.period_s

    @property
    def dt(self) -> float:
        """Quadrature weight of every point (rectangle rule = exact for trig. polynomials)."""
        return self.period_s / self.n

    def deriv(self, x: Array, order: int = 1) -> Array:
        """d^order x/dt^order along axis 1 (spectral)."""
        fac = (1j * self.omega * self.harmonics) ** order
        shape = [1] * x.ndim
        shape[1] = fac.size
        X = np.fft.rfft(x, axis=1) * fac.reshape(shape)
        return np.fft.irfft(X, n=self.n, axis=1)

    def reverse(self, x: Array) -> Array:
        """Time reversal t → −t (mod T): sample n → sample (−n mod N), along axis 1."""
        return np.take(x, (-np.arange(self.n)) % self.n, axis=1)

    def interpolate(self, x: Array, t: Array) -> Array:
        """Trigonometric interpolation of samples x (B,N,...) at times t (M,) → (B,M,...)."""
        X = np.fft.rfft(x, axis=1) / self.n
        wt = np.outer(np.asarray(t, dtype=float), self.omega * self.harmonics)  # (M,H)
        E = np.exp(1j * wt)
        scale = np.full(self.harmonics.size, 2.0)
        scale[0] = 1.0
        return np.real(np.tensordot(E * scale, X, axes=([1], [1]))).swapaxes(0, 1)

    def integral(self, f: Array) -> Array:
        """∫_0^T f dt along axis 1 (exact for trigonometric polynomials of degree < N)."""
        return np.sum(f, axis=1) * self.dt

    def weighted_integral(self, f: Array, rate: float) -> Array:
        """∫_0^T e^{rate·t} f(t) dt along axis 1, exact for the trigonometric interpolant of f."""
        if rate == 0.0:
            return self.integral(f)
        F = np.fft.rfft(f, axis=1) / self.n
        h = self.harmonics
        g = (np.exp(rate * self.period_s) - 1.0) / (rate + 1j * self.omega * h)
        g = g * np.where(h == 0, 1.0, 2.0)
        shape = [1] * f.ndim
        shape[1] = h.size
        return np.real(np.sum(F * g.reshape(shape), axis=1))

    def weighted_quadrature(self, rate: float) -> Array:
        """Weights w (N,) with Σ w_n f_n = ∫_0^T e^{rate t} f dt for trigonometric polynomials."""
        return self.weighted_integral(np.eye(self.n)[None, :, :], rate)[0]
