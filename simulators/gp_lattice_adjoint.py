"""Linear stability (Bogoliubov spectrum), exact adjoint gradients and the exact near-EP limit
of a GP lattice's stationary states (docs/physics.md §9).

**Stability.** A small deviation δψ of a stationary state obeys i δψ̇ = M δψ + N δψ̄
(`simulators.gp_lattice`). For z = (Re δψ, Im δψ) this is ż = S 𝒥 z with 𝒥 the real Jacobian of
R and S = [[0, I], [−I, 0]]; its 2d eigenvalues λ are those of the Bogoliubov matrix
−i [[M, N], [−N̄, −M̄]] and come in pairs (λ, λ̄). Re λ is a growth rate (1/time, time unit
ħ/E), Im λ a frequency offset from ω_p. The state is stable when every Re λ < 0 (a coherent drive
fixes the phase, so there is no zero mode).

**Gradients.** For a cost C(ψ*) on the stationary state, dC/dθ = −μᵀ ∂R/∂θ with the adjoint
𝒥ᵀ μ = ∂C/∂z. In complex form μ = μ_r + i μ_i solves Mᴴ μ + N μ̄ = ∂C/∂Re ψ + i ∂C/∂Im ψ, and

    dC/dV_j  = −Re(μ̄_j ψ_j)
    dC/dJ_e  = +Re(μ̄_a ψ_b + μ̄_b ψ_a)        (edge e = (a, b))
    dC/dF_j  = −μ_j  (as ∂C/∂Re F_j + i ∂C/∂Im F_j)

— one linear solve per cost, whatever the number of parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import SolverError
from physlearn.simulators.gp_lattice import (
    DENSE_MAX_SITES,
    krylov_solve,
    preconditioner,
    real_jacobian,
    to_complex,
    to_real,
    vjp,
)
from physlearn.spec.gp_lattice import DensityCost, GPCost, GPModel

Array = NDArray[np.float64]
CArray = NDArray[np.complex128]


@dataclass(frozen=True)
class BogoliubovSpectrum:
    """The 2d eigenvalues λ of the linearised flow, sorted by decreasing Re λ (1/time, time
    unit ħ/E). ``zero_modes`` eigenvalues nearest 0 are symmetry modes (the condensate's phase)
    and are left out of the growth rate."""

    eigenvalues: NDArray[np.complex128]
    zero_modes: int = 0

    @property
    def symmetry_eigenvalues(self) -> NDArray[np.complex128]:
        """The ``zero_modes`` eigenvalues nearest 0."""
        return self.eigenvalues[np.argsort(np.abs(self.eigenvalues))[: self.zero_modes]]

    @property
    def max_growth_rate(self) -> float:
        """max Re λ over the non-symmetry modes: < 0 for a stable stationary state."""
        keep = np.argsort(np.abs(self.eigenvalues))[self.zero_modes :]
        return float(np.max(self.eigenvalues[keep].real))

    @property
    def stable(self) -> bool:
        return self.max_growth_rate < 0.0


def spectrum_of(jacobian: Array, zero_modes: int = 0) -> BogoliubovSpectrum:
    """The spectrum of the flow ż = S 𝒥 z for the real Jacobian 𝒥 (2d, 2d) of a residual R with
    i dψ/dt = R (S = [[0, I], [−I, 0]]; dense eigenvalues, O(d³))."""
    d = jacobian.shape[0] // 2
    flow = np.concatenate([jacobian[d:], -jacobian[:d]])  # S 𝒥: (Im-rows, −Re-rows)
    lam = np.linalg.eigvals(flow)
    return BogoliubovSpectrum(lam[np.argsort(-lam.real, kind="stable")], zero_modes)


def bogoliubov_spectrum(lat: GPModel, psi: CArray) -> BogoliubovSpectrum:
    """The Bogoliubov spectrum of the coherently driven stationary state ψ (d,)."""
    return spectrum_of(np.asarray(real_jacobian(lat, psi)))


@dataclass(frozen=True)
class GPGradient:
    """dC/dθ (P,) in the layout of `GPModel.parameters` (1/E), dC/dF (d,) complex, the cost
    C and the adjoint μ (d,) complex."""

    theta: Array
    drive: CArray
    cost: float
    adjoint: CArray


def solve_adjoint(lat: GPModel, psi: CArray, rhs: CArray, *, krylov: bool | None = None) -> CArray:
    """μ (d,) complex with 𝒥ᵀ μ = rhs in real form (dense for d ≤ 256 unless ``krylov``;
    otherwise GMRES on `vjp` with the transposed `preconditioner`)."""
    use_krylov = lat.n_sites > DENSE_MAX_SITES if krylov is None else krylov
    b = to_real(rhs)
    if not use_krylov:
        return to_complex(np.linalg.solve(np.asarray(real_jacobian(lat, psi)).T, b))

    def matvec(z: Array) -> Array:
        return to_real(vjp(lat, psi, to_complex(z)))

    mu, ok, iterations = krylov_solve(matvec, b, preconditioner(lat, psi, transpose=True), 1e-13)
    if not ok:
        raise SolverError(f"GP adjoint: GMRES did not converge ({iterations} iterations)")
    return to_complex(mu)


def _contract(lat: GPModel, psi: CArray, mu: CArray, cost: GPCost) -> GPGradient:
    """−μᵀ ∂R/∂θ and −μ for the drive (module docstring), with the cost at ψ."""
    theta = np.concatenate([-np.real(np.conj(mu) * psi), lat.hopping_contraction(psi, mu)])
    return GPGradient(theta=theta, drive=-mu, cost=cost.value(psi), adjoint=mu)


def density_gradient(
    lat: GPModel, psi: CArray, cost: GPCost, *, krylov: bool | None = None
) -> GPGradient:
    """The exact gradient of ``cost`` at the stationary state ψ (d,) (module docstring)."""
    return _contract(lat, psi, solve_adjoint(lat, psi, cost.gradient(psi), krylov=krylov), cost)


def ep_limit_gradient(lat: GPModel, psi: CArray, cost: GPCost) -> GPGradient:
    """The β → 0 limit of near-EP with density nudges (docs/physics.md §9): the response
    𝒥⁻¹ ∂C/∂z in place of the adjoint 𝒥⁻ᵀ ∂C/∂z, i.e. −(∂R/∂θ)ᵀ 𝒥⁻¹ ∂C/∂z. Equal to
    `density_gradient` when γ = 0 (𝒥 symmetric); their difference is near-EP's exact bias.
    ``adjoint`` holds the response ν (d,) complex (dense, O(d³))."""
    jac = np.asarray(real_jacobian(lat, psi))
    nu = to_complex(np.linalg.solve(jac, to_real(cost.gradient(psi))))
    return _contract(lat, psi, nu, cost)


def nudge_potential(cost: DensityCost, psi: CArray, beta: float, n_sites: int) -> Array:
    """The open-loop density nudge as a potential shift ΔV (d,) (energy E): −β w_j (|ψ_j|² − y_j)
    on the outputs, from the free state ψ. Adding ΔV to V realises the nudged functional
    E − βC to first order in β (a spatial light modulator can write it)."""
    shift = np.zeros(n_sites)
    rho = np.abs(psi[cost.outputs]) ** 2
    np.add.at(shift, cost.outputs, -beta * np.asarray(cost.weights) * (rho - cost.targets))
    return shift
