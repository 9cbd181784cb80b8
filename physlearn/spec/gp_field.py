"""A continuous 1-D driven-dissipative Gross–Pitaevskii field on a periodic grid.

The field ψ(x) on a ring of length L (μm) obeys, in the pump's rotating frame (docs/physics.md §9),

    i ∂ψ/∂t = (−c ∂²/∂x² + V(x) − ω_p − i γ(x)/2 + g |ψ|²) ψ + F(x),    c = ħ²/2m,

with no nodes at all: the trainable potential landscape V(x) is sampled on n grid points
x_j = j L / n, and ∂² is the spectral (Fourier) second derivative, exact for band-limited fields.
ψ_j = ψ(x_j) is the field at grid point j (|ψ_j|² a density); energies in the unit E (meV on a
polariton bench), c in E·μm² (0.38 meV μm² for a polariton mass of 1e-4 electron masses).

The field satisfies `physlearn.spec.gp_lattice.GPModel` with the coupling operator H = c ∂²
(a real symmetric n × n matrix), so the lattice's solvers, Bogoliubov spectrum and adjoint apply
unchanged; θ = V (n,).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from physlearn.errors import ConfigError

Array = NDArray[np.float64]
CArray = NDArray[np.complex128]


def _grid_array(name: str, value: Array | float, n: int) -> Array:
    arr = np.broadcast_to(np.asarray(value, dtype=float), (n,)).copy()
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"gp_field.{name}: every value must be finite")
    return arr


@dataclass(frozen=True)
class GPField1D:
    """A periodic 1-D GP field (module docstring).

    Attributes:
        potential: V(x_j) (n,), energy E; trainable.
        kerr: g(x_j) (n,), energy E per density unit (g > 0 repulsive).
        loss: γ(x_j) (n,) ≥ 0, energy E.
        pump_energy: ω_p, energy E.
        length_um: the ring's length L (μm).
        kinetic: c = ħ²/2m (E·μm²), > 0.
    """

    potential: Array
    kerr: Array
    loss: Array
    pump_energy: float
    length_um: float
    kinetic: float

    def __post_init__(self) -> None:
        n = int(np.asarray(self.potential).shape[0])
        if n < 4:
            raise ConfigError("gp_field: at least 4 grid points are needed")
        for name in ("potential", "kerr", "loss"):
            object.__setattr__(self, name, _grid_array(name, getattr(self, name), n))
        if np.any(self.loss < 0):
            raise ConfigError("gp_field.loss: γ must be ≥ 0 (a loss)")
        if not (self.length_um > 0 and self.kinetic > 0 and np.isfinite(self.pump_energy)):
            raise ConfigError("gp_field: length_um and kinetic must be > 0, pump_energy finite")

    @property
    def n_sites(self) -> int:
        """Grid points n."""
        return int(self.potential.shape[0])

    @property
    def n_params(self) -> int:
        return self.n_sites

    @property
    def train_hopping(self) -> bool:
        return False

    @property
    def x_um(self) -> Array:
        """Grid positions x_j = j L / n (n,), μm."""
        return np.arange(self.n_sites) * self.length_um / self.n_sites

    def parameters(self) -> Array:
        """θ = V (n,), energy E."""
        return self.potential.copy()

    def parameter_names(self) -> list[str]:
        return [f"V[{j}]" for j in range(self.n_sites)]

    def with_parameters(self, theta: Array) -> GPField1D:
        theta = np.asarray(theta, dtype=float)
        if theta.shape != (self.n_sites,):
            raise ConfigError(f"gp_field: θ must have shape ({self.n_sites},), got {theta.shape}")
        return replace(self, potential=theta.copy())

    def _k2(self) -> Array:
        k = 2 * np.pi * np.fft.fftfreq(self.n_sites, d=self.length_um / self.n_sites)
        return np.asarray(k**2, dtype=np.float64)

    def detuning(self) -> CArray:
        """V(x_j) − ω_p − i γ(x_j)/2 (n,)."""
        return self.potential - self.pump_energy - 0.5j * self.loss

    def hop(self, psi: CArray) -> CArray:
        """c ∂²ψ/∂x² on the grid (spectral), for ψ (..., n)."""
        spectrum = np.fft.fft(psi, axis=-1) * (-self.kinetic * self._k2())
        return np.asarray(np.fft.ifft(spectrum, axis=-1), dtype=np.complex128)

    def hopping_matrix(self) -> Array:
        """c D² (n, n): the spectral second derivative, real symmetric (energy E)."""
        columns = np.fft.ifft(
            np.fft.fft(np.eye(self.n_sites), axis=0) * -self._k2()[:, None], axis=0
        )
        mat = self.kinetic * columns.real
        return 0.5 * (mat + mat.T)

    def hopping_sparse(self) -> sp.coo_matrix:
        """`hopping_matrix` in sparse form (dense content: every point couples to every other)."""
        return sp.coo_matrix(self.hopping_matrix())

    def hopping_contraction(self, psi: CArray, mu: CArray) -> Array:
        """Empty: the kinetic coefficient is not trained."""
        return np.zeros(0)


def periodic_bump(x_um: Array, center_um: float, width_um: float, length_um: float) -> Array:
    """exp((cos(2π(x − x₀)/L) − 1)(L/2πw)²): a Gaussian of width w near x₀ that is smooth and
    periodic on the ring (a truncated Gaussian would spoil the spectral accuracy)."""
    q = length_um / (2 * np.pi * width_um)
    return np.asarray(np.exp((np.cos(2 * np.pi * (x_um - center_um) / length_um) - 1) * q**2))


def gaussian_field(
    n: int,
    *,
    length_um: float = 40.0,
    kinetic: float = 0.38,
    depth: float = 1.0,
    width_um: float = 4.0,
    kerr: float = 0.5,
    loss: float = 0.1,
    pump_energy: float = 0.0,
) -> GPField1D:
    """A ring with one smooth well at L/2 of depth ``depth`` (energy E) and width ~w (μm):
    V = −depth · `periodic_bump`(x, L/2, w)."""
    x = np.arange(n) * length_um / n
    potential = -depth * periodic_bump(x, length_um / 2, width_um, length_um)
    return GPField1D(
        potential=potential,
        kerr=np.full(n, kerr),
        loss=np.full(n, loss),
        pump_energy=pump_energy,
        length_um=length_um,
        kinetic=kinetic,
    )
