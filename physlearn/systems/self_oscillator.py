"""`SelfOscillatorSystem`: an emulated energy-regulated self-oscillator behind `AutonomousSystem`.

The physical network is lossy (Γ_j > 0 from the spec) and a feedback loop holds its energy at a
set point (`physlearn.simulators.self_oscillator`: loss compensation, proportional and integral
energy feedback, a loop delay and model errors). This is a physics-level emulation — direct time
integration in float64, no instrument emulators or drivers (its `level` is ``ideal``; what a real
bench needs is in docs/physics.md §8) — of how such a bench reaches and measures its orbits:

* the first measurement of a batch prepares each sample as a bench would: the static
  equilibrium, a small kick along the lowest normal mode (the mode shape from the model, as
  calibration would give it), then the loop's set point ramped up to E₀ over ``ramp_periods``
  (a physical continuation along the mode's family);
* every later measurement changes whatever changed (parameters, inputs of the same batch size,
  nudge, set point) along a smooth C² ramp over ``ramp_periods`` periods, holds
  ``settle_periods``, then records ``measure_periods`` cycles and folds them on their measured
  period (`fold_orbit`).

Only the energy constraint exists here (the loop regulates energy); `set_constraint` refuses
``action`` and ``period``. The observation's ``energy`` is the loop's own estimate averaged over
the recording (the quantity it holds), its ``action`` ∫₀ᵀ Σ m ẋ² dt of the folded orbit.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError, GradientError, LimitError
from physlearn.simulators.autonomous import AutonomousProblem
from physlearn.simulators.autonomous_family import linear_modes, static_equilibrium
from physlearn.simulators.self_oscillator import LoopSettings, SelfOscillator, Settings, fold_orbit
from physlearn.spec.autonomous import (
    ORBIT_CYCLE,
    AutonomousOptions,
    AutonomousSystem,
    ConstraintKind,
    OrbitObservation,
    check_autonomous_spec,
    phase_derivative,
    static_cost,
)
from physlearn.spec.model import NetworkModel
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import Level, SettleInfo
from physlearn.spec.task import Task
from physlearn.systems.autonomous import input_load

Array = NDArray[np.float64]


class SelfOscillatorSystem(AutonomousSystem):
    """An emulated energy-regulated self-oscillator (module docstring).

    Args:
        spec: the network as built (damping Γ_j: the physical losses the loop compensates).
        options: the set point (``constraint = "energy"``), mode, points per cycle.
        loop: the loop's gains, delay and model errors.
        steps_per_period: RK4 steps per period of the lowest linear mode at rest (at least; a
            nonzero loop delay shorter than one step refines the step to the delay).
        ramp_periods, settle_periods, measure_periods: the protocol of every measurement.
        kick: the preparation kick's amplitude (of the mode, in node units).
    """

    level = Level.IDEAL

    def __init__(
        self,
        spec: NetworkSpec,
        options: AutonomousOptions,
        loop: LoopSettings,
        *,
        steps_per_period: int = 128,
        ramp_periods: float = 20.0,
        settle_periods: float = 20.0,
        measure_periods: int = 4,
        kick: float = 0.05,
    ):
        check_autonomous_spec(spec)
        if options.constraint != "energy":
            raise ConfigError(
                "the self-oscillator's loop regulates energy: constraint must be 'energy'"
            )
        self.spec, self.options, self.loop = spec, options, loop
        self.model = NetworkModel.from_spec(spec)
        self._conservative = dataclasses.replace(self.model, damping=np.zeros(self.model.d))
        self.ramp_periods, self.settle_periods = float(ramp_periods), float(settle_periods)
        self.measure_periods, self.kick = int(measure_periods), float(kick)
        self.steps_per_period = int(steps_per_period)
        self.experiments = 0
        self._alpha = spec.initial_parameters()
        self._u: Array | None = None
        self._e_set: Array | None = None
        self._nudge: tuple[Array, Array, Array] | None = None
        self._osc: SelfOscillator | None = None
        self._running: Settings | None = None
        self.elapsed_s = 0.0
        self._period = 0.0  # the lowest linear mode's period, set when a batch is prepared

    # ------------------------------------------------------------------ description
    @property
    def n_nodes(self) -> int:
        return self.spec.nodes.count

    @property
    def n_params(self) -> int:
        return self.model.n_params

    @property
    def actuated_nodes(self) -> list[int]:
        return list(range(self.n_nodes))

    @property
    def default_constraint(self) -> ConstraintKind:
        return "energy"

    # ------------------------------------------------------------------ settings
    async def set_parameters(self, alpha: Array) -> None:
        a = np.asarray(alpha, dtype=float)
        if a.shape != (self.n_params,) or not np.all(np.isfinite(a)):
            raise LimitError(f"parameters: need {self.n_params} finite values, got {a}")
        self._alpha = a.copy()

    async def set_input(self, u: Array) -> None:
        a = np.asarray(u, dtype=float)
        if a.ndim != 2 or a.shape[1] != len(self.spec.inputs.nodes) or not np.all(np.isfinite(a)):
            raise ConfigError(
                f"inputs: expected finite (batch, {len(self.spec.inputs.nodes)}), got {a.shape}"
            )
        if self._u is not None and self._u.shape[0] != a.shape[0]:
            self._osc, self._running = None, None  # another batch: prepare again
        self._u, self._e_set, self._nudge = a.copy(), None, None

    async def set_constraint(
        self, kind: ConstraintKind | None, values: Array | None = None
    ) -> None:
        if kind is None:
            self._e_set = None
            return
        if kind != "energy":
            raise GradientError(f"the self-oscillator's loop holds energy, not {kind}")
        B = self._batch()
        self._e_set = np.broadcast_to(np.asarray(values, dtype=float), (B,)).copy()

    async def set_nudge(self, beta: Array | None, task: Task | None = None) -> None:
        if beta is None:
            self._nudge = None
            return
        if task is None:
            raise ConfigError("set_nudge: a nudge needs the task whose cost it pushes")
        B, d = self._batch(), self.n_nodes
        w, y = static_cost(task)
        b = np.broadcast_to(np.asarray(beta, dtype=float), (B,)).copy()
        self._nudge = (b, np.broadcast_to(w, (B, d)).copy(), np.broadcast_to(y, (B, d)).copy())

    async def drive_peak(self) -> Array:
        return np.asarray(
            np.max(np.abs(input_load(self.spec, self._require_u()).phi), axis=1), dtype=float
        )

    def _require_u(self) -> Array:
        if self._u is None:
            raise ConfigError("no input set: call set_input(u) before measurements")
        return self._u

    def _batch(self) -> int:
        return int(self._require_u().shape[0])

    # ------------------------------------------------------------------ the emulation
    def _target(self) -> Settings:
        u = self._require_u()
        B, d = u.shape[0], self.n_nodes
        load = input_load(self.spec, u)
        beta, w, y = (
            self._nudge
            if self._nudge is not None
            else (np.zeros(B), np.zeros((B, d)), np.zeros((B, d)))
        )
        if self._nudge is None and self._running is not None:
            w, y = self._running.weight, self._running.target  # ramping a nudge off
        e_set = self._e_set if self._e_set is not None else np.full(B, self.options.value)
        theta = self.model.full_theta(self._alpha, batch=B)
        return Settings(theta, load.plus_cost(beta, w, y), beta, w, y, e_set)

    def _prepare(self, target: Settings) -> SelfOscillator:
        """Equilibrium, mode kick at low energy, then the set point ramped up (module docstring)."""
        prob = AutonomousProblem(self._conservative, target.theta, target.load, 5)
        x_eq = static_equilibrium(prob)
        lam, V = linear_modes(prob, x_eq)
        mode = self.options.mode
        w = np.sqrt(np.maximum(lam[:, mode], 1e-300))
        shape = V[:, :, mode] / np.max(np.abs(V[:, :, mode]), axis=1, keepdims=True)
        period = 2.0 * math.pi / float(np.min(w))
        osc = SelfOscillator(self.model, self.loop, self._step(period), target.e_set.size)
        x0 = x_eq + self.kick * shape
        osc.start(x0, np.zeros_like(x0), target)
        start = dataclasses.replace(
            target,
            e_set=osc.energy_estimate(x0, np.zeros_like(x0), target, osc.coefficients(target)),
        )
        osc.ramp(start, target, self.ramp_periods * period)
        self._period = period
        return osc

    def _step(self, period: float) -> float:
        """The RK4 step: ``steps_per_period`` per period, shortened to the loop delay if that is
        shorter (the delayed state is interpolated between stored steps)."""
        h = period / self.steps_per_period
        tau = self.loop.delay_s
        return min(h, tau) if tau > 0 else h

    async def measure(self) -> OrbitObservation:
        target = self._target()
        if self._osc is None or self._running is None:
            self._osc = self._prepare(target)
        else:
            self._osc.ramp(self._running, target, self.ramp_periods * self._period)
        osc = self._osc
        self._running = target
        osc.hold(target, self.settle_periods * self._period)
        _t, x, v, a = osc.record(target, (self.measure_periods + 1.5) * self._period * 1.3)
        orbit, period = fold_orbit(
            osc.h, x, v, a, self.options.points_per_cycle, self.measure_periods
        )
        B = orbit.shape[0]
        coef = osc.coefficients(target)
        e_hat = np.mean(
            [osc.energy_estimate(x[:, k], v[:, k], target, coef) for k in range(x.shape[1])], axis=0
        )
        mass = self.model.mass
        xd = (2 * math.pi / period)[:, None, None] * phase_derivative(orbit, 1)
        action = period * np.mean(np.sum(mass * xd**2, axis=-1), axis=1)
        self.experiments += B
        self.elapsed_s = osc.t
        return OrbitObservation(
            np.arange(orbit.shape[1]) / orbit.shape[1],
            orbit,
            ORBIT_CYCLE,
            1,
            "m",
            osc.t,
            SettleInfo(np.full(B, osc.t), np.zeros(B), np.ones(B, bool)),
            {
                "level": str(self.level),
                "emulation": "self-oscillator",
                "loop_integrator": osc.i.copy(),
            },
            orbit_period_s=period,
            energy=e_hat,
            action=action,
            constraint="energy",
        )
