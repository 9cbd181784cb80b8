"""Autonomous orbits: what a controller may do to a self-oscillating network, and what it reads.

An *autonomous* network has no drive and no explicit time dependence (docs/physics.md §8): its
inputs enter as static forces (or static clamps), and it oscillates on a periodic orbit whose
period is free. Which orbit of the family is fixed by a constraint the system holds:

* ``energy`` — the energy of the Lagrangian it runs (the nudged one while nudged), E₀ in J;
* ``action`` — the reduced action W = ∮ p dx = ∫₀ᵀ Σ m ẋ² dt, S₀ in J·s;
* ``period`` — the period T₀ (the biased control of docs/estimators.md).

`AutonomousSystem` extends `PhysicalSystem` with `set_constraint` (hold a constraint at given
values per sample, or go back to the system's own set point) and `set_nudge` (the *closed-loop*
nudge force +β γ (x_out − y) of a static-target task: an open-loop waveform has no phase to lock
to when the period moves, so `set_forces` refuses any waveform). `measure` returns an
`OrbitObservation`: one orbit per sample on its **phase** grid — t_s = n/N in cycles, period_s = 1
(`ORBIT_CYCLE`): every sample has its own period, in ``orbit_period_s`` (s). Time averages ⟨·⟩
over an orbit are then plain means over the grid, and an ``OrbitTask``'s cost on an observation
is the averaged cost ⟨c⟩.

`OrbitTask` is a `Task` with static targets and a cost normalisation: ``averaged`` ⟨c⟩ or
``integrated`` ∮ c dt = T⟨c⟩ over the orbit's own period (which pairs with which constraint, and
the chain-rule term of the crossed pairings: docs/estimators.md).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from physlearn.errors import ConfigError, GradientError
from physlearn.spec.modulation import Constant
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import ForceWaveform, Observation, PhysicalSystem
from physlearn.spec.task import Task

Array = NDArray[np.float64]
ConstraintKind = Literal["energy", "action", "period"]
CostNormalisation = Literal["averaged", "integrated"]

#: the time unit of an `OrbitObservation`: one cycle of the orbit
ORBIT_CYCLE = 1.0

__all__ = [
    "ORBIT_CYCLE",
    "AutonomousOptions",
    "AutonomousSystem",
    "ConstraintKind",
    "CostNormalisation",
    "OrbitObservation",
    "OrbitTask",
    "check_autonomous_spec",
    "constraint_scale",
    "phase_derivative",
    "static_cost",
]


class AutonomousOptions(BaseModel):
    """``[system.autonomous]``: the orbit an autonomous network is held on.

    ``constraint``: ``energy`` (``value`` = E₀ in J, the energy measured from V(0) = 0 with no
    input) or ``action`` (``value`` = S₀ = ∮ p dx in J·s); ``mode``: the normal mode (at the
    static equilibrium, ascending frequency, 0 = lowest) whose family the orbit continues;
    ``points_per_cycle``: odd collocation points per orbit; ``tol``: the solver's relative
    residual."""

    model_config = ConfigDict(extra="forbid")

    constraint: Literal["energy", "action"] = "energy"
    value: float = Field(allow_inf_nan=False)
    mode: int = Field(0, ge=0)
    points_per_cycle: int = Field(33, ge=5)
    tol: float = Field(1e-11, gt=0)

    @field_validator("points_per_cycle")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd, got {v}")
        return v

    @model_validator(mode="after")
    def _positive_action(self) -> AutonomousOptions:
        if self.constraint == "action" and not self.value > 0:
            raise ValueError(f"value: a reduced action must be positive, got {self.value}")
        return self


def check_autonomous_spec(spec: NetworkSpec) -> None:
    """Refuse what an autonomous network cannot have: drive tones, time-dependent inputs,
    modulations or clamps, non-periodic boundaries. (Damping is the system's business: the twin
    is conservative, a self-oscillator compensates its losses.)"""
    if spec.boundary.kind != "periodic":
        raise ConfigError(
            f"boundary.kind: an autonomous orbit is periodic, got {spec.boundary.kind!r}"
        )
    if spec.drive.tones:
        raise ConfigError("drive.tones: an autonomous network has no drive (remove the tones)")
    if spec.inputs.nodes and spec.inputs.waveform != "constant":
        raise ConfigError(
            "inputs.waveform: an autonomous network takes its inputs as static forces or clamps "
            f'(waveform = "constant"), got {spec.inputs.waveform!r}'
        )
    for name in ("mu", "nu", "delta", "gamma"):
        if not isinstance(getattr(spec.modulations, name), Constant):
            raise ConfigError(
                f"modulations.{name}: an autonomous network has no explicit time dependence "
                "(constant modulations only)"
            )
    if spec.outputs.nodes and spec.outputs.target.kind != "constant":
        raise ConfigError(
            'outputs.target.kind: an autonomous task has static targets (kind = "constant"), '
            f"got {spec.outputs.target.kind!r}"
        )


@dataclass(frozen=True)
class OrbitTask(Task):
    """A task with static targets on an autonomous orbit (period_s = `ORBIT_CYCLE`: the phase
    grid of `OrbitObservation`); ``normalisation``: the cost trained, ``averaged`` ⟨c⟩ or
    ``integrated`` ∮ c dt over the orbit's own period."""

    normalisation: CostNormalisation = "averaged"

    @classmethod
    def from_values(
        cls, spec: NetworkSpec, values: Array, normalisation: CostNormalisation = "averaged"
    ) -> OrbitTask:
        """Static target values (B, n_out) on the spec's output nodes, weight γ (constant)."""
        if normalisation not in ("averaged", "integrated"):
            raise ConfigError(f"normalisation: 'averaged' or 'integrated', got {normalisation!r}")
        if not isinstance(spec.modulations.gamma, Constant):
            raise ConfigError("modulations.gamma: an autonomous task needs a constant cost weight")
        outs = tuple(spec.outputs.nodes)
        v = np.atleast_2d(np.asarray(values, dtype=float)).reshape(-1, len(outs))

        def targets(t: Array) -> Array:
            return np.broadcast_to(v[:, None, :], (v.shape[0], np.size(t), v.shape[1])).copy()

        return cls(
            spec.nodes.count, outs, spec.modulations.gamma, ORBIT_CYCLE, targets, normalisation
        )


def static_cost(task: Task) -> tuple[Array, Array]:
    """(weight γ (1, d), target y (B, d)) of a task with static targets and weight."""
    t = np.zeros(1)
    return task.cost_weight(t)[0][None, :], task.target(t)[:, 0, :]


@dataclass(frozen=True)
class OrbitObservation(Observation):
    """Measured autonomous orbits: x (B, N, d) on the phase grid t_s = n/N (cycles; period_s =
    `ORBIT_CYCLE`), each sample's period ``orbit_period_s`` (s), its energy (J; the energy of the
    Lagrangian it ran, nudge included) and reduced action (J·s), and the constraint held."""

    orbit_period_s: Array = field(default_factory=lambda: np.zeros(0))
    energy: Array = field(default_factory=lambda: np.zeros(0))
    action: Array = field(default_factory=lambda: np.zeros(0))
    constraint: str = "energy"

    def constraint_value(self, kind: ConstraintKind) -> Array:
        """The measured value of a constraint quantity per sample (B,)."""
        return {"energy": self.energy, "action": self.action, "period": self.orbit_period_s}[kind]


class AutonomousSystem(PhysicalSystem):
    """A self-oscillating network (the autonomous twin, an emulated or real self-oscillator).

    Besides `PhysicalSystem`'s parameters and (static) inputs: `set_constraint` holds a
    constraint at values per sample (None: the system's own set point, ``default_constraint``),
    `set_nudge` applies the closed-loop nudge force +β γ (x_out − y) of a static-target task
    (β (B,) physical; None removes it; sign convention of docs/physics.md: +β pushes the outputs
    away from their targets), and `measure` returns `OrbitObservation`s.
    """

    @property
    def period_s(self) -> float:
        """`ORBIT_CYCLE`: observations are on the orbit's phase (each orbit has its own period)."""
        return ORBIT_CYCLE

    @property
    @abc.abstractmethod
    def default_constraint(self) -> ConstraintKind:
        """The constraint the system holds when none is set (its set point's kind)."""

    @abc.abstractmethod
    async def set_constraint(
        self, kind: ConstraintKind | None, values: Array | None = None
    ) -> None:
        """Hold ``kind`` at ``values`` (B,) for the samples of the input batch; None: back to the
        system's own set point."""

    @abc.abstractmethod
    async def set_nudge(self, beta: Array | None, task: Task | None = None) -> None:
        """Add the closed-loop nudge +β γ (x − y) of ``task`` (static targets), β (B,) physical;
        None removes it. It is part of the Lagrangian: an energy constraint then holds the
        energy of the nudged Lagrangian, ½ m ẋ² + V − β c."""

    @abc.abstractmethod
    async def measure(self) -> OrbitObservation:
        """Reach every sample's orbit under the current settings and measure one cycle of it."""

    async def set_forces(self, forces: ForceWaveform | None) -> None:
        """Only None: an autonomous orbit has no phase reference to lock a waveform to (use
        `set_nudge`)."""
        if forces is not None:
            raise GradientError(
                f"{type(self).__name__}: an autonomous orbit has no phase reference for an open-"
                "loop force waveform; nudge it closed loop with set_nudge"
            )


def constraint_scale(obs: OrbitObservation, kind: ConstraintKind, mass: Array) -> Array:
    """A natural scale of each constraint quantity per sample (B,): the mean kinetic energy
    ⟨½ m ẋ²⟩ for energy, the action for action, the period for period."""
    if kind == "action":
        return np.abs(obs.action)
    if kind == "period":
        return obs.orbit_period_s
    w = 2.0 * math.pi / obs.orbit_period_s
    xd = phase_derivative(obs.x, 1)
    return 0.5 * w**2 * np.mean(np.sum(mass * xd**2, axis=-1), axis=1)


def phase_derivative(x: Array, order: int = 1) -> Array:
    """d^order x / dτ^order on an orbit's phase grid (τ ∈ [0, 2π), spectral; odd N), axis 1."""
    n = x.shape[1]
    k = np.arange(n // 2 + 1, dtype=float)
    shape = [1] * x.ndim
    shape[1] = k.size
    X = np.fft.rfft(x, axis=1) * ((1j * k) ** order).reshape(shape)
    return np.fft.irfft(X, n=n, axis=1)
