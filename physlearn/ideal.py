"""`IdealSystem`: the ideal twin (fidelity level 1) behind the `PhysicalSystem` interface.

Direct physics in float64, no instruments: every `measure()` solves the periodic steady state of
the network for the parameters, inputs and extra forces last set (Newton–Krylov spectral
collocation, `physlearn.simulators.periodic`), checks that the orbit attracts (Floquet
multipliers), and returns one period of it as an `Observation` on the collocation grid.

Warm starts. A bench settles from whatever state it was in; the twin starts Newton from the last
*free* orbit measured for the same input vector (any parameters), falling back to a cold start
(the linear response at rest) if the warm start fails. Nudged phases (extra forces set) start from
that free orbit too, as the bench reaches them from the free state. Only free orbits are cached,
per input vector, in a bounded LRU cache.

Twin-only extras, for the `adjoint` estimator, tests and benchmarks: `sensitivity()` and
`exact_gradient()` give the exact adjoint gradient of a `Task`'s cost at the free orbit.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError, LimitError, SolverError
from physlearn.network import NetworkSpec
from physlearn.simulators.excitation import GridExcitation, SampledWaveform, build_excitation
from physlearn.simulators.gradients import PeriodicSensitivity
from physlearn.simulators.model import NetworkModel
from physlearn.simulators.periodic import PeriodicSolution, solve_periodic
from physlearn.simulators.spectral import PeriodicGrid
from physlearn.system import ForceWaveform, Observation, PhysicalSystem, SettleInfo
from physlearn.task import Task

log = logging.getLogger(__name__)
Array = NDArray[np.float64]

FloquetMode = Literal["all", "free", "none"]


class IdealSystem(PhysicalSystem):
    """The ideal twin of a periodic network spec.

    Args:
        spec: the network (``boundary.kind`` must be ``periodic``).
        points_per_period: odd number of collocation points per drive period.
        floquet: which steady states get their Floquet multipliers checked: ``all`` (default;
            unstable orbits raise `UnstableOrbitError`), ``free`` (free phases only: nudged
            orbits at small β share the free orbit's stability to O(β)), or ``none``.
        tol: relative residual at which Newton stops.
        cache_size: free orbits kept for warm starts (one per input vector).
    """

    def __init__(
        self,
        spec: NetworkSpec,
        points_per_period: int = 65,
        *,
        floquet: FloquetMode = "all",
        tol: float = 1e-12,
        cache_size: int = 4096,
    ):
        if spec.boundary.kind != "periodic":
            raise ConfigError(
                f"boundary.kind: the ideal system needs a periodic network, got {spec.boundary.kind!r}"
            )
        if (
            not isinstance(points_per_period, int)
            or points_per_period < 3
            or points_per_period % 2 == 0
        ):
            raise ConfigError(
                f"points_per_period: must be an odd integer ≥ 3, got {points_per_period!r}"
            )
        if floquet not in ("all", "free", "none"):
            raise ConfigError(f"floquet: must be 'all', 'free' or 'none', got {floquet!r}")
        self.spec = spec
        self.model = NetworkModel.from_spec(spec)
        self.grid = PeriodicGrid(points_per_period, spec.period_s)
        self.floquet: FloquetMode = floquet
        self.tol = float(tol)
        self.cache_size = int(cache_size)
        self.experiments = 0
        self._alpha = spec.initial_parameters()
        self._lower, self._upper = spec.parameter_bounds()
        self._u: Array | None = None
        self._exc: GridExcitation | None = None
        self._force: Array | None = None
        self._cache: OrderedDict[bytes, tuple[Array, Array]] = OrderedDict()
        self.last_solution: PeriodicSolution | None = None

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
    def period_s(self) -> float:
        return self.spec.period_s

    @property
    def actuated_nodes(self) -> list[int]:
        """The twin can push on every node."""
        return list(range(self.n_nodes))

    @property
    def parameters(self) -> Array:
        """The parameters α (P,) currently set (a copy)."""
        return self._alpha.copy()

    @property
    def batch(self) -> int:
        """Samples in the input batch currently set (0 before any `set_input`)."""
        return 0 if self._u is None else int(self._u.shape[0])

    # ------------------------------------------------------------------ settings
    def _check_alpha(self, alpha: Array) -> Array:
        a = np.asarray(alpha, dtype=float)
        if a.shape != (self.n_params,):
            raise ConfigError(
                f"parameters: expected shape ({self.n_params},) "
                f"({', '.join(self.spec.parameter_names())}), got {a.shape}"
            )
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
            raise ConfigError(
                f"inputs: expected shape (batch, {self.n_inputs}) for input nodes "
                f"{self.spec.inputs.nodes}, got {a.shape}"
            )
        if not np.all(np.isfinite(a)):
            raise LimitError("inputs: refusing NaN or inf input values")
        return a.copy()

    async def set_parameters(self, alpha: Array) -> None:
        """Set α (P,); refuses a wrong shape (ConfigError), non-finite or out-of-bounds values
        (LimitError) before changing anything."""
        self._alpha = self._check_alpha(alpha)

    async def set_input(self, u: Array) -> None:
        """Set the input batch u (B, n_in), encoded into drive forces/clamps as the spec says.

        Removes any extra force waveform (it belonged to the previous batch).
        """
        a = self._check_u(u)
        exc = build_excitation(self.spec, inputs=a).on_grid(self.grid.t)
        exc = _take_batch(exc, a.shape[0])
        self._u, self._exc, self._force = a, exc, None

    async def set_forces(self, forces: ForceWaveform | None) -> None:
        """Add force waveforms (B or 1, M, d) over one period; resampled onto the collocation
        grid by trigonometric interpolation when M differs from the grid size."""
        if forces is None:
            self._force = None
            return
        exc = self._require_input()
        B, N, d = exc.force.shape
        s = forces.samples
        if s.ndim != 3 or s.shape[2] != d or s.shape[0] not in (1, B) or s.shape[1] < 1:
            raise ConfigError(
                f"forces: expected samples of shape ({B} or 1, M, {d}), got {s.shape}"
            )
        if not np.all(np.isfinite(s)):
            raise LimitError("forces: refusing a waveform with NaN or inf samples")
        if not np.isclose(forces.period_s, self.period_s, rtol=1e-9, atol=0.0):
            raise ConfigError(
                f"forces: waveform period {forces.period_s} s differs from the drive period "
                f"{self.period_s} s"
            )
        if s.shape[1] == N:
            f = np.asarray(s, dtype=float)
        else:
            f = SampledWaveform(np.asarray(s, dtype=float), self.period_s, "spectral")(self.grid.t)
        self._force = np.ascontiguousarray(np.broadcast_to(f, (B, N, d)), dtype=float)

    async def drive_peak(self) -> Array:
        exc = self._require_input()
        peak = np.max(np.abs(exc.force), axis=(1, 2))
        clamp = np.max(np.abs(exc.clamp_weight * exc.clamp_target), axis=(1, 2))
        return np.asarray(np.maximum(peak, clamp), dtype=float)

    def _require_input(self) -> GridExcitation:
        if self._exc is None:
            raise ConfigError("no input set: call set_input(u) before forces or measurements")
        return self._exc

    # ------------------------------------------------------------------ steady states
    def _warm_start(self, u: Array) -> Array | None:
        x0 = np.zeros((u.shape[0], self.grid.n, self.n_nodes))
        hit = False
        for i, key in enumerate(_keys(u)):
            entry = self._cache.get(key)
            if entry is not None:
                x0[i] = entry[1]
                hit = True
        return x0 if hit else None

    def _store(self, u: Array, alpha: Array, x: Array) -> None:
        for i, key in enumerate(_keys(u)):
            self._cache[key] = (alpha.copy(), x[i].copy())
            self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _solve(
        self, alpha: Array, u: Array, exc: GridExcitation, force: Array | None
    ) -> PeriodicSolution:
        if force is not None:
            exc = GridExcitation(
                exc.force + force, exc.clamp_weight, exc.clamp_target, exc.cost_weight, exc.target
            )
        check = self.floquet == "all" or (self.floquet == "free" and force is None)
        fl: Literal["full", "none"] = "full" if check else "none"
        theta = self.model.full_theta(alpha, batch=u.shape[0])
        x0 = self._warm_start(u)
        if x0 is not None:
            try:
                return solve_periodic(
                    self.model, theta, exc, self.grid, x0=x0, tol=self.tol, floquet=fl
                )
            except SolverError as err:
                log.info("warm-started steady state failed (%s); retrying from rest", err)
        return solve_periodic(self.model, theta, exc, self.grid, tol=self.tol, floquet=fl)

    def _free_solution(self, alpha: Array, u: Array, exc: GridExcitation) -> PeriodicSolution:
        sol = self._solve(alpha, u, exc, None)
        self._store(u, alpha, sol.x)
        return sol

    async def measure(self) -> Observation:
        """Solve every sample's periodic steady state; raises `SteadyStateError` or
        `UnstableOrbitError` (physlearn.errors) if a sample has no attracting steady state."""
        exc = self._require_input()
        assert self._u is not None
        if self._force is None:
            sol = self._free_solution(self._alpha, self._u, exc)
        else:
            sol = self._solve(self._alpha, self._u, exc, self._force)
        self.experiments += int(self._u.shape[0])
        self.last_solution = sol
        B = sol.x.shape[0]
        settle = SettleInfo(np.zeros(B), np.asarray(sol.residual, dtype=float), np.ones(B, bool))
        meta: dict[str, object] = {
            "level": "ideal",
            "newton_iterations": np.asarray(sol.iterations).copy(),
            "max_floquet_multiplier": sol.max_multiplier,
        }
        return Observation(
            self.grid.t.copy(),
            sol.x.copy(),
            self.period_s,
            1,
            "m",
            0.0,
            settle,
            meta,
        )

    # ------------------------------------------------------------------ twin-only: exact gradients
    def task_excitation(self, u: Array, task: Task) -> GridExcitation:
        """The grid excitation of inputs u with the cost weight γ(t) and targets y(t) of ``task``."""
        a = self._check_u(u)
        check_task(self, task, a.shape[0])
        exc = _take_batch(build_excitation(self.spec, inputs=a).on_grid(self.grid.t), a.shape[0])
        t = self.grid.t
        B, N, d = exc.force.shape
        w = np.broadcast_to(task.cost_weight(t)[None], (B, N, d))
        y = np.broadcast_to(task.target(t), (B, N, d))
        return GridExcitation(
            exc.force, exc.clamp_weight, exc.clamp_target, np.array(w), np.array(y)
        )

    def sensitivity(self, alpha: Array, u: Array, task: Task) -> PeriodicSensitivity:
        """The free steady state at (α, u) linearised, with ``task``'s cost (twin only).

        Solves the free orbit through the same warm-started path as `measure()` (so it is the
        orbit an estimator measures) and counts its experiments.
        """
        a = self._check_alpha(alpha)
        uu = self._check_u(u)
        exc = self.task_excitation(uu, task)
        sol = self._free_solution(a, uu, exc)
        self.experiments += int(uu.shape[0])
        theta = self.model.full_theta(a, batch=uu.shape[0])
        return PeriodicSensitivity(self.model, theta, exc, sol)

    def exact_gradient(self, alpha: Array, u: Array, task: Task) -> tuple[Array, Array]:
        """(dC/dα (B,P), C (B,)) of ``task``'s steady-state cost by the adjoint method (twin only)."""
        sens = self.sensitivity(alpha, u, task)
        cost = task.cost(sens.sol.x, self.grid.t, self.grid.dt)
        return sens.adjoint_gradient(), cost


def _keys(u: Array) -> list[bytes]:
    return [np.ascontiguousarray(row, dtype=float).tobytes() for row in u]


def _take_batch(exc: GridExcitation, batch: int) -> GridExcitation:
    """Broadcast every field of a grid excitation to ``batch`` samples (fields of batch 1 or B)."""

    def b(a: Array) -> Array:
        return np.ascontiguousarray(np.broadcast_to(a, (batch, *a.shape[1:])))

    return GridExcitation(
        b(exc.force), b(exc.clamp_weight), b(exc.clamp_target), b(exc.cost_weight), b(exc.target)
    )


def check_task(system: PhysicalSystem, task: Task, batch: int) -> None:
    """A task must describe the system's nodes and drive period, for 1 or ``batch`` samples."""
    if task.n_nodes != system.n_nodes:
        raise ConfigError(f"task: {task.n_nodes} nodes, the system has {system.n_nodes}")
    if not np.isclose(task.period_s, system.period_s, rtol=1e-9, atol=0.0):
        raise ConfigError(
            f"task: period {task.period_s} s differs from the system's {system.period_s} s"
        )
    y = np.asarray(task.targets(np.zeros(1)))
    if y.ndim != 3 or y.shape[0] not in (1, batch):
        raise ConfigError(
            f"task: targets of shape {y.shape} for an input batch of {batch} samples "
            "(expected (1 or batch, time, n_out))"
        )
