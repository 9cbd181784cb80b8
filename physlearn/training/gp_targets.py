"""Density targets for GP lattices (``[targets] kind = "density"``).

The outputs of a GP lattice are the occupations |ψ_j|² of its output sites (what a camera
reads, docs/physics.md §9). Output site j of a sample of class c should hold the occupation
y_j = ``on`` (its class's site) or ``off`` (one-hot, ``n_out = n_classes``; one output and two
classes: ``on`` for class 1). The task's cost is C = ½ Σ_out w (|ψ_j|² − y_j)²
(`physlearn.spec.gp_system.density_task`, w = ``outputs.weight``). Decoding: the class of the
largest output occupation (smallest if on < off), or for one output the level nearest to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError
from physlearn.spec.gp_network import GPNetworkSpec
from physlearn.spec.gp_system import density_task
from physlearn.spec.system import Observation
from physlearn.spec.task import Task
from physlearn.training.config import TargetsConfig
from physlearn.training.datasets import Dataset
from physlearn.training.encoding import OneHotTargets, TrainNetwork

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]

__all__ = ["DensityTargets", "make_density_targets", "output_densities"]


def _gp(spec: TrainNetwork) -> GPNetworkSpec:
    if not isinstance(spec, GPNetworkSpec):
        raise ConfigError("targets.kind: density targets need [network.gp_lattice]")
    return spec


def output_densities(obs: Observation, nodes: list[int]) -> Array:
    """The occupations of the listed sites (B, len(nodes)) of a stationary observation."""
    return np.asarray(obs.x[:, 0, nodes], dtype=np.float64)


@dataclass(frozen=True)
class DensityTargets(OneHotTargets):
    """One-hot output occupations ``on``/``off`` (module docstring)."""

    def task(self, spec: TrainNetwork, labels: IntArray) -> Task:
        net = _gp(spec)
        if len(net.outputs.nodes) != self.n_outputs:
            raise ConfigError(
                f"outputs.nodes: {len(net.outputs.nodes)} output sites, targets for "
                f"{self.n_outputs}"
            )
        return density_task(net.n_sites, net.outputs.nodes, net.outputs.weight, self.values(labels))

    def predict(self, obs: Observation, spec: TrainNetwork) -> IntArray:
        n = output_densities(obs, _gp(spec).outputs.nodes)
        if self.n_outputs == 1:
            mid = 0.5 * (self.on + self.off)
            return np.where((n[:, 0] > mid) == (self.on > self.off), 1, 0).astype(np.int64)
        pick = np.argmax(n, axis=1) if self.on > self.off else np.argmin(n, axis=1)
        return pick.astype(np.int64)

    def describe(self) -> dict[str, Any]:
        return {
            "targets": "density",
            "decode": "largest output occupation" if self.n_outputs > 1 else "nearest level",
            "on": self.on,
            "off": self.off,
        }


def make_density_targets(cfg: TargetsConfig, ds: Dataset, spec: GPNetworkSpec) -> DensityTargets:
    """The density targets of ``[targets]`` for a classification data set."""
    if ds.metadata.get("task") == "waveform":
        raise ConfigError(
            f"targets.kind: 'density' needs a classification data set, not {ds.name!r}"
        )
    if cfg.on < 0 or cfg.off < 0:
        raise ConfigError(f"targets.on / targets.off: occupations are ≥ 0, got {cfg.on}, {cfg.off}")
    try:
        return DensityTargets(ds.n_classes, len(spec.outputs.nodes), cfg.on, cfg.off)
    except ConfigError as exc:
        raise ConfigError(f"targets: {exc}") from None
