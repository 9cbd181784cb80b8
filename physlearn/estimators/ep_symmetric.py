"""`ep_symmetric`: Massar Eq. 19 with open-loop ±β nudges (three steady states per sample).

    dC/dα ≈ (A(+β) − A(−β)) / 2β,    A = ∫ ∂L/∂α dt = −∫ ∂V/∂α dt over one period

Free phase measured first; the nudge force +β·γ(t)(x_out,free(t) − y(t)) (docs/physics.md sign
convention: β > 0 pushes the outputs *away* from their targets) is computed once from the free
orbit and applied open loop as a force waveform, with either sign. β is dimensionless: the ratio
of the nudge force's peak to the drive force's peak, per sample. Exact as β → 0 (error O(β²))
when the network is conservative (Γ = 0); biased by −(∂R/∂α)ᵀ(J⁻¹ − J⁻ᵀ)∂C/∂x with damping.
"""

from __future__ import annotations

import numpy as np

from physlearn.errors import ConfigError
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


class EPSymmetric(Estimator):
    """Symmetric EP. ``beta``: dimensionless nudge (peak nudge force / peak drive force).
    ``drift_cancel``: measure +β, −β, −β, +β (five steady states per sample) so that a drift
    linear in time cancels."""

    name = "ep_symmetric"
    assumes_reciprocity = True

    def __init__(
        self, knowledge: ModelKnowledge, *, beta: float = 1e-3, drift_cancel: bool = False
    ):
        super().__init__(knowledge)
        self.beta = check_beta(beta)
        if not isinstance(drift_cancel, bool):
            raise ConfigError(f"drift_cancel: must be true or false, got {drift_cancel!r}")
        self.drift_cancel = drift_cancel

    async def estimate(
        self, system: PhysicalSystem, alpha: Array, u: Array, task: Task
    ) -> GradientEstimate:
        n0 = system.experiments
        free, cost = await measure_free(system, alpha, u, task)
        err = task.error_force(free.x, free.t_s)
        b = physical_beta(self.beta, await system.drive_peak(), err)
        signs = (1.0, -1.0, -1.0, 1.0) if self.drift_cancel else (1.0, -1.0)
        diff = np.zeros((err.shape[0], system.n_params))  # Σ ±A over the nudged phases
        try:
            for s in signs:
                obs = await measure_with(system, nudge(s * b[:, None, None] * err, free, system))
                diff += s * self.knowledge.conjugates(obs.x, obs.t_s, obs.dt_s)
        finally:
            await system.set_forces(None)
        grad = diff / (len(signs) * b[:, None])  # (A₊ − A₋)/2β averaged over repeats
        return GradientEstimate(
            finite_gradient(grad, self.name),
            cost,
            system.experiments - n0,
            {"beta": b, "beta_ratio": self.beta, "order": signs},
        )
