"""Floquet multipliers of a periodic orbit: eigenvalues of the monodromy matrix over one period.

The variational equations q̇ = p, ṗ = −(K(t) q)/m − Γ p, with K(t) the Hessian of the potential
plus the clamp/nudge stiffness along the orbit (trigonometric interpolation of the collocated
orbit), are integrated over one period by classical RK4 for all 2d columns at once, K(t) built
densely once per half-step so that every stage is one matrix product.
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
    idx = np.arange(d)

    def stiffness_t(i: int) -> Array:
        """Kᵀ(t_i)/m (B,d,d) at half-step i: the dense Hessian (with the directed couplings'
        Jacobian), clamp/nudge stiffness and feedback, so that every stage is one BLAS product
        (B,2d,d)@(B,d,d) instead of a Hessian-vector product per column."""
        K = model.hessian(xs[:, i : i + 1, :], t_half[i : i + 1], coef)[:, 0]
        K[:, idx, idx] += ks[:, i, :]
        if gs is not None:
            K = K - gs[:, i]
        return np.ascontiguousarray((K / m[:, None]).swapaxes(1, 2))

    cache: dict[int, Array] = {}  # the step's three half-step times (i1 shared by two stages)

    def accel(i: int, q: Array, p: Array) -> Array:
        # q, p: (B, 2d, d) — one column of the fundamental matrix per row of axis 1.
        if i not in cache:
            if len(cache) > 2:
                cache.clear()
            cache[i] = stiffness_t(i)
        return -(q @ cache[i]) - g * p

    q = np.zeros((B, cols, d))
    p = np.zeros((B, cols, d))
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
