"""Shared helpers for the twin's tests: ensemble draws and finite-difference references."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from physlearn.spec.network import NetworkSpec


def richardson_directional(
    f: Callable[[np.ndarray], float], a0: np.ndarray, v: np.ndarray, h: float
) -> float:
    """d/ds f(a0 + s v) at s = 0 by central differences at h and h/2 with Richardson (error O(h⁴))."""
    d1 = (f(a0 + h * v) - f(a0 - h * v)) / (2 * h)
    d2 = (f(a0 + 0.5 * h * v) - f(a0 - 0.5 * h * v)) / h
    return (4 * d2 - d1) / 3


def with_trainable_everything(
    spec: NetworkSpec, quartic: float = 0.2, onsite: float = 0.15
) -> NetworkSpec:
    """The spec with a trainable quartic term on node 0 and a trainable on-site spring ½κx² on
    the last node added (every term kind then trains)."""
    data = spec.model_dump()
    data["quartic"] = [{"node": 0, "value": quartic, "trainable": True}]
    last = spec.nodes.count - 1
    data["onsite"] = [{"node": last, "value": onsite, "trainable": True}]
    return NetworkSpec.model_validate(data)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
