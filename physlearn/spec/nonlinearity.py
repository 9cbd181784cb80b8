"""Node nonlinearities ρ with their first and second derivatives, and a registry of them.

A coupling α_jk ρ(x_j) ρ(x_k) or a bias α'_j ρ(x_j) sees the node coordinates through ρ. Every
estimator that works from measured waveforms needs ρ and ρ′ (the echo and time-reversed nudges
need ρ′ too; the solvers' Hessians need ρ″), so each entry carries all three, vectorised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError

Array = NDArray[np.float64]
_Fn = Callable[[Array], Array]


@dataclass(frozen=True)
class Nonlinearity:
    """ρ and its derivatives, each mapping an array of node coordinates elementwise."""

    name: str
    rho: _Fn
    d1: _Fn
    d2: _Fn


_REGISTRY: dict[str, Nonlinearity] = {}


def register_nonlinearity(name: str, rho: _Fn, d1: _Fn, d2: _Fn) -> Nonlinearity:
    """Register ρ (with ρ′ and ρ″) under ``name``; re-registering a name is refused."""
    if name in _REGISTRY:
        raise ConfigError(f"nonlinearity {name!r} is already registered")
    entry = Nonlinearity(name, rho, d1, d2)
    _REGISTRY[name] = entry
    return entry


def get_nonlinearity(name: str) -> Nonlinearity:
    """The registered nonlinearity called ``name`` (ConfigError listing the known names)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"unknown nonlinearity {name!r}; known: {known}") from None


def known_nonlinearities() -> list[str]:
    return sorted(_REGISTRY)


def _tanh_d1(x: Array) -> Array:
    return 1.0 - np.tanh(x) ** 2


def _tanh_d2(x: Array) -> Array:
    th = np.tanh(x)
    return -2.0 * th * (1.0 - th**2)


def _softsign(x: Array) -> Array:
    return x / (1.0 + np.abs(x))


def _softsign_d1(x: Array) -> Array:
    return 1.0 / (1.0 + np.abs(x)) ** 2


def _softsign_d2(x: Array) -> Array:
    return -2.0 * np.sign(x) / (1.0 + np.abs(x)) ** 3


register_nonlinearity("tanh", np.tanh, _tanh_d1, _tanh_d2)
register_nonlinearity("identity", lambda x: np.asarray(x, dtype=float), np.ones_like, np.zeros_like)
register_nonlinearity("sin", np.sin, np.cos, lambda x: -np.sin(x))
register_nonlinearity("softsign", _softsign, _softsign_d1, _softsign_d2)
