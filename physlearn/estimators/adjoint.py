"""`adjoint`: the exact gradient dC/dα = −(∂R/∂α)ᵀ J⁻ᵀ ∂C/∂x of the steady-state cost.

The reference for every other estimator. It needs the twin's solver state (the Jacobian of the
collocated steady state), so it runs only on a system that computes exact gradients itself
(`ExactGradients`: the ideal twin) and refuses any other.
One steady state (the free orbit) per sample. The same on a GP lattice's twin
(`physlearn.systems.gp_lattice.GPLatticeTwin`: the adjoint of the density cost at the stationary
state).
"""

from __future__ import annotations

from typing import ClassVar

from physlearn.errors import GradientError
from physlearn.estimators._common import Array, as_batch_inputs, finite_gradient
from physlearn.estimators.base import Estimator, GradientEstimate
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.gp_system import GPKnowledge
from physlearn.spec.system import ExactGradients, PhysicalSystem
from physlearn.spec.task import Task


class Adjoint(Estimator):
    """Exact adjoint gradient on a system that computes it (the ideal twin)."""

    name = "adjoint"
    families: ClassVar[frozenset[str]] = frozenset({"oscillator", "gp"})

    def __init__(self, knowledge: ModelKnowledge | GPKnowledge):
        # it needs no knowledge: the twin computes the gradient itself
        if isinstance(knowledge, ModelKnowledge):
            super().__init__(knowledge)

    async def estimate(
        self, system: PhysicalSystem, alpha: Array, u: Array, task: Task
    ) -> GradientEstimate:
        if not isinstance(system, ExactGradients):
            raise GradientError(
                f"adjoint: exact gradients need the ideal twin's solver; {type(system).__name__} "
                "does not compute them (use an EP or black-box estimator on a bench)"
            )
        uu = as_batch_inputs(u)
        n0 = system.experiments
        await system.set_parameters(alpha)
        await system.set_input(uu)
        await system.set_forces(None)
        grad, cost = system.exact_gradient(alpha, uu, task)
        return GradientEstimate(finite_gradient(grad, self.name), cost, system.experiments - n0)
