"""Pieces of the echo nudge shared by the estimator (`ep_echo`) and the echo self-calibration
(`echo_fit`): the echo drive F̃(t) = F(−t) − 2 m Γ ẋ(−t), the echo-orbit mismatch, the spectral
derivative on a period grid, and the actuation checks."""

from __future__ import annotations

import numpy as np

from physlearn.errors import GradientError
from physlearn.estimators._common import Array, reverse_time
from physlearn.spec.system import ForceWaveform, Observation, PhysicalSystem
from physlearn.spec.waveform import SampledWaveform

__all__ = [
    "damped_nodes",
    "echo_drive",
    "echo_mismatch",
    "enter_echo",
    "on_samples",
    "require_actuation",
    "spectral_derivative",
]


def spectral_derivative(x: Array, period_s: float) -> Array:
    """dx/dt along axis 1 of samples (B, N, d) over one period (trigonometric interpolation; the
    Nyquist mode of an even N is dropped)."""
    n = x.shape[1]
    k = np.arange(n // 2 + 1, dtype=float)
    if n % 2 == 0:
        k[-1] = 0.0
    fac = (2j * np.pi / period_s * k)[None, :, None]
    return np.fft.irfft(np.fft.rfft(x, axis=1) * fac, n=n, axis=1)


def on_samples(wave: Array, n: int, period_s: float) -> Array:
    """A periodic waveform (B, M, d) resampled onto n uniform samples (trigonometric)."""
    if wave.shape[1] == n:
        return np.asarray(wave, dtype=float)
    t = period_s * np.arange(n) / n
    return SampledWaveform(np.asarray(wave, dtype=float), period_s, "spectral")(t)


def echo_drive(drive: Array, free: Observation, m_gamma: Array) -> Array:
    """F̃(t) = F(−t) − 2 m_j Γ_j ẋ_j(−t) (B, N, d) on the free orbit's grid.

    ``drive``: the drive force (B, M, d) from `drive_forces`; ``m_gamma``: m_jΓ_j (d,) in kg/s.
    ẋ is differentiated before the reversal (d/dt[x(−t)] = −ẋ(−t)).
    """
    f = on_samples(drive, free.x.shape[1], free.period_s)
    xdot = spectral_derivative(free.x, free.period_s)
    mg = np.asarray(m_gamma, dtype=float)
    return np.asarray(reverse_time(f) - 2.0 * mg * reverse_time(xdot), dtype=float)


def echo_mismatch(echo: Array, free: Array) -> Array:
    """Relative mismatch max|x̃ − P x| / max|x| per sample (B,) of an echo orbit (same grid)."""
    peak = np.maximum(np.max(np.abs(free), axis=(1, 2)), 1e-300)
    return np.asarray(np.max(np.abs(echo - reverse_time(free)), axis=(1, 2)) / peak, dtype=float)


def require_actuation(
    system: PhysicalSystem, nodes: list[int], why: str, name: str = "ep_echo"
) -> None:
    """Refuse (GradientError naming them) when some of ``nodes`` cannot receive a force."""
    missing = sorted(set(nodes) - set(system.actuated_nodes))
    if missing:
        raise GradientError(
            f"{name} needs a force actuator on nodes {missing} ({why}); the system actuates "
            f"only {sorted(system.actuated_nodes)}"
        )


async def enter_echo(
    system: PhysicalSystem,
    drive: Array,
    free: Observation,
    attractor_tol: float,
    info: dict[str, object],
    name: str = "ep_echo",
) -> Observation:
    """Set the echo drive (B, N, d), measure the echo orbit and check it against the reversed
    free orbit: ``info`` gains ``echo_mismatch`` (B,) and ``echo_settle_s``; a mismatch above
    ``attractor_tol`` is refused (`GradientError`). The caller restores `set_echo_drive(None)`."""
    await system.set_echo_drive(ForceWaveform(drive, free.period_s))
    echo = (await system.measure()).one_period()
    mismatch = echo_mismatch(echo.x, free.x)
    info["echo_mismatch"] = mismatch
    if echo.settle is not None:
        info["echo_settle_s"] = np.asarray(echo.settle.waited_s, dtype=float).copy()
    bad = np.flatnonzero(~(mismatch <= attractor_tol))
    if bad.size:
        i = int(bad[0])
        raise GradientError(
            f"{name}: the echo orbit of sample {i} differs from the time-reversed free "
            f"orbit by {mismatch[i]:.3g} (relative, max norm) > attractor_tol "
            f"{attractor_tol:.3g}: the system settled on another attractor (or "
            "m_jΓ_j, the drive or the sensing are miscalibrated); the gradient would be "
            "that of another orbit, so it is refused"
        )
    return echo


def damped_nodes(m_gamma: Array) -> list[int]:
    return [int(j) for j in np.flatnonzero(np.asarray(m_gamma) > 0)]
