"""Periodic steady states by Newton–Krylov on a spectral collocation of one drive period.

Unknowns: the orbit x (B,N,d) on a `PeriodicGrid`. Equations (docs/physics.md sign convention):

    R(x) = m ẍ + m Γ ẋ + ∂V/∂x − F + δ (x − u) − β γ (x − y) = 0     (ẋ, ẍ spectral)

Networks with directed (non-reciprocal) couplings add Q(x, t) to ∂V/∂x (`NetworkModel`); a
learning phase may add a linear feedback force G(t)(x − r(t)) (``feedback``: R gains −G(x − r)).
Newton steps solve J δx = −R with J = m D² + m Γ D + K(t) (+ N(t) − G(t)) by batched GMRES, right-preconditioned
with the exact inverse of the time-averaged Jacobian (harmonic balance: one complex d×d block per
harmonic n, A_n = m(−n²ω² + i n ω Γ) + K̄), so that transients are never integrated and the cost
does not grow with Q. Every converged orbit is checked for stability with its Floquet multipliers.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import SteadyStateError, UnstableOrbitError
from physlearn.simulators.excitation import GridExcitation
from physlearn.simulators.feedback import Feedback
from physlearn.simulators.krylov import gmres
from physlearn.simulators.spectral import PeriodicGrid
from physlearn.spec.model import Coefficients, NetworkModel
from physlearn.spec.nonlinearity import NonSmoothWarning

log = logging.getLogger(__name__)
Array = NDArray[np.float64]
#: float64 machine epsilon
EPS = float(np.finfo(np.float64).eps)
#: the round-off floor of the collocated residual, in units of ε (ωH)² m|x| / scale (`tolerance`)
ROUNDOFF_FACTOR = 4.0
CArray = NDArray[np.complex128]
#: grids of at most this many points apply D, D² and the real DFT of the preconditioner as dense
#: N×N matrices: one GEMM instead of an FFT along a short strided axis (batch 128, d = 91, one
#: core: 1.0 ms against 3.8 ms for an rfft/irfft pair at N = 17, 1.6 against 4.5 at N = 33, on
#: par at N = 65)
DENSE_MAX_POINTS = 49
#: a Newton step larger than this fraction of the orbit's peak (any sample) recomputes the
#: preconditioner; smaller ones keep it (the time-averaged Jacobian barely moves)
PRECOND_REFRESH_STEP = 0.05


#: samples per thread below which a solve is not split over threads
MIN_THREAD_BATCH = 16


def solver_threads() -> int:
    """Threads a batched solve is split over: ``PHYSLEARN_SOLVER_THREADS`` (default 2, at most
    the CPU count). The samples' Newton iterations are independent, and numpy releases the GIL in
    its GEMMs, LAPACK calls and ufunc loops, so two halves of a batch run on two cores; 1 keeps
    every solve in the calling thread (e.g. one sweep point per core)."""
    raw = os.environ.get("PHYSLEARN_SOLVER_THREADS", "2")
    try:
        n = int(raw)
    except ValueError:
        n = 1
    return max(1, min(n, os.cpu_count() or 1))


_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=max(1, solver_threads() - 1))
    return _pool


@functools.lru_cache(maxsize=32)
def _dense_matrices(n: int, period_s: float) -> tuple[Array, Array, Array, Array]:
    """(D, D², F, F⁻¹) of an n-point grid: spectral derivatives and the real DFT F, whose rows
    give Re X_0..Re X_H then Im X_1..Im X_H of X = rfft(x) (H = (n−1)/2; n odd: F is square)."""
    grid = PeriodicGrid(n, period_s)
    eye = np.eye(n)[None]
    D, D2 = grid.deriv(eye, 1)[0], grid.deriv(eye, 2)[0]
    X = np.fft.rfft(np.eye(n), axis=0)
    F = np.concatenate([X.real, X.imag[1:]], axis=0)
    h = n // 2 + 1
    spec = np.zeros((h, n), dtype=complex)
    spec[np.arange(h), np.arange(h)] = 1.0
    spec[np.arange(1, h), np.arange(h, n)] = 1j
    Finv = np.fft.irfft(spec, n=n, axis=0)
    return D, D2, F, Finv


@dataclass
class Preconditioner:
    """The factors of the inverse time-averaged Jacobian of a batch: eigen factors (U, λ,
    m^{-1/2}) of M^{-1/2} K̄ M^{-1/2} when that is symmetric and the damping uniform, else the
    harmonic blocks' inverses. Kept across Newton iterations and handed from a free orbit to
    its nudged phases (`PeriodicSolution.preconditioner`)."""

    eig: tuple[Array, Array, Array] | None = None
    minv: CArray | None = None
    _den: dict[bool, CArray] = field(default_factory=dict, repr=False)

    def take(self, idx: NDArray[np.intp]) -> Preconditioner:
        eig = None if self.eig is None else (self.eig[0][idx], self.eig[1][idx], self.eig[2])
        return Preconditioner(eig, None if self.minv is None else self.minv[idx])

    @staticmethod
    def concatenate(parts: list[Preconditioner]) -> Preconditioner:
        """The preconditioner of the batch made of ``parts`` (empty unless all have the same
        kind of factors)."""
        if all(p.eig is not None for p in parts):
            eigs = [p.eig for p in parts if p.eig is not None]
            U = np.concatenate([e[0] for e in eigs])
            return Preconditioner((U, np.concatenate([e[1] for e in eigs]), eigs[0][2]))
        if all(p.minv is not None for p in parts):
            return Preconditioner(
                minv=np.concatenate([p.minv for p in parts if p.minv is not None])
            )
        return Preconditioner()

    def inverse_shifts(self, s: CArray, transpose: bool) -> CArray:
        """1 / (λ + s_n) (B, H+1, d), or with conj(s_n) for the transpose (cached)."""
        if transpose not in self._den:
            assert self.eig is not None
            lam = self.eig[1]
            den = lam[:, None, :] + (np.conj(s) if transpose else s)[None, :, None]
            if not np.all(den != 0):
                eps = 1e-12 * (np.abs(lam).max() + np.abs(s).max() + 1.0)
                den = np.where(den == 0, eps, den)
            self._den[transpose] = np.asarray(1.0 / den, dtype=np.complex128)
        return self._den[transpose]


def _take_beta(beta: float | Array, idx: NDArray[np.intp]) -> float | Array:
    """The nudge strengths of the samples ``idx``: a scalar β is shared, a (B,) one indexed."""
    return np.asarray(beta, dtype=float)[idx] if np.ndim(beta) else beta


class PeriodicOperator:
    """R, J, Jᵀ and their preconditioners around an orbit x, for one set of term values θ."""

    def __init__(
        self,
        model: NetworkModel,
        theta: Array,
        exc: GridExcitation,
        grid: PeriodicGrid,
        beta: float | Array = 0.0,
        feedback: Feedback | None = None,
        preconditioner: Preconditioner | None = None,
    ):
        self.model, self.exc, self.grid = model, exc, grid
        self.feedback = feedback
        #: J is not symmetric in space: transposed solves need hess_vec_T and transposed blocks
        self.asymmetric = model.nonreciprocal or feedback is not None
        self.theta = theta
        _warn_if_not_smooth(model)
        self.coef: Coefficients = model.coefficients(theta)
        self.beta = beta
        self.B, self.N, self.d = exc.force.shape
        self.ext_stiff = exc.external_stiffness(beta)
        self.x: Array = np.zeros((self.B, self.N, self.d))
        self.pc = Preconditioner() if preconditioner is None else preconditioner
        self._hv: Callable[[Array], Array] | None = None
        self._dense = _dense_matrices(self.N, grid.period_s) if self.N <= DENSE_MAX_POINTS else None

    def take(self, idx: NDArray[np.intp]) -> PeriodicOperator:
        """The operator of the samples ``idx`` alone (a sub-batch; orbit not set, preconditioner
        kept)."""
        fb = None if self.feedback is None else self.feedback.take(idx)
        return PeriodicOperator(
            self.model,
            self.theta[idx],
            self.exc.take(idx),
            self.grid,
            _take_beta(self.beta, idx),
            fb,
            self.pc.take(idx),
        )

    # -- state ---------------------------------------------------------------------------------
    def set_orbit(self, x: Array, keep_preconditioner: bool = False) -> None:
        """Linearise around ``x``; the preconditioner is recomputed at the next use unless
        ``keep_preconditioner`` (it then stays the one of an earlier, nearby orbit)."""
        self.x = x
        self._hv = None
        if not keep_preconditioner:
            self.pc = Preconditioner()

    def _hess(self, v: Array) -> Array:
        """(∂²V/∂x²) v at the orbit (+ N v with directed couplings), factors kept per orbit."""
        if self._hv is None:
            self._hv = self.model.hess_operator(self.x, self.grid.t, self.coef)
        return self._hv(v)

    def _linear(self, v: Array, damping_sign: float = 1.0) -> Array:
        """m v̈ ± m Γ v̇ (spectral; dense matrices on short grids)."""
        m, g = self.model.mass, self.model.damping
        if self._dense is None:
            return m * self.grid.deriv(v, 2) + damping_sign * m * g * self.grid.deriv(v, 1)
        D, D2 = self._dense[0], self._dense[1]
        return m * (D2 @ v) + (damping_sign * m * g) * (D @ v)

    def residual(self, x: Array) -> Array:
        r = (
            self._linear(x)
            + self.model.grad_potential(x, self.grid.t, self.coef)
            - self.exc.external_force(x, self.beta)
        )
        return r if self.feedback is None else r - self.feedback.force(x)

    def force_scale(self, x: Array) -> Array:
        """Per-sample scale (B,) of the terms of R, to make residuals relative."""
        m, k = self.model.mass, np.abs(self.model.stiffness)
        s = np.max(np.abs(self.exc.force), axis=(1, 2))
        s = np.maximum(s, np.max(np.abs(m * self.grid.omega**2 * x), axis=(1, 2)))
        s = np.maximum(s, np.max(np.abs(k * x), axis=(1, 2)))
        s = np.maximum(
            s, np.max(np.abs(self.exc.clamp_weight * self.exc.clamp_target), axis=(1, 2))
        )
        return np.maximum(s, 1e-300)

    def tolerance(self, x: Array, tol: float) -> Array:
        """Per-sample residual tolerance (B,): ``tol``, or the round-off floor of the collocated
        residual when that is higher. The spectral second derivative amplifies the float64
        round-off of x by (ω H)² (H = (N−1)/2 the highest harmonic), so the reachable relative
        residual grows ~ε N²/4; measured ≤ 0.65 ε (ωH)² m|x| / scale (2-node tanh network, N up
        to 1025), bounded here by ``ROUNDOFF_FACTOR`` times that. For N ≤ 65 it stays below
        1e-12, so the floor never loosens the default tolerance there."""
        h = float(np.max(self.grid.harmonics)) * self.grid.omega
        m = float(np.max(self.model.mass))
        floor = ROUNDOFF_FACTOR * EPS * h**2 * m * np.max(np.abs(x), axis=(1, 2))
        return np.maximum(tol, floor / self.force_scale(x))

    # -- linear operators on flattened (B, N*d) vectors ------------------------------------------
    def _shape(self, v: Array) -> Array:
        return v.reshape(self.B, self.N, self.d)

    def jvp(self, v: Array) -> Array:
        """J v for v (B,N,d)."""
        out = self._linear(v) + self._hess(v) + self.ext_stiff * v
        return out if self.feedback is None else out - self.feedback.apply(v)

    def vjp(self, v: Array) -> Array:
        """Jᵀ v for v (B,N,d) (D is antisymmetric: the damping term changes sign; directed
        couplings and feedback enter transposed)."""
        hv = (
            self.model.hess_vec_T(self.x, self.grid.t, self.coef, v)
            if self.asymmetric
            else self._hess(v)
        )
        out = self._linear(v, -1.0) + hv + self.ext_stiff * v
        return out if self.feedback is None else out - self.feedback.apply(v, transpose=True)

    def _mean_stiffness(self) -> Array:
        """K̄ (B,d,d): the time-averaged Hessian plus the clamp/nudge stiffness."""
        Kbar = self.model.mean_hessian(self.x, self.grid.t, self.coef)
        Kbar = Kbar + np.einsum("bj,jk->bjk", self.ext_stiff.mean(axis=1), np.eye(self.d))
        return Kbar if self.feedback is None else Kbar - self.feedback.gain.mean(axis=1)

    def _harmonic_shifts(self) -> CArray:
        """s_n = −n²ω² + i n ω Γ (H,) for uniform damping Γ: A_n = K̄ + s_n M."""
        h, w = self.grid.harmonics, self.grid.omega
        return -((h * w) ** 2) + 1j * (h * w) * self.model.damping[0]

    def _eigen_factors(self) -> tuple[Array, Array, Array] | None:
        """(U, λ, m^{-1/2}) with M^{-1/2} K̄ M^{-1/2} = U diag(λ) Uᵀ, or None if not applicable.

        With the same damping rate Γ on every node and a symmetric K̄, every harmonic block is
        A_n = K̄ + s_n M with a scalar s_n, so A_n⁻¹ = M^{-1/2} U (Λ + s_n)⁻¹ Uᵀ M^{-1/2}: one real
        symmetric eigendecomposition per sample replaces H complex d×d inverses (same operator).
        """
        if self.pc.eig is None and self.pc.minv is None:
            g = self.model.damping
            if not np.all(g == g[0]):
                return None
            K = self._mean_stiffness()
            if np.abs(K - K.swapaxes(1, 2)).max() > 1e-12 * (np.abs(K).max() + 1.0):
                return None
            msq = 1.0 / np.sqrt(self.model.mass)
            Kt = msq[None, :, None] * (0.5 * (K + K.swapaxes(1, 2))) * msq[None, None, :]
            lam, U = np.linalg.eigh(Kt)
            self.pc.eig = (U, lam, msq)
        return self.pc.eig

    def _block_inverse(self) -> CArray:
        if self.pc.minv is None:
            m, g, w = self.model.mass, self.model.damping, self.grid.omega
            Kbar = self._mean_stiffness()
            h = self.grid.harmonics
            diag = m[None, :] * (-((h * w) ** 2)[:, None] + 1j * (h * w)[:, None] * g[None, :])
            A = Kbar[:, None, :, :] + np.einsum("hj,jk->hjk", diag, np.eye(self.d))[None]
            try:
                self.pc.minv = np.linalg.inv(A)
            except np.linalg.LinAlgError:
                eps = 1e-12 * (np.abs(A).max() + 1.0)
                self.pc.minv = np.linalg.inv(A + eps * np.eye(self.d))
        return self.pc.minv

    def precond(self, v: Array, transpose: bool = False) -> Array:
        """Apply the inverse of the time-averaged Jacobian (or of its transpose)."""
        eig = self._eigen_factors()
        if eig is not None and self._dense is not None:
            # The same operator with the real DFT as a dense matrix: rows 0..H of F v are the
            # harmonics' real parts, rows H+1..2H the imaginary parts of harmonics 1..H.
            U, _, msq = eig
            F, Finv = self._dense[2], self._dense[3]
            inv = self.pc.inverse_shifts(self._harmonic_shifts(), transpose)
            H1 = inv.shape[1]
            W = ((F @ v) * msq) @ U
            Wr, Wi = W[:, :H1], W[:, H1:]
            Z = np.empty_like(W)
            Z[:, :H1] = Wr * inv.real
            Z[:, 1:H1] -= Wi * inv.imag[:, 1:]
            Z[:, H1:] = Wr[:, 1:] * inv.imag[:, 1:] + Wi * inv.real[:, 1:]
            return Finv @ ((Z @ U.swapaxes(1, 2)) * msq)
        V = np.fft.rfft(v, axis=1)
        if eig is not None:
            U, _, msq = eig
            inv = self.pc.inverse_shifts(self._harmonic_shifts(), transpose)
            H = V.shape[1]
            # Real GEMMs on the stacked real and imaginary parts (U is real).
            W = np.concatenate([V.real, V.imag], axis=1) * msq @ U
            Zc = (W[:, :H] + 1j * W[:, H:]) * inv
            Y = np.concatenate([Zc.real, Zc.imag], axis=1) @ U.swapaxes(1, 2) * msq
            return np.fft.irfft(Y[:, :H] + 1j * Y[:, H:], n=self.N, axis=1)
        minv = self._block_inverse()
        if transpose:
            # (A_n)ᵀ⁻¹ for the transposed operator: conj(A_n) is its block at harmonic n
            minv = np.conj(minv.swapaxes(-1, -2) if self.asymmetric else minv)
        return np.fft.irfft(np.einsum("bhij,bhj->bhi", minv, V), n=self.N, axis=1)

    def solve(
        self,
        rhs: Array,
        transpose: bool = False,
        rtol: float | Array = 1e-12,
        x0: Array | None = None,
    ) -> Array:
        """Solve J z = rhs (or Jᵀ z = rhs) for rhs (B,N,d) to the relative tolerance ``rtol``
        (one, or one per sample); raises SteadyStateError on failure."""
        op = self.vjp if transpose else self.jvp
        n = self.N * self.d
        res = gmres(
            lambda v: op(self._shape(v)).reshape(self.B, n),
            rhs.reshape(self.B, n),
            precond=lambda v: self.precond(self._shape(v), transpose).reshape(self.B, n),
            x0=None if x0 is None else x0.reshape(self.B, n),
            rtol=rtol,
            restart=60,
            max_restarts=20,
        )
        bad = ~res.converged & (res.residual > np.maximum(1e3 * np.asarray(rtol), 1e-8))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SteadyStateError(
                f"linear solve with the orbit's Jacobian did not converge for sample {i} "
                f"(relative residual {res.residual[i]:.2e})",
                sample=i,
                residual=float(res.residual[i]),
            )
        return self._shape(res.x)


@dataclass(frozen=True)
class PeriodicSolution:
    """A periodic steady state on ``grid``: orbit x (B,N,d) and solver diagnostics."""

    grid: PeriodicGrid
    x: Array
    beta: float | Array
    residual: Array  # (B,) max-norm of R relative to the force scale
    iterations: Array  # (B,) Newton iterations
    multipliers: CArray | None  # (B, 2d) Floquet multipliers, sorted by decreasing modulus
    #: the preconditioner of the last Newton iterations (for nudged phases around this orbit)
    preconditioner: Preconditioner | None = None

    @property
    def v(self) -> Array:
        """Velocity ẋ (B,N,d), spectral."""
        return self.grid.deriv(self.x, 1)

    @property
    def max_multiplier(self) -> Array:
        """Largest Floquet-multiplier modulus per sample (B,) (NaN if not computed)."""
        if self.multipliers is None:
            return np.full(self.x.shape[0], np.nan)
        return np.abs(self.multipliers[:, 0])


_warned_nonsmooth: set[str] = set()


def _warn_if_not_smooth(model: NetworkModel) -> None:
    """Warn once per process and nonlinearity when ρ is not smooth (spectral accuracy lost)."""
    rho = model.rho
    if not rho.smooth and rho.name not in _warned_nonsmooth:
        _warned_nonsmooth.add(rho.name)
        warnings.warn(
            f"nonlinearity {rho.name!r} is not smooth ({rho.note}): the periodic solver converges "
            "only algebraically in the points per period (orbit error ~N⁻² to N⁻³)",
            NonSmoothWarning,
            stacklevel=3,
        )


def _newton(
    op: PeriodicOperator, x: Array, active: NDArray[np.bool_], tol: float, max_iter: int
) -> tuple[Array, Array, Array]:
    """Damped Newton for the samples in ``active``; returns (x, relative residual, iterations).

    Once at most a quarter of a batch of ≥ 8 is left to converge, those samples go on in a
    sub-batch of their own (the others would still cost a matvec per Krylov iteration). The
    preconditioner (the time-averaged Jacobian's inverse) is kept from one iterate to the next
    while the Newton steps are small (< ``PRECOND_REFRESH_STEP`` of the orbit's peak): it only
    steers GMRES, whose tolerance fixes the step."""
    B = x.shape[0]
    iters = np.zeros(B, dtype=int)
    op.set_orbit(x, keep_preconditioner=True)
    R = op.residual(x)
    scale = op.force_scale(x)
    res = np.max(np.abs(R), axis=(1, 2)) / scale
    for k in range(max_iter):
        todo = active & (res > op.tolerance(x, tol))
        if not todo.any():
            break
        if B >= 8 and 4 * int(todo.sum()) <= B:
            idx = np.flatnonzero(todo)
            x_s, res_s, it_s = _newton(
                op.take(idx), x[idx], np.ones(idx.size, dtype=bool), tol, max_iter - k
            )
            x = x.copy()
            x[idx], res[idx] = x_s, res_s
            iters[idx] += it_s
            op.set_orbit(x, keep_preconditioner=True)
            break
        # Per-sample forcing terms: 0.1 × the residual (quadratic convergence), but no tighter
        # than needed for this step to land below the tolerance (0.01 tol/res: the linear
        # solve's relative error times the residual, with a margin for max- against 2-norms).
        tol_k = op.tolerance(x, tol)
        eta = np.clip(np.maximum(0.1 * res, 0.01 * tol_k / np.maximum(res, 1e-300)), 1e-13, 1e-4)
        rhs = np.where(todo[:, None, None], -R, 0.0)
        dx = op.solve(rhs, rtol=np.where(todo, eta, 1.0))
        norm0 = np.linalg.norm(R.reshape(B, -1), axis=1)
        peak = np.maximum(np.max(np.abs(x), axis=(1, 2)), 1e-300)
        keep = bool(np.all(np.max(np.abs(dx), axis=(1, 2)) <= PRECOND_REFRESH_STEP * peak))
        step = np.ones(B)
        accepted = ~todo
        x_new = x.copy()
        R_new = R.copy()
        for _ls in range(12):
            trial = x + step[:, None, None] * dx
            op.set_orbit(trial, keep_preconditioner=True)
            Rt = op.residual(trial)
            nt = np.linalg.norm(Rt.reshape(B, -1), axis=1)
            good = ~accepted & np.isfinite(nt) & (nt <= (1 - 1e-4 * step) * norm0)
            x_new[good] = trial[good]
            R_new[good] = Rt[good]
            accepted |= good
            if accepted.all():
                break
            step = np.where(accepted, step, 0.5 * step)
        stuck = ~accepted
        if stuck.any():
            # No decrease found: keep the old iterate; the caller falls back to continuation.
            x_new[stuck] = x[stuck]
            R_new[stuck] = R[stuck]
        iters += todo
        x, R = x_new, R_new
        op.set_orbit(x, keep_preconditioner=keep)
        scale = op.force_scale(x)
        res = np.max(np.abs(R), axis=(1, 2)) / scale
        if stuck.any():
            active = active & ~stuck
    return x, res, iters


def _newton_threaded(
    op: PeriodicOperator, x: Array, tol: float, max_iter: int
) -> tuple[Array, Array, Array]:
    """`_newton` on the whole batch, split into `solver_threads` parts solved concurrently (each
    sample's iterations are its own; the parts' preconditioners are put back together in
    ``op``)."""
    B = x.shape[0]
    n = min(solver_threads(), B // MIN_THREAD_BATCH)
    if n <= 1:
        return _newton(op, x, np.ones(B, dtype=bool), tol, max_iter)
    parts = np.array_split(np.arange(B), n)
    ops = [op.take(p) for p in parts]
    futures = [
        _executor().submit(_newton, o, x[p], np.ones(p.size, dtype=bool), tol, max_iter)
        for o, p in zip(ops[1:], parts[1:], strict=True)
    ]
    first = _newton(ops[0], x[parts[0]], np.ones(parts[0].size, dtype=bool), tol, max_iter)
    results = [first, *(f.result() for f in futures)]
    x = np.concatenate([r[0] for r in results])
    res = np.concatenate([r[1] for r in results])
    iters = np.concatenate([r[2] for r in results])
    op.pc = Preconditioner.concatenate([o.pc for o in ops])
    op.set_orbit(x, keep_preconditioner=True)
    return x, res, iters


def solve_periodic(
    model: NetworkModel,
    theta: Array,
    exc: GridExcitation,
    grid: PeriodicGrid,
    beta: float | Array = 0.0,
    x0: Array | None = None,
    tol: float = 1e-12,
    max_iter: int = 40,
    floquet: Literal["full", "collocation", "none"] = "full",
    stability_tol: float = 1e-6,
    feedback: Feedback | None = None,
    preconditioner: Preconditioner | None = None,
) -> PeriodicSolution:
    """The periodic steady state(s) of the network under ``exc``, with closed-loop nudge ``beta``.

    ``theta``: all term values (B, n_terms). ``x0``: warm start (B,N,d) (e.g. the free orbit for a
    nudged phase); default the response of the linearisation at rest. Samples where plain Newton
    stalls are retried by continuation in the excitation amplitude. Raises `SteadyStateError`
    (sample index, residual) if a sample does not converge and `UnstableOrbitError` if a
    converged orbit has a Floquet multiplier of modulus > 1 + stability_tol. ``feedback``: a
    learning phase's linear feedback force (`Feedback`). ``floquet="collocation"``: the multipliers
    from the collocated periodic eigenproblem (`physlearn.simulators.floquet_collocation`) instead of
    the RK4 monodromy; ``"none"``: no stability check. ``preconditioner``: factors to start
    from (e.g. the free solution's `PeriodicSolution.preconditioner` for its nudged phases; the
    time-averaged Jacobian of a nearby orbit steers GMRES as well and saves its set-up).
    """
    B, N, d = exc.force.shape
    if theta.shape[0] != B:
        theta = np.broadcast_to(theta, (B, theta.shape[-1])).copy()
    op = PeriodicOperator(model, theta, exc, grid, beta, feedback, preconditioner)
    x = np.zeros((B, N, d)) if x0 is None else np.array(x0, dtype=float)
    x, res, iters = _newton_threaded(op, x, tol, max_iter)
    failed = ~(res <= op.tolerance(x, tol))
    if failed.any():
        log.info("Newton stalled on %d samples; retrying by amplitude continuation", failed.sum())
        # only the stalled samples: the converged ones would still cost a matvec per iteration
        idx = np.flatnonzero(failed)
        e, beta_c = exc.take(idx), _take_beta(beta, idx)
        x_c = np.zeros((idx.size, N, d))
        active = np.ones(idx.size, dtype=bool)
        for lam in (0.1, 0.25, 0.5, 0.75, 1.0):
            scaled = GridExcitation(
                lam * e.force, e.clamp_weight, lam * e.clamp_target, e.cost_weight, e.target
            )
            fb_c = None if feedback is None else feedback.take(idx)
            op_c = PeriodicOperator(model, theta[idx], scaled, grid, beta_c, fb_c)
            x_c, res_c, it_c = _newton(op_c, x_c, active, tol, max_iter)
            iters[idx] += it_c
        x[idx] = x_c
        res[idx] = res_c
    tol_eff = op.tolerance(x, tol)
    bad = ~(res <= tol_eff)
    if bad.any():
        all_bad = tuple(int(j) for j in np.flatnonzero(bad))
        i = all_bad[0]
        more = f"; {len(all_bad) - 1} more samples did not converge" if len(all_bad) > 1 else ""
        raise SteadyStateError(
            f"periodic steady state did not converge for sample {i}: relative residual "
            f"{res[i]:.3e} > tol {tol_eff[i]:.1e} after {iters[i]} Newton iterations{more}",
            sample=i,
            residual=float(res[i]),
            samples=all_bad,
        )
    mult = None
    if floquet != "none":
        mult = _stable_multipliers(
            model, theta, exc, grid, x, beta, feedback, stability_tol, floquet == "collocation"
        )
    return PeriodicSolution(grid, x, beta, res, iters, mult, op.pc)


def _stable_multipliers(
    model: NetworkModel,
    theta: Array,
    exc: GridExcitation,
    grid: PeriodicGrid,
    x: Array,
    beta: float | Array,
    feedback: Feedback | None,
    stability_tol: float,
    collocation: bool = False,
) -> CArray:
    """The orbits' Floquet multipliers (B, 2d); `UnstableOrbitError` if one has modulus
    > 1 + stability_tol (naming the non-reciprocal couplings when the network has some)."""
    if collocation:
        from physlearn.simulators.floquet_collocation import collocation_multipliers

        mult = collocation_multipliers(model, theta, exc, grid, x, beta, feedback).multipliers
    else:
        from physlearn.simulators.floquet import floquet_multipliers

        mult = floquet_multipliers(model, theta, exc, grid, x, beta, feedback)
    mod = np.abs(mult[:, 0])
    unstable = mod > 1.0 + stability_tol
    if unstable.any():
        all_bad = tuple(int(j) for j in np.flatnonzero(unstable))
        i = all_bad[0]
        why = (
            "; the network has non-reciprocal (directed) couplings, whose flutter the "
            "damping must outweigh"
            if model.nonreciprocal
            else ""
        )
        raise UnstableOrbitError(
            f"the periodic orbit of sample {i} is not attracting: Floquet multiplier of "
            f"modulus {mod[i]:.6f} > 1 (no bench can settle on it){why}",
            sample=i,
            multiplier=float(mod[i]),
            samples=all_bad,
        )
    return mult
