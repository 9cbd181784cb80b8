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

import logging
import warnings
from dataclasses import dataclass
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
        self._minv: CArray | None = None
        self._eig: tuple[Array, Array, Array] | None = None

    def take(self, idx: NDArray[np.intp]) -> PeriodicOperator:
        """The operator of the samples ``idx`` alone (a sub-batch; orbit not set)."""
        fb = None if self.feedback is None else self.feedback.take(idx)
        return PeriodicOperator(
            self.model,
            self.theta[idx],
            self.exc.take(idx),
            self.grid,
            _take_beta(self.beta, idx),
            fb,
        )

    # -- state ---------------------------------------------------------------------------------
    def set_orbit(self, x: Array) -> None:
        self.x = x
        self._minv = None
        self._eig = None

    def residual(self, x: Array) -> Array:
        m, g = self.model.mass, self.model.damping
        acc = self.grid.deriv(x, 2)
        vel = self.grid.deriv(x, 1)
        r = (
            m * acc
            + m * g * vel
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
        m, g = self.model.mass, self.model.damping
        out = (
            m * self.grid.deriv(v, 2)
            + m * g * self.grid.deriv(v, 1)
            + self.model.hess_vec(self.x, self.grid.t, self.coef, v)
            + self.ext_stiff * v
        )
        return out if self.feedback is None else out - self.feedback.apply(v)

    def vjp(self, v: Array) -> Array:
        """Jᵀ v for v (B,N,d) (D is antisymmetric: the damping term changes sign; directed
        couplings and feedback enter transposed)."""
        m, g = self.model.mass, self.model.damping
        hv = self.model.hess_vec_T if self.asymmetric else self.model.hess_vec
        out = (
            m * self.grid.deriv(v, 2)
            - m * g * self.grid.deriv(v, 1)
            + hv(self.x, self.grid.t, self.coef, v)
            + self.ext_stiff * v
        )
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
        if self._eig is None:
            g = self.model.damping
            if not np.all(g == g[0]):
                return None
            K = self._mean_stiffness()
            if np.abs(K - K.swapaxes(1, 2)).max() > 1e-12 * (np.abs(K).max() + 1.0):
                return None
            msq = 1.0 / np.sqrt(self.model.mass)
            Kt = msq[None, :, None] * (0.5 * (K + K.swapaxes(1, 2))) * msq[None, None, :]
            lam, U = np.linalg.eigh(Kt)
            self._eig = (U, lam, msq)
        return self._eig

    def _block_inverse(self) -> CArray:
        if self._minv is None:
            m, g, w = self.model.mass, self.model.damping, self.grid.omega
            Kbar = self._mean_stiffness()
            h = self.grid.harmonics
            diag = m[None, :] * (-((h * w) ** 2)[:, None] + 1j * (h * w)[:, None] * g[None, :])
            A = Kbar[:, None, :, :] + np.einsum("hj,jk->hjk", diag, np.eye(self.d))[None]
            try:
                self._minv = np.linalg.inv(A)
            except np.linalg.LinAlgError:
                eps = 1e-12 * (np.abs(A).max() + 1.0)
                self._minv = np.linalg.inv(A + eps * np.eye(self.d))
        return self._minv

    def precond(self, v: Array, transpose: bool = False) -> Array:
        """Apply the inverse of the time-averaged Jacobian (or of its transpose)."""
        V = np.fft.rfft(v, axis=1)
        eig = self._eigen_factors()
        if eig is not None:
            U, lam, msq = eig
            s = self._harmonic_shifts()
            den = lam[:, None, :] + (np.conj(s) if transpose else s)[None, :, None]
            if not np.all(den != 0):
                eps = 1e-12 * (np.abs(lam).max() + np.abs(s).max() + 1.0)
                den = np.where(den == 0, eps, den)
            H = V.shape[1]
            # Real GEMMs on the stacked real and imaginary parts (U is real).
            W = np.concatenate([V.real, V.imag], axis=1) * msq @ U
            Z = (W[:, :H] + 1j * W[:, H:]) / den
            Y = np.concatenate([Z.real, Z.imag], axis=1) @ U.swapaxes(1, 2) * msq
            return np.fft.irfft(Y[:, :H] + 1j * Y[:, H:], n=self.N, axis=1)
        minv = self._block_inverse()
        if transpose:
            # (A_n)ᵀ⁻¹ for the transposed operator: conj(A_n) is its block at harmonic n
            minv = np.conj(minv.swapaxes(-1, -2) if self.asymmetric else minv)
        return np.fft.irfft(np.einsum("bhij,bhj->bhi", minv, V), n=self.N, axis=1)

    def solve(
        self, rhs: Array, transpose: bool = False, rtol: float = 1e-12, x0: Array | None = None
    ) -> Array:
        """Solve J z = rhs (or Jᵀ z = rhs) for rhs (B,N,d); raises SteadyStateError on failure."""
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
        bad = ~res.converged & (res.residual > max(1e3 * rtol, 1e-8))
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
    sub-batch of their own (the others would still cost a matvec per Krylov iteration)."""
    B = x.shape[0]
    iters = np.zeros(B, dtype=int)
    op.set_orbit(x)
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
            op.set_orbit(x)
            break
        eta = np.clip(0.1 * res, 1e-13, 1e-4)
        rhs = np.where(todo[:, None, None], -R, 0.0)
        dx = op.solve(rhs, rtol=float(eta[todo].min()))
        norm0 = np.linalg.norm(R.reshape(B, -1), axis=1)
        step = np.ones(B)
        accepted = ~todo
        x_new = x.copy()
        for _ls in range(12):
            trial = x + step[:, None, None] * dx
            op.set_orbit(trial)
            Rt = op.residual(trial)
            nt = np.linalg.norm(Rt.reshape(B, -1), axis=1)
            good = ~accepted & np.isfinite(nt) & (nt <= (1 - 1e-4 * step) * norm0)
            x_new[good] = trial[good]
            accepted |= good
            if accepted.all():
                break
            step = np.where(accepted, step, 0.5 * step)
        stuck = ~accepted
        if stuck.any():
            # No decrease found: keep the old iterate; the caller falls back to continuation.
            x_new[stuck] = x[stuck]
        iters += todo
        x = x_new
        op.set_orbit(x)
        R = op.residual(x)
        scale = op.force_scale(x)
        res = np.max(np.abs(R), axis=(1, 2)) / scale
        if stuck.any():
            active = active & ~stuck
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
) -> PeriodicSolution:
    """The periodic steady state(s) of the network under ``exc``, with closed-loop nudge ``beta``.

    ``theta``: all term values (B, n_terms). ``x0``: warm start (B,N,d) (e.g. the free orbit for a
    nudged phase); default the response of the linearisation at rest. Samples where plain Newton
    stalls are retried by continuation in the excitation amplitude. Raises `SteadyStateError`
    (sample index, residual) if a sample does not converge and `UnstableOrbitError` if a
    converged orbit has a Floquet multiplier of modulus > 1 + stability_tol. ``feedback``: a
    learning phase's linear feedback force (`Feedback`). ``floquet="collocation"``: the multipliers
    from the collocated periodic eigenproblem (`physlearn.simulators.floquet_collocation`) instead of
    the RK4 monodromy; ``"none"``: no stability check.
    """
    B, N, d = exc.force.shape
    if theta.shape[0] != B:
        theta = np.broadcast_to(theta, (B, theta.shape[-1])).copy()
    op = PeriodicOperator(model, theta, exc, grid, beta, feedback)
    x = np.zeros((B, N, d)) if x0 is None else np.array(x0, dtype=float)
    x, res, iters = _newton(op, x, np.ones(B, dtype=bool), tol, max_iter)
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
    return PeriodicSolution(grid, x, beta, res, iters, mult)


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
