"""Exact gradients of the periodic steady-state cost, and the exact bias of EP.

Notation (collocation on a `PeriodicGrid`, weights Δt = T/N): the steady state solves R(x, θ) = 0
with Jacobian J = ∂R/∂x; the cost is C = Σ_n Δt c(x_n, t_n), c = ½ Σ γ (x − y)², g = ∂C/∂x.

    adjoint gradient   dC/dα = −(∂R/∂α)ᵀ J⁻ᵀ g
    EP limit (β → 0)   dA/dβ = −(∂R/∂α)ᵀ J⁻¹ g,    A = ∫ ∂L/∂α dt = −Σ Δt ∂V/∂α
    exact EP bias      dA/dβ − dC/dα = −(∂R/∂α)ᵀ (J⁻¹ − J⁻ᵀ) g            (docs/physics.md)

∂R/∂α = ∂²V/∂α∂x. All functions are batched; parameter axes are the trainable parameters (P).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from physlearn.simulators.excitation import GridExcitation
from physlearn.simulators.periodic import PeriodicOperator, PeriodicSolution
from physlearn.simulators.spectral import PeriodicGrid
from physlearn.spec.model import NetworkModel

Array = NDArray[np.float64]


def periodic_cost(sol: PeriodicSolution, exc: GridExcitation) -> Array:
    """C = ∫_0^T ½ Σ γ (x − y)² dt per sample, shape (B,)."""
    return sol.grid.integral(exc.cost_density(sol.x))


@dataclass
class PeriodicSensitivity:
    """Linearisation of a periodic steady state: solves with J and Jᵀ, and ∂R/∂α products."""

    model: NetworkModel
    theta: Array
    exc: GridExcitation
    sol: PeriodicSolution

    def __post_init__(self) -> None:
        self.grid: PeriodicGrid = self.sol.grid
        self.op = PeriodicOperator(self.model, self.theta, self.exc, self.grid, self.sol.beta)
        self.op.set_orbit(self.sol.x)

    def cost_gradient(self, weights: Array | None = None) -> Array:
        """g = ∂C/∂x (B,N,d) with quadrature weights (default Δt)."""
        w = self.grid.dt if weights is None else np.asarray(weights)[None, :, None]
        return w * self.exc.cost_gradient(self.sol.x)

    def vjp_params(self, lam: Array) -> Array:
        """λᵀ ∂R/∂α for the trainable parameters, shape (B,P)."""
        return self.model.vjp_theta(self.sol.x, self.grid.t, lam)[:, self.model.trainable]

    def jvp_params(self, dalpha: Array) -> Array:
        """(∂R/∂α) dα, shape (B,N,d), for dα (B,P)."""
        dtheta = np.zeros_like(self.theta)
        dtheta[:, self.model.trainable] = dalpha
        return self.model.jvp_theta(self.sol.x, self.grid.t, dtheta)

    def adjoint_gradient(self, weights: Array | None = None) -> Array:
        """dC/dα (B,P) of the steady-state cost (weighted by ``weights`` if given)."""
        lam = self.op.solve(self.cost_gradient(weights), transpose=True)
        return -self.vjp_params(lam)

    def ep_limit(self) -> Array:
        """lim_{β→0} of the symmetric EP quotient, −(∂R/∂α)ᵀ J⁻¹ g, shape (B,P)."""
        return -self.vjp_params(self.op.solve(self.cost_gradient()))

    def ep_bias(self) -> Array:
        """Exact bias of plain EP, −(∂R/∂α)ᵀ (J⁻¹ − J⁻ᵀ) g, shape (B,P)."""
        g = self.cost_gradient()
        return -self.vjp_params(self.op.solve(g)) + self.vjp_params(
            self.op.solve(g, transpose=True)
        )

    def tangent_params(self, dalpha: Array) -> Array:
        """dx = −J⁻¹ (∂R/∂α) dα, shape (B,N,d)."""
        return -self.op.solve(self.jvp_params(dalpha))

    def tangent_beta(self) -> Array:
        """dx/dβ = J⁻¹ γ (x − y) (the nudge force per unit β), shape (B,N,d)."""
        return self.op.solve(self.exc.cost_gradient(self.sol.x))


def adjoint_gradient(
    model: NetworkModel, theta: Array, exc: GridExcitation, sol: PeriodicSolution
) -> Array:
    """Exact dC/dα (B,P) of the periodic steady-state cost, by the adjoint method."""
    return PeriodicSensitivity(model, theta, exc, sol).adjoint_gradient()


def ep_bias(model: NetworkModel, theta: Array, exc: GridExcitation, sol: PeriodicSolution) -> Array:
    """Exact bias (B,P) of the plain symmetric EP estimator at β → 0."""
    return PeriodicSensitivity(model, theta, exc, sol).ep_bias()


@dataclass(frozen=True)
class DampedIdentity:
    """The terms of Massar Eq. 31 for a periodic orbit with uniform damping Γ (all shape (B,P)):

    dC̃/dα = dÃ/dβ + (e^{ΓT} − 1) B(t_i), with C̃ = ∫ e^{Γt} C dt, Ã = ∫ e^{Γt} ∂L/∂α dt over one
    period from t_i = 0, and B = ∂_β p̃·∂_α x − ∂_α p̃·∂_β x at t_i (p̃ = e^{Γt} m ẋ)."""

    d_weighted_cost: Array
    weighted_ep: Array
    boundary: Array
    factor: float

    @property
    def mismatch(self) -> Array:
        return self.d_weighted_cost - self.weighted_ep - self.factor * self.boundary


def damped_identity(
    model: NetworkModel, theta: Array, exc: GridExcitation, sol: PeriodicSolution
) -> DampedIdentity:
    """Evaluate every term of paper Eq. 31 exactly (tangent solves, exact weighted quadrature)."""
    gam = model.damping
    if np.ptp(gam) > 0:
        raise ValueError("Eq. 31 needs one damping rate for all nodes")
    rate = float(gam[0])
    sens = PeriodicSensitivity(model, theta, exc, sol)
    grid = sens.grid
    w = grid.weighted_quadrature(rate)  # (N,)
    P = model.n_params
    B = sol.x.shape[0]
    dcost = sens.adjoint_gradient(weights=w)
    # Ã(β) derivative: −Σ w_n ∂²V/∂α∂x · dx/dβ.
    dx_db = sens.tangent_beta()
    weighted_ep = -sens.vjp_params(w[None, :, None] * dx_db)
    m = model.mass
    dv_db = grid.deriv(dx_db, 1)
    boundary = np.zeros((B, P))
    for p in range(P):
        e = np.zeros((B, P))
        e[:, p] = 1.0
        dx_da = sens.tangent_params(e)
        dv_da = grid.deriv(dx_da, 1)
        # p̃(t_i = 0) = m ẋ(0) (weight e^{Γ·0} = 1).
        boundary[:, p] = np.sum(
            m * dv_db[:, 0] * dx_da[:, 0] - m * dv_da[:, 0] * dx_db[:, 0], axis=1
        )
    return DampedIdentity(dcost, weighted_ep, boundary, float(np.expm1(rate * grid.period_s)))
