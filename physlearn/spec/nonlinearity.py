"""Node nonlinearities ρ with their first and second derivatives, and a registry of them.

A coupling α_jk ρ(x_j) ρ(x_k) or a bias α'_j ρ(x_j) sees the node coordinates through ρ. Every
estimator that works from measured waveforms needs ρ and ρ′ (the echo and time-reversed nudges
need ρ′ too; the solvers' Hessians need ρ″), so each entry carries all three, vectorised.

Smoothness matters on the twin. The periodic solver is spectral: for an analytic ρ (``tanh``,
``identity``, ``sin``, ``isru``) the orbit error falls exponentially with the points per period.
``softsign`` = x/(1 + |x|) has a kink in ρ′ (ρ″ jumps at x = 0), so every orbit that crosses 0
is only a few times differentiable and the twin converges algebraically (orbit error ~N⁻²–N⁻³, the
gradient erratic at the 1e-4–1e-6 level for N = 33…1025); the solver warns
(`NonSmoothWarning`). ``isru`` = x/√(1 + x²) is the smooth sigmoid of the same algebraic tails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError

Array = NDArray[np.float64]
_Fn = Callable[[Array], Array]


class NonSmoothWarning(UserWarning):
    """The twin is asked to solve with a ρ that is not smooth (algebraic, not spectral,
    convergence in the points per period)."""


@dataclass(frozen=True)
class Nonlinearity:
    """ρ and its derivatives, each mapping an array of node coordinates elementwise; ``smooth``:
    analytic (spectral convergence on the twin), else ``note`` says why not."""

    name: str
    rho: _Fn
    d1: _Fn
    d2: _Fn
    smooth: bool = True
    note: str = ""


_REGISTRY: dict[str, Nonlinearity] = {}


def register_nonlinearity(
    name: str, rho: _Fn, d1: _Fn, d2: _Fn, *, smooth: bool = True, note: str = ""
) -> Nonlinearity:
    """Register ρ (with ρ′ and ρ″) under ``name``; re-registering a name is refused. ``smooth``:
    False for a ρ that is not analytic (``note`` says why; the twin then warns)."""
    if name in _REGISTRY:
        raise ConfigError(f"nonlinearity {name!r} is already registered")
    entry = Nonlinearity(name, rho, d1, d2, smooth, note)
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


def _isru(x: Array) -> Array:
    return x / np.sqrt(1.0 + x * x)


def _isru_d1(x: Array) -> Array:
    return (1.0 + x * x) ** -1.5


def _isru_d2(x: Array) -> Array:
    return -3.0 * x * (1.0 + x * x) ** -2.5


register_nonlinearity(
    "softsign",
    _softsign,
    _softsign_d1,
    _softsign_d2,
    smooth=False,
    note="ρ′ has a kink and ρ″ a jump at x = 0; use 'isru' (x/√(1+x²)) for spectral accuracy",
)
register_nonlinearity("isru", _isru, _isru_d1, _isru_d2)
