"""Condensates of an incoherently pumped GP lattice: stationary states with a self-selected
frequency, their Bogoliubov spectrum and exact adjoint gradients (docs/physics.md §9).

A condensate ψ_j(t) = φ_j e^{−iμt} solves (`physlearn.spec.gp_condensate`)

    R_j(φ, μ) = (V_j − μ − iγ_j/2 + i G_j(n_j) + g_j n_j) φ_j − Σ_k J_jk φ_k = 0,
    G(n) = P/(2(1 + n/n_s)),   n = |φ|²,

2d real equations for 2d + 1 unknowns (z = (Re φ, Im φ), μ): the phase condition Im φ_r = 0 at
a reference site r closes the system. R(e^{iθ}φ) = e^{iθ}R(φ), so 𝒥 has the null vector
(−Im φ, Re φ) and the Bogoliubov spectrum a zero eigenvalue (the phase mode). Newton runs on
the bordered system [[𝒥, −(Re φ, Im φ)], [e_rᵀ, 0]]; the adjoint solves the bordered transpose.
Two starts: the lattice's most amplified linear mode scaled so that its net gain vanishes
(`initial_condensate`: quick, but with degenerate or competing modes it may land on an unstable
condensate), or the state the dynamics selects from noise (`settle_condensate`: what a bench
does when the pump is switched on; slower, integrates the equation of motion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

from physlearn.errors import SolverError
from physlearn.simulators.gp_lattice import real_form, to_complex, to_real
from physlearn.simulators.gp_lattice_adjoint import BogoliubovSpectrum, GPGradient, spectrum_of
from physlearn.spec.gp_condensate import SaturablePump
from physlearn.spec.gp_lattice import DensityCost, GPModel

Array = NDArray[np.float64]
CArray = NDArray[np.complex128]


@dataclass(frozen=True)
class CondensateState:
    """A condensate: φ (d,) with Im φ_r = 0, its frequency μ (energy E), the residual max |R_j|,
    the Newton steps taken and the reference site r."""

    phi: CArray
    mu: float
    residual: float
    iterations: int
    reference: int

    @property
    def density(self) -> Array:
        return np.abs(self.phi) ** 2


def condensate_residual(lat: GPModel, pump: SaturablePump, phi: CArray, mu: float) -> CArray:
    """R(φ, μ) (d,) complex (module docstring)."""
    n = np.abs(phi) ** 2
    onsite = lat.potential - mu - 0.5j * lat.loss + 1j * pump.gain(n) + lat.kerr * n
    return onsite * phi - lat.hop(phi)


def condensate_jacobian(lat: GPModel, pump: SaturablePump, phi: CArray, mu: float) -> Array:
    """∂(Re R, Im R)/∂(Re φ, Im φ) (2d, 2d), dense: M = diag(f + f′n) − J, N = diag(f′φ²) with
    f(n) = V − μ − iγ/2 + iG(n) + gn."""
    n = np.abs(phi) ** 2
    f = lat.potential - mu - 0.5j * lat.loss + 1j * pump.gain(n) + lat.kerr * n
    slope = lat.kerr + 1j * pump.gain_slope(n)
    return np.asarray(real_form(f + slope * n, slope * phi**2, lat.hopping_sparse()))


def _bordered(lat: GPModel, pump: SaturablePump, phi: CArray, mu: float, ref: int) -> Array:
    d = lat.n_sites
    mat = np.zeros((2 * d + 1, 2 * d + 1))
    mat[: 2 * d, : 2 * d] = condensate_jacobian(lat, pump, phi, mu)
    mat[: 2 * d, 2 * d] = -to_real(phi)
    mat[2 * d, d + ref] = 1.0
    return mat


def _equations(lat: GPModel, pump: SaturablePump, phi: CArray, mu: float, ref: int) -> Array:
    return np.r_[to_real(condensate_residual(lat, pump, phi, mu)), phi[ref].imag]


def initial_condensate(lat: GPModel, pump: SaturablePump) -> tuple[CArray, float, int]:
    """The documented start: the linear mode v of diag(V − iγ/2 + iP/2) − J with the largest
    growth rate, phase-fixed (v_r > 0 at its largest site r) and scaled by a so that its net gain
    Σ|v_j|²(G_j(a²|v_j|²) − γ_j/2) vanishes; μ from its real energy. `SolverError` below
    threshold (no growing mode)."""
    lin = np.diag(lat.potential - 0.5j * lat.loss + 0.5j * pump.rate) - lat.hopping_matrix()
    values, vectors = np.linalg.eig(lin)
    k = int(np.argmax(values.imag))
    if values[k].imag <= 0.0:
        raise SolverError(
            f"condensate: below threshold (largest linear growth {values[k].imag:.3g})"
        )
    v = vectors[:, k]
    ref = int(np.argmax(np.abs(v)))
    v = v * np.exp(-1j * np.angle(v[ref])) / np.abs(v[ref])
    w = np.abs(v) ** 2

    def net_gain(a: float) -> float:
        return float(np.sum(w * (pump.gain(a**2 * w) - 0.5 * lat.loss)))

    hi = 1.0
    while net_gain(hi) > 0.0:
        hi *= 2.0
        if hi > 1e8:
            raise SolverError("condensate: the gain does not saturate (no loss anywhere?)")
    a = brentq(net_gain, 0.0, hi, xtol=1e-14) if net_gain(0.0) > 0.0 else hi
    phi = a * v
    return phi, _frequency(lat, phi), ref


def _frequency(lat: GPModel, phi: CArray) -> float:
    """μ = Re φᴴ(V + g|φ|² − J)φ / ‖φ‖², exact on a condensate (the imaginary parts balance)."""
    n = np.abs(phi) ** 2
    energy = np.vdot(phi, (lat.potential + lat.kerr * n) * phi - lat.hop(phi))
    return float(np.real(energy) / np.sum(n))


def settle_condensate(
    lat: GPModel,
    pump: SaturablePump,
    rng: np.random.Generator,
    *,
    duration: float = 600.0,
    noise: float = 1e-3,
    settled: float = 1e-3,
) -> CondensateState:
    """The condensate the dynamics selects: i dψ/dt = R(ψ, 0) integrated (RK45, rtol 1e-8) for
    ``duration`` (time unit ħ/E) from complex Gaussian noise of size ``noise``, then polished by
    `solve_condensate`. `SolverError` if the densities still change by more than ``settled``
    (relative) over the last sixth of the run — a limit cycle or a slow transient."""
    d = lat.n_sites

    def rhs(_t: float, z: Array) -> Array:
        return to_real(-1j * condensate_residual(lat, pump, to_complex(z), 0.0))

    z0 = to_real(noise * (rng.normal(size=d) + 1j * rng.normal(size=d)))
    times = [duration * 5 / 6, duration]
    sol = solve_ivp(rhs, (0.0, duration), z0, rtol=1e-8, atol=1e-10, t_eval=times)
    if not sol.success:
        raise SolverError(f"condensate: the integration failed ({sol.message})")
    early, late = (np.abs(to_complex(sol.y[:, k])) ** 2 for k in (0, 1))
    change = float(np.max(np.abs(late - early)) / max(float(np.max(late)), 1e-300))
    if change > settled or np.max(late) < noise**2:
        raise SolverError(
            f"condensate: no steady condensate after {duration:g} ħ/E (relative density change "
            f"{change:.3g} over the last sixth; peak density {np.max(late):.3g})"
        )
    phi = to_complex(sol.y[:, 1])
    return solve_condensate(lat, pump, start=(phi, _frequency(lat, phi)))


def solve_condensate(
    lat: GPModel,
    pump: SaturablePump,
    start: tuple[CArray, float] | None = None,
    *,
    tol: float = 1e-12,
    max_iter: int = 80,
) -> CondensateState:
    """The condensate from ``start`` (φ, μ) or from `initial_condensate`, by damped Newton on
    the bordered system; `SolverError` if it does not converge (or collapses to φ = 0)."""
    if start is None:
        phi, mu, ref = initial_condensate(lat, pump)
    else:
        phi, mu = np.asarray(start[0], dtype=complex), float(start[1])
        ref = int(np.argmax(np.abs(phi)))
        phi = phi * np.exp(-1j * np.angle(phi[ref]))
    d = lat.n_sites
    eqs = _equations(lat, pump, phi, mu, ref)
    for it in range(max_iter):
        res = float(np.max(np.abs(eqs)))
        if res <= tol:
            if np.max(np.abs(phi)) < 1e-8:
                raise SolverError("condensate: Newton collapsed to the empty state φ = 0")
            return CondensateState(phi, mu, res, it, ref)
        step = np.linalg.solve(_bordered(lat, pump, phi, mu, ref), -eqs)
        norm0, t = float(eqs @ eqs), 1.0
        while True:
            trial_phi, trial_mu = phi + t * to_complex(step[: 2 * d]), mu + t * step[2 * d]
            trial = _equations(lat, pump, trial_phi, trial_mu, ref)
            if float(trial @ trial) <= (1.0 - 1e-4 * t) * norm0 or t < 1e-6:
                break
            t *= 0.5
        phi, mu, eqs = trial_phi, float(trial_mu), trial
    raise SolverError(f"condensate: Newton did not converge (residual {np.max(np.abs(eqs)):.3g})")


def condensate_spectrum(
    lat: GPModel, pump: SaturablePump, state: CondensateState
) -> BogoliubovSpectrum:
    """The Bogoliubov spectrum in the frame rotating at μ, with the phase mode set aside."""
    return spectrum_of(condensate_jacobian(lat, pump, state.phi, state.mu), zero_modes=1)


def condensate_gradient(
    lat: GPModel, pump: SaturablePump, state: CondensateState, cost: DensityCost
) -> GPGradient:
    """The exact gradient of a density cost (phase-invariant) w.r.t. θ = V (then J when
    trainable): the bordered adjoint Bᵀ(λ, s) = (∂C/∂z, 0), dC/dθ = −λᵀ ∂R/∂θ. ``drive`` is empty
    (no coherent drive); ``adjoint`` holds λ (d,) complex."""
    d = lat.n_sites
    mat = _bordered(lat, pump, state.phi, state.mu, state.reference)
    lam = to_complex(np.linalg.solve(mat.T, np.r_[to_real(cost.gradient(state.phi)), 0.0])[: 2 * d])
    phi = state.phi
    theta = np.concatenate([-np.real(np.conj(lam) * phi), lat.hopping_contraction(phi, lam)])
    return GPGradient(theta=theta, drive=np.zeros(0, complex), cost=cost.value(phi), adjoint=lam)
