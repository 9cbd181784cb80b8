"""The training task's cost: output nodes, cost weight γ(t) and target waveforms y(t) of a batch.

C = ∫ γ(t) ½ Σ_out (x_j − y_j(t))² dt over one drive period. The nudge force per unit β is
∂C/∂x = γ (x − y) on the output nodes (docs/physics.md: +β pushes the outputs *away* from y).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError
from physlearn.spec.modulation import Modulation
from physlearn.spec.network import NetworkSpec

Array = NDArray[np.float64]
TimeFn = Callable[[Array], Array]


@dataclass(frozen=True)
class Task:
    """The cost of one batch. ``targets(t)`` maps times (N,) to y on the outputs (B, N, n_out)."""

    n_nodes: int
    output_nodes: tuple[int, ...]
    gamma: Modulation
    period_s: float
    targets: Callable[[Array], Array]

    @classmethod
    def from_spec(
        cls,
        spec: NetworkSpec,
        values: Array | None = None,
        waveforms: Callable[[Array], Array] | None = None,
    ) -> Task:
        """Targets ``values`` (B, n_out) shaped by the spec's target kind, or explicit waveforms."""
        outs = tuple(spec.outputs.nodes)
        if waveforms is None:
            v = np.atleast_2d(
                np.asarray(
                    values if values is not None else spec.outputs.target.values, dtype=float
                )
            ).reshape(-1, len(outs))
            shape = target_shape(spec)

            def waveforms(t: Array) -> Array:
                return v[:, None, :] * shape(np.asarray(t, dtype=float))[None, :, None]

        return cls(spec.nodes.count, outs, spec.modulations.gamma, spec.period_s, waveforms)

    def cost_weight(self, t: Array) -> Array:
        """γ(t) on the output nodes, zero elsewhere: (N, d)."""
        w = np.zeros((np.size(t), self.n_nodes))
        w[:, list(self.output_nodes)] = self.gamma(np.asarray(t, dtype=float), self.period_s)[
            :, None
        ]
        return w

    def target(self, t: Array) -> Array:
        """y(t) on the output nodes, zero elsewhere: (B, N, d)."""
        y = np.asarray(self.targets(np.asarray(t, dtype=float)), dtype=float)
        out = np.zeros((y.shape[0], np.size(t), self.n_nodes))
        out[:, :, list(self.output_nodes)] = y
        return out

    def error_force(self, x: Array, t: Array) -> Array:
        """γ (x − y) on the outputs: the nudge force per unit β, (B, N, d)."""
        return self.cost_weight(t)[None] * (x - self.target(t))

    def cost(self, x: Array, t: Array, weight_s: float | Array) -> Array:
        """C = Σ_n w_n γ ½ Σ (x − y)² per sample, (B,)."""
        dens = 0.5 * np.sum(self.cost_weight(t)[None] * (x - self.target(t)) ** 2, axis=-1)
        w = np.broadcast_to(np.asarray(weight_s, dtype=float), (np.size(t),))
        return dens @ w


def target_shape(spec: NetworkSpec) -> TimeFn:
    """The time shape s(t) of the spec's target kind, y_j(t) = value_j s(t); returns (N,)."""
    tg, omega = spec.outputs.target, spec.drive.omega_rad_s

    def s(t: Array) -> Array:
        t = np.asarray(t, dtype=float)
        if tg.kind == "constant":
            return np.ones_like(t)
        if tg.kind == "inphase":
            return np.cos(omega * t)
        return np.sin(tg.harmonic * omega * t + tg.phase_rad)

    return s


class _Shaped(Protocol):
    """What `check_task` reads of a system."""

    @property
    def n_nodes(self) -> int: ...

    @property
    def period_s(self) -> float: ...


def check_task(system: _Shaped, task: Task, batch: int) -> None:
    """A task must describe the system's nodes and drive period, for 1 or ``batch`` samples."""
    if task.n_nodes != system.n_nodes:
        raise ConfigError(f"task: {task.n_nodes} nodes, the system has {system.n_nodes}")
    if not np.isclose(task.period_s, system.period_s, rtol=1e-9, atol=0.0):
        raise ConfigError(
            f"task: period {task.period_s} s differs from the system's {system.period_s} s"
        )
    y = np.asarray(task.targets(np.zeros(1)))
    if y.ndim != 3 or y.shape[0] not in (1, batch):
        raise ConfigError(
            f"task: targets of shape {y.shape} for an input batch of {batch} samples "
            "(expected (1 or batch, time, n_out))"
        )
