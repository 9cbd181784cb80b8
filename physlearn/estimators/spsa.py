"""`spsa`: simultaneous-perturbation stochastic approximation (black box, 2 experiments a draw).

Per draw k, a Rademacher vector Δ ∈ {±1}^P and the scaled step h_p = step · max(|α_p|, floor):

    ĝ_p = (C(α + h∘Δ) − C(α − h∘Δ)) / (2 h_p Δ_p),   averaged over n_draws

E[ĝ] = ∇C + O(h²) (E[Δ_q/Δ_p] = δ_pq); the variance falls as 1/n_draws and grows with P. The
perturbation is shared by the batch (one parameter setting for all samples). The reported cost is
the mean of the perturbed costs, C(α) + O(h²): no free phase is spent on it. Near a bound the
perturbation is centred at α clipped to [lower + h, upper − h] (a bias O(h) in that coordinate).
"""

from __future__ import annotations

import numpy as np

from physlearn.errors import ConfigError
from physlearn.estimators._common import (
    Array,
    as_batch_inputs,
    check_beta,
    check_positive_int,
    finite_gradient,
)
from physlearn.estimators.base import Estimator, GradientEstimate
from physlearn.estimators.finite_difference import measured_cost
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.system import PhysicalSystem
from physlearn.spec.task import Task, check_task


class SPSA(Estimator):
    """SPSA with ±1 perturbations. ``n_draws``: perturbations averaged; ``step``, ``floor``: as
    `finite_difference`; ``rng``: a seeded numpy Generator (or ``seed`` to make one)."""

    name = "spsa"

    def __init__(
        self,
        knowledge: ModelKnowledge,
        *,
        n_draws: int = 1,
        step: float = 1e-3,
        floor: float = 0.1,
        rng: np.random.Generator | None = None,
        seed: int | None = None,
    ):
        super().__init__(knowledge)
        self.n_draws = check_positive_int(n_draws, "n_draws")
        self.step = check_beta(step, "step")
        self.floor = check_beta(floor, "floor")
        if rng is None:
            if seed is None or isinstance(seed, bool) or not isinstance(seed, int):
                raise ConfigError(
                    "spsa: needs rng (a seeded numpy.random.Generator) or an integer seed"
                )
            rng = np.random.default_rng(seed)
        elif not isinstance(rng, np.random.Generator):
            raise ConfigError(f"rng: must be a numpy.random.Generator, got {type(rng).__name__}")
        self.rng = rng
        self.lower, self.upper = knowledge.spec.parameter_bounds()

    async def estimate(
        self, system: PhysicalSystem, alpha: Array, u: Array, task: Task
    ) -> GradientEstimate:
        a0 = np.asarray(alpha, dtype=float)
        if a0.shape != (system.n_params,):
            raise ConfigError(f"parameters: expected shape ({system.n_params},), got {a0.shape}")
        uu = as_batch_inputs(u)
        check_task(system, task, uu.shape[0])
        n0 = system.experiments
        h = self.step * np.maximum(np.abs(a0), self.floor)
        centre = np.clip(a0, self.lower + h, self.upper - h)
        centre = np.where(self.upper - self.lower < 2 * h, a0, centre)
        await system.set_input(uu)
        await system.set_forces(None)
        grad = np.zeros((uu.shape[0], a0.size))
        cost = np.zeros(uu.shape[0])
        try:
            for _ in range(self.n_draws):
                delta = self.rng.choice(np.array([-1.0, 1.0]), size=a0.size)
                cp = await measured_cost(system, centre + h * delta, task)
                cm = await measured_cost(system, centre - h * delta, task)
                grad += (cp - cm)[:, None] / (2.0 * h * delta)[None, :]
                cost += 0.5 * (cp + cm)
        finally:
            await system.set_parameters(a0)
        return GradientEstimate(
            finite_gradient(grad / self.n_draws, self.name),
            cost / self.n_draws,
            system.experiments - n0,
            {"step": h, "n_draws": self.n_draws},
        )
