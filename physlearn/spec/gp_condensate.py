"""An incoherent saturable pump on a GP lattice: condensates that select their own frequency.

Without a coherent drive a lattice (`physlearn.spec.gp_lattice.GPLattice`) pumped incoherently
obeys (docs/physics.md §9, "Condensates")

    i dψ_j/dt = (V_j − i γ_j/2 + i P_j / (2 (1 + |ψ_j|²/n_s,j)) + g_j |ψ_j|²) ψ_j − Σ_k J_jk ψ_k

with pump rates P_j ≥ 0 (energy E: the gain of an empty site is P_j/2 on the amplitude) and
saturation densities n_s,j > 0 (occupation). Above threshold the lattice condenses into
ψ_j(t) = φ_j e^{−iμt}: an autonomous problem, the frequency μ (energy E) an unknown and the
global phase fixed by a phase condition. The lattice's pump_energy and any drive are unused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError

Array = NDArray[np.float64]
CArray = NDArray[np.complex128]


@dataclass(frozen=True)
class SaturablePump:
    """Pump rates P_j (d,) ≥ 0 and saturation densities n_s,j (d,) > 0 (module docstring)."""

    rate: Array
    saturation: Array

    def __post_init__(self) -> None:
        rate = np.asarray(self.rate, dtype=float).reshape(-1)
        sat = np.broadcast_to(np.asarray(self.saturation, dtype=float), rate.shape).copy()
        if not (np.all(np.isfinite(rate)) and np.all(rate >= 0)):
            raise ConfigError("saturable pump: rates must be finite and ≥ 0")
        if not (np.all(np.isfinite(sat)) and np.all(sat > 0)):
            raise ConfigError("saturable pump: saturation densities must be finite and > 0")
        object.__setattr__(self, "rate", rate)
        object.__setattr__(self, "saturation", sat)

    def gain(self, density: Array) -> Array:
        """The saturated amplitude gain rate P/(2(1 + n/n_s)) (d,), energy E."""
        return np.asarray(0.5 * self.rate / (1.0 + density / self.saturation))

    def gain_slope(self, density: Array) -> Array:
        """d gain / d n (d,): −P / (2 n_s (1 + n/n_s)²)."""
        return np.asarray(
            -0.5 * self.rate / (self.saturation * (1.0 + density / self.saturation) ** 2)
        )
