"""`ep_vector_field`: Vector-Field EP, plain EP on non-conservative dynamics (the biased
baseline for networks with directed couplings, docs/estimators.md).

Nudge the free dynamics with ±β e (e = γ(x_free − y), open loop), take the response
λ = (x₊ − x₋)/2β ≈ J⁻¹ e, and correlate it with ∂R/∂α along the free orbit:

    dC/dα ≈ −Σ_t Δt λ(t)·∂R/∂α(t)

For conservative terms this is `ep_symmetric`'s β → 0 limit written with ∂R/∂α = ∂²V/∂α∂x;
directed couplings have no conjugate quantity, so every parameter uses the correlation. Its bias
is −(∂R/∂α)ᵀ(J⁻¹ − J⁻ᵀ)∂C/∂x, J⁻¹ − J⁻ᵀ coming from damping and from the antisymmetric part of
N = ∂Q/∂x. In a feedforward network the response to an output nudge is zero upstream of the
outputs, so every coupling into a hidden node gets a zero gradient.
Knowledge: ρ, ρ′, μ, ν (∂R/∂α); never the parameter values.
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


class EPVectorField(Estimator):
    """Vector-Field EP. ``beta``: dimensionless nudge (peak nudge force / peak drive force)."""

    name = "ep_vector_field"

    def __init__(self, knowledge: ModelKnowledge, *, beta: float = 1e-3):
        super().__init__(knowledge)
        self.beta = check_beta(beta)

    async def estimate(
        self, system: PhysicalSystem, alpha: Array, u: Array, task: Task
    ) -> GradientEstimate:
        n0 = system.experiments
        free, cost = await measure_free(system, alpha, u, task)
        err = task.error_force(free.x, free.t_s)
        b = physical_beta(self.beta, await system.drive_peak(), err)[:, None, None]
        try:
            plus = await measure_with(system, nudge(b * err, free, system))
            minus = await measure_with(system, nudge(-b * err, free, system))
        finally:
            await system.set_forces(None)
        lam = (plus.x - minus.x) / (2.0 * b)
        grad = -self.knowledge.dR_dalpha_T(free.x, free.t_s, free.dt_s * lam)
        return GradientEstimate(
            finite_gradient(grad, self.name),
            cost,
            system.experiments - n0,
            {"beta": b[:, 0, 0], "beta_ratio": self.beta},
        )
