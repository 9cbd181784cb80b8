"""Orbit families of an autonomous network: from a small-amplitude normal mode to the orbit at a
given energy, action or period, and a scan of a family for its turning points.

* `static_equilibrium`: ∂(V + U)/∂x = 0 by damped Newton (from rest, or a guess);
  `minimum_by_descent`, the globally convergent fallback of `equilibrium_near`.
* `linear_modes`: the normal modes there, K v = ω² M v (ascending ω).
* `orbit_from_mode`: the Lyapunov family of a mode — a small orbit x_eq + a v cos τ at the mode's
  frequency, solved, then continued in the constraint's value up to the target
  (`continue_orbit`).
* `continue_orbit`: natural-parameter continuation in the constraint's value (in √(E − E_eq),
  √S or T: uniform in amplitude), per sample adaptive steps with a secant predictor. A target
  the family cannot reach without turning back (a fold in the constrained quantity) raises
  `SingularConstraintError` with the last value reached.
* `scan_family`: pseudo-arclength continuation of a family (one sample), recording E, T, S and
  the turning points: folds in E (dE/ds = 0, where fixed-energy and fixed-action orbits are
  singular; T(E) turns back) and extrema of T (dT/ds = 0, where a fixed period is singular).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import SteadyStateError
from physlearn.simulators.autonomous import (
    TWO_PI,
    AutonomousProblem,
    ConstraintKind,
    OrbitConstraint,
    OrbitSolution,
    SingularConstraintError,
    _State,
    dense_solve,
    newton,
    phase_row,
    solve_orbit,
    tolerance,
)

log = logging.getLogger(__name__)
Array = NDArray[np.float64]


def _static_start(problem: AutonomousProblem, x0: Array | None) -> tuple[AutonomousProblem, Array]:
    """(the problem on a 3-point grid, x (B,1,d) at ``x0`` or rest) for the static solvers."""
    B, d = problem.batch, problem.d
    x = np.zeros((B, 1, d)) if x0 is None else np.asarray(x0, dtype=float).reshape(B, 1, d).copy()
    return AutonomousProblem(problem.model, problem.theta, problem.load, 3), x


def _static_stiffness(problem: AutonomousProblem, x: Array) -> Array:
    """K = ∂²(V + U)/∂x² (B,d,d) at the points x (B,1,d)."""
    H = problem.model.hessian(x, np.zeros(1), problem.coef)[:, 0]
    return H + np.einsum("bj,jk->bjk", problem.load.kappa, np.eye(problem.d))


def _static_residual(
    problem: AutonomousProblem, x: Array, tol: float
) -> tuple[Array, NDArray[np.bool_]]:
    """(∂(V + U)/∂x (B,d), per sample whether it is above ``tol`` relative to the larger of the
    input force and the springs' force k·x) at the points x (B,1,d)."""
    g = problem.force_gradient(x)[:, 0]
    scale = np.maximum(
        np.max(np.abs(problem.load.phi), axis=1),
        np.max(np.abs(problem.model.stiffness * x[:, 0]), axis=1),
    )
    return g, ~(np.max(np.abs(g), axis=1) <= tol * np.maximum(scale, 1e-300) + 1e-300)


def _limited(x: Array, dx: Array) -> Array:
    """The step dx (B,d) shortened to at most half of max(1, max|x|) per sample (x (B,1,d))."""
    lim = np.maximum(1.0, np.max(np.abs(x[:, 0]), axis=1))
    big = np.max(np.abs(dx), axis=1)
    return dx * np.minimum(1.0, 0.5 * lim / np.maximum(big, 1e-300))[:, None]


def static_equilibrium(
    problem: AutonomousProblem, x0: Array | None = None, tol: float = 1e-13
) -> Array:
    """The static equilibrium x_eq (B,d) nearest ``x0`` (default rest): ∂(V + U)/∂x = 0."""
    sub, x = _static_start(problem, x0)
    for _ in range(100):
        g, todo = _static_residual(sub, x, tol)
        if not todo.any():
            return x[:, 0]
        dx = -dense_solve(_static_stiffness(sub, x), g[..., None])[..., 0]
        x = x + _limited(x, dx)[:, None, :]
    raise SteadyStateError("static equilibrium: Newton did not converge in 100 iterations")


def minimum_by_descent(
    problem: AutonomousProblem, x0: Array | None = None, tol: float = 1e-13, max_iter: int = 500
) -> Array:
    """A local minimum x_eq (B,d) of V + U reached from ``x0`` (default rest) by descent: Newton
    steps on the Hessian with its eigenvalues made positive (|λ|, floored), shortened until the
    potential falls (Armijo). Slower than `static_equilibrium` but globally convergent: it cannot
    cycle or run off where plain Newton does (soft or double-welled couplings far from rest), and
    it ends at a minimum, not a saddle. Raises `SteadyStateError` naming the samples it could not
    bring to ∂(V + U)/∂x = 0 within ``max_iter`` steps."""
    sub, x = _static_start(problem, x0)
    for _ in range(max_iter):
        g, todo = _static_residual(sub, x, tol)
        if not todo.any():
            return x[:, 0]
        lam, U = np.linalg.eigh(_static_stiffness(sub, x))
        floor = 1e-8 * np.maximum(np.max(np.abs(lam), axis=1, keepdims=True), 1e-300)
        inv = 1.0 / np.maximum(np.abs(lam), floor)
        dx = _limited(x, -np.einsum("bjk,bk,blk,bl->bj", U, inv, U, g))
        dx[~todo] = 0.0
        f0 = sub.potential(x)[:, 0]
        slope = np.einsum("bj,bj->b", g, dx)  # < 0: a descent direction
        t = np.ones(problem.batch)
        for _ in range(60):
            f1 = sub.potential(x + (t[:, None] * dx)[:, None, :])[:, 0]
            bad = todo & ~(f1 <= f0 + 1e-4 * t * slope + 1e-14 * (np.abs(f0) + 1.0))
            if not bad.any():
                break
            t[bad] *= 0.5
        x = x + (t[:, None] * dx)[:, None, :]
    _, todo = _static_residual(sub, x, tol)
    if not todo.any():
        return x[:, 0]
    left = tuple(int(i) for i in np.flatnonzero(todo))
    raise SteadyStateError(
        f"static equilibrium: descent did not reach ∂(V + U)/∂x = 0 in {max_iter} steps for "
        f"sample(s) {', '.join(map(str, left))}",
        sample=left[0],
        samples=left,
    )


def equilibrium_near(problem: AutonomousProblem, x_guess: Array | None = None) -> Array:
    """`static_equilibrium` from rest, retried from ``x_guess`` (B,d) — e.g. the mean of the last
    orbit of the same input — when Newton from rest does not converge (it can fail where the
    equilibrium the network sits on has moved continuously far from rest), and last by
    `minimum_by_descent` from ``x_guess`` (or rest), which converges where Newton cycles."""
    try:
        return static_equilibrium(problem)
    except SteadyStateError:
        pass
    if x_guess is not None:
        try:
            return static_equilibrium(problem, x_guess)
        except SteadyStateError:
            pass
    return minimum_by_descent(problem, x_guess)


def linear_modes(problem: AutonomousProblem, x_eq: Array) -> tuple[Array, Array]:
    """(ω² (B,d) ascending, mode shapes (B,d,d) with columns M-normalised) at x_eq (B,d)."""
    K = _static_stiffness(problem, x_eq[:, None, :])
    msq = 1.0 / np.sqrt(problem.model.mass)
    lam, U = np.linalg.eigh(msq[None, :, None] * K * msq[None, None, :])
    return lam, msq[None, :, None] * U


def _family_coordinate(kind: ConstraintKind, value: Array, base: Array) -> Array:
    """The continuation coordinate of a constraint value: √(E − E_eq), √S or T."""
    if kind == "energy":
        return np.sqrt(np.maximum(value - base, 0.0))
    if kind == "action":
        return np.sqrt(np.maximum(value, 0.0))
    return value


def _family_value(kind: ConstraintKind, coord: Array, base: Array) -> Array:
    if kind == "energy":
        return base + coord**2
    if kind == "action":
        return coord**2
    return coord


def continue_orbit(
    problem: AutonomousProblem,
    sol: OrbitSolution,
    kind: ConstraintKind,
    target: Array,
    *,
    base: Array | None = None,
    tol: float = 1e-12,
    max_steps: int = 400,
    first_step: float = 0.25,
) -> OrbitSolution:
    """Continue the orbits ``sol`` (any constraint) to ``kind`` = ``target`` (B,), in steps.

    ``base`` (B,): for ``energy``, the energy at the family's origin (the equilibrium's potential),
    so that the steps are uniform in amplitude. Raises `SingularConstraintError` when a sample's
    steps shrink below 1e-6 of the way (the family turns back in this quantity, or ends).
    """
    B = problem.batch
    target = np.broadcast_to(np.asarray(target, dtype=float), (B,)).copy()
    base = np.zeros(B) if base is None else np.asarray(base, dtype=float)
    start = problem.constraint_value(kind, sol.x, sol.omega)
    c0, c1 = _family_coordinate(kind, start, base), _family_coordinate(kind, target, base)
    s = np.zeros(B)  # fraction of the way done, per sample
    ds = np.full(B, first_step)
    x, w = sol.x.copy(), sol.omega.copy()
    prev: tuple[Array, Array, Array] | None = None  # (s, x, ω) of the previous accepted point
    for _ in range(max_steps):
        live = s < 1.0
        if not live.any():
            break
        idx = np.flatnonzero(live)
        s_new = np.minimum(1.0, s[idx] + ds[idx])
        x0, w0 = x[idx].copy(), w[idx].copy()
        if prev is not None:  # secant predictor
            ps, px, pw = prev
            span = s[idx] - ps[idx]
            ok = span > 0
            f = np.where(ok, (s_new - s[idx]) / np.where(ok, span, 1.0), 0.0)
            x0 += f[:, None, None] * (x[idx] - px[idx])
            w0 += f * (w[idx] - pw[idx])
        value = _family_value(kind, c0[idx] + s_new * (c1[idx] - c0[idx]), base[idx])
        sub = problem.take(idx)
        st, worst, _ = newton(
            sub, x0, w0, OrbitConstraint(kind, value), ref=x[idx], tol=tol, max_iter=12
        )
        good = (worst <= tolerance(sub, st, tol)) & (st.omega > 0)
        gi = idx[good]
        if gi.size:
            prev_s = s.copy() if prev is None else np.where(np.isin(np.arange(B), gi), s, prev[0])
            prev_x = (
                x.copy()
                if prev is None
                else np.where(np.isin(np.arange(B), gi)[:, None, None], x, prev[1])
            )
            prev_w = w.copy() if prev is None else np.where(np.isin(np.arange(B), gi), w, prev[2])
            prev = (prev_s, prev_x, prev_w)
            x[gi], w[gi], s[gi] = st.x[good], st.omega[good], s_new[good]
            ds[gi] = np.minimum(2.0 * ds[gi], 0.5)
        bad = idx[~good]
        ds[bad] *= 0.35
        if np.any(ds[bad] < 1e-6):
            i = int(bad[np.argmin(ds[bad])])
            reached = _family_value(kind, c0[i] + s[i] * (c1[i] - c0[i]), base[i])
            raise SingularConstraintError(
                f"continuation to fixed {kind} {target[i]:.6g} stalled for sample {i} at "
                f"{reached:.6g}: the orbit family turns back (or ends) in this quantity",
                sample=i,
                samples=(i,),
            )
    else:
        raise SteadyStateError(f"continuation to fixed {kind} needed more than {max_steps} steps")
    return solve_orbit(problem, x, w, OrbitConstraint(kind, target), tol=tol)


def mode_start(
    problem: AutonomousProblem,
    mode: int,
    con: OrbitConstraint,
    rel_amplitude: float = 1e-3,
    x_guess: Array | None = None,
) -> tuple[Array, Array, Array]:
    """A small orbit guess on normal mode ``mode``, x_eq + a v cos τ at the mode's frequency:
    (x (B,N,d), ω (B,), E_eq (B,) the equilibrium's energy). The amplitude a is
    ``rel_amplitude`` × max(1, |x_eq|), and at most a third of the linear estimate of the
    target's amplitude (so that the continuation starts below the target). ``x_guess``: where
    to retry the equilibrium if Newton from rest fails (`equilibrium_near`)."""
    x_eq = equilibrium_near(problem, x_guess)
    lam, V = linear_modes(problem, x_eq)
    if not 0 <= mode < problem.d:
        raise SteadyStateError(f"mode {mode} does not exist ({problem.d} modes)")
    if np.any(lam[:, mode] <= 0):
        i = int(np.flatnonzero(lam[:, mode] <= 0)[0])
        raise SteadyStateError(
            f"the static equilibrium of sample {i} is not a minimum along mode {mode} "
            f"(ω² = {lam[i, mode]:.3g}): no small orbits around it",
            sample=i,
        )
    w = np.sqrt(lam[:, mode])
    v = V[:, :, mode]
    v = v / np.max(np.abs(v), axis=1, keepdims=True)
    vmv = np.sum(problem.model.mass * v**2, axis=1)
    e_eq = np.mean(problem.potential(x_eq[:, None, :]), axis=1)
    amp = rel_amplitude * np.maximum(1.0, np.max(np.abs(x_eq), axis=1))
    if con.kind == "energy":
        amp = np.minimum(amp, np.sqrt(2.0 * np.maximum(con.value - e_eq, 0.0) / vmv) / w / 3.0)
    elif con.kind == "action":
        amp = np.minimum(amp, np.sqrt(con.value / (np.pi * w * vmv)) / 3.0)
    tau = problem.grid.t
    x = x_eq[:, None, :] + (amp[:, None] * v)[:, None, :] * np.cos(tau)[None, :, None]
    return x, w, e_eq


def orbit_from_mode(
    problem: AutonomousProblem,
    con: OrbitConstraint,
    mode: int = 0,
    *,
    tol: float = 1e-12,
    rel_amplitude: float = 1e-3,
    x_guess: Array | None = None,
) -> OrbitSolution:
    """The orbit with constraint ``con`` on the Lyapunov family of normal mode ``mode`` (0: the
    lowest), by continuation from a small-amplitude orbit (solved at its own reduced action);
    ``x_guess`` (B,d): where to retry the static equilibrium if Newton from rest fails."""
    con = con.broadcast(problem.batch)
    x, w, e_eq = mode_start(problem, mode, con, rel_amplitude, x_guess)
    if con.kind == "energy" and np.any(con.value <= e_eq):
        bad = np.flatnonzero(con.value <= e_eq)
        i = int(bad[0])
        raise SteadyStateError(
            f"energy {con.value[i]:.6g} of sample {i} is not above its static equilibrium's "
            f"{e_eq[i]:.6g}: no orbit",
            sample=i,
            samples=tuple(int(j) for j in bad),
        )
    seed = OrbitConstraint("action", problem.action(x, w))
    sol = solve_orbit(problem, x, w, seed, tol=tol)
    return continue_orbit(problem, sol, con.kind, con.value, base=e_eq, tol=tol)


def galerkin_start(
    problem: AutonomousProblem, shape: Array, amplitude: Array
) -> tuple[Array, Array]:
    """A one-harmonic guess x = x_eq + a v cos τ with ω from harmonic balance of the force along
    v (x (B,N,d), ω (B,)): for potentials with no linear frequency at their minimum (a pure
    x⁴ well has no normal mode to continue from)."""
    x_eq = static_equilibrium(problem)
    v = np.asarray(shape, dtype=float).reshape(problem.batch, problem.d)
    a = np.asarray(amplitude, dtype=float).reshape(problem.batch)
    c = np.cos(problem.grid.t)
    x = x_eq[:, None, :] + (a[:, None] * v)[:, None, :] * c[None, :, None]
    f = np.einsum("bnj,bj,n->b", problem.force_gradient(x), v, c)
    m = np.einsum("j,bj->b", problem.model.mass, v**2) * a * np.sum(c**2)
    return x, np.sqrt(np.maximum(f / m, 1e-300))


# ------------------------------------------------------------------------------------ scans
@dataclass(frozen=True)
class FamilyScan:
    """A family followed by pseudo-arclength continuation: per point energy, period, action and
    the orbits; ``energy_folds`` / ``period_extrema``: indices where dE/ds or dT/ds changes sign."""

    energy: Array
    period_s: Array
    action: Array
    x: Array
    omega: Array
    energy_folds: list[int]
    period_extrema: list[int]

    def report(self) -> list[str]:
        """Plain sentences on the turning points found."""
        out = []
        for i in self.energy_folds:
            out.append(
                f"fold in energy at E = {self.energy[i]:.6g} (T = {self.period_s[i]:.6g} s): "
                "fixed-energy and fixed-action orbits are singular here (T(E) turns back)"
            )
        for i in self.period_extrema:
            out.append(
                f"extremum of the period T = {self.period_s[i]:.6g} s at E = {self.energy[i]:.6g}: "
                "dT/dE = 0, a fixed period is singular here"
            )
        return out


def _tangent(
    problem: AutonomousProblem, x: Array, w: Array, eps: Array, ref: Array, prev: Array
) -> Array:
    """Unit tangent (1, N·d + 2) of the family at one point, oriented along ``prev``."""
    n = x[0].size
    J = np.zeros((1, n + 2, n + 2))
    J[:, :n, :n] = problem.jacobian_x(x, w, eps)
    r_w, r_e = problem.jacobian_omega(x, w, eps)
    J[:, :n, n], J[:, :n, n + 1] = r_w, r_e
    J[:, n, :n] = phase_row(problem, ref)
    J[:, n + 1] = prev
    rhs = np.zeros((1, n + 2))
    rhs[:, -1] = 1.0
    t = dense_solve(J, rhs[..., None])[..., 0]
    return t / np.linalg.norm(t)


def _arclength_step(
    problem: AutonomousProblem, z: Array, t: Array, ds: float, tol: float
) -> Array | None:
    """One corrector solve: R = 0, phase, tᵀ(z − z_pred) = 0 from z_pred = z + ds t."""
    N, d = problem.n, problem.d
    n = N * d
    zp = z + ds * t
    ref = z[:, :n].reshape(1, N, d)
    y = zp.copy()
    for _ in range(15):
        x, w, e = y[:, :n].reshape(1, N, d), y[:, n], y[:, n + 1]
        R = problem.residual(x, w, e).reshape(1, -1)
        ph = np.sum(phase_row(problem, ref) * (x - ref).reshape(1, -1), axis=1)
        al = np.sum(t * (y - zp), axis=1)
        G = np.concatenate([R, ph[:, None], al[:, None]], axis=1)
        fs = problem.force_scale(x, w)
        if (
            np.max(np.abs(R)) / fs[0] <= tolerance(problem, _State(x, w, e), tol)[0]
            and abs(al[0]) < 1e-12
        ):
            return y
        J = np.zeros((1, n + 2, n + 2))
        J[:, :n, :n] = problem.jacobian_x(x, w, e)
        r_w, r_e = problem.jacobian_omega(x, w, e)
        J[:, :n, n], J[:, :n, n + 1] = r_w, r_e
        J[:, n, :n] = phase_row(problem, ref)
        J[:, n + 1] = t
        y = y - dense_solve(J, G[..., None])[..., 0]
        if not np.all(np.isfinite(y)) or y[0, n] <= 0:
            return None
    return None


def scan_family(
    problem: AutonomousProblem,
    sol: OrbitSolution,
    steps: int,
    ds: float,
    *,
    tol: float = 1e-11,
    direction: float = 1.0,
) -> FamilyScan:
    """Follow the family through the orbit ``sol`` (batch of 1) for ``steps`` arclength steps of
    ``ds`` (in the norm of (x/√N, ω)), towards higher energy for ``direction`` = +1."""
    if problem.batch != 1:
        raise ValueError("scan_family follows one family (batch of 1)")
    N, d = problem.n, problem.d
    n = N * d
    z = np.concatenate([sol.x.reshape(1, -1), sol.omega[:, None], sol.eps[:, None]], axis=1)
    # orientation: towards higher energy at the start
    guess = np.zeros((1, n + 2))
    guess[0, n] = 1.0
    t = _tangent(problem, sol.x, sol.omega, sol.eps, sol.x, guess)
    e0 = problem.energy(sol.x, sol.omega)[0]
    probe = z + 1e-6 * t
    e1 = problem.energy(probe[:, :n].reshape(1, N, d), probe[:, n])[0]
    if (e1 - e0) * direction < 0:
        t = -t
    scale = np.ones(n + 2)
    scale[:n] = 1.0 / np.sqrt(N)
    E, T, S, X, W = [], [], [], [], []
    h = ds
    for _ in range(steps):
        x, w = z[:, :n].reshape(1, N, d), z[:, n]
        E.append(problem.energy(x, w)[0])
        T.append(TWO_PI / w[0])
        S.append(problem.action(x, w)[0])
        X.append(x[0].copy())
        W.append(w[0])
        y = None
        while h > ds * 1e-4:
            y = _arclength_step(problem, z, t / np.linalg.norm(t / scale), h, tol)
            if y is not None:
                break
            h *= 0.5
        if y is None:
            log.info("family scan stopped: corrector failed")
            break
        xn, wn, en = y[:, :n].reshape(1, N, d), y[:, n], y[:, n + 1]
        t = _tangent(problem, xn, wn, en, xn, t)
        z = y
        h = min(ds, 1.5 * h)
    return _turning_points(np.array(E), np.array(T), np.array(S), np.array(X), np.array(W))


def _turning_points(E: Array, T: Array, S: Array, X: Array, W: Array) -> FamilyScan:
    dE, dT = np.diff(E), np.diff(T)
    folds = [i + 1 for i in range(dE.size - 1) if dE[i] * dE[i + 1] < 0]
    ext = [i + 1 for i in range(dT.size - 1) if dT[i] * dT[i + 1] < 0]
    return FamilyScan(E, T, S, X, W, folds, ext)
