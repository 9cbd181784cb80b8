"""Exact gradients of autonomous orbits with their constraint held, and the exact EP limits.

An orbit solves G(z, α, β) = 0, z = (x, ω, ε) (`physlearn.simulators.autonomous`: R, the phase
condition, the constraint g = E − E₀, W − S₀ or T − T₀), with the bordered Jacobian J_z. Costs
(`OrbitCost`, c = ½ Σ γ (x − y)²), normalised two ways:

    averaged     ⟨c⟩ = (1/N) Σ_n c(x_n)
    integrated   ∮ c dt = T ⟨c⟩              (T = 2π/ω: the orbit's own period)

Adjoint:  dF/dα = −λᵀ ∂G/∂α,   J_zᵀ λ = ∂F/∂z.  ∂G/∂α: ∂²V/∂α∂x in R, ⟨∂V/∂α⟩ in the energy
constraint (the held energy contains V), nothing in the action or period constraints.

EP limits: the conjugate quantity of a phase is A = ∮ ∂L/∂α dt = −T ⟨∂V/∂α⟩ (``integrated``) or
⟨∂L/∂α⟩ = −⟨∂V/∂α⟩ (``averaged``); its β-derivative at the held constraint, dA/dβ = ∂A/∂z dz/dβ
with dz/dβ = −J_z⁻¹ ∂G/∂β (∂R/∂β = −γ(x − y), ∂E/∂β = −⟨c⟩), is what symmetric EP measures as
β → 0. docs/estimators.md derives which pairings equal the gradient (fixed E ↔ integrated, fixed
S₀ ↔ averaged) and the chain-rule terms of the crossed ones; `OrbitSensitivity` evaluates both
sides exactly, so tests compare them to round-off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from physlearn.simulators.autonomous import (
    TWO_PI,
    AutonomousProblem,
    OrbitCost,
    OrbitSolution,
    dense_solve,
)

Array = NDArray[np.float64]
CostKind = Literal["averaged", "integrated"]


def orbit_cost(sol: OrbitSolution, cost: OrbitCost, kind: CostKind = "averaged") -> Array:
    """⟨c⟩ or ∮ c dt per sample, (B,)."""
    c = np.mean(cost.density(sol.x), axis=1)
    return c if kind == "averaged" else sol.period_s * c


def orbit_conjugates(
    problem: AutonomousProblem, sol: OrbitSolution, kind: CostKind = "averaged"
) -> Array:
    """⟨∂L/∂α⟩ = −⟨∂V/∂α⟩ (averaged) or ∮ ∂L/∂α dt (integrated) per trainable parameter, (B,P)."""
    model = problem.model
    dens = model.dV_dtheta(sol.x, np.zeros(problem.n))[..., model.trainable]
    a = -np.mean(dens, axis=1)
    return a if kind == "averaged" else sol.period_s[:, None] * a


@dataclass
class OrbitSensitivity:
    """The linearisation of orbits ``sol`` of ``problem`` with the constraint they were solved at."""

    problem: AutonomousProblem
    sol: OrbitSolution
    cost: OrbitCost
    J: Array = field(init=False, repr=False)

    def __post_init__(self) -> None:
        s = self.sol
        self.J = self.problem.bordered(s.x, s.omega, s.eps, s.x, s.constraint.kind)
        self.B, self.N, self.d = s.x.shape
        self.n = self.N * self.d

    # -- solves ----------------------------------------------------------------------------------
    def solve(self, rhs: Array, transpose: bool = False) -> Array:
        """J_z⁻¹ rhs (or J_z⁻ᵀ rhs) for rhs (B, nz) or (B, nz, k)."""
        J = np.swapaxes(self.J, 1, 2) if transpose else self.J
        vec = rhs.ndim == 2
        out = dense_solve(J, rhs[..., None] if vec else rhs)
        return out[..., 0] if vec else out

    def _split(self, z: Array) -> tuple[Array, Array]:
        """(dx (B,N,d,...), dω (B,...)) of a vector (B, nz, ...)."""
        rest = z.shape[2:]
        return z[:, : self.n].reshape(self.B, self.N, self.d, *rest), z[:, self.n]

    # -- derivatives of G ------------------------------------------------------------------------
    def dG_dalpha(self) -> Array:
        """∂G/∂α (B, nz, P) for the trainable parameters."""
        model, x = self.problem.model, self.sol.x
        t = np.zeros(self.N)
        P = model.n_params
        out = np.zeros((self.B, self.n + 2, P))
        for p, term in enumerate(model.trainable):
            dtheta = np.zeros((self.B, model.n_terms))
            dtheta[:, term] = 1.0
            out[:, : self.n, p] = model.jvp_theta(x, t, dtheta).reshape(self.B, -1)
        if self.sol.constraint.kind == "energy":
            out[:, self.n + 1, :] = np.mean(model.dV_dtheta(x, t)[..., model.trainable], axis=1)
        return out

    def dG_dbeta(self) -> Array:
        """∂G/∂β (B, nz): the nudge force −γ(x − y) in R; −⟨c⟩ in the energy constraint."""
        out = np.zeros((self.B, self.n + 2))
        out[:, : self.n] = -self.cost.gradient(self.sol.x).reshape(self.B, -1)
        if self.sol.constraint.kind == "energy":
            out[:, self.n + 1] = -np.mean(self.cost.density(self.sol.x), axis=1)
        return out

    def dG_dvalue(self) -> Array:
        """∂G/∂(constraint value) (B, nz): −1 in the constraint row."""
        out = np.zeros((self.B, self.n + 2))
        out[:, self.n + 1] = -1.0
        return out

    # -- the cost and its adjoint ----------------------------------------------------------------
    def cost_value(self, kind: CostKind = "averaged") -> Array:
        return orbit_cost(self.sol, self.cost, kind)

    def dF_dz(self, kind: CostKind = "averaged") -> Array:
        """∂F/∂z (B, nz) of the averaged or integrated cost."""
        g = self.cost.gradient(self.sol.x).reshape(self.B, -1) / self.N
        out = np.zeros((self.B, self.n + 2))
        if kind == "averaged":
            out[:, : self.n] = g
        else:
            T = self.sol.period_s
            out[:, : self.n] = T[:, None] * g
            out[:, self.n] = (
                -TWO_PI / self.sol.omega**2 * np.mean(self.cost.density(self.sol.x), axis=1)
            )
        return out

    def adjoint_gradient(self, kind: CostKind = "averaged") -> Array:
        """dF/dα (B,P) with the orbit's constraint held."""
        lam = self.solve(self.dF_dz(kind), transpose=True)
        return -np.einsum("bz,bzp->bp", lam, self.dG_dalpha())

    # -- tangents --------------------------------------------------------------------------------
    def tangent(self, dG: Array) -> Array:
        """dz = −J_z⁻¹ dG for a perturbation of the equations dG (B, nz[, k])."""
        return -self.solve(dG)

    def period_derivative(self, dG: Array) -> Array:
        """dT = −(2π/ω²) dω along the tangent of dG, (B[, k])."""
        _, dw = self._split(self.tangent(dG)[..., None] if dG.ndim == 2 else self.tangent(dG))
        dT = -TWO_PI / self.sol.omega[:, None] ** 2 * dw
        return dT[:, 0] if dG.ndim == 2 else dT

    def dperiod_dalpha(self) -> Array:
        """dT/dα (B,P) with the constraint held."""
        return self.period_derivative(self.dG_dalpha())

    def dperiod_dvalue(self) -> Array:
        """dT/d(constraint value) (B,): dT/dE, dT/dS or 1. Infinite at a fold of the family in
        the constrained quantity (the constraint's Jacobian is singular there)."""
        return self.period_derivative(self.dG_dvalue())

    def conjugate_derivative(self, dz: Array, kind: CostKind) -> Array:
        """dA (B,P) of A = ⟨∂L/∂α⟩ or ∮ ∂L/∂α dt along a tangent dz (B, nz)."""
        model, x = self.problem.model, self.sol.x
        t = np.zeros(self.N)
        dx, dw = self._split(dz)
        dmean = -model.vjp_theta(x, t, dx / self.N)[:, model.trainable]  # d⟨∂L/∂α⟩
        if kind == "averaged":
            return dmean
        a = orbit_conjugates(self.problem, self.sol, "averaged")
        T = self.sol.period_s
        return T[:, None] * dmean + (-TWO_PI / self.sol.omega**2 * dw)[:, None] * a

    def ep_limit(self, kind: CostKind) -> Array:
        """lim β→0 of (A(+β) − A(−β))/2β with the constraint held, (B,P): the EP estimator's
        limit for conjugates of normalisation ``kind``."""
        return self.conjugate_derivative(self.tangent(self.dG_dbeta()), kind)

    def constraint_limit(self, kind: CostKind) -> Array:
        """dA/d(constraint value) (B,P) at β = 0: what two constraint-shifted orbits measure."""
        return self.conjugate_derivative(self.tangent(self.dG_dvalue()), kind)
