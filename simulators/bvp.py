"""Problems on [t_i, t_f]: fixed endpoints, fixed velocities (Massar §IV C) and the initial-value
problem (§IV A, the negative control), on one variational discretisation.

Grid t_n = t_i + n h, n = 0..M. Damping enters through the weight W(t) = e^{Γ(t − t_i)} (uniform Γ):
the discrete action

    S = Σ_{n<M} h W_{n+½} ½ m ((x_{n+1} − x_n)/h)² − Σ_n h c_n W_n U(x_n, t_n)
    U = V − F·x + δ ½ (x − u)² − β γ_eff ½ (x − y)²       (c_n: trapezoid weights, ½ at the ends)

has stationarity conditions that are a second-order discretisation of
m ẍ + mΓ ẋ = −∂V/∂x + F − δ(x − u) + β γ_eff (x − y). The cost being trained is
C = Σ h c_n W_n γ_eff ½ (x − y)² with γ_eff = γ (``weighted``: C = ∫ e^{Γt} C dt) or γ e^{−Γ(t−t_i)}
(``plain``: C = ∫ C dt, nudged with γ e^{−Γt} as docs/physics.md says). Conjugate quantities are the
weighted A = Σ h c_n W_n ∂L/∂α.

Boundary conditions: ``fixed_endpoints`` x_0, x_M given; ``fixed_velocities`` the action gains
p_i·x_0 − p_f·x_M (p = m v W), which makes its stationarity conditions ẋ = v at both ends;
``initial_value`` x_0 and p_0 given, solved by explicit marching (exactly causal). The first two
are exactly variational, so the symmetric EP quotient equals dC/dα up to O(β²); the third leaves
the boundary term B = ∂_β p_f·∂_α x_M − ∂_α p_f·∂_β x_M (p_f = ∂S/∂x_M), see `boundary_term`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.sparse.linalg import splu

from physlearn.errors import SteadyStateError
from physlearn.simulators.excitation import Excitation, GridExcitation
from physlearn.spec.model import NetworkModel
from physlearn.spec.network import NetworkSpec

Array = NDArray[np.float64]


@dataclass(frozen=True)
class BVPSolution:
    x: Array  # (B, M+1, d)
    beta: float
    iterations: int
    residual: float


class BoundaryValueProblem:
    """One network, one excitation, one boundary condition on a time grid of ``steps`` intervals."""

    def __init__(
        self,
        spec: NetworkSpec,
        model: NetworkModel,
        excitation: Excitation,
        steps: int | None = None,
    ):
        b = spec.boundary
        if b.kind == "periodic" or b.t_final_s is None:
            raise ValueError("a boundary-value problem needs a non-periodic boundary spec")
        self.kind = b.kind
        self.model = model
        d = model.d
        self.M = int(steps if steps is not None else b.steps)
        self.t = np.linspace(b.t_initial_s, b.t_final_s, self.M + 1)
        self.h = (b.t_final_s - b.t_initial_s) / self.M
        self.rate = float(model.damping[0])
        self.W = np.exp(self.rate * (self.t - b.t_initial_s))
        th = 0.5 * (self.t[1:] + self.t[:-1])
        self.Wh = np.exp(self.rate * (th - b.t_initial_s))
        self.c = np.ones(self.M + 1)
        self.c[0] = self.c[-1] = 0.5
        g = excitation.on_grid(self.t)
        scale = 1.0 if b.cost_weighting == "weighted" else 1.0 / self.W
        self.exc = GridExcitation(
            g.force,
            g.clamp_weight,
            g.clamp_target,
            g.cost_weight * np.reshape(scale, (1, -1, 1)) if np.ndim(scale) else g.cost_weight,
            g.target,
        )
        self.B = g.force.shape[0]

        def vec(v: list[float] | None) -> Array:
            return np.zeros(d) if v is None else np.asarray(v, dtype=float)

        self.x_i, self.x_f = vec(b.x_initial), vec(b.x_final)
        self.v_i, self.v_f = vec(b.v_initial), vec(b.v_final)
        self.m = model.mass

    # ------------------------------------------------------------------ discrete action pieces
    def _uprime(self, x: Array, coef_theta: Array, beta: float) -> Array:
        coef = self.model.coefficients(coef_theta)
        return self.model.grad_potential(x, self.t, coef) - self.exc.external_force(x, beta)

    def action_gradient(self, x: Array, theta: Array, beta: float) -> Array:
        """G = ∂S/∂x (B, M+1, d), S the discrete action without boundary momenta."""
        m, h = self.m, self.h
        dx = np.diff(x, axis=1)  # (B,M,d)
        flux = self.Wh[None, :, None] * m * dx / h  # W_{n+½} m (x_{n+1} − x_n)/h
        G = np.zeros_like(x)
        G[:, 1:] += flux
        G[:, :-1] -= flux
        G -= h * (self.c * self.W)[None, :, None] * self._uprime(x, theta, beta)
        return G

    def residual(self, x: Array, theta: Array, beta: float) -> Array:
        """R (B, M+1, d): one equation block per unknown x_n, in force units where physical."""
        G = self.action_gradient(x, theta, beta)
        hw = self.h * self.W[None, :, None]
        R = -G / hw
        if self.kind == "fixed_endpoints":
            R[:, 0] = x[:, 0] - self.x_i
            R[:, -1] = x[:, -1] - self.x_f
        elif self.kind == "fixed_velocities":
            R[:, 0] = -(G[:, 0] + self.m * self.v_i * self.W[0]) / hw[:, 0]
            R[:, -1] = -(G[:, -1] - self.m * self.v_f * self.W[-1]) / hw[:, -1]
        else:  # initial_value: x_0 fixed; the last block is the initial-momentum condition.
            R[:, -1] = -(G[:, 0] + self.m * self.v_i * self.W[0]) / hw[:, 0]
            R[:, 0] = x[:, 0] - self.x_i
        return R

    def _row_map(self) -> tuple[NDArray[np.intp], Array]:
        """For each residual block r: the time index whose ∂U/∂x it contains, and its c-weight
        (0 for fixed-value blocks). In the initial-value problem the last block is the momentum
        condition at t_i, so it holds ½ ∂U/∂x(x_0)."""
        src = np.arange(self.M + 1)
        w = self.c.copy()
        if self.kind == "fixed_endpoints":
            w[0] = w[-1] = 0.0
        elif self.kind == "initial_value":
            w[0] = 0.0
            src[-1] = 0
        return src, w

    def jacobian(self, x: Array, theta: Array, beta: float, b: int) -> sp.csc_matrix:
        """Sparse ∂R/∂x of sample b, shape ((M+1)d, (M+1)d)."""
        M, d, h, m = self.M, self.model.d, self.h, self.m
        coef = self.model.coefficients(theta[b : b + 1])
        H = self.model.hessian(x[b : b + 1], self.t, coef)[0]  # (M+1,d,d)
        H = H + np.einsum("nj,jk->njk", self.exc.external_stiffness(beta)[b], np.eye(d))
        rows, cols, vals = [], [], []
        idx = np.arange(d)

        def add(r: int, c: int, block: Array) -> None:
            rr, cc = np.meshgrid(idx, idx, indexing="ij")
            rows.append((r * d + rr).ravel())
            cols.append((c * d + cc).ravel())
            vals.append(block.ravel())

        def add_diag(r: int, c: int, diag: Array) -> None:
            rows.append(r * d + idx)
            cols.append(c * d + idx)
            vals.append(diag)

        def el_block(r: int, n: int) -> None:
            """Block row r holds −∂S/∂x_n / (h W_n) (its dependence on x_{n−1}, x_n, x_{n+1})."""
            hw = h * self.W[n]
            diag = np.zeros(d)
            if n > 0:
                add_diag(r, n - 1, self.Wh[n - 1] * m / h / hw)
                diag -= self.Wh[n - 1] * m / h
            if n < M:
                add_diag(r, n + 1, self.Wh[n] * m / h / hw)
                diag -= self.Wh[n] * m / h
            add(r, n, (np.diag(diag) + h * self.c[n] * self.W[n] * H[n]) / hw)

        for n in range(1, M):
            el_block(n, n)
        if self.kind == "fixed_endpoints":
            add_diag(0, 0, np.ones(d))
            add_diag(M, M, np.ones(d))
        elif self.kind == "fixed_velocities":
            el_block(0, 0)
            el_block(M, M)
        else:
            add_diag(0, 0, np.ones(d))
            el_block(M, 0)
        n_tot = (M + 1) * d
        return sp.csc_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n_tot, n_tot),
        )

    # ------------------------------------------------------------------ solvers
    def _march(self, theta: Array, beta: float) -> Array:
        """Initial-value problem by explicit marching of the discrete equations (exactly causal)."""
        B, M, d, h, m = self.B, self.M, self.model.d, self.h, self.m
        x = np.zeros((B, M + 1, d))
        coef = self.model.coefficients(theta)

        def up(n: int, xn: Array) -> Array:
            t = self.t[n : n + 1]
            e = self.exc
            xs = xn[:, None, :]
            ext = (
                e.force[:, n : n + 1]
                - e.clamp_weight[:, n : n + 1] * (xs - e.clamp_target[:, n : n + 1])
                + beta * e.cost_weight[:, n : n + 1] * (xs - e.target[:, n : n + 1])
            )
            return (self.model.grad_potential(xs, t, coef) - ext)[:, 0]

        x[:, 0] = self.x_i
        x[:, 1] = x[:, 0] + h * (self.W[0] / self.Wh[0]) * (self.v_i - 0.5 * h * up(0, x[:, 0]) / m)
        for n in range(1, M):
            x[:, n + 1] = (
                x[:, n]
                + (
                    self.Wh[n - 1] * (x[:, n] - x[:, n - 1])
                    - h * h * self.W[n] * up(n, x[:, n]) / m
                )
                / self.Wh[n]
            )
        return x

    def solve(
        self,
        theta: Array,
        beta: float = 0.0,
        x0: Array | None = None,
        tol: float = 1e-13,
        max_iter: int = 50,
    ) -> BVPSolution:
        """Solve for every sample; theta (B, n_terms). Newton with sparse LU (or marching for IVP)."""
        theta = np.broadcast_to(theta, (self.B, theta.shape[-1]))
        if self.kind == "initial_value":
            x = self._march(theta, beta)
            res = float(np.max(np.abs(self.residual(x, theta, beta)[:, 1:-1])))
            return BVPSolution(x, beta, 0, res)
        guess = np.zeros((self.B, self.M + 1, self.model.d))
        if self.kind == "fixed_endpoints":
            lin = np.linspace(0.0, 1.0, self.M + 1)[None, :, None]
            guess[:] = (1 - lin) * self.x_i + lin * self.x_f
        x, it, step = self._newton(guess if x0 is None else x0, theta, beta, tol, max_iter)
        if step > tol:
            # Continuation in the drive amplitude from the undriven problem.
            full = self.exc
            x = guess
            try:
                for lam in np.linspace(0.0, 1.0, 11):
                    self.exc = replace(
                        full, force=lam * full.force, clamp_target=lam * full.clamp_target
                    )
                    x, it_c, step = self._newton(x, theta, beta, tol, max_iter)
                    it += it_c
            finally:
                self.exc = full
        if step > tol:
            raise SteadyStateError(
                f"{self.kind} boundary-value problem did not converge in {max_iter} Newton "
                f"iterations, with continuation (last relative step {step:.2e})",
                residual=step,
            )
        res = float(np.max(np.abs(self.residual(x, theta, beta))))
        return BVPSolution(x, beta, it, res)

    def _newton(
        self, x: Array, theta: Array, beta: float, tol: float, max_iter: int
    ) -> tuple[Array, int, float]:
        """Damped Newton with sparse LU per sample; returns (x, iterations, last relative step)."""
        x = x.copy()
        rel = np.inf
        for it in range(1, max_iter + 1):
            R = self.residual(x, theta, beta)
            worst = 0.0
            for b in range(self.B):
                J = self.jacobian(x, theta, beta, b)
                dx = splu(J).solve(-R[b].ravel()).reshape(x.shape[1:])
                # Backtracking line search on ‖R_b‖ (plain Newton can cycle on stiff problems).
                r0 = float(np.linalg.norm(R[b]))
                step = 1.0
                for _ in range(30):
                    trial = x.copy()
                    trial[b] += step * dx
                    rt = float(np.linalg.norm(self.residual(trial, theta, beta)[b]))
                    if np.isfinite(rt) and rt <= (1.0 - 1e-4 * step) * r0:
                        break
                    step *= 0.5
                x[b] += step * dx
                worst = max(worst, float(np.max(np.abs(step * dx))))
            scale = max(1.0, float(np.max(np.abs(x))))
            rel = worst / scale
            if not np.isfinite(rel):
                return x, it, np.inf
            if rel <= tol:
                return x, it, rel
        return x, max_iter, rel

    # ------------------------------------------------------------------ cost, conjugates, gradients
    def quadrature(self) -> Array:
        """Weights h c_n W_n (M+1,)."""
        return self.h * self.c * self.W

    def cost(self, x: Array) -> Array:
        """The trained cost C = Σ h c W γ_eff ½ (x − y)², shape (B,)."""
        return np.einsum("n,bn->b", self.quadrature(), self.exc.cost_density(x))

    def conjugates(self, x: Array) -> Array:
        """Weighted conjugates A = Σ h c_n W_n ∂L/∂α (B,P)."""
        dens = self.model.dV_dtheta(x, self.t)[..., self.model.trainable]
        return -np.einsum("n,bnp->bp", self.quadrature(), dens)

    def _solve_linear(
        self, x: Array, theta: Array, beta: float, rhs: Array, transpose: bool
    ) -> Array:
        out = np.empty_like(rhs)
        theta = np.broadcast_to(theta, (self.B, theta.shape[-1]))
        for b in range(self.B):
            J = self.jacobian(x, theta, beta, b)
            lu = splu(J.T.tocsc() if transpose else J)
            out[b] = lu.solve(rhs[b].ravel()).reshape(rhs.shape[1:])
        return out

    def _dR_dalpha_T(self, x: Array, lam: Array) -> Array:
        """λᵀ ∂R/∂α (B,P)."""
        src, w = self._row_map()
        lam_t = np.zeros_like(lam)
        np.add.at(lam_t, (slice(None), src), lam * w[None, :, None])  # type: ignore[arg-type]
        return self.model.vjp_theta(x, self.t, lam_t)[:, self.model.trainable]

    def _dR_dalpha(self, x: Array, dalpha: Array) -> Array:
        """(∂R/∂α) dα (B, M+1, d)."""
        src, w = self._row_map()
        dtheta = np.zeros((x.shape[0], self.model.n_terms))
        dtheta[:, self.model.trainable] = dalpha
        return self.model.jvp_theta(x, self.t, dtheta)[:, src] * w[None, :, None]

    def _dR_dbeta(self, x: Array) -> Array:
        src, w = self._row_map()
        return -self.exc.cost_gradient(x)[:, src] * w[None, :, None]

    def adjoint_gradient(self, sol: BVPSolution, theta: Array) -> Array:
        """Exact dC/dα (B,P) of the discrete problem (adjoint method)."""
        g = self.quadrature()[None, :, None] * self.exc.cost_gradient(sol.x)
        lam = self._solve_linear(sol.x, theta, sol.beta, g, transpose=True)
        return -self._dR_dalpha_T(sol.x, lam)

    def boundary_term(self, sol: BVPSolution, theta: Array) -> Array:
        """B = ∂_β p_f·∂_α x_M − ∂_α p_f·∂_β x_M at t_f, shape (B,P) (initial-value problem).

        With it, dC/dα = dA/dβ + B exactly (the EP quotient alone misses B).
        """
        x, P = sol.x, self.model.n_params
        theta = np.broadcast_to(theta, (self.B, theta.shape[-1]))
        h, m = self.h, self.m
        coef = self.model.coefficients(theta)
        K = self.model.hessian(x[:, -1:], self.t[-1:], coef)[:, 0]
        K = K + np.einsum(
            "bj,jk->bjk", self.exc.external_stiffness(sol.beta)[:, -1], np.eye(self.model.d)
        )

        def dpf(dx: Array, dU: Array) -> Array:
            """Variation of p_f = W_{M−½} m (x_M − x_{M−1})/h − (h/2) W_M U'(x_M)."""
            return self.Wh[-1] * m * (dx[:, -1] - dx[:, -2]) / h - 0.5 * h * self.W[-1] * (
                np.einsum("bjk,bk->bj", K, dx[:, -1]) + dU
            )

        dx_db = -self._solve_linear(x, theta, sol.beta, self._dR_dbeta(x), transpose=False)
        dp_db = dpf(dx_db, -self.exc.cost_gradient(x)[:, -1])
        out = np.zeros((self.B, P))
        for p in range(P):
            e = np.zeros((self.B, P))
            e[:, p] = 1.0
            dx_da = -self._solve_linear(x, theta, sol.beta, self._dR_dalpha(x, e), transpose=False)
            dtheta = np.zeros((self.B, self.model.n_terms))
            dtheta[:, self.model.trainable[p]] = 1.0
            dU_da = self.model.jvp_theta(x[:, -1:], self.t[-1:], dtheta)[:, 0]
            dp_da = dpf(dx_da, dU_da)
            out[:, p] = np.sum(dp_db * dx_da[:, -1] - dp_da * dx_db[:, -1], axis=1)
        return out
