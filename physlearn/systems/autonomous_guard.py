"""A stability guard for autonomous networks: keep every training input's orbit reachable.

An autonomous network oscillates about the static equilibrium its input force selects, on the
family of a normal mode there (docs/physics.md §8). Couplings strong enough to bend the hidden
levels into the nonlinear range can also lower the curvature of the potential: a mode with
ω² ≤ 0 leaves no small orbit for that input (and a set-point energy at or below the
equilibrium's none at all), and the orbit solver fails. `OrbitGuard` measures, for parameters α,

    margin(α) = min over inputs u of  λ_min(M^{-1/2} K(x_eq(u)) M^{-1/2}) / (k/m)_min

— the lowest ω² at the equilibrium as a fraction of the bare ω² of the nodes (1 with no
couplings; −inf if the equilibrium cannot be found or, at fixed energy, lies at or above E₀).
It is cheap (one static Newton solve and one d×d eigenproblem per input) and needs nothing but
the network's potential, as a bench would from its calibration. The training loop uses it with
``training.min_orbit_stiffness`` (training/config.py) twice: `shrink_to_margin` scales the
initial parameters towards 0 (where the margin is 1) until it holds, and `guarded_update`
(training/rules.py) shortens or refuses updates that would break it.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import SolverError
from physlearn.simulators.autonomous import AutonomousProblem, OrbitConstraint
from physlearn.simulators.autonomous_family import (
    linear_modes,
    minimum_by_descent,
    orbit_from_mode,
    static_equilibrium,
)
from physlearn.spec.autonomous import AutonomousOptions
from physlearn.spec.model import NetworkModel
from physlearn.spec.network import NetworkSpec
from physlearn.systems.autonomous import input_load

Array = NDArray[np.float64]

__all__ = ["OrbitGuard", "shrink_to_margin"]


class OrbitGuard:
    """`margin` of parameter vectors for one spec, set point and set of inputs (module doc)."""

    def __init__(self, spec: NetworkSpec, options: AutonomousOptions, inputs: Array):
        self.model = NetworkModel.from_spec(spec)
        self.load = input_load(spec, np.atleast_2d(np.asarray(inputs, dtype=float)))
        self.options = options
        self.bare = float(np.min(np.asarray(self.model.stiffness) / np.asarray(self.model.mass)))
        self._last: Array | None = None  # the equilibria of the last parameters measured
        self.descents = 0  # equilibria found only by descent (`equilibria`)

    def equilibria(self, params: Array) -> Array | None:
        """The static equilibria (B,d) of the inputs at ``params``: Newton from the equilibria
        of the last parameters measured (the branch the network sits on, as the orbit solver's
        warm starts follow it), else from rest, last `minimum_by_descent` from the same start
        (it converges where Newton cycles: a stiff minimum is then measured, not refused as
        margin −inf); None if none converges. ``descents`` counts the last resort's uses."""
        theta = self.model.full_theta(np.asarray(params, dtype=float), batch=self.load.batch)
        problem = AutonomousProblem(self.model, theta, self.load, 3)
        starts = [None] if self._last is None else [self._last, None]
        solvers = [(static_equilibrium, x0) for x0 in starts]
        solvers.append((minimum_by_descent, self._last))
        for solve, x0 in solvers:
            try:
                x_eq = solve(problem, x0)
            except SolverError:
                continue
            if np.all(np.isfinite(x_eq)):
                self.descents += solve is minimum_by_descent
                self._last = x_eq
                return x_eq
        return None

    def margin(self, params: Array) -> float:
        """min over the inputs of the lowest ω² at the static equilibrium / bare ω²."""
        theta = self.model.full_theta(np.asarray(params, dtype=float), batch=self.load.batch)
        problem = AutonomousProblem(self.model, theta, self.load, 3)
        x_eq = self.equilibria(params)
        if x_eq is None:
            return -math.inf
        if self.options.constraint == "energy":
            e_eq = np.mean(problem.potential(x_eq[:, None, :]), axis=1)
            if np.any(e_eq >= self.options.value):
                return -math.inf
        lam, _ = linear_modes(problem, x_eq)
        return float(np.min(lam[:, 0]) / self.bare)

    def orbits_exist(self, params: Array) -> bool:
        """Whether every input has its free orbit at the set point on the family of the set
        mode (solved cold, by continuation from the small-amplitude mode): the equilibrium
        criterion of `margin` does not see a fold of the family below the set point."""
        theta = self.model.full_theta(np.asarray(params, dtype=float), batch=self.load.batch)
        problem = AutonomousProblem(self.model, theta, self.load, self.options.points_per_cycle)
        con = OrbitConstraint(
            self.options.constraint, np.full(self.load.batch, float(self.options.value))
        )
        try:
            orbit_from_mode(
                problem, con, self.options.mode, tol=self.options.tol, x_guess=self._last
            )
        except SolverError:
            return False
        return True


def shrink_to_margin(
    guard: OrbitGuard,
    params: Array,
    min_margin: float,
    factor: float = 0.5,
    tries: int = 30,
    *,
    orbits: bool = False,
) -> tuple[Array, int]:
    """(params × factorⁿ, n) for the smallest n ≥ 0 whose margin is ≥ ``min_margin`` (and, with
    ``orbits``, whose free orbits at the set point all exist: `OrbitGuard.orbits_exist`).

    Zero parameters leave every node harmonic (margin 1), so this ends for min_margin < 1; the
    direction of the seeded draw is kept, only its scale changes."""
    p = np.asarray(params, dtype=float)
    for n in range(tries + 1):
        trial = p * factor**n
        if guard.margin(trial) >= min_margin and (not orbits or guard.orbits_exist(trial)):
            return trial, n
    raise SolverError(
        f"orbit guard: no scale factor^n (n ≤ {tries}) of the initial parameters reaches "
        f"margin {min_margin}"
    )
