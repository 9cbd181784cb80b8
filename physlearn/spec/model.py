"""The compiled network: potential forces, Hessian-vector products and parameter derivatives.

Everything is vectorised over a batch of samples and a time grid: node coordinates ``x`` have shape
(batch, time, node), full term values ``theta`` shape (batch, n_terms) (every term, trainable or
not, in `NetworkSpec.terms()` order). The potential is V = ½ Σ k_j x_j² + G(x, t; θ) with G
*linear* in θ (G holds the on-site springs ½ κ_j x_j² too: κ adds to the fixed k), so ∂²V/∂θ∂x · dθ is G's gradient evaluated with dθ in place of θ.

Non-reciprocal (directed) couplings add the position-dependent force −Q(x, t; θ),
Q_i = μ(t) Σ_{i←j} α (x_j or ρ(x_j)), also linear in θ but with no potential: ``grad_potential``
and ``hess_vec`` return ∂V/∂x + Q and its Jacobian K + N (N = ∂Q/∂x, not symmetric), and
``hess_vec_T`` the transposed product (K + Nᵀ) v that adjoint solves need. Without directed
couplings every method computes exactly what it computed before they existed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from physlearn.spec.modulation import ModulationFn
from physlearn.spec.network import Bias, Coupling, DirectedCoupling, NetworkSpec, Onsite
from physlearn.spec.nonlinearity import Nonlinearity, get_nonlinearity

Array = NDArray[np.float64]
IntArray = NDArray[np.intp]


@dataclass(frozen=True)
class Coefficients:
    """θ laid out for fast evaluation: product matrix A (B,d,d) symmetric, zero diagonal;
    difference Laplacian Lap (B,d,d); bias (B,d); quartic (B,d); on-site stiffness κ (B,d);
    directed gains Wlin, Wrho (B,d,d) with W[b, i, j] = α of the directed coupling i ← j (None
    without directed couplings).
    """

    A: Array
    Lap: Array
    bias: Array
    quartic: Array
    onsite: Array
    Wlin: Array | None = None
    Wrho: Array | None = None


@dataclass(frozen=True)
class NetworkModel:
    """A `NetworkSpec` compiled to index arrays. Build with `NetworkModel.from_spec`."""

    d: int
    mass: Array
    stiffness: Array
    damping: Array
    rho: Nonlinearity
    mu: ModulationFn
    nu: ModulationFn
    period_s: float | None
    prod_idx: IntArray
    prod_j: IntArray
    prod_k: IntArray
    diff_idx: IntArray
    diff_j: IntArray
    diff_k: IntArray
    bias_idx: IntArray
    bias_j: IntArray
    quart_idx: IntArray
    quart_j: IntArray
    theta0: Array
    trainable: IntArray
    # directed couplings: term index, target node i, source node j, fed through ρ
    dir_idx: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    dir_i: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    dir_j: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    dir_rho: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # on-site springs ½ κ x²: term index, node
    ons_idx: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    ons_j: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))

    @classmethod
    def from_spec(cls, spec: NetworkSpec) -> NetworkModel:
        m, k, g = spec.nodes.arrays()
        terms = spec.terms()
        prod: list[tuple[int, ...]] = []
        diff: list[tuple[int, ...]] = []
        bias: list[tuple[int, ...]] = []
        quart: list[tuple[int, ...]] = []
        dirc: list[tuple[int, ...]] = []
        ons: list[tuple[int, ...]] = []
        for idx, (_, t) in enumerate(terms):
            if isinstance(t, Coupling):
                (prod if t.kind == "product" else diff).append((idx, *t.nodes))
            elif isinstance(t, Bias):
                bias.append((idx, t.node))
            elif isinstance(t, DirectedCoupling):
                dirc.append((idx, t.target, t.source, int(t.kind == "rho")))
            elif isinstance(t, Onsite):
                ons.append((idx, t.node))
            else:
                quart.append((idx, t.node))  # type: ignore[attr-defined]

        def cols(rows: list[tuple[int, ...]], n: int) -> list[IntArray]:
            a = np.array(rows, dtype=np.intp).reshape(-1, n)
            return [a[:, i].copy() for i in range(n)]

        pi, pj, pk = cols(prod, 3)
        di, dj, dk = cols(diff, 3)
        bi, bj = cols(bias, 2)
        qi, qj = cols(quart, 2)
        ei, etgt, esrc, erho = cols(dirc, 4)
        oi, oj = cols(ons, 2)
        return cls(
            d=spec.nodes.count,
            mass=m,
            stiffness=k,
            damping=g,
            rho=get_nonlinearity(spec.nonlinearity),
            mu=spec.modulations.mu,
            nu=spec.modulations.nu,
            period_s=spec.period_s if spec.boundary.kind == "periodic" else None,
            prod_idx=pi,
            prod_j=pj,
            prod_k=pk,
            diff_idx=di,
            diff_j=dj,
            diff_k=dk,
            bias_idx=bi,
            bias_j=bj,
            quart_idx=qi,
            quart_j=qj,
            theta0=np.array([t.value for _, t in terms], dtype=float),
            trainable=np.array([i for i, (_, t) in enumerate(terms) if t.trainable], dtype=np.intp),
            dir_idx=ei,
            dir_i=etgt,
            dir_j=esrc,
            dir_rho=erho.astype(bool),
            ons_idx=oi,
            ons_j=oj,
        )

    @property
    def nonreciprocal(self) -> bool:
        """True when the network has directed couplings (its forces derive from no potential)."""
        return bool(self.dir_idx.size)

    # ------------------------------------------------------------------ parameters
    @property
    def n_terms(self) -> int:
        return int(self.theta0.size)

    @property
    def n_params(self) -> int:
        return int(self.trainable.size)

    def full_theta(self, alpha: Array, batch: int | None = None) -> Array:
        """Trainable values ``alpha`` (P,) or (B,P) → all term values (B, n_terms)."""
        a = np.atleast_2d(np.asarray(alpha, dtype=float))
        if a.shape[-1] != self.n_params:
            raise ValueError(f"expected {self.n_params} trainable parameters, got {a.shape[-1]}")
        b = a.shape[0] if batch is None else batch
        theta = np.repeat(self.theta0[None, :], b, axis=0)
        theta[:, self.trainable] = a if a.shape[0] == b else np.broadcast_to(a, (b, a.shape[1]))
        return theta

    def coefficients(self, theta: Array) -> Coefficients:
        """Term values (B, n_terms) → dense matrices and vectors."""
        b, d = theta.shape[0], self.d
        A = np.zeros((b, d, d))
        w = theta[:, self.prod_idx]
        A[:, self.prod_j, self.prod_k] += w
        A[:, self.prod_k, self.prod_j] += w
        Lap = np.zeros((b, d, d))
        w = theta[:, self.diff_idx]
        Lap[:, self.diff_j, self.diff_k] -= w
        Lap[:, self.diff_k, self.diff_j] -= w
        # Diagonal: a node appears in several edges, so accumulate (fancy += would not).
        for jj, kk, ww in ((self.diff_j, self.diff_j, w), (self.diff_k, self.diff_k, w)):
            np.add.at(Lap, (slice(None), jj, kk), ww)  # type: ignore[arg-type]
        bias = np.zeros((b, d))
        bias[:, self.bias_j] = theta[:, self.bias_idx]
        quart = np.zeros((b, d))
        quart[:, self.quart_j] = theta[:, self.quart_idx]
        ons = np.zeros((b, d))
        ons[:, self.ons_j] = theta[:, self.ons_idx]
        if not self.nonreciprocal:
            return Coefficients(A, Lap, bias, quart, ons)
        W = np.zeros((2, b, d, d))  # (linear, rho); (kind, i, j) pairs are unique
        W[self.dir_rho.astype(np.intp), :, self.dir_i, self.dir_j] = theta[:, self.dir_idx].T
        return Coefficients(A, Lap, bias, quart, ons, W[0], W[1])

    def modulations(self, t: Array) -> tuple[Array, Array]:
        """μ(t), ν(t) on the time grid, shape (N,) each."""
        return self.mu(t, self.period_s), self.nu(t, self.period_s)

    # ------------------------------------------------------------------ potential
    def grad_terms(self, x: Array, t: Array, c: Coefficients) -> Array:
        """∂G/∂x (the θ-linear part of ∂V/∂x), shape (B,N,d)."""
        mu, nu = self.modulations(t)
        r, r1 = self.rho.rho(x), self.rho.d1(x)
        g = mu[None, :, None] * r1 * (r @ c.A)
        g += x @ c.Lap
        g += nu[None, :, None] * r1 * c.bias[:, None, :]
        g += c.quartic[:, None, :] * x**3
        g += c.onsite[:, None, :] * x
        if c.Wlin is not None and c.Wrho is not None:
            g += mu[None, :, None] * (x @ c.Wlin.swapaxes(1, 2) + r @ c.Wrho.swapaxes(1, 2))
        return g

    def grad_potential(self, x: Array, t: Array, c: Coefficients) -> Array:
        """∂V/∂x (+ Q, the directed couplings' forces with the sign of ∂V/∂x), shape (B,N,d)."""
        return self.stiffness * x + self.grad_terms(x, t, c)

    def energy(self, x: Array, t: Array, c: Coefficients) -> Array:
        """V(x(t), t), shape (B,N) (directed couplings have no potential and are left out)."""
        mu, nu = self.modulations(t)
        r = self.rho.rho(x)
        e = 0.5 * np.sum(self.stiffness * x**2, axis=-1)
        e += 0.5 * mu[None, :] * np.einsum("bnj,bjk,bnk->bn", r, c.A, r)
        e += 0.5 * np.einsum("bnj,bjk,bnk->bn", x, c.Lap, x)
        e += nu[None, :] * np.sum(c.bias[:, None, :] * r, axis=-1)
        e += 0.25 * np.sum(c.quartic[:, None, :] * x**4, axis=-1)
        e += 0.5 * np.sum(c.onsite[:, None, :] * x**2, axis=-1)
        return e

    def hess_vec(self, x: Array, t: Array, c: Coefficients, v: Array) -> Array:
        """(∂²V/∂x²) v at every time point, shape (B,N,d)."""
        mu, nu = self.modulations(t)
        r, r1, r2 = self.rho.rho(x), self.rho.d1(x), self.rho.d2(x)
        muc = mu[None, :, None]
        h = self.stiffness * v
        h += muc * (r1 * ((r1 * v) @ c.A) + r2 * (r @ c.A) * v)
        h += v @ c.Lap
        h += nu[None, :, None] * c.bias[:, None, :] * r2 * v
        h += 3.0 * c.quartic[:, None, :] * x**2 * v
        h += c.onsite[:, None, :] * v
        if c.Wlin is not None and c.Wrho is not None:
            h += muc * (v @ c.Wlin.swapaxes(1, 2) + (r1 * v) @ c.Wrho.swapaxes(1, 2))
        return h

    def hess_operator(self, x: Array, t: Array, c: Coefficients) -> Callable[[Array], Array]:
        """v ↦ (∂²V/∂x²) v at the orbit x, as `hess_vec`, with the orbit's factors (ρ, ρ′, ρ″,
        the diagonal) computed once for the many products of a Krylov solve."""
        mu, nu = self.modulations(t)
        r, r1, r2 = self.rho.rho(x), self.rho.d1(x), self.rho.d2(x)
        muc = mu[None, :, None]
        diag = self.stiffness + muc * r2 * (r @ c.A)
        diag += nu[None, :, None] * c.bias[:, None, :] * r2
        diag += 3.0 * c.quartic[:, None, :] * x**2
        diag += c.onsite[:, None, :]
        mur1 = muc * r1
        Wlin, Wrho = c.Wlin, c.Wrho

        def apply(v: Array) -> Array:
            h = diag * v
            h += mur1 * ((r1 * v) @ c.A)
            h += v @ c.Lap
            if Wlin is not None and Wrho is not None:
                h += muc * (v @ Wlin.swapaxes(1, 2) + (r1 * v) @ Wrho.swapaxes(1, 2))
            return h

        return apply

    def hess_vec_T(self, x: Array, t: Array, c: Coefficients, v: Array) -> Array:
        """(∂²V/∂x² + Nᵀ) v, shape (B,N,d): the transpose of `hess_vec` (equal to it without
        directed couplings, N = ∂Q/∂x)."""
        if c.Wlin is None or c.Wrho is None:
            return self.hess_vec(x, t, c, v)
        c0 = Coefficients(c.A, c.Lap, c.bias, c.quartic, c.onsite)
        h = self.hess_vec(x, t, c0, v)
        mu = self.modulations(t)[0][None, :, None]
        return h + mu * (v @ c.Wlin + self.rho.d1(x) * (v @ c.Wrho))

    def directed_jacobian(self, x: Array, t: Array, c: Coefficients) -> Array:
        """N = ∂Q/∂x along the orbit, shape (B,N,d,d): N[b,n,i,j] = μ(t_n) α_{i←j} s′(x_j)
        (zero without directed couplings). The force Jacobian's non-symmetric part is −N."""
        b, n, d = x.shape
        if c.Wlin is None or c.Wrho is None:
            return np.zeros((b, n, d, d))
        mu = self.modulations(t)[0][None, :, None, None]
        return mu * (c.Wlin[:, None] + c.Wrho[:, None] * self.rho.d1(x)[:, :, None, :])

    def hessian(self, x: Array, t: Array, c: Coefficients) -> Array:
        """Full Hessian ∂²V/∂x² at every time point, shape (B,N,d,d)."""
        mu, nu = self.modulations(t)
        r, r1, r2 = self.rho.rho(x), self.rho.d1(x), self.rho.d2(x)
        muc = mu[None, :, None]
        H = (mu[None, :, None, None] * r1[..., :, None] * r1[..., None, :]) * c.A[:, None]
        H = H + c.Lap[:, None]
        diag = self.stiffness + muc * r2 * (r @ c.A)
        diag = diag + nu[None, :, None] * c.bias[:, None, :] * r2 + 3.0 * c.quartic[:, None] * x**2
        diag = diag + c.onsite[:, None, :]
        idx = np.arange(self.d)
        H[..., idx, idx] += diag
        if c.Wlin is not None:
            H = H + self.directed_jacobian(x, t, c)
        return H

    def mean_hessian(self, x: Array, t: Array, c: Coefficients) -> Array:
        """Time average of ∂²V/∂x² over the grid, shape (B,d,d) (the preconditioner's K̄)."""
        mu, nu = self.modulations(t)
        n = x.shape[1]
        r, r1, r2 = self.rho.rho(x), self.rho.d1(x), self.rho.d2(x)
        K = np.einsum("bnj,bnk->bjk", mu[None, :, None] * r1, r1) / n * c.A + c.Lap
        diag = self.stiffness + np.mean(mu[None, :, None] * r2 * (r @ c.A), axis=1)
        diag += np.mean(nu[None, :, None] * r2, axis=1) * c.bias
        diag += 3.0 * c.quartic * np.mean(x**2, axis=1)
        diag += c.onsite
        idx = np.arange(self.d)
        K[:, idx, idx] += diag
        if c.Wlin is not None and c.Wrho is not None:
            mr1 = np.mean(mu[None, :, None] * r1, axis=1)  # (B,d)
            K = K + np.mean(mu) * c.Wlin + c.Wrho * mr1[:, None, :]
        return K

    # ------------------------------------------------------------------ parameter derivatives
    def dV_dtheta(self, x: Array, t: Array) -> Array:
        """∂V/∂θ for every term at every time point, shape (B,N,n_terms). ∂L/∂θ = −∂V/∂θ.

        Directed couplings have no potential: their columns are zero (their ∂R/∂θ is in
        `vjp_theta` / `jvp_theta`; estimators that need conjugates refuse such networks)."""
        mu, nu = self.modulations(t)
        b, n = x.shape[:2]
        r = self.rho.rho(x)
        out = np.zeros((b, n, self.n_terms))
        out[..., self.prod_idx] = mu[None, :, None] * r[..., self.prod_j] * r[..., self.prod_k]
        out[..., self.diff_idx] = 0.5 * (x[..., self.diff_j] - x[..., self.diff_k]) ** 2
        out[..., self.bias_idx] = nu[None, :, None] * r[..., self.bias_j]
        out[..., self.quart_idx] = 0.25 * x[..., self.quart_j] ** 4
        out[..., self.ons_idx] = 0.5 * x[..., self.ons_j] ** 2
        return out

    def integrated_dV_dtheta(self, x: Array, t: Array, weights: Array | float) -> Array:
        """Σ_n w_n ∂V/∂θ(x_n, t_n) for every term, shape (B, n_terms): `dV_dtheta` summed with
        the quadrature weights (scalar or (N,)) without forming the (B,N,n_terms) array — the
        product terms as one d×d moment matrix per sample."""
        mu, nu = self.modulations(t)
        w = np.broadcast_to(np.asarray(weights, dtype=float), (x.shape[1],))
        r = self.rho.rho(x)
        out = np.zeros((x.shape[0], self.n_terms))
        M = ((w * mu)[None, :, None] * r).swapaxes(1, 2) @ r
        out[:, self.prod_idx] = M[:, self.prod_j, self.prod_k]
        dx = x[..., self.diff_j] - x[..., self.diff_k]
        out[:, self.diff_idx] = 0.5 * np.einsum("n,bnp->bp", w, dx**2)
        out[:, self.bias_idx] = np.einsum("n,bnp->bp", w * nu, r[..., self.bias_j])
        out[:, self.quart_idx] = 0.25 * np.einsum("n,bnp->bp", w, x[..., self.quart_j] ** 4)
        out[:, self.ons_idx] = 0.5 * np.einsum("n,bnp->bp", w, x[..., self.ons_j] ** 2)
        return out

    def vjp_theta(self, x: Array, t: Array, lam: Array) -> Array:
        """Σ_time λ(t) · ∂²V/∂θ∂x(x(t)) for every term, shape (B, n_terms).

        ``lam`` (B,N,d) must already carry the time-quadrature weights.
        """
        mu, nu = self.modulations(t)
        r, r1 = self.rho.rho(x), self.rho.d1(x)
        b = x.shape[0]
        out = np.zeros((b, self.n_terms))
        M = np.einsum("bnj,bnk->bjk", mu[None, :, None] * lam * r1, r)
        out[:, self.prod_idx] = M[:, self.prod_j, self.prod_k] + M[:, self.prod_k, self.prod_j]
        dx = x[..., self.diff_j] - x[..., self.diff_k]
        dl = lam[..., self.diff_j] - lam[..., self.diff_k]
        out[:, self.diff_idx] = np.sum(dx * dl, axis=1)
        out[:, self.bias_idx] = np.sum(
            nu[None, :, None] * lam[..., self.bias_j] * r1[..., self.bias_j], axis=1
        )
        out[:, self.quart_idx] = np.sum(lam[..., self.quart_j] * x[..., self.quart_j] ** 3, axis=1)
        out[:, self.ons_idx] = np.sum(lam[..., self.ons_j] * x[..., self.ons_j], axis=1)
        if self.nonreciprocal:
            s = np.where(self.dir_rho, r[..., self.dir_j], x[..., self.dir_j])
            out[:, self.dir_idx] = np.sum(mu[None, :, None] * lam[..., self.dir_i] * s, axis=1)
        return out

    def jvp_theta(self, x: Array, t: Array, dtheta: Array) -> Array:
        """(∂²V/∂θ∂x) dθ at every time point, shape (B,N,d), for dθ of shape (B, n_terms)."""
        return self.grad_terms(x, t, self.coefficients(dtheta))


def conjugates(model: NetworkModel, x: Array, t: Array, weights: Array | float) -> Array:
    """A = ∫ ∂L/∂α dt = −Σ_n w_n ∂V/∂α(x_n, t_n) for every trainable parameter, shape (B,P).

    Works on any sampled trajectory x (B,N,d) — solver output or measured waveforms — given the
    sample times t (N,) and quadrature weights (scalar Δt or (N,)).
    """
    return -model.integrated_dV_dtheta(x, t, weights)[:, model.trainable]


def linear_mode_frequencies(spec: NetworkSpec) -> np.ndarray:
    """Angular frequencies (rad/s) of the linearised network at rest, ascending."""
    model = NetworkModel.from_spec(spec)
    theta = model.full_theta(spec.initial_parameters())
    K = model.mean_hessian(np.zeros((1, 1, model.d)), np.zeros(1), model.coefficients(theta))[0]
    return mode_frequencies(K, model.mass, symmetric=not model.nonreciprocal)


def mode_frequencies(K: Array, mass: Array, symmetric: bool = True) -> Array:
    """Angular frequencies √λ (rad/s, ascending) of M^{-1/2} K M^{-1/2} for a stiffness K (d,d)
    (N/m) and masses (d,) (kg); λ < 0 counts as 0. A non-symmetric K (directed couplings) has
    possibly complex λ: the real parts are used (`rest_growth_rate` tells the instability)."""
    minv = 1.0 / np.sqrt(np.asarray(mass, dtype=float))
    Kt = minv[:, None] * K * minv[None, :]
    if symmetric:
        ev = np.linalg.eigvalsh(Kt)
    else:
        ev = np.sort(np.linalg.eigvals(Kt).real)
    return np.sqrt(np.clip(ev, 0.0, None))


def rest_growth_rate(spec: NetworkSpec, params: Array | None = None) -> float:
    """Largest real part (1/s) of the eigenvalues of the network linearised at rest,
    ẍ = −M⁻¹(K + N) x − Γ ẋ (the 2d×2d state matrix): > 0 means the rest state is unstable
    (a divergence, or a flutter when the eigenvalue is complex: non-reciprocal couplings)."""
    model = NetworkModel.from_spec(spec)
    p = spec.initial_parameters() if params is None else np.asarray(params, dtype=float)
    theta = model.full_theta(p)
    K = model.mean_hessian(np.zeros((1, 1, model.d)), np.zeros(1), model.coefficients(theta))[0]
    d = model.d
    A = np.zeros((2 * d, 2 * d))
    A[:d, d:] = np.eye(d)
    A[d:, :d] = -K / model.mass[:, None]
    A[d:, d:] = -np.diag(model.damping)
    return float(np.max(np.linalg.eigvals(A).real))
