"""`ep_one_sided`: free phase and one +β phase (two steady states per sample).

    dC/dα ≈ (A(+β) − A(0)) / β,    A = ∫ ∂L/∂α dt

Same open-loop nudge and dimensionless β as `ep_symmetric` (docs/physics.md: +β pushes the outputs
away from their targets); biased at O(β) on top of the damping bias of plain EP.
"""

from __future__ import annotations

from physlearn.estimators._common import (
    Array,
    check_beta,
    finite_gradient,
    measure_free,
    measure_with,
    nudge,
    physical_beta,
)
from physlearn.estimators.base import Estimator, GradientEstimate
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.system import PhysicalSystem
from physlearn.spec.task import Task


class EPOneSided(Estimator):
    """One-sided EP. ``beta``: dimensionless nudge (peak nudge force / peak drive force)."""

    name = "ep_one_sided"
    assumes_reciprocity = True

    def __init__(self, knowledge: ModelKnowledge, *, beta: float = 1e-3):
        super().__init__(knowledge)
        self.beta = check_beta(beta)

    async def estimate(
        self, system: PhysicalSystem, alpha: Array, u: Array, task: Task
    ) -> GradientEstimate:
        n0 = system.experiments
        free, cost = await measure_free(system, alpha, u, task)
        err = task.error_force(free.x, free.t_s)
        b = physical_beta(self.beta, await system.drive_peak(), err)
        a0 = self.knowledge.conjugates(free.x, free.t_s, free.dt_s)
        try:
            obs = await measure_with(system, nudge(b[:, None, None] * err, free, system))
        finally:
            await system.set_forces(None)
        a1 = self.knowledge.conjugates(obs.x, obs.t_s, obs.dt_s)
        grad = (a1 - a0) / b[:, None]
        return GradientEstimate(
            finite_gradient(grad, self.name),
            cost,
            system.experiments - n0,
            {"beta": b, "beta_ratio": self.beta},
        )
