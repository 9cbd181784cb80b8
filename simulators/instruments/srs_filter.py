"""The output filter of the SRS lock-in emulators (`srs_lockin`): n = 1..4 cascaded identical
first-order RC stages (time constant τ, 6..24 dB/oct) and the samples of the demodulated input
that drive them.

The signal part is advanced with the cascade's exact discrete-time solution for an input linear
between samples (first-order hold); the noise part (X and Y, real) as an Ornstein–Uhlenbeck
cascade driven by white noise. Steps are given as r = Δ/τ (dimensionless).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.signal import lfilter
from scipy.special import gammainc

Array = NDArray[np.float64]
#: z(t) and max |v| for sample times t (any shape): the demodulated input
Demodulate = Callable[[Array], tuple[NDArray[Any], float]]

SAMPLES_PER_PERIOD = 32


def _foh_input_weights(r: float, n: int) -> tuple[Array, Array]:
    """Exact input weights of n identical RC stages over one step Δ = r·τ, for an input linear
    between its samples x_k, x_k+1 (first-order hold):

        s_k+1 = Φ(r)·s_k + g0·x_k + g1·x_k+1,
        g0_j = (j+1)·I_j+1 / r,  g1_j = I_j − g0_j,  I_j = ∫_0^r e^-w w^j/j! dw = P(j+1, r).
    """
    integrals = np.array([float(gammainc(j + 1, r)) for j in range(n + 1)])
    g0 = np.arange(1, n + 1) * integrals[1:] / r
    return g0, integrals[:n] - g0


def _cascade_transition(r: float, n: int) -> Array:
    """State transition of n identical RC stages over Δ = r·τ with zero input."""
    phi = np.zeros((n, n))
    decay = math.exp(-r)
    for i in range(n):
        for j in range(i + 1):
            phi[i, j] = decay * r ** (i - j) / math.factorial(i - j)
    return phi


def _cascade_noise_covariance(r: float, n: int, psd_per_tau: float) -> Array:
    """Covariance added over Δ = r·τ to the n stage outputs by white noise of two-sided PSD S.

    Q_ij = (S/τ)·γ(i+j+1, 2r) / (2^(i+j+1)·i!·j!)  with γ the lower incomplete gamma function.
    """
    q = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            k = i + j + 1
            lower_gamma = math.factorial(k - 1) * float(gammainc(k, 2.0 * r))
            q[i, j] = psd_per_tau * lower_gamma / (2.0**k * math.factorial(i) * math.factorial(j))
    return q


class OutputFilter:
    """The RC cascade's state: stage outputs of the signal part (complex, (4,)) and of the noise
    (X, Y: (2, 4)), the filter input at the last update (the first-order hold continues from it)
    and the number of stages in use."""

    def __init__(self) -> None:
        self.signal_state = np.zeros(4, dtype=np.complex128)
        self.noise_state = np.zeros((2, 4))
        self.last_input = 0j
        self.n_stages = 2

    def set_stages(self, n: int) -> None:
        """Use n stages; stages added take the state of the last stage in use."""
        old = self.n_stages
        if n > old:
            self.signal_state[old:n] = self.signal_state[old - 1]
            self.noise_state[:, old:n] = self.noise_state[:, old - 1 : old]
        self.n_stages = n

    def output(self) -> complex:
        """The last stage's output: signal plus noise."""
        n = self.n_stages
        noise = complex(self.noise_state[0, n - 1], self.noise_state[1, n - 1])
        return complex(self.signal_state[n - 1]) + noise

    def decay(self, r: float) -> None:
        """The signal part over Δ = r·τ with zero input (no reference: nothing demodulated)."""
        n = self.n_stages
        phi = _cascade_transition(r, n)
        self.signal_state[:n] = phi @ self.signal_state[:n]
        self.last_input = 0j

    def forget(self) -> None:
        """Drop the signal part (its older input is forgotten)."""
        self.signal_state[: self.n_stages] = 0.0

    def add_noise(self, r: float, psd_per_tau: float, rng: np.random.Generator) -> None:
        """The noise part over Δ = r·τ, driven by white noise of two-sided PSD/τ `psd_per_tau`
        per X/Y component (one draw of n × 2 normals from `rng`)."""
        n = self.n_stages
        phi = _cascade_transition(r, n)
        q = _cascade_noise_covariance(r, n, psd_per_tau)
        w, v = np.linalg.eigh(q)
        root = v * np.sqrt(np.clip(w, 0.0, None))
        kicks = root @ rng.standard_normal((n, 2))
        for c in range(2):
            self.noise_state[c, :n] = phi @ self.noise_state[c, :n] + kicks[:, c]

    def run(self, x: NDArray[Any], r: float) -> None:
        """Run samples x[0..K] (x[0]: input at the last update, steps r = Δ/τ) through the n
        stages, exactly for an input linear between samples. Stage j obeys
        s_j[k+1] = a·s_j[k] + Σ_{i<j} Φ_ji·s_i[k] + g0_j·x[k] + g1_j·x[k+1], a first-order
        recursion once the earlier stages are known, so each stage is one `lfilter` call."""
        n = self.n_stages
        xs = np.asarray(x, dtype=np.complex128)
        phi = _cascade_transition(r, n)
        g0, g1 = _foh_input_weights(r, n)
        a = phi[0, 0]
        history: list[NDArray[np.complex128]] = []  # s_i[0..K-1] of the stages done so far
        for j in range(n):
            drive = g0[j] * xs[:-1] + g1[j] * xs[1:]
            for i, s_i in enumerate(history):
                drive = drive + phi[j, i] * s_i
            s0 = self.signal_state[j]
            y, _ = lfilter([1.0], [1.0, -a], drive, zi=np.array([a * s0], dtype=np.complex128))
            states = np.asarray(y, dtype=np.complex128)
            history.append(np.concatenate(([s0], states[:-1])))
            self.signal_state[j] = states[-1]
        self.last_input = complex(x[-1])

    def fine_samples(
        self,
        demodulate: Demodulate,
        start: float,
        t1: float,
        tau: float,
        period: float,
        fresh: bool,
    ) -> tuple[NDArray[Any], float, float]:
        """z sampled 32 times per reference period (finer if τ/16 is shorter) from `start` to
        `t1` (s), led by the last input unless `fresh`; returns (samples, step s, max |v|)."""
        step = min(period / SAMPLES_PER_PERIOD, tau / 16.0)
        count = max(1, math.ceil((t1 - start) / step - 1e-9))
        dt_step = (t1 - start) / count
        first = 0 if fresh else 1
        t = start + dt_step * np.arange(first, count + 1, dtype=np.float64)
        t[-1] = t1
        z, peak = demodulate(t)
        if not fresh:
            z = np.concatenate(([self.last_input], z))
        return z, dt_step, peak

    def period_averages(
        self,
        demodulate: Demodulate,
        start: float,
        t1: float,
        tau: float,
        period: float,
        fresh: bool,
    ) -> tuple[NDArray[Any], float, float]:
        """Means of z over the reference period ending at each grid point (grid ≈ τ/16)."""
        step = max(tau / 16.0, period)
        count = max(1, math.ceil((t1 - start) / step - 1e-9))
        dt_step = (t1 - start) / count
        first = 0 if fresh else 1
        ends = start + dt_step * np.arange(first, count + 1)
        ends[-1] = t1
        offsets = period * ((np.arange(SAMPLES_PER_PERIOD) + 0.5) / SAMPLES_PER_PERIOD - 1.0)
        z, peak = demodulate(ends[:, None] + offsets[None, :])
        means = z.mean(axis=1)
        if not fresh:
            means = np.concatenate(([self.last_input], means))
        return means, dt_step, peak
