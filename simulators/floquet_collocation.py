"""Floquet multipliers without the dense monodromy matrix: every exponent on the collocation grid.

`physlearn.simulators.floquet` integrates all 2d columns of the variational equations by RK4
(max(16N, 512) steps) and takes the eigenvalues of the 2d×2d monodromy Φ. Here the Floquet
exponents are found on the orbit's own collocation grid instead. An exponent λ (μ = e^{λT}) is an
eigenvalue of the periodic operator

    L z = A(t) z − ż,   z = (q, v) periodic,   A(t) = [[0, I], [−K(t)/m, −Γ]]

(K(t): the Hessian of V along the orbit with the directed couplings, the clamp/nudge stiffness
and the feedback: the Jacobian `PeriodicOperator.jvp` applies, less m D² + m Γ D), because
z(t) e^{λt} then solves the variational equations. Harmonic balance gives every exponent's
first estimate: the 2d eigenvalues s_k of the time-averaged Ā = [[0, I], [−K̄/m, −Γ]] (K̄ the
preconditioner's averaged Jacobian), with the constant eigenvectors of Ā as eigenfunctions, and
(L̄ − θ)⁻¹ is diagonal in (harmonic, eigenvector of Ā): 1/(s_k − i n ω − θ) (for one damping
rate and a symmetric K̄, two real d×d products in the modes of K̄). Each estimate is refined by
Rayleigh-quotient iteration (inverse iteration W = (L − θ)⁻¹ z, θ the Rayleigh quotient of W;
quadratic convergence), the inner solves by batched GMRES right-preconditioned with that exact
averaged resolvent, all candidates of a sample at once. A candidate that does not converge alone
or lands on another's exponent (a parametric or combination resonance: averaged multipliers
that nearly coincide, e.g. a mode at 3ω/2 whose pair of real multipliers splits) is refined again
in a block with the candidates whose averaged multipliers lie within ``delta`` of its own: block
inverse iteration with one shift off the group's exponents and Rayleigh–Ritz on the block's span
until they are separated, then each Ritz value as its own shift.

Why refine every candidate, not only the one that looks dominant. For the common networks
(reciprocal, one damping rate Γ) Φ = e^{−ΓT/2} Ψ with Ψ symplectic: every multiplier of an
attracting orbit has modulus exactly e^{−ΓT/2} (measured: all 2d equal to 1e−10), and the
harmonic-balance estimates all have Re s = −Γ/2 too. Nothing but the whole spectrum tells which
exponent leaves the circle first (a parametric resonance), so a single inverse iteration — or
Arnoldi on Φ, whose Ritz values converge slowly on a circle — has no cheap certificate of
dominance. With every candidate refined, the safeguard is exact bookkeeping:

- every refined pair has a small eigen-residual ‖(L − θ)z‖;
- the 2d multipliers (refined ones with Im ≥ 0 and their conjugates) are pairwise distinct, so
  they are *all* of Φ's multipliers and the one of largest modulus is the dominant one;
- Liouville: Σ log|μ_k| = −T Σ_j Γ_j (det Φ = exp ∫ tr A).

A sample that fails any check (near-degenerate or colliding exponents, a non-diagonalisable Ā, a
stalled solve) falls back to the full RK4 monodromy, and the result says which samples did. The
collocation is spectrally accurate, so on a converged grid it agrees with the full RK4 result to
the latter's own integration error (≈1e−9 relative with the default steps where all multipliers
share one circle; a few 1e−8 with a hyperbolic pair, where this is the closer of the two to an RK4
run with 8× the steps).

Cost (docs/benchmarks.md, "Floquet check"): this does not meet issue 16's target (≤ 2× a Newton
solve) and is not cheaper than the RK4 monodromy: every one of the 2d exponents needs a few
preconditioned solves (≈20 GMRES iterations each, on (N, 2d) complex functions), which costs
about what 2d RK4 columns cost, and more in Python overhead at small d. Its use: an independent,
matrix-free (memory O(N d) per exponent), spectrally accurate check of the full result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
from numpy.typing import NDArray

from physlearn.simulators.excitation import GridExcitation
from physlearn.simulators.feedback import Feedback
from physlearn.simulators.krylov import gmres
from physlearn.simulators.spectral import PeriodicGrid
from physlearn.spec.model import Coefficients, NetworkModel

Array = NDArray[np.float64]
CArray = NDArray[np.complex128]
Shape = tuple[int, int, int]
#: the tightest inner GMRES tolerance (it follows the eigen-residual down to this)
RTOL_FLOOR = 1e-12

__all__ = ["CollocationMultipliers", "collocation_multipliers"]


@dataclass(frozen=True)
class CollocationMultipliers:
    """Floquet multipliers found on the collocation grid, per sample."""

    multipliers: CArray  # (B, 2d) sorted by decreasing modulus
    fallback: NDArray[np.bool_]  # (B,) True where the full RK4 monodromy was used instead

    @property
    def dominant(self) -> CArray:
        """The dominant multiplier of every sample (B,)."""
        return self.multipliers[:, 0]

    @property
    def modulus(self) -> Array:
        """|μ_dom| per sample (B,)."""
        return np.abs(self.multipliers[:, 0])


@dataclass(frozen=True)
class _Linearisation:
    """K(t) along the orbits x (B,N,d): ∂²V/∂x² (with the directed couplings' Jacobian), the
    clamp/nudge stiffness and a feedback gain — what `PeriodicOperator` adds to m D² + m Γ D
    (rebuilt here: `periodic` imports this module for ``floquet="collocation"``)."""

    model: NetworkModel
    theta: Array
    grid: PeriodicGrid
    x: Array
    ext: Array  # (B,N,d) clamp/nudge stiffness
    gain: Array | None  # (B,N,d,d) feedback gain G(t), entering as −G
    coef: Coefficients = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "coef", self.model.coefficients(self.theta))

    def take(self, idx: NDArray[np.intp]) -> _Linearisation:
        g = None if self.gain is None else self.gain[idx]
        return _Linearisation(self.model, self.theta[idx], self.grid, self.x[idx], self.ext[idx], g)

    def apply(self, q: Array) -> Array:
        """K(t) q for q (B,N,d)."""
        out = self.model.hess_vec(self.x, self.grid.t, self.coef, q) + self.ext * q
        if self.gain is not None:
            out = out - np.einsum("bnij,bnj->bni", self.gain, q)
        return out

    def mean(self) -> Array:
        """K̄ (B,d,d), the time average (the Newton preconditioner's)."""
        K = self.model.mean_hessian(self.x, self.grid.t, self.coef)
        K = K + np.einsum("bj,jk->bjk", self.ext.mean(axis=1), np.eye(self.x.shape[2]))
        return K if self.gain is None else K - self.gain.mean(axis=1)


class _Hill:
    """L − θ and the averaged resolvent for the candidates of one sample (complex z as re/im)."""

    def __init__(self, op: _Linearisation, x: Array, evec: CArray, evinv: CArray, s: CArray):
        self.op, self.grid = op, op.grid
        self.N, self.d = x.shape[1], x.shape[2]
        self.m, self.g = op.model.mass, op.model.damping
        self.V, self.Vinv, self.s = evec, evinv, s
        self.n = np.fft.fftfreq(self.N, 1.0 / self.N)  # integer harmonics of np.fft.fft
        self.x = x
        self.modal = _modal_factors(op.mean()[0], self.m, self.g)

    def for_batch(self, c: int) -> _Linearisation:
        return self.op.take(np.zeros(2 * c, dtype=np.intp))

    def apply_l(self, sub: _Linearisation, z: CArray) -> CArray:
        """L z for z (C, N, 2d) complex."""
        C, d = z.shape[0], self.d
        q = np.concatenate([z[..., :d].real, z[..., :d].imag])
        v = np.concatenate([z[..., d:].real, z[..., d:].imag])
        m, g, grid = self.m, self.g, self.grid
        kq = sub.apply(q)
        lq = v - grid.deriv(q, 1)
        lv = -kq / m - g * v - grid.deriv(v, 1)
        out = np.concatenate([lq, lv], axis=2)
        return out[:C] + 1j * out[C:]

    def resolvent(self, r: CArray, theta: CArray) -> CArray:
        """(L̄ − θ)⁻¹ r: diagonal in harmonic n and eigenvector k of Ā."""
        if self.modal is not None:
            return self._modal_resolvent(r, theta)
        R = np.fft.fft(r, axis=1) @ self.Vinv.T  # (C, N, 2d) in Ā's eigenbasis
        den = self.s[None, None, :] - 1j * self.grid.omega * self.n[None, :, None]
        den = den - theta[:, None, None]
        tiny = 1e-300 + 1e-14 * np.abs(self.s).max()
        den = np.where(np.abs(den) < tiny, tiny, den)
        return np.fft.ifft((R / den) @ self.V.T, axis=1)

    def _modal_resolvent(self, r: CArray, theta: CArray) -> CArray:
        """The same operator for one damping rate Γ and a symmetric K̄ (`_modal_factors`): with
        λ = θ + i n ω, q̂ = M^{-1/2} U (Λ + λ(Γ + λ))⁻¹ Uᵀ M^{1/2} (−r_v − (Γ + λ) r_q) and
        v̂ = r_q + λ q̂ — two real d×d products instead of two complex 2d×2d ones."""
        assert self.modal is not None
        U, kappa, msq = self.modal
        d, g = self.d, float(self.g[0])
        R = np.fft.fft(r, axis=1)
        lam = theta[:, None] + 1j * self.grid.omega * self.n[None, :]  # (C, N)
        rq, rv = R[..., :d], R[..., d:]
        rhs = (-rv - (g + lam)[..., None] * rq) / msq
        C = rhs.shape[0]
        W = np.concatenate([rhs.real, rhs.imag]) @ U
        den = kappa[None, None, :] + (lam * (g + lam))[..., None]
        tiny = 1e-300 + 1e-14 * (np.abs(kappa).max() + 1.0)
        den = np.where(np.abs(den) < tiny, tiny, den)
        Y = (W[:C] + 1j * W[C:]) / den
        Z = np.concatenate([Y.real, Y.imag]) @ U.T * msq
        q = Z[:C] + 1j * Z[C:]
        return np.fft.ifft(np.concatenate([q, rq + lam[..., None] * q], axis=2), axis=1)


def _modal_factors(K: Array, m: Array, g: Array) -> tuple[Array, Array, Array] | None:
    """(U, κ, m^{-1/2}) with M^{-1/2} K̄ M^{-1/2} = U diag(κ) Uᵀ when every node has the same Γ
    and K̄ is symmetric (reciprocal couplings, no feedback); else None."""
    if not np.all(g == g[0]) or np.abs(K - K.T).max() > 1e-12 * (np.abs(K).max() + 1.0):
        return None
    msq = 1.0 / np.sqrt(m)
    kappa, U = np.linalg.eigh(msq[:, None] * (0.5 * (K + K.T)) * msq[None, :])
    return U, kappa, msq


def _to_real(z: CArray) -> Array:
    return np.concatenate([z.real, z.imag], axis=1).reshape(z.shape[0], -1)


def _to_complex(v: Array, shape: Shape) -> CArray:
    w = v.reshape(shape[0], 2 * shape[1], shape[2])
    return w[:, : shape[1]] + 1j * w[:, shape[1] :]


def _averaged_system(op: _Linearisation) -> Array:
    """Ā (B, 2d, 2d) = [[0, I], [−K̄/m, −Γ]] around the operator's orbit."""
    B, _, d = op.x.shape
    Kbar = op.mean()
    A = np.zeros((B, 2 * d, 2 * d))
    A[:, :d, d:] = np.eye(d)
    A[:, d:, :d] = -Kbar / op.model.mass[None, :, None]
    A[:, d:, d:] = -np.diag(op.model.damping)
    return A


def _clusters(s: CArray, period: float, delta: float) -> list[NDArray[np.intp]]:
    """Connected groups of candidates whose harmonic-balance multipliers e^{sT} lie within
    ``delta`` (relative) of each other: exponents that may mix (resonances, near-collisions)."""
    mu = np.exp(s * period)
    close = np.abs(mu[:, None] - mu[None, :]) <= delta * np.abs(mu).max()
    label = np.arange(s.size)
    for _ in range(s.size):
        new = np.array([label[close[i]].min() for i in range(s.size)])
        if np.array_equal(new, label):
            break
        label = new
    return [np.flatnonzero(label == v) for v in np.unique(label)]


def _refine_clusters(
    hill: _Hill, groups: list[NDArray[np.intp]], max_iter: int
) -> tuple[CArray, Array]:
    """Block inverse iteration with Rayleigh–Ritz, one shift per group of candidates.

    Every group's candidates are shifted by multiples of iω next to its first member (the same
    multipliers), iterated as W = (L − σ)⁻¹ Z with σ the mean of the group's Ritz values, and
    projected: the Ritz values of Qᴴ L Q (Q an orthonormal basis of W) are the new exponents. A
    group of one is Rayleigh-quotient iteration (quadratic); a larger group separates exponents
    that its candidates alone would confuse. Returns (exponents, relative eigen-residuals) in
    the order of the concatenated groups."""
    s, V, w, N = hill.s, hill.V, hill.grid.omega, hill.N
    cols = np.concatenate(groups)
    ref = np.concatenate([np.full(g.size, s[g[0]].imag) for g in groups])
    shift = np.round((ref - s[cols].imag) / w)  # s + i n ω next to the group's first member
    th = s[cols] + 1j * w * shift
    phase = np.exp(-1j * w * np.outer(shift, hill.grid.t))  # (C, N)
    z = V[:, cols].T[:, None, :] * phase[:, :, None]  # (C, N, 2d)
    C = cols.size
    sizes = np.array([g.size for g in groups])
    gid = np.repeat(np.arange(len(groups)), sizes)
    scale = np.abs(s).max() + w
    resid = np.full(C, np.inf)
    best = np.full(len(groups), np.inf)
    stalls = np.zeros(len(groups), dtype=int)
    live = np.ones(len(groups), dtype=bool)  # groups still iterating
    rtol = 1e-4
    for _ in range(max_iter):
        on = np.flatnonzero(live[gid])
        gon = gid[on]
        bounds = np.flatnonzero(np.r_[True, gon[1:] != gon[:-1], True])
        shape = (on.size, N, s.size)
        sub = hill.for_batch(on.size)
        sigma = th[on].copy()
        for a, b in pairwise(bounds):
            # one shift off the group's exponents while Rayleigh–Ritz separates them, then each
            # Ritz value its own (Rayleigh-quotient iteration, quadratic) once they are close
            if resid[on[a:b]].max() > 1e-4:
                sigma[a:b] = sigma[a:b].mean()

        def matvec(
            v: Array, sig: CArray = sigma, sub: _Linearisation = sub, shape: Shape = shape
        ) -> Array:
            zz = _to_complex(v, shape)
            return _to_real(hill.apply_l(sub, zz) - sig[:, None, None] * zz)

        def precond(v: Array, sig: CArray = sigma, shape: Shape = shape) -> Array:
            return _to_real(hill.resolvent(_to_complex(v, shape), sig))

        res = gmres(matvec, _to_real(z[on]), precond=precond, rtol=rtol, restart=30, max_restarts=3)
        W = _to_complex(res.x, shape).reshape(on.size, -1)
        for a, b in pairwise(bounds):
            Q, _ = np.linalg.qr(W[a:b].T)  # (n, g) orthonormal
            W[a:b] = Q.T
        LW = hill.apply_l(sub, W.reshape(shape)).reshape(on.size, -1)
        for a, b in pairwise(bounds):
            H = np.conj(W[a:b]) @ LW[a:b].T  # (g, g) = Qᴴ L Q
            ev, Y = (np.diag(H), np.ones((1, 1))) if b - a == 1 else np.linalg.eig(H)
            order = np.argsort(np.abs(ev - sigma[a]))
            ev, Y = ev[order], Y[:, order]
            z_g = Y.T @ W[a:b]
            r_g = Y.T @ LW[a:b] - ev[:, None] * z_g
            cols_g = on[a:b]
            th[cols_g] = ev
            resid[cols_g] = np.linalg.norm(r_g, axis=1) / (np.linalg.norm(z_g, axis=1) * scale)
            z[cols_g] = z_g.reshape(b - a, N, s.size)
            g = gon[a]
            worst = resid[cols_g].max()
            stalls[g] = stalls[g] + 1 if worst > 0.5 * best[g] else 0
            best[g] = min(best[g], worst)
            # converged, or no progress in three iterations: a collision the caller regroups
            live[g] = worst >= 1e-11 and stalls[g] < 3
        if not live.any():
            break
        if np.any(live & (sizes > 1)):
            # a block's shift stays off its exponents: its solves must follow the residual down
            rtol = float(np.clip(0.01 * resid[live[gid]].max(), RTOL_FLOOR, 1e-4))
    return th, resid


def _sample_multipliers(
    hill: _Hill,
    period: float,
    gamma_sum: float,
    max_iter: int,
    groups: list[NDArray[np.intp]],
    known: dict[int, complex],
) -> tuple[CArray | None, set[int]]:
    """All 2d multipliers of one sample refined in ``groups`` (a partition of the candidates,
    closed under conjugation: of a pair of conjugate groups one is refined and its conjugate
    taken), or None and the candidates that failed (unconverged, or coinciding with another).
    ``known``: converged exponents of lone candidates, reused (and filled in)."""
    s = hill.s
    d2 = s.size
    todo: list[NDArray[np.intp]] = []
    mirrored: list[NDArray[np.intp] | None] = []
    seen: set[int] = set()
    for g in groups:
        if int(g[0]) in seen:
            continue
        partner = np.array([int(np.argmin(np.abs(s - np.conj(s[k])))) for k in g])
        self_conj = set(partner.tolist()) == set(g.tolist())
        seen.update(g.tolist())
        seen.update(partner.tolist())
        todo.append(g)
        mirrored.append(None if self_conj else partner)
    cols = np.concatenate(todo)
    new = [g for g in todo if g.size > 1 or int(g[0]) not in known]
    th = np.array([known.get(int(k), 0j) for k in cols], dtype=complex)
    res = np.zeros(cols.size)
    if new:
        th_n, res_n = _refine_clusters(hill, new, max_iter)
        order = np.concatenate(new)
        pos = {int(k): i for i, k in enumerate(cols)}
        where = np.array([pos[int(k)] for k in order])
        th[where], res[where] = th_n, res_n
    for k, t, r in zip(cols, th, res, strict=True):
        if r < 1e-8 and not any(int(k) in g and g.size > 1 for g in new):
            known[int(k)] = complex(t)
    bad = set(cols[res >= 1e-8].tolist())
    mu = np.exp(th * period)
    parts = np.split(mu, np.cumsum([g.size for g in todo])[:-1])
    mu_all = np.concatenate(
        [
            p if q is None else np.concatenate([p, np.conj(p)])
            for p, q in zip(parts, mirrored, strict=True)
        ]
    )
    origin = np.concatenate(
        [g if q is None else np.concatenate([g, q]) for g, q in zip(todo, mirrored, strict=True)]
    )
    if mu_all.size != d2:
        return None, bad | set(range(d2)) - set(origin.tolist())
    top = np.abs(mu_all).max()
    close = np.abs(mu_all[:, None] - mu_all[None, :]) <= 1e-7 * top
    np.fill_diagonal(close, False)
    bad |= set(origin[close.any(axis=1)].tolist())
    if bad:
        return None, bad
    liouville = np.sum(np.log(np.abs(mu_all))) + period * gamma_sum
    if not abs(liouville) <= 1e-7 * max(1.0, period * gamma_sum):
        return None, set(range(d2))
    return mu_all, set()


def _all_multipliers(
    hill: _Hill, period: float, gamma_sum: float, max_iter: int, delta: float
) -> CArray | None:
    """Every candidate alone first; then the candidates that failed, each with the candidates
    whose averaged multipliers lie within ``delta`` of its own (`_clusters`), as blocks."""
    d2 = hill.s.size
    alone = [np.array([k]) for k in range(d2)]
    known: dict[int, complex] = {}
    mu, bad = _sample_multipliers(hill, period, gamma_sum, max_iter, alone, known)
    if mu is not None:
        return mu
    groups: list[NDArray[np.intp]] = []
    for c in _clusters(hill.s, period, delta):
        hit = bad & set(c.tolist())
        groups += [c] if hit else [np.array([k]) for k in c]
    mu, _ = _sample_multipliers(hill, period, gamma_sum, 2 * max_iter, groups, known)
    return mu


def collocation_multipliers(
    model: NetworkModel,
    theta: Array,
    exc: GridExcitation,
    grid: PeriodicGrid,
    x: Array,
    beta: float | Array = 0.0,
    feedback: Feedback | None = None,
    *,
    max_iter: int = 12,
    delta: float = 0.1,
) -> CollocationMultipliers:
    """Floquet multipliers (B, 2d) of the orbits x (B,N,d), sorted by decreasing modulus, from the
    collocated periodic eigenproblem (module docstring); samples whose safeguards fail get the full
    RK4 monodromy (`CollocationMultipliers.fallback`). ``delta``: candidates whose averaged multipliers
    lie this close (relative) are refined as one group."""
    B, _, d = x.shape
    if theta.shape[0] != B:
        theta = np.broadcast_to(theta, (B, theta.shape[-1])).copy()
    gain = None if feedback is None else feedback.gain
    op = _Linearisation(model, theta, grid, x, exc.external_stiffness(beta), gain)
    A = _averaged_system(op)
    out = np.zeros((B, 2 * d), dtype=np.complex128)
    fallback = np.zeros(B, dtype=bool)
    gamma_sum = float(np.sum(model.damping))
    for b in range(B):
        mu: CArray | None = None
        try:
            s, V = np.linalg.eig(A[b])
            Vinv = np.linalg.inv(V)
            # condition number in the 1-norm (an SVD of the 2d×2d V costs more than the rest)
            if np.linalg.norm(V, 1) * np.linalg.norm(Vinv, 1) < 1e10:
                sub = op.take(np.array([b]))
                hill = _Hill(sub, x[b : b + 1], V, Vinv, s)
                mu = _all_multipliers(hill, grid.period_s, gamma_sum, max_iter, delta)
        except np.linalg.LinAlgError:
            mu = None
        if mu is None:
            from physlearn.simulators.floquet import floquet_multipliers

            fallback[b] = True
            fb = None if feedback is None else feedback.take(np.array([b]))
            beta_b = np.asarray(beta, dtype=float)[[b]] if np.ndim(beta) else beta
            mu = floquet_multipliers(
                model, theta[[b]], exc.take(np.array([b])), grid, x[[b]], beta_b, fb
            )[0]
        out[b] = mu[np.argsort(-np.abs(mu), kind="stable")]
    return CollocationMultipliers(out, fallback)
