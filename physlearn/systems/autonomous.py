"""`AutonomousTwin`: the ideal twin of an autonomous network (level ``ideal``).

Conservative (Γ = 0), no drive: inputs are static forces (or static clamps) from the spec's
``inputs`` table (``waveform = "constant"``), and every sample sits on a periodic orbit of the
Lyapunov family of normal mode ``mode`` held at a constraint (`AutonomousOptions`: the set point
E₀ or S₀; `set_constraint` holds any energy, action or period per sample). Every `measure()`
solves the orbits (`physlearn.simulators.autonomous`, Newton on (orbit, ω) with a phase condition
and the constraint): warm-started from the last free orbit of the same input vector (any
parameters), else by continuation from the orbit of that warm start at its own period, else from
the small-amplitude normal mode (`orbit_from_mode`). Only free orbits at the set point are cached.

The nudge (`set_nudge`) is a static potential −β c(x), c = ½ Σ γ (x − y)², so an energy
constraint holds the energy of the nudged Lagrangian. Observations are on the orbit's phase
(`OrbitObservation`: t_s in cycles, the periods in ``orbit_period_s``).

Twin-only: `sensitivity` / `exact_gradient` (the adjoint gradient of an `OrbitTask`'s cost with
the set point's constraint held; ``ExactGradients``), `floquet_check` (the largest *nontrivial*
Floquet multiplier: a conservative orbit is at best neutrally stable, ≤ 1; ``StabilityCheck``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import (
    ConfigError,
    LimitError,
    SolverError,
    SteadyStateError,
    UnstableOrbitError,
    in_batch,
)
from physlearn.simulators.autonomous import (
    AutonomousProblem,
    OrbitConstraint,
    OrbitCost,
    OrbitSolution,
    StaticLoad,
    solve_orbit,
)
from physlearn.simulators.autonomous_family import (
    continue_orbit,
    equilibrium_near,
    orbit_from_mode,
    static_equilibrium,
)
from physlearn.simulators.autonomous_floquet import orbit_floquet
from physlearn.simulators.autonomous_gradients import OrbitSensitivity, orbit_cost
from physlearn.spec.autonomous import (
    ORBIT_CYCLE,
    AutonomousOptions,
    AutonomousSystem,
    ConstraintKind,
    OrbitObservation,
    OrbitTask,
    check_autonomous_spec,
    static_cost,
)
from physlearn.spec.model import NetworkModel
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import Level, SettleInfo
from physlearn.spec.task import Task, check_task

log = logging.getLogger(__name__)
Array = NDArray[np.float64]
FloquetMode = Literal["all", "free", "none"]


def input_load(spec: NetworkSpec, u: Array) -> StaticLoad:
    """The static load of input vectors u (B, n_in): force φ = gain (u + offset) on the input
    nodes, or a clamp ½ δ (x − gain (u + offset))² (δ constant)."""
    inp = spec.inputs
    B, d = u.shape[0], spec.nodes.count
    load = StaticLoad.zeros(B, d)
    if not inp.nodes:
        return load
    level = inp.gain * (u + inp.offset)
    nodes = np.array(inp.nodes, dtype=int)
    if inp.mode == "force":
        load.phi[:, nodes] = level
        return load
    delta = float(spec.modulations.delta(np.zeros(1), None)[0])
    load.kappa[:, nodes] = delta
    load.phi[:, nodes] = delta * level
    load.u0[:] = 0.5 * delta * np.sum(level**2, axis=1)
    return load


def _keys(u: Array) -> list[bytes]:
    return [np.ascontiguousarray(row, dtype=float).tobytes() for row in u]


class AutonomousTwin(AutonomousSystem):
    """The ideal twin of an autonomous network (module docstring).

    Args:
        spec: the network: Γ = 0, no drive tones, constant modulations, static inputs and targets.
        options: the set point (constraint, value), the mode, points per cycle, tolerance.
        floquet: ``all`` / ``free``: the orbits' nontrivial Floquet multipliers are checked (all
            phases / free phases) and an orbit with one of modulus > 1 + 1e-6 raises
            `UnstableOrbitError`; ``none`` (default): not checked.
        cache_size: free orbits kept for warm starts.
    """

    level = Level.IDEAL

    def __init__(
        self,
        spec: NetworkSpec,
        options: AutonomousOptions,
        *,
        floquet: FloquetMode = "none",
        cache_size: int = 4096,
    ):
        check_autonomous_spec(spec)
        if floquet not in ("all", "free", "none"):
            raise ConfigError(f"floquet: must be 'all', 'free' or 'none', got {floquet!r}")
        self.spec, self.options = spec, options
        self.model = NetworkModel.from_spec(spec)
        if np.any(self.model.damping != 0):
            raise ConfigError(
                "nodes.damping: the autonomous twin is conservative (Γ = 0); a lossy network "
                "needs a self-oscillator that compensates its losses"
            )
        self.n = options.points_per_cycle
        self.floquet: FloquetMode = floquet
        self.cache_size = int(cache_size)
        self.experiments = 0
        self._alpha = spec.initial_parameters()
        self._lower, self._upper = spec.parameter_bounds()
        self._u: Array | None = None
        self._load: StaticLoad | None = None
        self._constraint: OrbitConstraint | None = None
        self._nudge: tuple[Array, Array, Array] | None = None  # β (B,), γ (B,d), y (B,d)
        self._cache: OrderedDict[bytes, tuple[Array, Array, Array]] = OrderedDict()
        self.last_solution: OrbitSolution | None = None
        self.last_problem: AutonomousProblem | None = None

    # ------------------------------------------------------------------ description
    @property
    def n_nodes(self) -> int:
        return self.spec.nodes.count

    @property
    def n_params(self) -> int:
        return self.model.n_params

    @property
    def n_inputs(self) -> int:
        return len(self.spec.inputs.nodes)

    @property
    def actuated_nodes(self) -> list[int]:
        return list(range(self.n_nodes))

    @property
    def default_constraint(self) -> ConstraintKind:
        return self.options.constraint

    @property
    def parameters(self) -> Array:
        return self._alpha.copy()

    # ------------------------------------------------------------------ settings
    def _check_alpha(self, alpha: Array) -> Array:
        a = np.asarray(alpha, dtype=float)
        if a.shape != (self.n_params,):
            raise ConfigError(f"parameters: expected shape ({self.n_params},), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise LimitError(f"parameters: refusing non-finite values {a.tolist()}")
        bad = np.flatnonzero((a < self._lower) | (a > self._upper))
        if bad.size:
            i = int(bad[0])
            raise LimitError(
                f"parameters[{i}] ({self.spec.parameter_names()[i]}) = {a[i]} is outside its "
                f"bounds [{self._lower[i]}, {self._upper[i]}]"
            )
        return a.copy()

    def _check_u(self, u: Array) -> Array:
        a = np.asarray(u, dtype=float)
        if a.ndim != 2 or a.shape[1] != self.n_inputs or a.shape[0] < 1:
            raise ConfigError(f"inputs: expected shape (batch, {self.n_inputs}), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise LimitError("inputs: refusing NaN or inf input values")
        return a.copy()

    async def set_parameters(self, alpha: Array) -> None:
        self._alpha = self._check_alpha(alpha)

    async def set_input(self, u: Array) -> None:
        """Static inputs u (B, n_in); removes the nudge and any constraint set (they belonged to
        the previous batch)."""
        a = self._check_u(u)
        self._u, self._load = a, input_load(self.spec, a)
        self._constraint, self._nudge = None, None

    async def set_constraint(
        self, kind: ConstraintKind | None, values: Array | None = None
    ) -> None:
        if kind is None:
            self._constraint = None
            return
        B = self._require_input().batch
        v = np.asarray(values, dtype=float) if values is not None else None
        if v is None or v.shape not in ((B,), ()):
            raise ConfigError(
                f"constraint values: expected shape ({B},), got {None if v is None else v.shape}"
            )
        self._constraint = OrbitConstraint(kind, np.broadcast_to(v, (B,)).copy())

    async def set_nudge(self, beta: Array | None, task: Task | None = None) -> None:
        if beta is None:
            self._nudge = None
            return
        if task is None:
            raise ConfigError("set_nudge: a nudge needs the task whose cost it pushes")
        B = self._require_input().batch
        b = np.broadcast_to(np.asarray(beta, dtype=float), (B,)).copy()
        if not np.all(np.isfinite(b)):
            raise LimitError("set_nudge: refusing a non-finite β")
        w, y = static_cost(task)
        self._nudge = (
            b,
            np.broadcast_to(w, (B, self.n_nodes)).copy(),
            np.broadcast_to(y, (B, self.n_nodes)).copy(),
        )

    async def drive_peak(self) -> Array:
        """Peak static input force per sample (B,) (an autonomous network has no drive)."""
        load = self._require_input()
        return np.asarray(np.max(np.abs(load.phi), axis=1), dtype=float)

    def _require_input(self) -> StaticLoad:
        if self._load is None:
            raise ConfigError("no input set: call set_input(u) before measurements")
        return self._load

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Array]:
        """The warm-start cache: inputs, parameters, orbits and frequencies, in LRU order."""
        keys = list(self._cache)
        n_in, P, shape = self.n_inputs, self.n_params, (self.n, self.n_nodes)
        return {
            "inputs": np.array([np.frombuffer(k, dtype=float) for k in keys]).reshape(-1, n_in),
            "alphas": np.array([self._cache[k][0] for k in keys]).reshape(-1, P),
            "orbits": np.array([self._cache[k][1] for k in keys]).reshape(-1, *shape),
            "omegas": np.array([self._cache[k][2] for k in keys]).reshape(-1),
        }

    def load_state_dict(self, state: dict[str, Array]) -> None:
        u, a, x, w = (
            np.asarray(state[k], dtype=float) for k in ("inputs", "alphas", "orbits", "omegas")
        )
        if x.shape[1:] != (self.n, self.n_nodes):
            raise ConfigError(
                f"twin state: orbits {x.shape[1:]} do not fit ({self.n}, {self.n_nodes})"
            )
        self._cache.clear()
        for key, ai, xi, wi in zip(_keys(u), a, x, w, strict=True):
            self._cache[key] = (ai.copy(), xi.copy(), np.asarray(wi).copy())

    # ------------------------------------------------------------------ orbits
    def _set_point(self, batch: int) -> OrbitConstraint:
        return OrbitConstraint(self.options.constraint, np.full(batch, self.options.value))

    def problem(self, alpha: Array, load: StaticLoad) -> AutonomousProblem:
        theta = self.model.full_theta(alpha, batch=load.batch)
        return AutonomousProblem(self.model, theta, load, self.n)

    def _warm(self, u: Array) -> tuple[Array, Array, NDArray[np.bool_]]:
        B = u.shape[0]
        x, w, have = np.zeros((B, self.n, self.n_nodes)), np.ones(B), np.zeros(B, dtype=bool)
        for i, key in enumerate(_keys(u)):
            entry = self._cache.get(key)
            if entry is not None:
                x[i], w[i], have[i] = entry[1], entry[2], True
        return x, w, have

    def solve(
        self, alpha: Array, u: Array, load: StaticLoad, con: OrbitConstraint
    ) -> tuple[AutonomousProblem, OrbitSolution]:
        """The orbits at (α, load) with ``con`` held: warm start, then continuation from the warm
        orbit, then from the normal mode (module docstring)."""
        problem = self.problem(alpha, load)
        B = load.batch
        tol = self.options.tol
        x, w, have = self._warm(u)
        out_x, out_w = np.zeros_like(x), np.zeros(B)
        todo = np.ones(B, dtype=bool)
        idx = np.flatnonzero(have)
        if idx.size:
            sub = problem.take(idx)
            try:
                s = solve_orbit(
                    sub, x[idx], w[idx], OrbitConstraint(con.kind, con.value[idx]), tol=tol
                )
                out_x[idx], out_w[idx], todo[idx] = s.x, s.omega, False
            except SolverError as err:
                log.info("warm-started orbits failed (%s); continuing from the warm orbits", err)
                self._continue_from(problem, x, w, idx, con, out_x, out_w, todo)
        rest = np.flatnonzero(todo)
        if rest.size:
            try:
                s = orbit_from_mode(
                    problem.take(rest),
                    OrbitConstraint(con.kind, con.value[rest]),
                    self.options.mode,
                    tol=tol,
                    x_guess=np.mean(x[rest], axis=1),  # warm orbits' means (0: rest, none warm)
                )
            except SolverError as err:  # its samples index `rest`: name them in the batch
                raise in_batch(err, tuple(int(j) for j in rest)) from err
            out_x[rest], out_w[rest] = s.x, s.omega
        return problem, solve_orbit(problem, out_x, out_w, con, tol=tol)

    def _continue_from(
        self,
        problem: AutonomousProblem,
        x: Array,
        w: Array,
        idx: NDArray[np.intp],
        con: OrbitConstraint,
        out_x: Array,
        out_w: Array,
        todo: NDArray[np.bool_],
    ) -> None:
        """Each warm orbit solved at its own period for the current problem, then continued to
        the constraint's value; samples where this fails stay in ``todo``."""
        for i in idx:
            sub = problem.take(np.array([i]))
            try:
                s = solve_orbit(
                    sub,
                    x[i : i + 1],
                    w[i : i + 1],
                    OrbitConstraint("period", 2 * np.pi / w[i : i + 1]),
                    tol=self.options.tol,
                )
                base = None
                if con.kind == "energy":
                    x_eq = equilibrium_near(sub, np.mean(x[i : i + 1], axis=1))
                    base = np.mean(sub.potential(x_eq[:, None, :]), axis=1)
                s = continue_orbit(
                    sub, s, con.kind, con.value[i : i + 1], base=base, tol=self.options.tol
                )
            except SolverError:
                continue
            out_x[i], out_w[i], todo[i] = s.x[0], s.omega[0], False

    def _check_floquet(self, problem: AutonomousProblem, sol: OrbitSolution, nudged: bool) -> Array:
        if self.floquet == "none" or (self.floquet == "free" and nudged):
            return np.full(sol.omega.shape, np.nan)
        worst = orbit_floquet(problem, sol).max_nontrivial
        bad = np.flatnonzero(worst > 1.0 + 1e-6)
        if bad.size:
            i = int(bad[0])
            raise UnstableOrbitError(
                f"the autonomous orbit of sample {i} is unstable: nontrivial Floquet multiplier "
                f"of modulus {worst[i]:.6f} > 1",
                sample=i,
                multiplier=float(worst[i]),
                samples=tuple(int(j) for j in bad),
            )
        return worst

    async def measure(self) -> OrbitObservation:
        """Solve every sample's orbit under the current parameters, inputs, constraint and nudge;
        `SteadyStateError` / `UnstableOrbitError` name the samples without one."""
        load = self._require_input()
        assert self._u is not None
        B = load.batch
        con = self._constraint if self._constraint is not None else self._set_point(B)
        if self._nudge is not None:
            load = load.plus_cost(*self._nudge)
        problem, sol = self.solve(self._alpha, self._u, load, con)
        free = self._nudge is None and self._constraint is None
        worst = self._check_floquet(problem, sol, not free)
        if free:
            self._store(self._u, sol)
        self.experiments += B
        self.last_solution, self.last_problem = sol, problem
        settle = SettleInfo(np.zeros(B), np.asarray(sol.residual, dtype=float), np.ones(B, bool))
        meta: dict[str, object] = {
            "level": str(self.level),
            "newton_iterations": sol.iterations.copy(),
            "max_floquet_multiplier": worst,
            "unfolding": sol.eps.copy(),
        }
        return OrbitObservation(
            np.arange(self.n) / self.n,
            sol.x.copy(),
            ORBIT_CYCLE,
            1,
            "m",
            0.0,
            settle,
            meta,
            orbit_period_s=sol.period_s.copy(),
            energy=sol.energy.copy(),
            action=sol.action.copy(),
            constraint=con.kind,
        )

    def _store(self, u: Array, sol: OrbitSolution) -> None:
        for i, key in enumerate(_keys(u)):
            self._cache[key] = (
                self._alpha.copy(),
                sol.x[i].copy(),
                np.asarray(sol.omega[i]).copy(),
            )
            self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # ------------------------------------------------------------------ twin-only
    def sensitivity(self, alpha: Array, u: Array, task: Task) -> OrbitSensitivity:
        """The free orbits at (α, u) at the set point, linearised with ``task``'s cost (counted as
        experiments; warm-started as `measure`)."""
        a, uu = self._check_alpha(alpha), self._check_u(u)
        check_task(self, task, uu.shape[0])
        problem, sol = self.solve(a, uu, input_load(self.spec, uu), self._set_point(uu.shape[0]))
        self._store(uu, sol)
        self.experiments += int(uu.shape[0])
        w, y = static_cost(task)
        B = uu.shape[0]
        cost = OrbitCost(
            np.broadcast_to(w, (B, self.n_nodes)).copy(),
            np.broadcast_to(y, (B, self.n_nodes)).copy(),
        )
        return OrbitSensitivity(problem, sol, cost)

    def exact_gradient(self, alpha: Array, u: Array, task: Task) -> tuple[Array, Array]:
        """(dC/dα (B,P), C (B,)) with the set point's constraint held, C the task's
        normalisation (`OrbitTask`; a plain `Task`: averaged)."""
        kind = task.normalisation if isinstance(task, OrbitTask) else "averaged"
        sens = self.sensitivity(alpha, u, task)
        return sens.adjoint_gradient(kind), orbit_cost(sens.sol, sens.cost, kind)

    async def floquet_check(
        self, alpha: Array, u: Array, task: Task, method: str = "full"
    ) -> Array:
        """Largest nontrivial |Floquet multiplier| per sample (B,) of the free orbits at (α, u)
        (always from the reduced monodromy: ``method`` is accepted for `StabilityCheck`)."""
        await self.set_parameters(alpha)
        await self.set_input(u)
        await self.measure()
        assert self.last_problem is not None and self.last_solution is not None
        return np.asarray(
            orbit_floquet(self.last_problem, self.last_solution).max_nontrivial, dtype=float
        )


def check_energy_feasible(problem: AutonomousProblem, energy: Array) -> None:
    """Raise `SteadyStateError` for samples whose static equilibrium lies at or above ``energy``."""
    x_eq = static_equilibrium(problem)
    e_eq = np.mean(problem.potential(x_eq[:, None, :]), axis=1)
    bad = np.flatnonzero(energy <= e_eq)
    if bad.size:
        i = int(bad[0])
        raise SteadyStateError(
            f"energy {energy[i]:.6g} of sample {i} is below its equilibrium's {e_eq[i]:.6g}",
            sample=i,
            samples=tuple(int(j) for j in bad),
        )
