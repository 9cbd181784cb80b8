"""The estimator interface: a gradient of the task cost from experiments on a `PhysicalSystem`."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.system import PhysicalSystem
from physlearn.spec.task import Task

Array = NDArray[np.float64]


@dataclass(frozen=True)
class GradientEstimate:
    """Per-sample gradients dC/dα (B,P), the free-phase cost (B,), and the experiments used
    (steady states measured, counting every batch sample)."""

    grad: Array
    cost: Array
    experiments: int
    info: dict[str, object] = field(default_factory=dict)


class Estimator(abc.ABC):
    """Estimates dC/dα at the current parameters for a batch of inputs u (B, n_in)."""

    name: str = ""
    #: True for the EP variants whose identity needs forces −∇V (reciprocal couplings): they
    #: refuse a network with directed couplings when built (`ModelKnowledge.require_reciprocal`)
    assumes_reciprocity: bool = False
    #: the network families it estimates on: ``oscillator`` (a `NetworkSpec`, `ModelKnowledge`)
    #: and/or ``gp`` (a GP lattice, `physlearn.spec.gp_system.GPKnowledge`); `make_estimator`
    #: refuses the others
    families: ClassVar[frozenset[str]] = frozenset({"oscillator"})

    def __init__(self, knowledge: ModelKnowledge):
        if self.assumes_reciprocity:
            knowledge.require_reciprocal(self.name)
        self.knowledge = knowledge

    @abc.abstractmethod
    async def estimate(
        self, system: PhysicalSystem, alpha: Array, u: Array, task: Task
    ) -> GradientEstimate: ...
