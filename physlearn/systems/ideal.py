"""`IdealSystem`: the ideal twin (fidelity level 1) behind the `PhysicalSystem` interface.

Direct physics in float64, no instruments: every `measure()` solves the periodic steady state of
the network for the parameters, inputs and extra forces last set (Newton–Krylov spectral
collocation, `physlearn.simulators.periodic`), checks that the orbit attracts (Floquet
multipliers), and returns one period of it as an `Observation` on the collocation grid.

Warm starts. A bench settles from whatever state it was in; the twin starts Newton from the last
*free* orbit measured for the same input vector (any parameters), falling back to a cold start
(the linear response at rest) if the warm start fails. Nudged phases (extra forces set) start from
that free orbit too, as the bench reaches them from the free state, with its preconditioner (the
inverse time-averaged Jacobian: the nudge moves it by O(β); this changes the orbits only within
the solver tolerance); a nudge repeated around the same free orbit starts from its own orbit.
Only free orbits are cached, per input vector, in a bounded LRU cache.

Echo dynamics (`set_echo_drive`, for the ``ep_echo`` estimator; docs/physics.md). While an echo
drive is set, the input drive is replaced by it, and μ(t), ν(t) and the clamp δ(t), u(t) run
time-reversed (the model's modulations are wrapped by `TimeReversed`; the solver is unchanged).
With ``echo_settle="integrate"`` (default) the echo steady state is reached as a bench reaches it:
RK4 integration (`physlearn.simulators.integrator`) from the state the twin was in — the last
orbit measured, at t = 0 (x(0), ẋ(0)); normally the free orbit — over whole periods until the
period-to-period change falls below ``echo_settle_rtol``, then polished by Newton from the
integrated orbit (so the final accuracy does not depend on the RK4 step). The settle time is
reported in `SettleInfo.waited_s`. A system that lands on another attractor is therefore seen to
do so. Nudged echo phases (extra forces set on top of the echo drive) start Newton from the echo
orbit last measured, a small perturbation of the attractor the system is on. With
``echo_settle="newton"`` (faster; for benchmarks) every echo phase starts Newton from the echo
orbit, or from the time-reversed last orbit: it cannot see attractor changes.

Learning-phase feedback (`set_feedback`, for ``ep_asymmetric``): a linear force G(t)(x − r(t))
added to the dynamics (normal or echo). Its phases start Newton from the orbit the feedback is
taken around (the echo orbit when an echo drive is set, else the free orbit of these inputs).

Twin-only extras, for the `adjoint` estimator, tests and benchmarks: `sensitivity()` and
`exact_gradient()` give the exact adjoint gradient of a `Task`'s cost at the free orbit
(`ExactGradients`); `floquet_check()` the Floquet multipliers of the free orbits it settles on
(`StabilityCheck`, the trainer's final stability report).
"""

from __future__ import annotations

import dataclasses
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
)
from physlearn.simulators.excitation import (
    Excitation,
    GridExcitation,
    build_excitation,
)
from physlearn.simulators.feedback import Feedback
from physlearn.simulators.floquet import floquet_multipliers
from physlearn.simulators.gradients import PeriodicSensitivity
from physlearn.simulators.integrator import Integrator, State
from physlearn.simulators.periodic import PeriodicSolution, Preconditioner, solve_periodic
from physlearn.simulators.spectral import PeriodicGrid
from physlearn.spec.model import NetworkModel
from physlearn.spec.modulation import ModulationFn
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import (
    ForceWaveform,
    Level,
    LinearFeedback,
    Observation,
    PhysicalSystem,
    SettleInfo,
)
from physlearn.spec.task import Task, check_task
from physlearn.spec.waveform import SampledWaveform

log = logging.getLogger(__name__)
Array = NDArray[np.float64]

FloquetMode = Literal["all", "free", "none"]
EchoSettle = Literal["integrate", "newton"]


@dataclasses.dataclass(frozen=True)
class TimeReversed:
    """The modulation ``inner`` run backwards: f(−t) (periodic modulations stay periodic)."""

    inner: ModulationFn

    def __call__(self, t: Array, period_s: float | None) -> Array:
        return self.inner(-np.asarray(t, dtype=float), period_s)


class _PeriodicTable:
    """A periodic waveform tabulated at the half-steps of an RK4 integrator, looked up by time.

    ``values`` (B, K, d) at t_k = k·period/K; evaluation at t (N,) takes the nearest table entry,
    exact at the integrator's stage times (multiples of the half-step).
    """

    def __init__(self, values: Array, period_s: float):
        self.values, self.period_s = values, float(period_s)
        self.k = values.shape[1]

    def __call__(self, t: Array) -> Array:
        if np.size(t) == 1:  # the integrator's stage times: a view, no copy
            i = round(float(np.ravel(t)[0]) % self.period_s / self.period_s * self.k) % self.k
            return self.values[:, i : i + 1, :]
        pos = np.mod(np.asarray(t, dtype=float), self.period_s) / self.period_s * self.k
        return self.values[:, np.rint(pos).astype(np.intp) % self.k, :]


def _check_options(
    spec: NetworkSpec,
    points_per_period: int,
    floquet: str,
    echo_settle: str,
    echo_substeps: int,
    echo_settle_rtol: float,
    echo_max_periods: int,
) -> None:
    """`IdealSystem`'s arguments, each refused with a `ConfigError` that names it."""
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
    if echo_settle not in ("integrate", "newton"):
        raise ConfigError(f"echo_settle: must be 'integrate' or 'newton', got {echo_settle!r}")
    for name, value in (
        ("echo_substeps", echo_substeps),
        ("echo_max_periods", echo_max_periods),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: must be a positive integer, got {value!r}")
    if not (isinstance(echo_settle_rtol, int | float) and 0 < echo_settle_rtol < 1):
        raise ConfigError(f"echo_settle_rtol: must be in (0, 1), got {echo_settle_rtol!r}")


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
        echo_settle: how the unnudged echo steady state is reached (module docstring):
            ``integrate`` (default; RK4 from the current state, then Newton) or ``newton``.
        echo_substeps: RK4 steps per collocation interval when integrating the echo.
        echo_settle_rtol: relative period-to-period change (max norm over the period, relative to
            the orbit's peak) at which the integrated echo counts as settled.
        echo_max_periods: periods integrated before `SteadyStateError` is raised.
    """

    level = Level.IDEAL

    def __init__(
        self,
        spec: NetworkSpec,
        points_per_period: int = 65,
        *,
        floquet: FloquetMode = "all",
        tol: float = 1e-12,
        cache_size: int = 4096,
        echo_settle: EchoSettle = "integrate",
        echo_substeps: int = 2,
        echo_settle_rtol: float = 1e-5,
        echo_max_periods: int = 5000,
    ):
        _check_options(
            spec,
            points_per_period,
            floquet,
            echo_settle,
            echo_substeps,
            echo_settle_rtol,
            echo_max_periods,
        )
        self.spec = spec
        self.model = NetworkModel.from_spec(spec)
        # Echo dynamics: μ(−t), ν(−t) (the model only calls them as f(t, period_s)).
        self.echo_model = dataclasses.replace(
            self.model,
            mu=TimeReversed(self.model.mu),
            nu=TimeReversed(self.model.nu),
        )
        self.echo_settle: EchoSettle = echo_settle
        self.echo_substeps = int(echo_substeps)
        self.echo_settle_rtol = float(echo_settle_rtol)
        self.echo_max_periods = int(echo_max_periods)
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
        self._echo: Array | None = None  # echo drive on the grid (B,N,d)
        self._echo_orbit: Array | None = None  # last unnudged echo steady state
        self._feedback: Feedback | None = None  # learning-phase feedback on the grid
        self._last_x: Array | None = None  # the state the twin is in: last orbit measured
        self._cache: OrderedDict[bytes, tuple[Array, Array]] = OrderedDict()
        self.last_solution: PeriodicSolution | None = None
        # the last free solve (α, u, solution) and the last nudged one around it (force, orbit)
        self._free: tuple[Array, Array, PeriodicSolution] | None = None
        self._nudged: tuple[Array, Array] | None = None

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

        Removes any extra force waveform and echo drive (they belonged to the previous batch).
        """
        a = self._check_u(u)
        exc = build_excitation(self.spec, inputs=a).on_grid(self.grid.t)
        exc = _take_batch(exc, a.shape[0])
        self._u, self._exc, self._force = a, exc, None
        self._echo, self._echo_orbit, self._last_x = None, None, None
        self._feedback = None

    async def set_forces(self, forces: ForceWaveform | None) -> None:
        """Add force waveforms (B or 1, M, d) over one period; resampled onto the collocation
        grid by trigonometric interpolation when M differs from the grid size."""
        if forces is None:
            self._force = None
            return
        self._force = self._on_grid(forces, "forces")

    def _on_grid(self, forces: ForceWaveform, what: str, width: int | None = None) -> Array:
        """A force waveform checked against the batch and period, resampled onto the grid
        (``width``: values per sample and time, default one per node)."""
        exc = self._require_input()
        B, N, d = exc.force.shape
        d = d if width is None else width
        s = forces.samples
        if s.ndim != 3 or s.shape[2] != d or s.shape[0] not in (1, B) or s.shape[1] < 1:
            raise ConfigError(
                f"{what}: expected samples of shape ({B} or 1, M, {d}), got {s.shape}"
            )
        if not np.all(np.isfinite(s)):
            raise LimitError(f"{what}: refusing a waveform with NaN or inf samples")
        if not np.isclose(forces.period_s, self.period_s, rtol=1e-9, atol=0.0):
            raise ConfigError(
                f"{what}: waveform period {forces.period_s} s differs from the drive period "
                f"{self.period_s} s"
            )
        if s.shape[1] == N:
            f = np.asarray(s, dtype=float)
        else:
            f = SampledWaveform(np.asarray(s, dtype=float), self.period_s, "spectral")(self.grid.t)
        return np.ascontiguousarray(np.broadcast_to(f, (B, N, d)), dtype=float)

    async def drive_forces(self) -> Array:
        """The input drive forces and fixed tones (B, N, d) on the collocation grid (a copy);
        clamps are not forces and are not included."""
        return self._require_input().force.copy()

    async def set_echo_drive(self, drive: ForceWaveform | None) -> None:
        """Replace the input drive by ``drive`` (B or 1, M, d) and run μ, ν and the clamp
        time-reversed (None: back to normal). Resampled onto the grid like `set_forces`."""
        if drive is None:
            self._echo, self._echo_orbit = None, None
            return
        self._echo = self._on_grid(drive, "echo drive")
        self._echo_orbit = None

    @property
    def feedback_pairs(self) -> frozenset[tuple[int, int]]:
        """The twin can feed any node back to any node."""
        d = self.n_nodes
        return frozenset((i, j) for i in range(d) for j in range(d))

    async def set_feedback(self, feedback: LinearFeedback | None) -> None:
        """Add the learning-phase force G(t)(x − r(t)) (resampled onto the grid), or remove it."""
        if feedback is None:
            self._feedback = None
            return
        g, r, d = feedback.gain, feedback.reference, self.n_nodes
        if g.shape[2] != d:
            raise ConfigError(f"feedback gain: expected {d} nodes, got {g.shape[2]}")
        flat = ForceWaveform(
            np.ascontiguousarray(g.reshape(*g.shape[:2], d * d)), feedback.period_s
        )
        gain = self._on_grid(flat, "feedback gain", d * d)
        ref = self._on_grid(ForceWaveform(r, feedback.period_s), "feedback reference")
        self._feedback = Feedback(gain.reshape(*ref.shape, d), ref)

    async def drive_peak(self) -> Array:
        exc = self._require_input()
        peak = np.max(np.abs(exc.force), axis=(1, 2))
        clamp = np.max(np.abs(exc.clamp_weight * exc.clamp_target), axis=(1, 2))
        return np.asarray(np.maximum(peak, clamp), dtype=float)

    def _require_input(self) -> GridExcitation:
        if self._exc is None:
            raise ConfigError("no input set: call set_input(u) before forces or measurements")
        return self._exc

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Array]:
        """The twin's memory of its past steady states — the warm-start cache, in LRU order:
        inputs (n, n_in), parameters (n, P) and free orbits (n, N, d) — for a training checkpoint,
        so that a resumed run starts Newton where the uninterrupted one would have."""
        keys = list(self._cache)
        n_in, n_p, shape = self.n_inputs, self.n_params, (self.grid.n, self.n_nodes)
        return {
            "inputs": np.array([np.frombuffer(k, dtype=float) for k in keys]).reshape(-1, n_in),
            "alphas": np.array([self._cache[k][0] for k in keys]).reshape(-1, n_p),
            "orbits": np.array([self._cache[k][1] for k in keys]).reshape(-1, *shape),
        }

    def load_state_dict(self, state: dict[str, Array]) -> None:
        """Restore a :meth:`state_dict` (replaces the warm-start cache)."""
        u, a, x = (np.asarray(state[k], dtype=float) for k in ("inputs", "alphas", "orbits"))
        if x.shape[1:] != (self.grid.n, self.n_nodes) or a.shape[1:] != (self.n_params,):
            raise ConfigError(
                f"twin state: orbits {x.shape[1:]} / parameters {a.shape[1:]} do not fit this "
                f"twin ({self.grid.n}, {self.n_nodes}) / ({self.n_params},)"
            )
        self._cache.clear()
        for key, ai, xi in zip(_keys(u), a, x, strict=True):
            self._cache[key] = (ai.copy(), xi.copy())

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
        fb = self._feedback
        check = self.floquet == "all" or (self.floquet == "free" and force is None and fb is None)
        fl: Literal["full", "none"] = "full" if check else "none"
        theta = self.model.full_theta(alpha, batch=u.shape[0])
        x0 = self._warm_start(u)
        pc = None
        if force is not None and fb is None:
            x0, pc = self._nudge_start(alpha, u, force, x0)
        if fb is not None:  # a learning phase: from the orbit the feedback is taken around
            return solve_periodic(
                self.model,
                theta,
                exc,
                self.grid,
                x0=fb.reference,
                tol=self.tol,
                floquet=fl,
                feedback=fb,
            )
        if x0 is not None:
            try:
                sol = solve_periodic(
                    self.model,
                    theta,
                    exc,
                    self.grid,
                    x0=x0,
                    tol=self.tol,
                    floquet=fl,
                    preconditioner=pc,
                )
                if pc is not None and force is not None:
                    self._nudged = (force.copy(), sol.x)
                return sol
            except SteadyStateError as err:
                log.info("warm-started steady state failed (%s); retrying from rest", err)
                if err.samples:
                    sol = self._retry_from_rest(theta, exc, x0, err.samples, fl)
                    if sol is not None:
                        return sol
            except SolverError as err:
                log.info("warm-started steady state failed (%s); retrying from rest", err)
        return solve_periodic(self.model, theta, exc, self.grid, tol=self.tol, floquet=fl)

    def _nudge_start(
        self, alpha: Array, u: Array, force: Array, x0: Array | None
    ) -> tuple[Array | None, Preconditioner | None]:
        """Warm start and preconditioner of a nudged phase (extra ``force``, no feedback) taken
        right after the free phase at the same (α, u): the free orbit with its preconditioner
        (its time-averaged Jacobian; the nudge moves it by O(β)), or, for the force of the last
        nudged phase around it again (drift-cancelling repeats), that phase's orbit.

        A nudge opposite to the last one is *not* started from the extrapolation
        2 x_free − x_last (O(β²) off, one Newton iteration less): that start does not carry the
        free orbit's own residual correction, which starting both nudges from x_free cancels in
        (x₊ − x₋)/2β — measured, Vector-Field EP's exact zeros upstream of a feedforward
        network's outputs grew from < 1e-12 to 1.8e-12 of the gradient
        (tests/estimators/test_ep_asymmetric.py)."""
        free = self._free
        if free is None or not (np.array_equal(free[0], alpha) and np.array_equal(free[1], u)):
            return x0, None
        last = self._nudged
        if last is not None and np.array_equal(last[0], force):
            return last[1], free[2].preconditioner
        return free[2].x, free[2].preconditioner

    def _retry_from_rest(
        self,
        theta: Array,
        exc: GridExcitation,
        x0: Array,
        samples: tuple[int, ...],
        fl: Literal["full", "none"],
    ) -> PeriodicSolution | None:
        """Solve the ``samples`` that stalled from a warm start again from rest, by themselves,
        then the batch from the warm start with their new orbits. Raises `SteadyStateError`
        (batch indices) if they stall from rest too; None if the batch's orbit is then unstable
        (the caller solves the whole batch from rest)."""
        idx = np.asarray(samples, dtype=np.intp)
        try:
            sub = solve_periodic(
                self.model, theta[idx], exc.take(idx), self.grid, tol=self.tol, floquet="none"
            )
        except SteadyStateError as err:
            bad = tuple(int(idx[i]) for i in err.samples) or tuple(int(i) for i in idx)
            raise SteadyStateError(
                f"periodic steady state did not converge for sample {bad[0]}, neither warm-"
                f"started nor from rest (relative residual {err.residual:.3e} > tol "
                f"{self.tol:.1e}); {len(bad)} sample(s) of {theta.shape[0]} without one",
                sample=bad[0],
                residual=err.residual,
                samples=bad,
            ) from None
        x0 = x0.copy()
        x0[idx] = sub.x
        try:
            return solve_periodic(
                self.model, theta, exc, self.grid, x0=x0, tol=self.tol, floquet=fl
            )
        except UnstableOrbitError:
            return None

    def _free_solution(self, alpha: Array, u: Array, exc: GridExcitation) -> PeriodicSolution:
        sol = self._solve(alpha, u, exc, None)
        self._store(u, alpha, sol.x)
        self._free, self._nudged = (alpha.copy(), u.copy(), sol), None
        return sol

    async def measure(self) -> Observation:
        """Solve every sample's periodic steady state; raises `SteadyStateError` or
        `UnstableOrbitError` (physlearn.errors) if a sample has no attracting steady state."""
        exc = self._require_input()
        assert self._u is not None
        B = self._u.shape[0]
        settle = None
        if self._echo is not None:
            sol, settle = self._echo_solution(exc)
        elif self._force is None and self._feedback is None:
            sol = self._free_solution(self._alpha, self._u, exc)
        else:
            sol = self._solve(self._alpha, self._u, exc, self._force)
        self.experiments += int(B)
        self.last_solution = sol
        self._last_x = sol.x.copy()
        if settle is None:
            settle = SettleInfo(
                np.zeros(B), np.asarray(sol.residual, dtype=float), np.ones(B, bool)
            )
        meta: dict[str, object] = {
            "level": str(self.level),
            "echo": self._echo is not None,
            "feedback": self._feedback is not None,
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

    # ------------------------------------------------------------------ echo dynamics
    def _echo_excitation(self, exc: GridExcitation) -> GridExcitation:
        """Echo drive (+ extra forces) replacing the input drive; clamp δ, u time-reversed."""
        assert self._echo is not None
        force = self._echo if self._force is None else self._echo + self._force
        g = self.grid
        return GridExcitation(
            force,
            g.reverse(exc.clamp_weight),
            g.reverse(exc.clamp_target),
            exc.cost_weight,
            exc.target,
        )

    def _current_state(self) -> Array:
        """The orbit the twin is on: the last one measured, else the cached free orbit of these
        inputs, else rest."""
        if self._last_x is not None:
            return self._last_x
        assert self._u is not None
        x0 = self._warm_start(self._u)
        return np.zeros((self._u.shape[0], self.grid.n, self.n_nodes)) if x0 is None else x0

    def _echo_solution(self, exc: GridExcitation) -> tuple[PeriodicSolution, SettleInfo | None]:
        assert self._u is not None
        ex = self._echo_excitation(exc)
        B = self._u.shape[0]
        nudged = self._force is not None or self._feedback is not None
        check = self.floquet == "all" or (self.floquet == "free" and not nudged)
        fl: Literal["full", "none"] = "full" if check else "none"
        theta = self.model.full_theta(self._alpha, batch=B)
        settle = None
        if self._feedback is not None:  # a learning phase: from the orbit it is taken around
            x0 = self._feedback.reference if self._echo_orbit is None else self._echo_orbit
        elif self._echo_orbit is not None and (nudged or self.echo_settle == "newton"):
            x0 = self._echo_orbit
        elif self.echo_settle == "integrate":
            x0, settle = self._integrate(self.echo_model, theta, ex, self._current_state())
        else:
            x0 = self.grid.reverse(self._current_state())
        sol = solve_periodic(
            self.echo_model,
            theta,
            ex,
            self.grid,
            x0=x0,
            tol=self.tol,
            floquet=fl,
            feedback=self._feedback,
        )
        if not nudged:
            self._echo_orbit = sol.x.copy()
        return sol, settle

    def _integrate(
        self, model: NetworkModel, theta: Array, exc: GridExcitation, start: Array
    ) -> tuple[Array, SettleInfo]:
        """Integrate (RK4) from the state (x(0), ẋ(0)) of the orbit ``start`` (B,N,d) over whole
        periods until the orbit changes by less than ``echo_settle_rtol`` (relative, max norm)
        from one period to the next; returns the last period on the grid and the settle info."""
        g, k = self.grid, self.echo_substeps
        B, N, d = exc.force.shape
        if np.all(model.damping == 0.0):
            raise SteadyStateError(
                "an undamped network never settles by integration; use echo_settle='newton'"
            )
        half = 0.5 * g.period_s / (N * k)
        t_half = half * np.arange(2 * N * k)

        def table(a: Array) -> _PeriodicTable:
            v = SampledWaveform(np.ascontiguousarray(a), g.period_s, "spectral")(t_half)
            return _PeriodicTable(
                np.ascontiguousarray(np.broadcast_to(v, (B, *v.shape[1:]))), g.period_s
            )

        zeros = _PeriodicTable(np.zeros((1, 1, d)), g.period_s)
        excitation = Excitation(
            B, d, table(exc.force), table(exc.clamp_weight), table(exc.clamp_target), zeros, zeros
        )
        integ = Integrator(model, theta, excitation, dt=2.0 * half)
        state = State(0.0, start[:, 0, :].copy(), g.deriv(start, 1)[:, 0, :].copy())
        prev: Array | None = None
        change = np.full(B, np.inf)
        waited = np.full(B, np.nan)
        for p in range(1, self.echo_max_periods + 1):
            state, _, xs = integ.sample(state, g.period_s, N)
            state = State(0.0, state.x, state.v)  # phase origin again (no growth of t)
            if not np.all(np.isfinite(xs)):
                raise SteadyStateError("the integrated echo diverged (non-finite state)")
            if prev is not None:
                peak = np.maximum(np.max(np.abs(xs), axis=(1, 2)), 1e-300)
                change = np.max(np.abs(xs - prev), axis=(1, 2)) / peak
                waited = np.where(
                    np.isnan(waited) & (change <= self.echo_settle_rtol), p * g.period_s, waited
                )
                if np.all(change <= self.echo_settle_rtol):
                    log.debug("echo settled after %d periods", p)
                    return xs, SettleInfo(waited, change, np.ones(B, bool))
            prev = xs
        i = int(np.argmax(change))
        raise SteadyStateError(
            f"the echo did not settle within {self.echo_max_periods} periods: sample {i} still "
            f"changes by {change[i]:.2e} per period (relative; tolerance "
            f"{self.echo_settle_rtol:.0e})",
            sample=i,
            residual=float(change[i]),
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

    # ------------------------------------------------------------------ twin-only: stability
    async def floquet_check(
        self, alpha: Array, u: Array, task: Task, method: str = "full"
    ) -> Array:
        """Largest |Floquet multiplier| per sample (B,) of the free orbits at (α, u): measured
        as `measure()` measures them (warm-started, counted as experiments), so these are the
        orbits an evaluation saw, not a fresh solve from rest (`StabilityCheck`). ``method``:
        ``"full"`` (RK4 monodromy) or ``"collocation"`` (`simulators.floquet_collocation`)."""
        if method not in ("full", "collocation"):
            raise ConfigError(
                f"floquet_check: method must be 'full' or 'collocation', got {method!r}"
            )
        await self.set_parameters(alpha)
        await self.set_input(u)
        await self.set_forces(None)
        await self.measure()
        sol = self.last_solution
        assert sol is not None
        exc = self.task_excitation(u, task)
        theta = self.model.full_theta(np.asarray(alpha, dtype=float), batch=u.shape[0])
        if method == "collocation":
            from physlearn.simulators.floquet_collocation import collocation_multipliers

            dom = collocation_multipliers(self.model, theta, exc, self.grid, sol.x, 0.0)
            return np.asarray(dom.modulus, dtype=float)
        mult = floquet_multipliers(self.model, theta, exc, self.grid, sol.x, 0.0)
        return np.asarray(np.abs(mult[:, 0]), dtype=float)


def warm_starts(twin: IdealSystem, u: Array) -> dict[bytes, tuple[Array, Array] | None]:
    """The twin's cached free orbits (and their parameters) of the inputs ``u`` (B, n_in), None
    where it has none: what `restore_warm_starts` puts back, so that trial solves at parameters
    a run then does not take leave no trace in later warm starts."""
    return {
        key: None if (e := twin._cache.get(key)) is None else (e[0].copy(), e[1].copy())
        for key in _keys(np.atleast_2d(np.asarray(u, dtype=float)))
    }


def restore_warm_starts(twin: IdealSystem, saved: dict[bytes, tuple[Array, Array] | None]) -> None:
    """Put back the cache entries of a `warm_starts` snapshot (dropping those it lacked)."""
    for key, entry in saved.items():
        if entry is None:
            twin._cache.pop(key, None)
        else:
            twin._cache[key] = (entry[0].copy(), entry[1].copy())


def _keys(u: Array) -> list[bytes]:
    return [np.ascontiguousarray(row, dtype=float).tobytes() for row in u]


def _take_batch(exc: GridExcitation, batch: int) -> GridExcitation:
    """Broadcast every field of a grid excitation to ``batch`` samples (fields of batch 1 or B)."""

    def b(a: Array) -> Array:
        return np.ascontiguousarray(np.broadcast_to(a, (batch, *a.shape[1:])))

    return GridExcitation(
        b(exc.force), b(exc.clamp_weight), b(exc.clamp_target), b(exc.cost_weight), b(exc.target)
    )
