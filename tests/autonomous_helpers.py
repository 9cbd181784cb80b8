"""Random autonomous test networks (tests of the autonomous orbits, docs/physics.md §8).

``tanh``: product couplings α tanh(x_j) tanh(x_k) on a ring plus chords, tanh biases on every
node; ``quartic``: springs ½ α (x_j − x_k)² on the same edges, trainable on-site quartic terms
¼ α'' x_j⁴ (ρ = identity). Static input forces on nodes 0 and 1, one output (the last node) with
a static target.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from physlearn.spec.model import NetworkModel
from physlearn.spec.network import NetworkSpec

Kind = Literal["tanh", "quartic"]


def edges(d: int) -> list[tuple[int, int]]:
    """A ring plus the chords j – j+2 (every node has 2–4 neighbours)."""
    if d == 2:
        return [(0, 1)]
    out = {(j, (j + 1) % d) for j in range(d)} | {(j, (j + 2) % d) for j in range(0, d, 2)}
    return sorted({(min(a, b), max(a, b)) for a, b in out if a != b})


def network(d: int, kind: Kind, seed: int = 0, gain: float = 0.3) -> NetworkSpec:
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {
        "nodes": {"count": d, "stiffness": [float(v) for v in rng.uniform(1.0, 2.0, d)]},
        "inputs": {"nodes": [0, 1], "waveform": "constant", "gain": gain},
        "outputs": {"nodes": [d - 1], "target": {"kind": "constant", "values": [0.3]}},
    }
    if kind == "tanh":
        data["couplings"] = [
            {"nodes": list(e), "value": float(rng.normal(0, 0.3))} for e in edges(d)
        ]
        data["biases"] = [{"node": j, "value": float(rng.normal(0, 0.2))} for j in range(d)]
    else:
        data["nonlinearity"] = "identity"
        data["couplings"] = [
            {"nodes": list(e), "kind": "difference", "value": float(rng.uniform(0.2, 0.6))}
            for e in edges(d)
        ]
        data["quartic"] = [
            {"node": j, "value": float(rng.uniform(0.05, 0.3)), "trainable": True} for j in range(d)
        ]
    return NetworkSpec.model_validate(data)


def model_of(spec: NetworkSpec) -> NetworkModel:
    return NetworkModel.from_spec(spec)
