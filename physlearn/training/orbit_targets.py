"""Level targets for autonomous orbits (``[targets] kind = "level"``).

An autonomous network (docs/physics.md §8) has static inputs and static targets: output node j
of a sample of class c should sit at the level y_j = ``on`` (its class's node) or ``off``
(one-hot, ``n_out = n_classes``; one output and two classes: ``on`` for class 1). The task's
cost is the orbit's c = ½ Σ_out γ (x_j − y_j)², averaged over the orbit (⟨c⟩, default) or
integrated over its own period (∮ c dt, ``orbit_cost = "integrated"``) — an `OrbitTask`. The
decoding reads the *time-averaged* output ⟨x_j⟩ over one cycle: the class is the argmax (argmin
if on < off), or for one output the level nearest to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError
from physlearn.spec.autonomous import CostNormalisation, OrbitTask
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import Observation
from physlearn.training.config import TargetsConfig
from physlearn.training.datasets import Dataset
from physlearn.training.encoding import OneHotTargets, TrainNetwork, oscillator_network

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]

__all__ = ["LevelTargets", "make_level_targets", "mean_levels"]


def mean_levels(obs: Observation, nodes: list[int]) -> Array:
    """⟨x_j⟩ over the observed cycle(s) of each listed node, (B, len(nodes))."""
    return np.asarray(np.mean(obs.x[:, :, nodes], axis=1), dtype=np.float64)


@dataclass(frozen=True)
class LevelTargets(OneHotTargets):
    """One-hot static levels ``on``/``off`` (node units); see the module docstring."""

    normalisation: CostNormalisation = "averaged"

    def task(self, net: TrainNetwork, labels: IntArray) -> OrbitTask:
        spec = oscillator_network(net, "level targets")
        if spec.outputs.target.kind != "constant":
            raise ConfigError(
                "outputs.target.kind: level targets need kind 'constant', got "
                f"{spec.outputs.target.kind!r}"
            )
        if len(spec.outputs.nodes) != self.n_outputs:
            raise ConfigError(
                f"outputs.nodes: {len(spec.outputs.nodes)} output nodes, targets for {self.n_outputs}"
            )
        return OrbitTask.from_values(spec, self.values(labels), self.normalisation)

    def predict(self, obs: Observation, spec: TrainNetwork) -> IntArray:
        a = mean_levels(obs, list(oscillator_network(spec, "level targets").outputs.nodes))
        if self.n_outputs == 1:
            mid = 0.5 * (self.on + self.off)
            return np.where((a[:, 0] > mid) == (self.on > self.off), 1, 0).astype(np.int64)
        pick = np.argmax(a, axis=1) if self.on > self.off else np.argmin(a, axis=1)
        return pick.astype(np.int64)

    def describe(self) -> dict[str, Any]:
        return {
            "targets": "level",
            "decode": "largest time-averaged output" if self.n_outputs > 1 else "nearest level",
            "on": self.on,
            "off": self.off,
            "orbit_cost": self.normalisation,
        }


def make_level_targets(cfg: TargetsConfig, ds: Dataset, spec: NetworkSpec) -> LevelTargets:
    """The level targets of ``[targets]`` for a classification data set."""
    if ds.metadata.get("task") == "waveform":
        raise ConfigError(f"targets.kind: 'level' needs a classification data set, not {ds.name!r}")
    try:
        return LevelTargets(ds.n_classes, len(spec.outputs.nodes), cfg.on, cfg.off, cfg.orbit_cost)
    except ConfigError as exc:
        raise ConfigError(f"targets: {exc}") from None
