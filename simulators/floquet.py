"""Floquet multipliers of a periodic orbit: eigenvalues of the monodromy matrix over one period.

The variational equations q̇ = p, ṗ = −(K(t) q)/m − Γ p, with K(t) the Hessian of the potential
plus the clamp/nudge stiffness along the orbit (trigonometric interpolation of the collocated
orbit), are integrated over one period by classical RK4 for all 2d columns at once.
An orbit attracts exactly when every multiplier has modulus < 1.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from physlearn.simulators.excitation import GridExcitation
from physlearn.simulators.feedback import Feedback
from physlearn.simulators.spectral import PeriodicGrid
from physlearn.spec.model import NetworkModel

Array = NDArray[np.float64]


def monodromy(
    model: NetworkModel,
    theta: Array,
    exc: GridExcitation,
    grid: PeriodicGrid,
    x: Array,
    beta: float | Array = 0.0,
    steps: int | None = None,
    feedback: Feedback | None = None,
) -> Array:
    """Monodromy matrices (B, 2d, 2d) of the orbits x (B,N,d), state ordering (positions, velocities).

    ``feedback``: a learning phase's linear feedback force G(t)(x − r) (its gain interpolated
    like the orbit); the directed couplings' Jacobian N(t) is in ``model.hess_vec``."""
    B, N, d = x.shape
    n_steps = steps if steps is not None else max(16 * N, 512)
    h = grid.period_s / n_steps
    t_half = 0.5 * h * np.arange(2 * n_steps + 1)
    xs = grid.interpolate(x, t_half)  # (B, 2n+1, d)
    ks = grid.interpolate(exc.external_stiffness(beta), t_half)
    gs = None if feedback is None else grid.interpolate(feedback.gain, t_half)  # (B,2n+1,d,d)
    coef = model.coefficients(theta)
    m, g = model.mass, model.damping
    cols = 2 * d

    def accel(i: int, q: Array, p: Array) -> Array:
        # q, p: (B, 2d, d) — one column of the fundamental matrix per row of axis 1.
        xi = np.broadcast_to(xs[:, i : i + 1, :], q.shape)
        ti = np.full(cols, t_half[i])
        kq = model.hess_vec(xi, ti, coef, q) + ks[:, i : i + 1, :] * q
        if gs is not None:
            kq = kq - np.einsum("bij,bcj->bci", gs[:, i], q)
        return -kq / m - g * p

    q = np.zeros((B, cols, d))
    p = np.zeros((B, cols, d))
    idx = np.arange(d)
    q[:, idx, idx] = 1.0
    p[:, d + idx, idx] = 1.0
    for s in range(n_steps):
        i0, i1, i2 = 2 * s, 2 * s + 1, 2 * s + 2
        k1q, k1p = p, accel(i0, q, p)
        k2q, k2p = p + 0.5 * h * k1p, accel(i1, q + 0.5 * h * k1q, p + 0.5 * h * k1p)
        k3q, k3p = p + 0.5 * h * k2p, accel(i1, q + 0.5 * h * k2q, p + 0.5 * h * k2p)
        k4q, k4p = p + h * k3p, accel(i2, q + h * k3q, p + h * k3p)
        q = q + h / 6.0 * (k1q + 2 * k2q + 2 * k3q + k4q)
        p = p + h / 6.0 * (k1p + 2 * k2p + 2 * k3p + k4p)
    # Column c of Φ is the state at T started from unit vector c: rows = (q; p).
    return np.concatenate([q, p], axis=2).swapaxes(1, 2)


def floquet_multipliers(
    model: NetworkModel,
    theta: Array,
    exc: GridExcitation,
    grid: PeriodicGrid,
    x: Array,
    beta: float | Array = 0.0,
    feedback: Feedback | None = None,
) -> NDArray[np.complex128]:
    """Floquet multipliers (B, 2d), sorted by decreasing modulus."""
    mono = monodromy(model, theta, exc, grid, x, beta, feedback=feedback)
    ev = np.linalg.eigvals(mono).astype(np.complex128)
    order = np.argsort(-np.abs(ev), axis=1)
    return np.take_along_axis(ev, order, axis=1)
