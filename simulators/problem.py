"""`PeriodicProblem`: a network spec with its compiled model, grid and excitation, ready to solve."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.simulators.excitation import Excitation, GridExcitation, build_excitation
from physlearn.simulators.gradients import PeriodicSensitivity, periodic_cost
from physlearn.simulators.periodic import PeriodicSolution, solve_periodic
from physlearn.simulators.spectral import PeriodicGrid
from physlearn.spec.model import NetworkModel, conjugates
from physlearn.spec.network import NetworkSpec

Array = NDArray[np.float64]


@dataclass
class PeriodicProblem:
    """Everything needed to solve a spec's periodic steady state for a batch of inputs."""

    spec: NetworkSpec
    model: NetworkModel
    grid: PeriodicGrid
    excitation: Excitation
    exc: GridExcitation

    @classmethod
    def from_spec(
        cls,
        spec: NetworkSpec,
        points_per_period: int = 65,
        inputs: Array | None = None,
        targets: Array | None = None,
        excitation: Excitation | None = None,
    ) -> PeriodicProblem:
        if spec.boundary.kind != "periodic":
            raise ValueError(f"boundary.kind is {spec.boundary.kind!r}, not 'periodic'")
        model = NetworkModel.from_spec(spec)
        grid = PeriodicGrid(points_per_period, spec.period_s)
        ex = excitation if excitation is not None else build_excitation(spec, inputs, targets)
        return cls(spec, model, grid, ex, ex.on_grid(grid.t))

    @property
    def batch(self) -> int:
        return self.exc.force.shape[0]

    def theta(self, alpha: Array | None = None) -> Array:
        a = self.spec.initial_parameters() if alpha is None else alpha
        return self.model.full_theta(a, batch=self.batch)

    def with_force(self, extra: Array) -> GridExcitation:
        """The grid excitation with an extra force (B,N,d) added (an open-loop nudge)."""
        e = self.exc
        return GridExcitation(
            e.force + extra, e.clamp_weight, e.clamp_target, e.cost_weight, e.target
        )

    def solve(
        self,
        alpha: Array | None = None,
        beta: float | Array = 0.0,
        extra_force: Array | None = None,
        **kwargs: Any,
    ) -> PeriodicSolution:
        exc = self.exc if extra_force is None else self.with_force(extra_force)
        return solve_periodic(self.model, self.theta(alpha), exc, self.grid, beta=beta, **kwargs)

    def cost(self, sol: PeriodicSolution) -> Array:
        return periodic_cost(sol, self.exc)

    def conjugates(self, x: Array) -> Array:
        return conjugates(self.model, x, self.grid.t, self.grid.dt)

    def sensitivity(self, sol: PeriodicSolution, alpha: Array | None = None) -> PeriodicSensitivity:
        return PeriodicSensitivity(self.model, self.theta(alpha), self.exc, sol)

    def gradient(self, sol: PeriodicSolution, alpha: Array | None = None) -> Array:
        """Exact dC/dα (B,P) by the adjoint method."""
        return self.sensitivity(sol, alpha).adjoint_gradient()

    def physical_beta(self, beta_ratio: float, x_free: Array) -> Array:
        """Physical β (B,) for a dimensionless β = max|nudge force| / max|drive force|."""
        return physical_beta(beta_ratio, self.exc, x_free)


def physical_beta(beta_ratio: float, exc: GridExcitation, x_free: Array) -> Array:
    """β (B,) such that max|β γ (x_free − y)| = beta_ratio · max|F| for every sample."""
    drive = np.max(np.abs(exc.force), axis=(1, 2))
    err = np.max(np.abs(exc.cost_gradient(x_free)), axis=(1, 2))
    if np.any(drive <= 0) or np.any(err <= 0):
        raise ValueError("dimensionless β needs a non-zero drive force and a non-zero output error")
    return beta_ratio * drive / err
