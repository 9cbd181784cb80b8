"""Stationary states of a coherently driven GP lattice or field in the pump's rotating frame.

A stationary state solves R(ψ) = 0 with (docs/physics.md §9; `physlearn.spec.gp_lattice`; on a
field `physlearn.spec.gp_field`, −c∇² in place of −J)

    R_j(ψ) = (V_j − ω_p − i γ_j/2) ψ_j + g_j |ψ_j|² ψ_j − Σ_k J_jk ψ_k + F_j.

R is not complex-differentiable (|ψ|² = ψ ψ̄), so Newton works on the real-ified field
z = (Re ψ, Im ψ) (2d,), whose Jacobian is the real form of dR = M dψ + N dψ̄ with
M = diag(V − ω_p − iγ/2 + 2g|ψ|²) − J and N = diag(g ψ²). Two linear solvers: ``dense``
(LAPACK on the 2d × 2d Jacobian, the default for d ≤ 256) and ``krylov`` (GMRES on the
matrix-free Jacobian-vector product with a lagged `preconditioner`: the sparse LU of the Jacobian
on a lattice, the Fourier-diagonal inverse of the linear part on a spectral field).

The documented start is the linear response ψ⁰ = −(diag(V − ω_p − iγ/2) − J)⁻¹ F (g = 0).
Newton runs from it with a backtracking line search on ‖R‖²; if it fails, the drive is ramped
from a small fraction up to F (natural continuation along the branch connected to ψ = 0).
Amplitudes ψ are dimensionless (|ψ|² an occupation), energies in the spec's unit E.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.sparse.linalg import LinearOperator, gmres, splu, spsolve

from physlearn.errors import SolverError
from physlearn.spec.gp_lattice import GPModel, SpectralModel

Array = NDArray[np.float64]
CArray = NDArray[np.complex128]
Method = Literal["auto", "dense", "krylov"]

log = logging.getLogger(__name__)

#: the largest lattice ``method = "auto"`` solves with dense linear algebra
DENSE_MAX_SITES = 256


@dataclass(frozen=True)
class GPSolveOptions:
    """Newton's options: ``tol`` on max_j |R_j| relative to max(1, max_j |F_j|); ``max_iter``
    Newton steps per solve; ``ramp_steps`` drive fractions tried when the direct solve fails;
    ``gmres_rtol`` the Krylov tolerance (relative to ‖R‖)."""

    tol: float = 1e-12
    max_iter: int = 60
    method: Method = "auto"
    ramp_steps: int = 20
    gmres_rtol: float = 1e-13


@dataclass(frozen=True)
class StationaryState:
    """A converged stationary state: ψ (d,) complex, its residual max_j |R_j| (energy E ×
    amplitude), the Newton steps taken (all ramp stages counted), the linear solver used and
    whether the drive had to be ramped (the state is then on the branch connected to ψ = 0)."""

    psi: CArray
    residual: float
    iterations: int
    method: str
    ramped: bool = False

    @property
    def density(self) -> Array:
        """|ψ_j|² (d,), occupations."""
        return np.abs(self.psi) ** 2


def residual(lat: GPModel, psi: CArray, drive: CArray) -> CArray:
    """R(ψ) (d,) complex (module docstring)."""
    return lat.detuning() * psi + lat.kerr * np.abs(psi) ** 2 * psi - lat.hop(psi) + drive


def jvp(lat: GPModel, psi: CArray, dpsi: CArray) -> CArray:
    """The complex form of the Jacobian's action: M dψ + N dψ̄ (d,)."""
    m_diag = lat.detuning() + 2.0 * lat.kerr * np.abs(psi) ** 2
    return m_diag * dpsi - lat.hop(dpsi) + lat.kerr * psi**2 * np.conj(dpsi)


def vjp(lat: GPModel, psi: CArray, lam: CArray) -> CArray:
    """The transpose of the real Jacobian in complex form: Mᴴ λ + Nᵀ λ̄ (d,) (real inner
    product ⟨u, v⟩ = Re Σ ū v)."""
    m_diag = np.conj(lat.detuning()) + 2.0 * lat.kerr * np.abs(psi) ** 2
    return m_diag * lam - lat.hop(lam) + lat.kerr * psi**2 * np.conj(lam)


def to_real(v: CArray) -> Array:
    """(Re v, Im v) (2d,)."""
    return np.concatenate([v.real, v.imag])


def to_complex(z: Array) -> CArray:
    """The inverse of `to_real`."""
    d = z.shape[0] // 2
    return z[:d] + 1j * z[d:]


def real_form(
    m_diag: CArray, n_diag: CArray, hop: sp.spmatrix, *, sparse: bool = False
) -> Array | sp.csc_matrix:
    """The real (2d, 2d) form of dψ ↦ (diag(m) − H) dψ + diag(n) dψ̄ (H real symmetric):
    [[Re M + Re N, −Im M + Im N], [Im M + Im N, Re M − Re N]]."""

    def diag(v: Array) -> sp.dia_matrix:
        return sp.diags(v)

    blocks = [
        [diag(m_diag.real + n_diag.real) - hop, diag(-m_diag.imag + n_diag.imag)],
        [diag(m_diag.imag + n_diag.imag), diag(m_diag.real - n_diag.real) - hop],
    ]
    mat = sp.bmat(blocks, format="csc")
    return mat if sparse else mat.toarray()


def real_jacobian(lat: GPModel, psi: CArray, *, sparse: bool = False) -> Array | sp.csc_matrix:
    """∂(Re R, Im R)/∂(Re ψ, Im ψ) (2d, 2d) with M = diag(V − ω_p − iγ/2 + 2g|ψ|²) − J and
    N = diag(g ψ²) (`real_form`; dense, or scipy CSC when ``sparse``)."""
    m_diag = lat.detuning() + 2.0 * lat.kerr * np.abs(psi) ** 2
    return real_form(m_diag, lat.kerr * psi**2, lat.hopping_sparse(), sparse=sparse)


def linear_response(lat: GPModel, drive: CArray) -> CArray:
    """ψ⁰ = −(diag(V − ω_p − iγ/2) − H)⁻¹ F (d,): the stationary state at g = 0 (dense, sparse
    LU, or on a spectral field GMRES preconditioned in Fourier space)."""
    rhs = np.asarray(drive, dtype=np.complex128)
    if lat.n_sites <= DENSE_MAX_SITES:
        dense = np.diag(lat.detuning()) - lat.hopping_matrix()
        return np.asarray(-np.linalg.solve(dense, rhs), dtype=np.complex128)
    if not isinstance(lat, SpectralModel):
        lin = sp.csc_matrix(sp.diags(lat.detuning()) - lat.hopping_sparse())
        return np.asarray(-spsolve(lin, rhs), dtype=np.complex128)
    n, detuning = lat.n_sites, lat.detuning()
    shift = complex(np.mean(detuning))
    op = LinearOperator((n, n), matvec=lambda v: detuning * v - lat.hop(v), dtype=complex)
    pre = LinearOperator((n, n), matvec=lambda v: lat.shifted_inverse(shift, v), dtype=complex)
    x, info = gmres(op, -rhs, M=pre, rtol=1e-13, atol=0.0, restart=80, maxiter=20)
    if info != 0:
        raise SolverError(f"GP linear response: GMRES did not converge (info {info})")
    return np.asarray(x, dtype=np.complex128)


def preconditioner(
    lat: GPModel, psi: CArray, *, transpose: bool = False
) -> Callable[[Array], Array]:
    """An approximate inverse of the real Jacobian 𝒥 (or 𝒥ᵀ) at ψ, acting on real (2d,) vectors:
    on a `SpectralModel` the Fourier-diagonal inverse of the linear part with the mean on-site
    term, (m̄ − H)⁻¹ with m̄ = mean(V − ω_p − iγ/2 + 2g|ψ|²) (m̄* for 𝒥ᵀ), ignoring the ψ̄
    coupling; otherwise the exact sparse LU of 𝒥 (or 𝒥ᵀ)."""
    if isinstance(lat, SpectralModel):
        shift = complex(np.mean(lat.detuning() + 2.0 * lat.kerr * np.abs(psi) ** 2))
        shift = shift.conjugate() if transpose else shift
        return lambda z: to_real(lat.shifted_inverse(shift, to_complex(z)))
    jac = sp.csc_matrix(real_jacobian(lat, psi, sparse=True))
    lu = splu(jac.T.tocsc() if transpose else jac)
    return lambda z: np.asarray(lu.solve(z), dtype=np.float64)


def krylov_solve(
    matvec: Callable[[Array], Array], rhs: Array, pre: Callable[[Array], Array], rtol: float
) -> tuple[Array, bool, int]:
    """GMRES(60) on a real system with the preconditioner ``pre``: (x, converged, iterations),
    at most 10 restarts."""
    n = rhs.shape[0]
    counter = {"n": 0}

    def count(_: object) -> None:
        counter["n"] += 1

    x, info = gmres(
        LinearOperator((n, n), matvec=matvec),
        rhs,
        M=LinearOperator((n, n), matvec=pre),
        rtol=rtol,
        atol=0.0,
        restart=60,
        maxiter=10,
        callback=count,
        callback_type="pr_norm",
    )
    return np.asarray(x, dtype=np.float64), info == 0, counter["n"]


def _choose(lat: GPModel, method: Method) -> Literal["dense", "krylov"]:
    if method == "auto":
        return "dense" if lat.n_sites <= DENSE_MAX_SITES else "krylov"
    return method


class _KrylovStep:
    """Newton steps by GMRES on the matrix-free Jacobian with a lagged `preconditioner`,
    refreshed at the current iterate when GMRES needs more than 30 iterations or fails."""

    def __init__(self, lat: GPModel, rtol: float) -> None:
        self.lat, self.rtol = lat, rtol
        self.pre: Callable[[Array], Array] | None = None

    def __call__(self, psi: CArray, rhs: Array) -> Array:
        lat = self.lat

        def matvec(z: Array) -> Array:
            return to_real(jvp(lat, psi, to_complex(z)))

        fresh = self.pre is None
        if self.pre is None:
            self.pre = preconditioner(lat, psi)
        step, ok, iterations = krylov_solve(matvec, rhs, self.pre, self.rtol)
        if ok and iterations <= 30:
            return step
        self.pre = preconditioner(lat, psi)
        if ok or fresh:
            if not ok:
                raise SolverError(f"GP Newton–Krylov: GMRES did not converge ({iterations} its)")
            return step
        step, ok, iterations = krylov_solve(matvec, rhs, self.pre, self.rtol)
        if not ok:
            raise SolverError(f"GP Newton–Krylov: GMRES did not converge ({iterations} its)")
        return step


def _newton(
    lat: GPModel, drive: CArray, psi: CArray, opts: GPSolveOptions
) -> tuple[CArray, float, int, bool]:
    """Damped Newton from ψ: (ψ, residual, steps, converged)."""
    scale = max(1.0, float(np.max(np.abs(drive), initial=0.0)))
    method = _choose(lat, opts.method)
    krylov = _KrylovStep(lat, opts.gmres_rtol) if method == "krylov" else None
    r = residual(lat, psi, drive)
    res = float(np.max(np.abs(r)))
    for it in range(opts.max_iter):
        if res <= opts.tol * scale:
            return psi, res, it, True
        rhs = -to_real(r)
        if krylov is None:
            step = to_complex(np.linalg.solve(real_jacobian(lat, psi), rhs))
        else:
            step = to_complex(krylov(psi, rhs))
        norm0, t = float(np.sum(np.abs(r) ** 2)), 1.0
        while True:
            trial = psi + t * step
            r_trial = residual(lat, trial, drive)
            if float(np.sum(np.abs(r_trial) ** 2)) <= (1.0 - 1e-4 * t) * norm0 or t < 1e-6:
                break
            t *= 0.5
        psi, r = trial, r_trial
        res = float(np.max(np.abs(r)))
    return psi, res, opts.max_iter, res <= opts.tol * scale


def solve_stationary(
    lat: GPModel,
    drive: CArray,
    start: CArray | None = None,
    opts: GPSolveOptions | None = None,
) -> StationaryState:
    """The stationary state for the drive F (d,) complex, from ``start`` (default: the linear
    response), ramping the drive if the direct Newton fails; `SolverError` if no stage converges.
    """
    opts = opts or GPSolveOptions()
    drive = np.asarray(drive, dtype=complex)
    if drive.shape != (lat.n_sites,):
        raise ValueError(f"drive must have shape ({lat.n_sites},), got {drive.shape}")
    method = _choose(lat, opts.method)
    psi0 = linear_response(lat, drive) if start is None else np.asarray(start, dtype=complex)
    psi, res, steps, ok = _newton(lat, drive, psi0, opts)
    total, ok0 = steps, ok
    if not ok:
        log.info("direct Newton failed (residual %.3g); ramping the drive", res)
        psi = np.zeros(lat.n_sites, dtype=complex)
        for s in np.linspace(1.0 / opts.ramp_steps, 1.0, opts.ramp_steps):
            psi, res, steps, ok = _newton(lat, s * drive, psi, opts)
            total += steps
            if not ok:
                raise SolverError(
                    f"GP stationary state: Newton failed at drive fraction {s:.3f} "
                    f"(residual {res:.3g}); a fold of the branch or too strong a Kerr term"
                )
    return StationaryState(psi=psi, residual=res, iterations=total, method=method, ramped=not ok0)
