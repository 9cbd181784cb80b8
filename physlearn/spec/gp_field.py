"""A continuous driven-dissipative Gross–Pitaevskii field on a periodic 1-D or 2-D grid.

The field ψ(r) on a ring (1-D) or torus (2-D) of side L (μm) obeys, in the pump's rotating frame
(docs/physics.md §9),

    i ∂ψ/∂t = (−c ∇² + V(r) − ω_p − i γ(r)/2 + g |ψ|²) ψ + F(r),    c = ħ²/2m,

with no nodes at all: the trainable potential landscape V(r) is sampled on the grid points
(x_j = j L / n per axis; 2-D fields flattened row-major, point (i, j) at index i·n_y + j), and ∇²
is the spectral (Fourier) Laplacian, exact for band-limited fields.
ψ_j = ψ(x_j) is the field at grid point j (|ψ_j|² a density); energies in the unit E (meV on a
polariton bench), c in E·μm² (0.38 meV μm² for a polariton mass of 1e-4 electron masses).

The field satisfies `physlearn.spec.gp_lattice.GPModel` with the coupling operator H = c ∂²
(a real symmetric n × n matrix, n the number of grid points), so the lattice's solvers, Bogoliubov
spectrum and adjoint apply unchanged; θ = V (n,). The operator is diagonal in Fourier space
(`shifted_inverse`), which the Newton–Krylov solver uses as its preconditioner on large grids.
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
class GPField:
    """A periodic 1-D or 2-D GP field (module docstring).

    Attributes:
        potential: V(x_j) (n,), energy E; trainable.
        kerr: g(x_j) (n,), energy E per density unit (g > 0 repulsive).
        loss: γ(x_j) (n,) ≥ 0, energy E.
        pump_energy: ω_p, energy E.
        length_um: the ring's length L (μm).
        kinetic: c = ħ²/2m (E·μm²), > 0.
        grid: points per axis, (n,) or (n_x, n_y); default (len(potential),).
    """

    potential: Array
    kerr: Array
    loss: Array
    pump_energy: float
    length_um: float
    kinetic: float
    grid: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        n = int(np.asarray(self.potential).shape[0])
        grid = self.grid or (n,)
        if len(grid) not in (1, 2) or int(np.prod(grid)) != n or min(grid) < 4:
            raise ConfigError(f"gp_field: grid {grid} must be 1-D or 2-D, ≥ 4 per axis, {n} points")
        object.__setattr__(self, "grid", tuple(int(g) for g in grid))
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
        """Grid positions along an axis, x_j = j L / n_axis (n_axis,), μm (the first axis)."""
        return np.arange(self.grid[0]) * self.length_um / self.grid[0]

    def coordinates_um(self) -> tuple[Array, ...]:
        """Each grid point's coordinates, one flattened array (n,) per axis, μm."""
        axes = [np.arange(g) * self.length_um / g for g in self.grid]
        return tuple(c.reshape(-1) for c in np.meshgrid(*axes, indexing="ij"))

    def parameters(self) -> Array:
        """θ = V (n,), energy E."""
        return self.potential.copy()

    def parameter_names(self) -> list[str]:
        return [f"V[{j}]" for j in range(self.n_sites)]

    def with_parameters(self, theta: Array) -> GPField:
        theta = np.asarray(theta, dtype=float)
        if theta.shape != (self.n_sites,):
            raise ConfigError(f"gp_field: θ must have shape ({self.n_sites},), got {theta.shape}")
        return replace(self, potential=theta.copy())

    def _k2(self) -> Array:
        """|k|² on the Fourier grid, shaped like the grid (1/μm²)."""
        ks = [2 * np.pi * np.fft.fftfreq(g, d=self.length_um / g) for g in self.grid]
        return np.asarray(sum(k**2 for k in np.meshgrid(*ks, indexing="ij")), dtype=np.float64)

    def _fourier(self, psi: CArray, multiplier: Array | CArray) -> CArray:
        """ifft(multiplier · fft(ψ)) over the grid axes of ψ (..., n)."""
        axes = tuple(range(-len(self.grid), 0))
        field = np.reshape(psi, (*np.shape(psi)[:-1], *self.grid))
        out = np.fft.ifftn(np.fft.fftn(field, axes=axes) * multiplier, axes=axes)
        return np.asarray(out.reshape(np.shape(psi)), dtype=np.complex128)

    def detuning(self) -> CArray:
        """V(x_j) − ω_p − i γ(x_j)/2 (n,)."""
        return self.potential - self.pump_energy - 0.5j * self.loss

    def hop(self, psi: CArray) -> CArray:
        """c ∇²ψ on the grid (spectral), for ψ (..., n)."""
        return self._fourier(psi, -self.kinetic * self._k2())

    def shifted_inverse(self, shift: complex, rhs: CArray) -> CArray:
        """x (..., n) with (shift − c∇²) x = rhs, diagonal in Fourier space; ``shift`` (energy
        E) must keep shift + c|k|² ≠ 0 on the grid (any shift with a non-zero imaginary part)."""
        inverse = np.asarray(1.0 / (shift + self.kinetic * self._k2()), dtype=np.complex128)
        return self._fourier(rhs, inverse)

    def hopping_matrix(self) -> Array:
        """c ∇² (n, n): the spectral Laplacian, real symmetric (energy E); small grids only."""
        if self.n_sites > 4096:
            raise ConfigError(f"gp_field: no dense Laplacian for {self.n_sites} points")
        mat = self.hop(np.eye(self.n_sites, dtype=np.complex128)).real.T
        return np.asarray(0.5 * (mat + mat.T))

    def hopping_sparse(self) -> sp.coo_matrix:
        """`hopping_matrix` in sparse form (dense content: every point couples to every other)."""
        return sp.coo_matrix(self.hopping_matrix())

    def hopping_contraction(self, psi: CArray, mu: CArray) -> Array:
        """Empty: the kinetic coefficient is not trained."""
        return np.zeros(0)


@dataclass(frozen=True)
class RegionDensityCost:
    """The cost on integrated densities: C = ½ Σ_k w_k (N_k − y_k)², N = R |ψ|².

    ``readout`` R (K, n): N_k = Σ_j R_kj |ψ_j|² (R_kj = ΔA on region k,
    `physlearn.spec.gp_field_network.GPFieldNetworkSpec.readout_matrix`); ``targets`` y (K,),
    ``weights`` w (K,) ≥ 0. A `physlearn.spec.gp_lattice.GPCost` for the adjoint.
    """

    readout: Array
    targets: Array
    weights: Array

    def __post_init__(self) -> None:
        r = np.atleast_2d(np.asarray(self.readout, dtype=float))
        y = np.asarray(self.targets, dtype=float).reshape(-1)
        w = np.asarray(self.weights, dtype=float).reshape(-1)
        if y.shape != (r.shape[0],) or w.shape != y.shape or np.any(w < 0):
            raise ConfigError("region cost: one target and one weight ≥ 0 per region")
        object.__setattr__(self, "readout", r)
        object.__setattr__(self, "targets", y)
        object.__setattr__(self, "weights", w)

    def integrals(self, psi: CArray) -> Array:
        """N (K,) for the field ψ (n,)."""
        return np.asarray(self.readout @ (np.abs(psi) ** 2))

    def value(self, psi: CArray) -> float:
        return float(0.5 * np.sum(self.weights * (self.integrals(psi) - self.targets) ** 2))

    def gradient(self, psi: CArray) -> CArray:
        """∂C/∂Re ψ + i ∂C/∂Im ψ (n,): 2 ψ_j Σ_k w_k (N_k − y_k) R_kj."""
        dn = self.readout.T @ (self.weights * (self.integrals(psi) - self.targets))
        return np.asarray(2.0 * dn * psi, dtype=np.complex128)


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
) -> GPField:
    """A ring with one smooth well at L/2 of depth ``depth`` (energy E) and width ~w (μm):
    V = −depth · `periodic_bump`(x, L/2, w)."""
    x = np.arange(n) * length_um / n
    potential = -depth * periodic_bump(x, length_um / 2, width_um, length_um)
    return GPField(
        potential=potential,
        kerr=np.full(n, kerr),
        loss=np.full(n, loss),
        pump_energy=pump_energy,
        length_um=length_um,
        kinetic=kinetic,
    )


def example_torus(n: int) -> tuple[GPField, CArray]:
    """The 2-D example of the tests and the benchmark: a 40 μm torus on an n × n grid with a
    smooth 1 E well at its centre (c = 0.38 E μm², g = 0.5, γ = 0.2 E, ω_p = −0.3 E), and the
    drive (n²,) of a pump spot of 3 μm at (12, 20) μm, amplitude 0.2 E, carrying three
    wavelengths along x."""
    ones = np.ones(n * n)
    grid = GPField(0 * ones, 0.5 * ones, 0.2 * ones, -0.3, 40.0, 0.38, (n, n))
    x, y = grid.coordinates_um()
    well = -periodic_bump(x, 20.0, 4.0, 40.0) * periodic_bump(y, 20.0, 4.0, 40.0)
    spot = periodic_bump(x, 12.0, 3.0, 40.0) * periodic_bump(y, 20.0, 3.0, 40.0)
    field = GPField(well, grid.kerr, grid.loss, -0.3, 40.0, 0.38, (n, n))
    return field, np.asarray(0.2 * spot * np.exp(2j * np.pi * 3 * x / 40.0), dtype=np.complex128)
