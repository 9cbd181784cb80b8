"""Floquet multipliers of autonomous (conservative) orbits, the trivial pair at 1 separated.

The monodromy Φ over one period T = 2π/ω comes from `physlearn.simulators.floquet.monodromy`
(RK4 on the variational equations q̈ = −M⁻¹ (K(t) + κ) q along the orbit). Two multipliers are 1
by symmetry and form a Jordan block: the flow direction v = (ẋ(0), ẍ(0)) is an eigenvector
(Φ v = v: time translation), and the energy gradient w = ∇H = (−M ẍ(0), M ẋ(0)) a left one
(wᵀ Φ = wᵀ: energy conservation); the generalised eigenvector (the neighbouring orbit of the
family) is sheared along v in proportion to dT/dE. In floating point the block splits into two
multipliers 1 ± O(√ε_Φ), so picking "the two nearest 1" from eig(Φ) is unreliable near
bifurcations. Instead the monodromy is reduced exactly: on the energy-tangent space wᵀ z = 0
modulo the flow line, with U an orthonormal basis of {z : wᵀ z = 0, vᵀ z = 0},

    P = Uᵀ Φ U            (2d − 2 × 2d − 2)

carries the nontrivial multipliers (those of the orbit within its energy surface). For a
conservative orbit they come in pairs (μ, 1/μ, μ̄): the orbit is linearly (neutrally) stable
when all lie on the unit circle, unstable when any has |μ| > 1 — no conservative orbit attracts.
The trivial pair is reported as v·Φv/|v|² and w·Φw/|w|² (both 1 up to the RK4 error).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from physlearn.simulators.autonomous import AutonomousProblem, OrbitSolution
from physlearn.simulators.excitation import GridExcitation
from physlearn.simulators.floquet import monodromy
from physlearn.simulators.spectral import PeriodicGrid

Array = NDArray[np.float64]
CArray = NDArray[np.complex128]


@dataclass(frozen=True)
class OrbitFloquet:
    """Per sample: ``raw`` eigenvalues of Φ (B, 2d) by decreasing modulus; ``trivial`` (B, 2) the
    flow and energy multipliers (≈ 1); ``nontrivial`` (B, 2d − 2) by decreasing modulus;
    ``raw_split`` (B,) |difference| of the two raw eigenvalues nearest 1 (the Jordan block's
    numerical splitting)."""

    raw: CArray
    trivial: Array
    nontrivial: CArray
    raw_split: Array

    @property
    def max_nontrivial(self) -> Array:
        """Largest nontrivial |μ| per sample (1 for a 1-D orbit, which has none)."""
        if self.nontrivial.shape[1] == 0:
            return np.ones(self.raw.shape[0])
        return np.abs(self.nontrivial[:, 0])

    def stable(self, tol: float = 1e-6) -> NDArray[np.bool_]:
        """Linearly stable (every nontrivial multiplier on the unit circle, to ``tol``)."""
        return self.max_nontrivial <= 1.0 + tol


def orbit_monodromy(
    problem: AutonomousProblem, sol: OrbitSolution, steps: int | None = None
) -> Array:
    """Monodromy matrices (B, 2d, 2d) of the orbits, state order (positions, velocities)."""
    B, N, d = sol.x.shape
    out = np.zeros((B, 2 * d, 2 * d))
    zeros = np.zeros((1, N, d))
    for b in range(B):
        grid = PeriodicGrid(N, float(sol.period_s[b]))
        kappa = np.broadcast_to(problem.load.kappa[b][None, None, :], (1, N, d)).copy()
        exc = GridExcitation(zeros, kappa, zeros, zeros, zeros)
        out[b] = monodromy(
            problem.model, problem.theta[b : b + 1], exc, grid, sol.x[b : b + 1], 0.0, steps
        )[0]
    return out


def _sorted(ev: CArray) -> CArray:
    return np.take_along_axis(ev, np.argsort(-np.abs(ev), axis=-1), axis=-1)


def orbit_floquet(
    problem: AutonomousProblem, sol: OrbitSolution, steps: int | None = None
) -> OrbitFloquet:
    """The Floquet multipliers of the orbits ``sol``, the trivial pair separated (module doc)."""
    B, _, d = sol.x.shape
    phi = orbit_monodromy(problem, sol, steps)
    w = sol.omega[:, None]
    xd = w * problem.dtau(sol.x)[:, 0, :]
    xdd = w**2 * np.matmul(problem.D2, sol.x)[:, 0, :]
    m = problem.model.mass
    v = np.concatenate([xd, xdd], axis=1)  # flow direction
    g = np.concatenate([-m * xdd, m * xd], axis=1)  # ∇H (positions, velocities)
    raw = np.zeros((B, 2 * d), dtype=complex)
    nontrivial = np.zeros((B, 2 * d - 2), dtype=complex)
    trivial = np.zeros((B, 2))
    split = np.zeros(B)
    with threadpool_limits(1, "blas"):
        for b in range(B):
            raw[b] = _sorted(np.linalg.eigvals(phi[b]).astype(complex))
            near = np.sort(np.abs(raw[b] - 1.0))
            split[b] = near[1] if near.size > 1 else 0.0
            # orthonormal basis of {z : gᵀz = 0, vᵀz = 0}
            C = np.stack([g[b], v[b]])
            _, _, vt = np.linalg.svd(C)
            U = vt[2:].T
            if U.shape[1]:
                nontrivial[b] = _sorted(np.linalg.eigvals(U.T @ phi[b] @ U).astype(complex))
            trivial[b, 0] = v[b] @ phi[b] @ v[b] / (v[b] @ v[b])
            trivial[b, 1] = g[b] @ phi[b] @ g[b] / (g[b] @ g[b])
    return OrbitFloquet(raw, trivial, nontrivial, split)
