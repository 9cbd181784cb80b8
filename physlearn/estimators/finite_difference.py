"""`finite_difference`: central differences of the measured steady-state cost (black box).

    dC/dα_p ≈ (C(α + h_p e_p) − C(α − h_p e_p)) / 2h_p,   h_p = step · max(|α_p|, floor)

2P + 1 steady states per sample (the free phase gives the reported cost); every perturbation is
applied to the whole batch at once. A parameter within h_p of one of its bounds is differenced
one-sided, still with two experiments and O(h²) error: (±)(3C(α) − 4C(α ∓ h) + C(α ∓ 2h)) / 2h.
Needs no model knowledge at all; error O(h²) plus the steady states' accuracy divided by h.
"""

from __future__ import annotations

import numpy as np

from physlearn.errors import ConfigError
from physlearn.estimators._common import Array, check_beta, finite_gradient, measure_free
from physlearn.estimators.base import Estimator, GradientEstimate
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.system import PhysicalSystem
from physlearn.spec.task import Task


async def measured_cost(system: PhysicalSystem, alpha: Array, task: Task) -> Array:
    """Set α (inputs unchanged, no extra force), measure, return the task cost (B,)."""
    await system.set_parameters(alpha)
    obs = (await system.measure()).one_period()
    return task.cost(obs.x, obs.t_s, obs.dt_s)


class FiniteDifference(Estimator):
    """Central finite differences. ``step``: relative step; ``floor``: smallest |α| scale."""

    name = "finite_difference"

    def __init__(self, knowledge: ModelKnowledge, *, step: float = 1e-3, floor: float = 0.1):
        super().__init__(knowledge)
        self.step = check_beta(step, "step")
        self.floor = check_beta(floor, "floor")
        self.lower, self.upper = knowledge.spec.parameter_bounds()

    async def estimate(
        self, system: PhysicalSystem, alpha: Array, u: Array, task: Task
    ) -> GradientEstimate:
        a0 = np.asarray(alpha, dtype=float)
        if a0.shape != (system.n_params,):
            raise ConfigError(f"parameters: expected shape ({system.n_params},), got {a0.shape}")
        n0 = system.experiments
        _, cost = await measure_free(system, a0, u, task)
        h = self.step * np.maximum(np.abs(a0), self.floor)
        grad = np.zeros((cost.size, a0.size))
        try:
            for p in range(a0.size):
                e = np.zeros_like(a0)
                e[p] = h[p]
                if a0[p] + h[p] > self.upper[p]:  # backward, second order
                    c1 = await measured_cost(system, a0 - e, task)
                    c2 = await measured_cost(system, a0 - 2 * e, task)
                    grad[:, p] = (3 * cost - 4 * c1 + c2) / (2 * h[p])
                elif a0[p] - h[p] < self.lower[p]:  # forward, second order
                    c1 = await measured_cost(system, a0 + e, task)
                    c2 = await measured_cost(system, a0 + 2 * e, task)
                    grad[:, p] = -(3 * cost - 4 * c1 + c2) / (2 * h[p])
                else:
                    cp = await measured_cost(system, a0 + e, task)
                    cm = await measured_cost(system, a0 - e, task)
                    grad[:, p] = (cp - cm) / (2 * h[p])
        finally:
            await system.set_parameters(a0)
        return GradientEstimate(
            finite_gradient(grad, self.name), cost, system.experiments - n0, {"step": h}
        )
