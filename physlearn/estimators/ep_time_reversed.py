"""`ep_time_reversed`: EP with the time-reversed error as the nudge (docs/physics.md).

With damping, plain EP computes −(∂R/∂α)ᵀ J⁻¹ ∂C/∂x where the gradient needs J⁻ᵀ. For a network
whose stiffness K is constant in time, Jᵀ = P J P with P the time reversal t → −t, so the
response to the time-reversed error, reversed again, is the adjoint state:

    nudge force ±β e(−t),  e = γ(t)(x_free − y)          (open loop, from the free orbit)
    λ(t) = [δx₊β − δx₋β](−t) / 2β                         (≈ J⁻ᵀ e)
    dC/dα = −Σ_t Δt λ(t) · ∂R/∂α(t),   ∂R/∂α = ∂²V/∂α∂x along the free orbit

Sign convention as everywhere: +β pushes the outputs away from their targets. On the sampled grid
t_n = nT/N, reversal maps sample n to sample −n mod N. Exact (to rounding) for linear damped
networks with constant or even-in-time modulations, at any damping and detuning; approximate
when K(t) ≠ K(−t) (nonlinear ρ). Needs ρ′ and the modulations (`ModelKnowledge.dR_dalpha_T`).
"""

from __future__ import annotations

from physlearn.errors import ConfigError
from physlearn.estimators._common import (
    Array,
    check_beta,
    finite_gradient,
    measure_free,
    measure_with,
    nudge,
    physical_beta,
    reverse_time,
)
from physlearn.estimators.base import Estimator, GradientEstimate
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.system import PhysicalSystem
from physlearn.spec.task import Task


class EPTimeReversed(Estimator):
    """Time-reversed-nudge EP. ``beta``: dimensionless nudge (peak nudge / peak drive force).
    ``symmetric``: ±β phases (three steady states per sample, error O(β²)); False: +β only
    (two per sample, λ from δx₊β = x₊β − x_free, error O(β))."""

    name = "ep_time_reversed"
    assumes_reciprocity = True

    def __init__(self, knowledge: ModelKnowledge, *, beta: float = 1e-3, symmetric: bool = True):
        super().__init__(knowledge)
        self.beta = check_beta(beta)
        if not isinstance(symmetric, bool):
            raise ConfigError(f"symmetric: must be true or false, got {symmetric!r}")
        self.symmetric = symmetric

    async def estimate(
        self, system: PhysicalSystem, alpha: Array, u: Array, task: Task
    ) -> GradientEstimate:
        n0 = system.experiments
        free, cost = await measure_free(system, alpha, u, task)
        err_rev = reverse_time(task.error_force(free.x, free.t_s))
        b = physical_beta(self.beta, await system.drive_peak(), err_rev)[:, None, None]
        try:
            plus = await measure_with(system, nudge(b * err_rev, free, system))
            if self.symmetric:
                minus = await measure_with(system, nudge(-b * err_rev, free, system))
                lam = reverse_time(plus.x - minus.x) / (2.0 * b)
            else:
                lam = reverse_time(plus.x - free.x) / b
        finally:
            await system.set_forces(None)
        grad = -self.knowledge.dR_dalpha_T(free.x, free.t_s, free.dt_s * lam)
        return GradientEstimate(
            finite_gradient(grad, self.name),
            cost,
            system.experiments - n0,
            {"beta": b[:, 0, 0], "beta_ratio": self.beta},
        )
