"""EP on driven-dissipative GP lattices: ``gp_near_ep`` and the exact ``gp_phase_conjugate``
(docs/physics.md §9; docs/estimators.md, "GP lattices").

Both measure the free stationary state (occupations n, and for the exact variant the complex
field ψ), then two nudged states with the cost's derivative written as a potential shift on the
output sites — the seed's nudge (Sajnok & Matuszewski, arXiv 2510.16084):

    ΔV_j = ∓β w_j (n_j^free − y_j)     (β > 0 pushes the outputs away from their targets),

and estimate dC/dθ = −(A(+β) − A(−β)) / 2β from the conjugates A = ∂E/∂θ of the nudged
states: the occupations |ψ_j|² for the potentials V_j, −2 Re ψ̄_aψ_b for trainable hoppings
(these need the field). β is dimensionless: the peak |ΔV| over the peak pump amplitude max|F|,
per sample (a sample already at its targets gets a zero shift and a zero gradient; an unpumped
one, whose state is ψ = 0 whatever θ, is scaled as if its peak pump were 1 E).

* ``gp_near_ep`` nudges the lossy lattice under its own pump. Its β → 0 limit is
  −(∂R/∂θ)ᵀ 𝒥⁻¹ ∂C/∂z (`ep_limit_gradient`), the adjoint with 𝒥 in place of 𝒥ᵀ: exact at γ = 0,
  biased linearly in γ against the detuning from the lattice's modes.
* ``gp_phase_conjugate`` runs the nudges under the phase-conjugated pump F' = F̄ + iγψ̄_free
  (`phase_conjugate_drive`), whose stationary state is ψ̄_free and whose Jacobian is C𝒥ᵀC: the
  nudged densities then respond through the transpose, and the estimate is exact as β → 0. It
  needs a system that measures the complex field and the loss rates γ (declared).

Experiments per sample: 3 (free, +β, −β).
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
from physlearn.spec.gp_system import (
    DensityObservation,
    GPKnowledge,
    GPSystem,
    check_density_observation,
    check_gp_system,
    density_targets,
)
from physlearn.spec.system import PhysicalSystem
from physlearn.spec.task import Task, check_task

__all__ = ["GPNearEP", "GPPhaseConjugate"]


class _GPEP(Estimator):
    """Symmetric potential nudges on a GP lattice (module docstring)."""

    families: ClassVar[frozenset[str]] = frozenset({"gp"})
    conjugate: ClassVar[bool] = False

    def __init__(self, knowledge: GPKnowledge, *, beta: float = 1e-3):
        # (not Estimator.__init__: that one takes an oscillator network's knowledge)
        self.gp = knowledge
        self.beta = check_beta(beta)

    async def _measure(self, system: GPSystem) -> DensityObservation:
        return check_density_observation(await system.measure(), self.name)

    def _conjugates(self, obs: DensityObservation) -> Array:
        return self.gp.conjugates(obs.density, obs.psi if obs.psi.size else None)

    async def estimate(
        self, system: PhysicalSystem, alpha: Array, u: Array, task: Task
    ) -> GradientEstimate:
        gp = check_gp_system(system, self.name)
        uu = as_batch_inputs(u)
        check_task(gp, task, uu.shape[0])
        if self.conjugate and not gp.measures_field:
            raise GradientError(
                f"{self.name}: the phase-conjugated pump needs the complex free field "
                f"(holography); {type(gp).__name__} measures densities only"
            )
        n0 = gp.experiments
        await gp.set_parameters(np.asarray(alpha, dtype=float))
        await gp.set_input(uu)
        try:
            grad, cost, info = await self._run(gp, task)
        finally:
            await gp.set_potential_shift(None)
            await gp.set_drive(None)
        return GradientEstimate(finite_gradient(grad, self.name), cost, gp.experiments - n0, info)

    async def _run(self, gp: GPSystem, task: Task) -> tuple[Array, Array, dict[str, object]]:
        free = await self._measure(gp)
        cost = task.cost(free.x, free.t_s, free.dt_s)
        w, y = density_targets(task)
        err = w[None, :] * (free.density - y)  # ∂C/∂n (B, d), zero off the outputs
        # an unpumped sample sits at ψ = 0 whatever θ (zero gradient): any scale will do
        peak = await gp.drive_peak()
        b = physical_beta(self.beta, np.where(peak > 0, peak, 1.0), err[:, None, :])
        if self.conjugate:
            # F' = F̄ + iγψ̄_free per sample (`phase_conjugate_drive`, with the declared γ)
            pump = await gp.drive_pattern()
            await gp.set_drive(np.conj(pump) + 1j * self.gp.loss[None, :] * np.conj(free.psi))
        diff = np.zeros((err.shape[0], self.gp.n_params))
        for s in (1.0, -1.0):
            await gp.set_potential_shift(-s * b[:, None] * err)
            diff += s * self._conjugates(await self._measure(gp))
        grad = -diff / (2.0 * b[:, None])
        return grad, cost, {"beta": b, "beta_ratio": self.beta}


class GPNearEP(_GPEP):
    """Near-EP with density nudges written as potentials (module docstring); ``beta``:
    dimensionless, peak |ΔV| / peak |F|."""

    name = "gp_near_ep"


class GPPhaseConjugate(_GPEP):
    """Exact EP on a lossy GP lattice: the nudges under the phase-conjugated pump F̄ + iγψ̄_free
    (module docstring); ``beta`` as `GPNearEP`."""

    name = "gp_phase_conjugate"
    conjugate = True
