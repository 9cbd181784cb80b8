"""Autonomous periodic orbits: no drive, no damping, the period free (docs/physics.md §8).

A network with no explicit time dependence (Γ = 0, constant modulations, inputs as static forces
or static clamps, the nudge a static potential −β c(x)) has families of periodic orbits; one
orbit of a family is picked by a constraint on the orbit:

* ``energy``  — the time-averaged energy of the (nudged) Lagrangian, ⟨½ m ẋ² + V + U⟩ = E₀;
* ``action``  — the reduced action W = ∮ p dx = ∫₀ᵀ Σ m ẋ² dt = S₀;
* ``period``  — T = T₀ (the control: a fixed period imposed on an autonomous orbit).

Collocation on the phase τ = ωt ∈ [0, 2π) with N (odd) points, D_τ the real antisymmetric spectral
derivative (`PeriodicGrid` of period 2π), so d/dt = ω D_τ. Unknowns per sample: the orbit x (N, d),
the angular frequency ω and an *unfolding parameter* ε; equations:

    R = m ω² D_τ² x + ε m ω D_τ x + ∂V/∂x + κ x − φ = 0            (N·d equations)
    ⟨D_τ x_ref, x − x_ref⟩ = 0                                          (phase condition)
    g(x, ω) = 0                                                          (the constraint)

with U = ½ Σ κ_j x_j² − Σ φ_j x_j + u₀ the static load (`StaticLoad`). A conservative system has
periodic orbits only at ε = 0 (multiply R by D_τ x and sum: ε Σ m ω (D_τ x)² = 0), so ε closes
the count of unknowns and equations without changing the solution — it comes out at round-off
(`OrbitSolution.eps`). The bordered Jacobian is assembled densely (N·d + 2 per sample) and
solved by LU: exact, and cheap at the sizes of the networks trained here (N·d ≤ ~600).

Why these discrete constraints: with the discrete action S_N(x, T) = T ⟨½ m ẋ² − V − U⟩ (ẋ
spectral), R = 0 is ∂S_N/∂x = 0, ∂S_N/∂T = −⟨H⟩ exactly, and W_N = S_N + ⟨H⟩ T = T ⟨m ẋ²⟩. So
the Legendre structure behind the EP identities of docs/estimators.md holds for the discrete
problem itself, not only as N → ∞.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from physlearn.errors import ConfigError, SteadyStateError
from physlearn.simulators.spectral import PeriodicGrid
from physlearn.spec.model import Coefficients, NetworkModel
from physlearn.spec.modulation import Constant

log = logging.getLogger(__name__)
Array = NDArray[np.float64]
ConstraintKind = Literal["energy", "action", "period"]
CONSTRAINTS: tuple[ConstraintKind, ...] = ("energy", "action", "period")
TWO_PI = 2.0 * np.pi
EPS = float(np.finfo(np.float64).eps)


class SingularConstraintError(SteadyStateError):
    """The constraint surface is tangent to the orbit family here (a fold of the family in the
    constrained quantity): the orbit at this constraint value is not isolated, or not there."""


@dataclass(frozen=True)
class StaticLoad:
    """Static external potential U(x) = ½ Σ κ_j x_j² − Σ φ_j x_j + u₀, per sample.

    ``kappa`` (B,d) stiffness (clamps: δ; the nudge: −βγ), ``phi`` (B,d) force (static input
    forces; clamps δu; the nudge −βγy), ``u0`` (B,) constant (clamps ½δu²; the nudge −½βγy²) —
    the constant matters: the energy constraint holds the energy of the nudged Lagrangian.
    """

    kappa: Array
    phi: Array
    u0: Array

    @classmethod
    def zeros(cls, batch: int, d: int) -> StaticLoad:
        return cls(np.zeros((batch, d)), np.zeros((batch, d)), np.zeros(batch))

    @property
    def batch(self) -> int:
        return int(self.phi.shape[0])

    def energy(self, x: Array) -> Array:
        """U(x) at every point, (B,N)."""
        return (
            0.5 * np.einsum("bj,bnj->bn", self.kappa, x**2)
            - np.einsum("bj,bnj->bn", self.phi, x)
            + self.u0[:, None]
        )

    def gradient(self, x: Array) -> Array:
        """∂U/∂x = κ x − φ, (B,N,d)."""
        return self.kappa[:, None, :] * x - self.phi[:, None, :]

    def plus_cost(self, beta: Array, weight: Array, target: Array) -> StaticLoad:
        """The load with the nudge −β c(x) added, c = ½ Σ γ_j (x_j − y_j)² (``weight`` γ (B,d),
        ``target`` y (B,d), β (B,)): L = L0 + βc, so the nudge force is +β γ (x − y)."""
        b = np.asarray(beta, dtype=float).reshape(-1, 1)
        return StaticLoad(
            self.kappa - b * weight,
            self.phi - b * weight * target,
            self.u0 - 0.5 * b[:, 0] * np.sum(weight * target**2, axis=1),
        )

    def take(self, idx: NDArray[np.intp]) -> StaticLoad:
        return StaticLoad(self.kappa[idx], self.phi[idx], self.u0[idx])


@dataclass(frozen=True)
class OrbitCost:
    """The cost density c(x) = ½ Σ γ_j (x_j − y_j)² of static targets: weight γ (B,d) (zero off
    the outputs), target y (B,d)."""

    weight: Array
    target: Array

    def density(self, x: Array) -> Array:
        """c at every point, (B,N)."""
        return 0.5 * np.sum(self.weight[:, None, :] * (x - self.target[:, None, :]) ** 2, axis=-1)

    def gradient(self, x: Array) -> Array:
        """∂c/∂x = γ (x − y), (B,N,d): the nudge force per unit β."""
        return self.weight[:, None, :] * (x - self.target[:, None, :])


@dataclass(frozen=True)
class OrbitConstraint:
    """Which orbit of the family: ``kind`` and its value per sample (E₀ in J, S₀ in J·s, T₀ in s)."""

    kind: ConstraintKind
    value: Array

    def __post_init__(self) -> None:
        if self.kind not in CONSTRAINTS:
            raise ConfigError(f"constraint: unknown {self.kind!r}; known: {', '.join(CONSTRAINTS)}")
        v = np.atleast_1d(np.asarray(self.value, dtype=float))
        if not np.all(np.isfinite(v)):
            raise ConfigError(f"constraint: {self.kind} values must be finite, got {v}")
        if self.kind != "energy" and np.any(v <= 0):
            raise ConfigError(f"constraint: {self.kind} values must be positive, got {v}")
        object.__setattr__(self, "value", v)

    def take(self, idx: NDArray[np.intp]) -> OrbitConstraint:
        return OrbitConstraint(self.kind, np.broadcast_to(self.value, (int(np.max(idx)) + 1,))[idx])

    def broadcast(self, batch: int) -> OrbitConstraint:
        return OrbitConstraint(self.kind, np.broadcast_to(self.value, (batch,)).copy())


def dense_solve(J: Array, rhs: Array) -> Array:
    """Batched LU solve J z = rhs with one BLAS thread: these systems (≤ ~600 unknowns) gain
    nothing from threads, and on a loaded machine OpenBLAS threads cost 100× (measured)."""
    with threadpool_limits(1, "blas"):
        try:
            return np.asarray(np.linalg.solve(J, rhs), dtype=np.float64)
        except np.linalg.LinAlgError:
            return np.stack(
                [np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(J, rhs, strict=True)]
            )


def _t(x: Array) -> Array:
    """Times for the model's modulations: constant here, so any will do (one per point)."""
    return np.zeros(x.shape[1])


def phase_grid(n: int) -> tuple[PeriodicGrid, Array, Array]:
    """The phase grid (period 2π) and its spectral D_τ, D_τ² as dense (N,N) matrices."""
    grid = PeriodicGrid(n, TWO_PI)
    D = grid.deriv(np.eye(n)[None])[0]
    D2 = grid.deriv(np.eye(n)[None], 2)[0]
    return grid, D, D2


def check_autonomous_model(model: NetworkModel) -> None:
    """Refuse what an autonomous conservative orbit cannot have: damping, time modulations."""
    if np.any(model.damping != 0.0):
        raise ConfigError(
            "nodes.damping: an autonomous orbit of the twin is conservative (Γ = 0 on every node); "
            f"got {model.damping.tolist()}"
        )
    for name in ("mu", "nu"):
        if not isinstance(getattr(model, name), Constant):
            raise ConfigError(
                f"modulations.{name}: an autonomous network has no explicit time dependence "
                "(constant modulations only)"
            )


@dataclass
class AutonomousProblem:
    """A compiled network with its term values θ (B, n_terms) and static load, on N phase points."""

    model: NetworkModel
    theta: Array
    load: StaticLoad
    n: int = 33
    grid: PeriodicGrid = field(init=False, repr=False)
    D: Array = field(init=False, repr=False)
    D2: Array = field(init=False, repr=False)
    coef: Coefficients = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_autonomous_model(self.model)
        self.grid, self.D, self.D2 = phase_grid(self.n)
        if self.theta.shape[0] != self.load.batch:
            self.theta = np.ascontiguousarray(
                np.broadcast_to(self.theta, (self.load.batch, self.theta.shape[-1]))
            )
        self.coef = self.model.coefficients(self.theta)

    @property
    def batch(self) -> int:
        return self.load.batch

    @property
    def d(self) -> int:
        return self.model.d

    def take(self, idx: NDArray[np.intp]) -> AutonomousProblem:
        return AutonomousProblem(self.model, self.theta[idx], self.load.take(idx), self.n)

    def with_load(self, load: StaticLoad) -> AutonomousProblem:
        return AutonomousProblem(self.model, self.theta, load, self.n)

    # -- pieces -----------------------------------------------------------------------------------
    def dtau(self, x: Array) -> Array:
        return np.matmul(self.D, x)

    def potential(self, x: Array) -> Array:
        """V + U at every point, (B,N)."""
        return self.model.energy(x, _t(x), self.coef) + self.load.energy(x)

    def force_gradient(self, x: Array) -> Array:
        """∂(V + U)/∂x, (B,N,d)."""
        return self.model.grad_potential(x, _t(x), self.coef) + self.load.gradient(x)

    def residual(self, x: Array, omega: Array, eps: Array) -> Array:
        m = self.model.mass
        w = omega[:, None, None]
        return (
            m * w**2 * np.matmul(self.D2, x)
            + eps[:, None, None] * m * w * self.dtau(x)
            + self.force_gradient(x)
        )

    def kinetic2(self, x: Array) -> Array:
        """⟨Σ m (D_τ x)²⟩ per sample (B,): 2 × the mean kinetic energy at ω = 1."""
        return np.mean(np.sum(self.model.mass * self.dtau(x) ** 2, axis=-1), axis=1)

    def energy(self, x: Array, omega: Array) -> Array:
        """⟨½ m ẋ² + V + U⟩ over the orbit, (B,)."""
        return 0.5 * omega**2 * self.kinetic2(x) + np.mean(self.potential(x), axis=1)

    def action(self, x: Array, omega: Array) -> Array:
        """W = ∮ p dx = ∫₀ᵀ Σ m ẋ² dt = 2π ω ⟨m (D_τ x)²⟩, (B,)."""
        return TWO_PI * omega * self.kinetic2(x)

    def constraint_value(self, kind: ConstraintKind, x: Array, omega: Array) -> Array:
        if kind == "energy":
            return self.energy(x, omega)
        if kind == "action":
            return self.action(x, omega)
        return TWO_PI / omega

    def force_scale(self, x: Array, omega: Array) -> Array:
        m, k = self.model.mass, np.abs(self.model.stiffness)
        s = np.max(np.abs(m * omega[:, None, None] ** 2 * x), axis=(1, 2))
        s = np.maximum(s, np.max(np.abs(k * x), axis=(1, 2)))
        s = np.maximum(s, np.max(np.abs(self.load.phi), axis=1))
        return np.maximum(s, 1e-300)

    # -- the bordered Jacobian -------------------------------------------------------------------
    def jacobian_x(self, x: Array, omega: Array, eps: Array) -> Array:
        """∂R/∂x as (B, N·d, N·d)."""
        B, N, d = x.shape
        mdiag = np.diag(self.model.mass)
        base = np.einsum("nm,jk->njmk", self.D2, mdiag)  # (N,d,N,d)
        damp = np.einsum("nm,jk->njmk", self.D, mdiag)
        w = omega[:, None, None, None, None]
        J = w**2 * base[None] + (eps * omega)[:, None, None, None, None] * damp[None]
        H = self.model.hessian(x, _t(x), self.coef)  # (B,N,d,d)
        H = H + np.einsum("bj,jk->bjk", self.load.kappa, np.eye(d))[:, None]
        idx = np.arange(N)
        J[:, idx, :, idx, :] += np.moveaxis(H, 1, 0)
        return J.reshape(B, N * d, N * d)

    def jacobian_omega(self, x: Array, omega: Array, eps: Array) -> tuple[Array, Array]:
        """(∂R/∂ω, ∂R/∂ε), each (B, N·d)."""
        m = self.model.mass
        B = x.shape[0]
        dx = self.dtau(x)
        r_w = 2.0 * m * omega[:, None, None] * np.matmul(self.D2, x) + eps[:, None, None] * m * dx
        r_e = m * omega[:, None, None] * dx
        return r_w.reshape(B, -1), r_e.reshape(B, -1)

    def constraint_row(self, kind: ConstraintKind, x: Array, omega: Array) -> tuple[Array, Array]:
        """(∂g/∂x (B, N·d), ∂g/∂ω (B,)) of the constraint function g."""
        B, N, _ = x.shape
        m = self.model.mass
        if kind == "period":
            return np.zeros((B, x[0].size)), -TWO_PI / omega**2
        d2x = np.matmul(self.D2, x)
        if kind == "energy":
            gx = (-(omega[:, None, None] ** 2) * m * d2x + self.force_gradient(x)) / N
            return gx.reshape(B, -1), omega * self.kinetic2(x)
        gx = -2.0 * TWO_PI * omega[:, None, None] * m * d2x / N
        return gx.reshape(B, -1), TWO_PI * self.kinetic2(x)

    def bordered(
        self, x: Array, omega: Array, eps: Array, ref: Array, kind: ConstraintKind
    ) -> Array:
        """The full Jacobian (B, N·d + 2, N·d + 2) in the unknowns (x, ω, ε); rows: R, phase,
        constraint."""
        B, N, d = x.shape
        n = N * d
        J = np.zeros((B, n + 2, n + 2))
        J[:, :n, :n] = self.jacobian_x(x, omega, eps)
        r_w, r_e = self.jacobian_omega(x, omega, eps)
        J[:, :n, n], J[:, :n, n + 1] = r_w, r_e
        J[:, n, :n] = phase_row(self, ref)
        gx, gw = self.constraint_row(kind, x, omega)
        J[:, n + 1, :n], J[:, n + 1, n] = gx, gw
        return J


def phase_row(problem: AutonomousProblem, ref: Array) -> Array:
    """The phase condition's row, D_τ x_ref normalised, (B, N·d)."""
    r = problem.dtau(ref).reshape(ref.shape[0], -1)
    return r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-300)


@dataclass(frozen=True)
class OrbitSolution:
    """Autonomous periodic orbits on the phase grid τ_n = 2π n / N: x (B,N,d), ω (B,), the
    unfolding parameter ε (B,) (≈ 0), the constraint held, energy ⟨H⟩ (B,), reduced action (B,),
    residual (B,) (max |R| relative to the force scale) and Newton iterations (B,)."""

    x: Array
    omega: Array
    eps: Array
    constraint: OrbitConstraint
    energy: Array
    action: Array
    residual: Array
    iterations: Array

    @property
    def period_s(self) -> Array:
        return TWO_PI / self.omega

    def take(self, idx: NDArray[np.intp]) -> OrbitSolution:
        return OrbitSolution(
            self.x[idx],
            self.omega[idx],
            self.eps[idx],
            OrbitConstraint(self.constraint.kind, self.constraint.value[idx]),
            self.energy[idx],
            self.action[idx],
            self.residual[idx],
            self.iterations[idx],
        )


@dataclass
class _State:
    x: Array
    omega: Array
    eps: Array


def _equations(
    problem: AutonomousProblem, s: _State, ref: Array, ref_row: Array, con: OrbitConstraint
) -> tuple[Array, Array, Array]:
    """(R (B,N,d), phase (B,), constraint g (B,))."""
    R = problem.residual(s.x, s.omega, s.eps)
    ph = np.sum(ref_row * (s.x - ref).reshape(ref.shape[0], -1), axis=1)
    g = problem.constraint_value(con.kind, s.x, s.omega) - con.value
    return R, ph, g


def _scales(problem: AutonomousProblem, s: _State, con: OrbitConstraint) -> tuple[Array, Array]:
    fs = problem.force_scale(s.x, s.omega)
    if con.kind == "period":
        cs = np.abs(con.value)
    else:
        kin = 0.5 * s.omega**2 * problem.kinetic2(s.x)
        cs = np.maximum(np.abs(con.value), kin)
        if con.kind == "action":
            cs = np.maximum(cs, problem.action(s.x, s.omega))
    return fs, np.maximum(cs, 1e-300)


def tolerance(problem: AutonomousProblem, s: _State, tol: float) -> Array:
    """``tol``, raised to the round-off floor of the collocated residual (ε (ωH)² m|x| / scale),
    as in `physlearn.simulators.periodic.PeriodicOperator.tolerance`."""
    h = (problem.n - 1) / 2 * s.omega
    floor = 4.0 * EPS * h**2 * float(np.max(problem.model.mass)) * np.max(np.abs(s.x), axis=(1, 2))
    return np.maximum(tol, floor / problem.force_scale(s.x, s.omega))


def _merit(
    problem: AutonomousProblem, s: _State, ref: Array, row: Array, con: OrbitConstraint
) -> tuple[Array, Array]:
    """(scaled residual norm (B,), max-norm measure (B,))."""
    R, ph, g = _equations(problem, s, ref, row, con)
    fs, cs = _scales(problem, s, con)
    B = R.shape[0]
    r = R.reshape(B, -1) / fs[:, None]
    norm = np.sqrt(np.sum(r**2, axis=1) + ph**2 + (g / cs) ** 2)
    worst = np.maximum(np.max(np.abs(r), axis=1), np.maximum(np.abs(ph), np.abs(g / cs)))
    return norm, worst


def newton(
    problem: AutonomousProblem,
    x0: Array,
    omega0: Array,
    con: OrbitConstraint,
    *,
    ref: Array | None = None,
    tol: float = 1e-12,
    max_iter: int = 30,
) -> tuple[_State, Array, Array]:
    """Damped Newton on (x, ω, ε) from (x0, ω0); returns (state, max-norm residual, iterations)
    per sample. ``ref``: the phase reference (default x0)."""
    B, N, d = x0.shape
    n = N * d
    s = _State(np.array(x0, dtype=float), np.array(omega0, dtype=float), np.zeros(B))
    ref = s.x.copy() if ref is None else ref
    row = phase_row(problem, ref)
    norm, worst = _merit(problem, s, ref, row, con)
    iters = np.zeros(B, dtype=int)
    active = np.ones(B, dtype=bool)
    for _ in range(max_iter):
        todo = active & (worst > tolerance(problem, s, tol))
        if not todo.any():
            break
        idx = np.flatnonzero(todo)
        sub = problem.take(idx) if idx.size < B else problem
        st = _State(s.x[idx], s.omega[idx], s.eps[idx])
        con_i = OrbitConstraint(con.kind, con.value[idx])
        R, ph, g = _equations(sub, st, ref[idx], row[idx], con_i)
        rhs = -np.concatenate([R.reshape(idx.size, -1), ph[:, None], g[:, None]], axis=1)
        J = sub.bordered(st.x, st.omega, st.eps, ref[idx], con.kind)
        dz = dense_solve(J, rhs[..., None])[..., 0]
        step = np.ones(idx.size)
        accepted = np.zeros(idx.size, dtype=bool)
        for _ls in range(10):
            trial = _State(
                st.x + (step[:, None] * dz[:, :n]).reshape(-1, N, d),
                st.omega + step * dz[:, n],
                st.eps + step * dz[:, n + 1],
            )
            nt, wt = _merit(sub, trial, ref[idx], row[idx], con_i)
            good = (
                ~accepted
                & np.isfinite(nt)
                & (trial.omega > 0)
                & (nt <= (1 - 1e-4 * step) * norm[idx])
            )
            for name in ("x", "omega", "eps"):
                getattr(s, name)[idx[good]] = getattr(trial, name)[good]
            norm[idx[good]], worst[idx[good]] = nt[good], wt[good]
            accepted |= good
            if accepted.all():
                break
            step = np.where(accepted, step, 0.5 * step)
        iters[idx] += 1
        active[idx[~accepted]] = False
    return s, worst, iters


def solve_orbit(
    problem: AutonomousProblem,
    x0: Array,
    omega0: Array,
    con: OrbitConstraint,
    *,
    ref: Array | None = None,
    tol: float = 1e-12,
    max_iter: int = 30,
) -> OrbitSolution:
    """The orbit(s) of ``problem`` with constraint ``con``, by Newton from (x0 (B,N,d), ω0 (B,)).

    Raises `SteadyStateError` (every failing sample named) when a sample does not converge —
    continuation (`physlearn.simulators.autonomous_family`) gives better starting points.
    """
    con = con.broadcast(problem.batch)
    s, worst, iters = newton(problem, x0, omega0, con, ref=ref, tol=tol, max_iter=max_iter)
    tol_eff = tolerance(problem, s, tol)
    bad = ~(worst <= tol_eff)
    if bad.any():
        all_bad = tuple(int(j) for j in np.flatnonzero(bad))
        i = all_bad[0]
        raise SteadyStateError(
            f"autonomous orbit at fixed {con.kind} {con.value[i]:.6g} did not converge for sample "
            f"{i}: residual {worst[i]:.3e} > {tol_eff[i]:.1e} after {iters[i]} Newton iterations"
            + (f"; {len(all_bad) - 1} more samples" if len(all_bad) > 1 else ""),
            sample=i,
            residual=float(worst[i]),
            samples=all_bad,
        )
    return OrbitSolution(
        s.x,
        s.omega,
        s.eps,
        con,
        problem.energy(s.x, s.omega),
        problem.action(s.x, s.omega),
        worst,
        iters,
    )


def with_constraint(
    sol: OrbitSolution, kind: ConstraintKind, problem: AutonomousProblem
) -> OrbitSolution:
    """The same orbits described as held at their own value of another constraint."""
    value = problem.constraint_value(kind, sol.x, sol.omega)
    return replace(sol, constraint=OrbitConstraint(kind, value))
