"""EP on autonomous orbits: ``ep_fixed_energy``, ``ep_fixed_action`` and the biased control
``ep_fixed_period`` (docs/estimators.md, "Autonomous orbits").

Free phase: the orbit at the system's set point; then the closed-loop nudges ±β (`set_nudge`:
force +β γ (x_out − y), β > 0 pushes the outputs away from their targets) with the constraint
held at the free orbit's measured value (`set_constraint`):

    ep_fixed_energy   E held (the energy of the nudged Lagrangian);  A = ∮ ∂L/∂α dt = −T ⟨∂V/∂α⟩
                      (A₊ − A₋)/2β → d(∮ c dt)/dα at fixed E
    ep_fixed_action   S₀ = ∮ p dx held;                               A = ⟨∂L/∂α⟩ = −⟨∂V/∂α⟩
                      (A₊ − A₋)/2β → d⟨c⟩/dα at fixed S₀
    ep_fixed_period   the period held instead (the control): the gradient of the cost of a
                      different problem (orbits of fixed T), not of the fixed-E or fixed-S₀ cost.

The cost trained is the task's normalisation (`OrbitTask.normalisation`, default averaged ⟨c⟩).
A crossed pairing (averaged at fixed E, integrated at fixed S₀) adds the chain-rule term through
dT/dα, itself an EP-like difference of two constraint-shifted orbits (no nudge):

    fixed E, ⟨c⟩:     d⟨c⟩/dα = [d(∮c dt)/dα − ⟨c⟩ dT/dα] / T,   dT/dα = ∂A/∂E  (A = ∮ ∂L/∂α dt)
    fixed S₀, ∮c dt:  d(∮c dt)/dα = T d⟨c⟩/dα + ⟨c⟩ dT/dα,      dT/dα = T² ∂⟨∂L/∂α⟩/∂S₀

(±δ around the free value, δ = ``constraint_step`` × the kinetic energy ⟨½ m ẋ²⟩ or × S₀.)
β is dimensionless: the ratio of the nudge force's peak to the free orbit's peak net force
max |m_j ẍ_j| (there is no drive). Experiments per sample: 3 (5 with the chain-rule term).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from physlearn.errors import GradientError
from physlearn.estimators._common import (
    Array,
    as_batch_inputs,
    check_beta,
    finite_gradient,
    physical_beta,
)
from physlearn.estimators.base import Estimator, GradientEstimate
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.autonomous import (
    AutonomousSystem,
    ConstraintKind,
    CostNormalisation,
    OrbitObservation,
    OrbitTask,
    constraint_scale,
    phase_derivative,
)
from physlearn.spec.system import PhysicalSystem
from physlearn.spec.task import Task, check_task

#: which cost normalisation each constraint's EP quotient gives without a chain-rule term
NATURAL: dict[str, CostNormalisation] = {"energy": "integrated", "action": "averaged"}


def peak_force(obs: OrbitObservation, mass: Array) -> Array:
    """max_t,j |m_j ẍ_j| of each orbit (B,): the force scale of the dimensionless β."""
    w = 2.0 * np.pi / obs.orbit_period_s
    acc = w[:, None, None] ** 2 * phase_derivative(obs.x, 2)
    return np.asarray(np.max(np.abs(mass * acc), axis=(1, 2)), dtype=float)


class _OrbitEP(Estimator):
    """Symmetric EP on autonomous orbits with ``constraint`` held (module docstring)."""

    constraint: ClassVar[ConstraintKind] = "energy"

    def __init__(
        self, knowledge: ModelKnowledge, *, beta: float = 1e-3, constraint_step: float = 1e-3
    ):
        super().__init__(knowledge)
        self.beta = check_beta(beta)
        self.constraint_step = check_beta(constraint_step, "constraint_step")

    def _conjugates(self, obs: OrbitObservation, kind: CostNormalisation) -> Array:
        """⟨∂L/∂α⟩ (the grid is one cycle: weights 1/N) or ∮ ∂L/∂α dt = T⟨∂L/∂α⟩, (B,P)."""
        a = self.knowledge.conjugates(obs.x, obs.t_s, obs.dt_s)
        return a if kind == "averaged" else obs.orbit_period_s[:, None] * a

    async def _orbit(self, system: AutonomousSystem) -> OrbitObservation:
        obs = await system.measure()
        if not isinstance(obs, OrbitObservation):
            raise GradientError(
                f"{self.name}: {type(system).__name__} returned no orbit observation"
            )
        return obs

    def _pairing(self, task: Task) -> tuple[CostNormalisation, CostNormalisation]:
        """(the task's normalisation, the conjugates' normalisation measured)."""
        kind: CostNormalisation = task.normalisation if isinstance(task, OrbitTask) else "averaged"
        conj = NATURAL.get(self.constraint, kind)
        return kind, conj

    async def estimate(
        self, system: PhysicalSystem, alpha: Array, u: Array, task: Task
    ) -> GradientEstimate:
        if not isinstance(system, AutonomousSystem):
            raise GradientError(
                f"{self.name}: needs an autonomous system (a self-oscillating network whose orbit "
                f"it can hold at fixed {self.constraint}); {type(system).__name__} is driven"
            )
        uu = as_batch_inputs(u)
        check_task(system, task, uu.shape[0])
        n0 = system.experiments
        await system.set_parameters(np.asarray(alpha, dtype=float))
        await system.set_input(uu)
        try:
            grad, cost, info = await self._run(system, task)
        finally:
            await system.set_nudge(None)
            await system.set_constraint(None)
        return GradientEstimate(
            finite_gradient(grad, self.name), cost, system.experiments - n0, info
        )

    async def _run(
        self, system: AutonomousSystem, task: Task
    ) -> tuple[Array, Array, dict[str, object]]:
        free = await self._orbit(system)
        T = free.orbit_period_s
        avg_cost = task.cost(free.x, free.t_s, free.dt_s)
        err = task.error_force(free.x, free.t_s)
        b = physical_beta(self.beta, peak_force(free, self.knowledge.mass), err)
        held = free.constraint_value(self.constraint)
        kind, conj = self._pairing(task)
        await system.set_constraint(self.constraint, held)
        diff = np.zeros((err.shape[0], system.n_params))
        for s in (1.0, -1.0):
            await system.set_nudge(s * b, task)
            diff += s * self._conjugates(await self._orbit(system), conj)
        await system.set_nudge(None)
        grad = diff / (2.0 * b[:, None])
        info: dict[str, object] = {"beta": b, "beta_ratio": self.beta, "held": held, "period_s": T}
        if kind != conj:
            grad = await self._chain_rule(system, free, grad, avg_cost, held, kind)
            info["chain_rule"] = True
        cost = avg_cost if kind == "averaged" else T * avg_cost
        return grad, cost, info

    async def _chain_rule(
        self,
        system: AutonomousSystem,
        free: OrbitObservation,
        grad: Array,
        avg_cost: Array,
        held: Array,
        kind: CostNormalisation,
    ) -> Array:
        """The crossed pairing's gradient from the natural one and dT/dα (module docstring)."""
        T = free.orbit_period_s
        delta = self.constraint_step * constraint_scale(free, self.constraint, self.knowledge.mass)
        conj = NATURAL[self.constraint]
        shifted = []
        for s in (1.0, -1.0):
            await system.set_constraint(self.constraint, held + s * delta)
            shifted.append(self._conjugates(await self._orbit(system), conj))
        dA = (shifted[0] - shifted[1]) / (2.0 * delta[:, None])
        c = avg_cost[:, None]
        if self.constraint == "energy":  # averaged cost at fixed E; dT/dα = ∂A/∂E
            return (grad - c * dA) / T[:, None]
        # integrated cost at fixed S₀; dT/dα = T² ∂⟨∂L/∂α⟩/∂S
        return T[:, None] * grad + c * T[:, None] ** 2 * dA


class EPFixedEnergy(_OrbitEP):
    """EP at fixed energy (module docstring). ``beta``: dimensionless (peak nudge force / peak
    net force of the free orbit); ``constraint_step``: relative energy step of the chain-rule
    term (an averaged cost)."""

    name = "ep_fixed_energy"
    constraint = "energy"


class EPFixedAction(_OrbitEP):
    """EP at fixed reduced action S₀ = ∮ p dx (module docstring); options as `EPFixedEnergy`
    (the chain-rule term serves an integrated cost)."""

    name = "ep_fixed_action"
    constraint = "action"


class EPFixedPeriod(_OrbitEP):
    """The control: the same nudges with the *period* held at the free orbit's (an autonomous
    orbit forced to keep its period). Its quotient is the gradient of the cost over orbits of
    fixed T — a different problem; against the fixed-E or fixed-S₀ gradient it is biased, and
    can have the wrong sign (docs/estimators.md)."""

    name = "ep_fixed_period"
    constraint = "period"

    def __init__(self, knowledge: ModelKnowledge, *, beta: float = 1e-3):
        super().__init__(knowledge, beta=beta)
