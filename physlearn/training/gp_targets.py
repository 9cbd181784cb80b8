"""Density targets for GP lattices and fields (``[targets] kind = "density"``).

The outputs of a GP lattice are the occupations |ψ_j|² of its output sites, those of a GP field
the integrated densities N_k of its output regions (what a camera reads, docs/physics.md §9):
both are the spec's ``output_channels`` of a stationary observation. Output j of a sample of
class c should hold y_j = ``on`` (its class's output) or ``off`` (one-hot,
``n_out = n_classes``; one output and two classes: ``on`` for class 1). The task's cost is
C = ½ Σ_out w (n_j − y_j)² (`physlearn.spec.gp_system.density_task`, w = ``outputs.weight``).
Decoding: the class of the largest output (smallest if on < off), or for one output the level
nearest to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError
from physlearn.spec.gp_field_network import GPFieldNetworkSpec
from physlearn.spec.gp_network import GPNetworkSpec
from physlearn.spec.gp_system import GPSpec, density_task
from physlearn.spec.system import Observation
from physlearn.spec.task import Task
from physlearn.training.config import TargetsConfig
from physlearn.training.datasets import Dataset
from physlearn.training.encoding import OneHotTargets, TrainNetwork

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]

__all__ = ["DensityTargets", "make_density_targets", "output_densities"]


def _gp(spec: TrainNetwork) -> GPSpec:
    if not isinstance(spec, GPNetworkSpec | GPFieldNetworkSpec):
        raise ConfigError(
            "targets.kind: density targets need [network.gp_lattice] or [network.gp_field]"
        )
    return spec


def output_densities(obs: Observation, nodes: list[int]) -> Array:
    """The listed channels (B, len(nodes)) of a stationary observation: a lattice's site
    occupations, a field's region integrals."""
    return np.asarray(obs.x[:, 0, nodes], dtype=np.float64)


@dataclass(frozen=True)
class DensityTargets(OneHotTargets):
    """One-hot output occupations ``on``/``off`` (module docstring)."""

    def task(self, spec: TrainNetwork, labels: IntArray) -> Task:
        net = _gp(spec)
        if net.n_outputs != self.n_outputs:
            raise ConfigError(f"outputs: {net.n_outputs} outputs, targets for {self.n_outputs}")
        return density_task(
            net.n_channels, net.output_channels, net.outputs.weight, self.values(labels)
        )

    def predict(self, obs: Observation, spec: TrainNetwork) -> IntArray:
        n = output_densities(obs, _gp(spec).output_channels)
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


def make_density_targets(cfg: TargetsConfig, ds: Dataset, spec: GPSpec) -> DensityTargets:
    """The density targets of ``[targets]`` for a classification data set."""
    if ds.metadata.get("task") == "waveform":
        raise ConfigError(
            f"targets.kind: 'density' needs a classification data set, not {ds.name!r}"
        )
    if cfg.on < 0 or cfg.off < 0:
        raise ConfigError(f"targets.on / targets.off: occupations are ≥ 0, got {cfg.on}, {cfg.off}")
    try:
        return DensityTargets(ds.n_classes, spec.n_outputs, cfg.on, cfg.off)
    except ConfigError as exc:
        raise ConfigError(f"targets: {exc}") from None
