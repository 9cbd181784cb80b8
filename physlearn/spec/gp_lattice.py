"""A discrete driven-dissipative Gross–Pitaevskii (GP) lattice: the spec and its density cost.

d sites carry complex amplitudes ψ_j (dimensionless: |ψ_j|² is the site's occupation). In the
frame rotating at the coherent pump's frequency ω_p the field obeys (docs/physics.md §9)

    i dψ_j/dt = (V_j − ω_p − i γ_j/2) ψ_j + g_j |ψ_j|² ψ_j − Σ_k J_jk ψ_k + F_j

with on-site potentials V_j (trainable), real symmetric hoppings J_jk = J_kj on the edges of a
graph (trainable or fixed), Kerr coefficients g_j, loss rates γ_j ≥ 0 and the complex drive
amplitudes F_j (the input). Every energy (V, ω_p, γ, g·|ψ|², J, F) is in one energy unit E and
times are in ħ/E (ħ = 1): with E = 1 meV, as on a polariton bench, the time unit is 0.658 ps.

The trainable parameters θ are the potentials V (d,) followed, when ``train_hopping``, by the
hoppings J (E,) in the order of ``edges``. Every term of the equation is linear in θ.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from physlearn.errors import ConfigError

Array = NDArray[np.float64]
CArray = NDArray[np.complex128]
IArray = NDArray[np.int64]


class GPModel(Protocol):
    """What the GP solvers need of a model: a lattice (`GPLattice`) or a field on a grid
    (`physlearn.spec.gp_field`). R = (V − ω_p − iγ/2)ψ + g|ψ|²ψ − Hψ + F with H the real
    symmetric coupling operator (`hop` applies it); θ = V, then any trainable couplings."""

    @property
    def potential(self) -> Array: ...

    @property
    def kerr(self) -> Array: ...

    @property
    def loss(self) -> Array: ...

    @property
    def pump_energy(self) -> float: ...

    @property
    def n_sites(self) -> int: ...

    @property
    def n_params(self) -> int: ...

    def parameters(self) -> Array: ...

    def with_parameters(self, theta: Array) -> GPModel: ...

    def detuning(self) -> CArray: ...

    def hop(self, psi: CArray) -> CArray: ...

    def hopping_matrix(self) -> Array: ...

    def hopping_sparse(self) -> sp.coo_matrix: ...

    def hopping_contraction(self, psi: CArray, mu: CArray) -> Array: ...


class GPCost(Protocol):
    """What the adjoint needs of a cost on a stationary field ψ (d,): its value and
    ∂C/∂Re ψ + i ∂C/∂Im ψ (d,) (`DensityCost`, a field's
    `physlearn.spec.gp_field.RegionDensityCost`)."""

    def value(self, psi: CArray) -> float: ...

    def gradient(self, psi: CArray) -> CArray: ...


@runtime_checkable
class SpectralModel(Protocol):
    """A model whose coupling operator H is diagonal in Fourier space (a field on a periodic
    grid): it can solve (shift − H) x = rhs in O(n log n), the Krylov solvers' preconditioner."""

    def shifted_inverse(self, shift: complex, rhs: CArray) -> CArray: ...


def _site_array(name: str, value: Array | float, d: int) -> Array:
    arr = np.broadcast_to(np.asarray(value, dtype=float), (d,)).copy()
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"gp_lattice.{name}: every value must be finite, got {arr}")
    return arr


@dataclass(frozen=True)
class GPLattice:
    """A driven-dissipative GP lattice of d sites (module docstring for the equation).

    Attributes:
        potential: V_j (d,), energy unit E; trainable.
        edges: (E, 2) site pairs (j, k), j ≠ k, each pair once; the hopping graph.
        hopping: J_e (E,), energy unit E; J_jk = J_kj = J_e on edge e.
        kerr: g_j (d,), energy unit E per unit occupation (g > 0: repulsive).
        loss: γ_j (d,) ≥ 0, energy unit E (the amplitude decays as e^{−γ t/2}).
        pump_energy: ω_p, the coherent pump's frequency, energy unit E (ħ = 1).
        train_hopping: whether the hoppings are trainable parameters after the potentials.
    """

    potential: Array
    edges: IArray
    hopping: Array
    kerr: Array
    loss: Array
    pump_energy: float
    train_hopping: bool = False

    def __post_init__(self) -> None:
        d = int(np.asarray(self.potential).shape[0])
        if d < 1:
            raise ConfigError("gp_lattice: at least one site is needed")
        edges = np.asarray(self.edges, dtype=np.int64).reshape(-1, 2)
        if edges.size and (edges.min() < 0 or edges.max() >= d):
            raise ConfigError(f"gp_lattice.edges: site indices must lie in [0, {d})")
        if np.any(edges[:, 0] == edges[:, 1]):
            raise ConfigError("gp_lattice.edges: an edge joins a site to itself")
        keys = np.sort(edges, axis=1)
        if len({(int(a), int(b)) for a, b in keys}) != len(keys):
            raise ConfigError("gp_lattice.edges: an edge is listed twice")
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "potential", _site_array("potential", self.potential, d))
        object.__setattr__(self, "kerr", _site_array("kerr", self.kerr, d))
        object.__setattr__(self, "loss", _site_array("loss", self.loss, d))
        hop = np.asarray(self.hopping, dtype=float).reshape(-1)
        if hop.shape[0] != edges.shape[0] or not np.all(np.isfinite(hop)):
            raise ConfigError(
                f"gp_lattice.hopping: one finite value per edge ({edges.shape[0]}), got {hop.shape}"
            )
        object.__setattr__(self, "hopping", hop)
        if np.any(self.loss < 0):
            raise ConfigError(f"gp_lattice.loss: γ must be ≥ 0 (a loss), got {self.loss}")
        if not np.isfinite(self.pump_energy):
            raise ConfigError("gp_lattice.pump_energy must be finite")

    @property
    def n_sites(self) -> int:
        return int(self.potential.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.edges.shape[0])

    @property
    def n_params(self) -> int:
        return self.n_sites + (self.n_edges if self.train_hopping else 0)

    def parameters(self) -> Array:
        """θ (P,): the potentials V, then the hoppings J when they are trainable (energy E)."""
        if self.train_hopping:
            return np.concatenate([self.potential, self.hopping])
        return self.potential.copy()

    def parameter_names(self) -> list[str]:
        names = [f"V[{j}]" for j in range(self.n_sites)]
        if self.train_hopping:
            names += [f"J[{int(a)},{int(b)}]" for a, b in self.edges]
        return names

    def with_parameters(self, theta: Array) -> GPLattice:
        """The same lattice with θ (P,) set (the layout of `parameters`)."""
        theta = np.asarray(theta, dtype=float)
        if theta.shape != (self.n_params,):
            raise ConfigError(
                f"gp_lattice: θ must have shape ({self.n_params},), got {theta.shape}"
            )
        d = self.n_sites
        hop = theta[d:] if self.train_hopping else self.hopping
        return replace(self, potential=theta[:d].copy(), hopping=np.array(hop, dtype=float))

    def hopping_matrix(self) -> Array:
        """J_jk (d, d), real symmetric with zero diagonal (energy E)."""
        d = self.n_sites
        mat = np.zeros((d, d))
        a, b = self.edges[:, 0], self.edges[:, 1]
        np.add.at(mat, (a, b), self.hopping)
        np.add.at(mat, (b, a), self.hopping)
        return mat

    def hopping_sparse(self) -> sp.coo_matrix:
        """J_jk (d, d) as a sparse matrix (energy E)."""
        d, (a, b) = self.n_sites, (self.edges[:, 0], self.edges[:, 1])
        values = np.concatenate([self.hopping, self.hopping])
        return sp.coo_matrix((values, (np.r_[a, b], np.r_[b, a])), shape=(d, d))

    def hopping_contraction(self, psi: CArray, mu: CArray) -> Array:
        """−μᵀ ∂R/∂J_e = Re(μ̄_a ψ_b + μ̄_b ψ_a) per edge (E,) when the hoppings are trainable,
        else empty: the hopping part of an adjoint (or response) contraction."""
        if not self.train_hopping:
            return np.zeros(0)
        a, b = self.edges[:, 0], self.edges[:, 1]
        return np.real(np.conj(mu[a]) * psi[b] + np.conj(mu[b]) * psi[a])

    def hop(self, psi: CArray) -> CArray:
        """Σ_k J_jk ψ_k for ψ (..., d) without forming the matrix (O(E) per row)."""
        p = np.moveaxis(np.asarray(psi), -1, 0)
        out = np.zeros_like(p)
        a, b = self.edges[:, 0], self.edges[:, 1]
        h = self.hopping.reshape((-1,) + (1,) * (p.ndim - 1))
        np.add.at(out, a, h * p[b])
        np.add.at(out, b, h * p[a])
        return np.moveaxis(out, 0, -1)

    def detuning(self) -> CArray:
        """The complex on-site energies V_j − ω_p − i γ_j/2 (d,) of the rotating frame."""
        return self.potential - self.pump_energy - 0.5j * self.loss


def energy(lat: GPLattice, psi: CArray, drive: CArray) -> float:
    """The conservative energy functional of the rotating frame (energy E × occupation):

        E[ψ] = Σ_j (V_j − ω_p) |ψ_j|² + ½ g_j |ψ_j|⁴ − Σ_jk J_jk ψ̄_j ψ_k + 2 Re Σ_j F̄_j ψ_j.

    At γ = 0 the stationary equation is R = ∂E/∂ψ̄ = 0, i.e. (∂E/∂Re ψ, ∂E/∂Im ψ) = 2 (Re R,
    Im R); ∂E/∂V_j = |ψ_j|² is the conjugate quantity of the potential (docs/physics.md §9).
    The loss γ has no place in E: it is the non-conservative part the estimators must handle.
    """
    rho = np.abs(psi) ** 2
    onsite = np.sum((lat.potential - lat.pump_energy) * rho + 0.5 * lat.kerr * rho**2)
    hopping = np.real(np.vdot(psi, lat.hop(psi)))
    return float(onsite - hopping + 2.0 * np.real(np.vdot(drive, psi)))


def phase_conjugate_drive(lat: GPModel, psi_free: CArray, drive: CArray) -> CArray:
    """The drive of the exact (phase-conjugated) learning phase (d,) complex, energy E:

        F' = F̄ + i γ ψ̄_free.

    Under F' the same lossy lattice has the stationary state ψ̄_free, with the same Bogoliubov
    spectrum, and its Jacobian there is C 𝒥ᵀ C (C: complex conjugation), so density nudges in
    this phase measure the adjoint's response, not the forward one (docs/physics.md §9). The
    term iγψ̄_free re-injects what the loss takes: it needs the measured complex free field.
    """
    return np.conj(np.asarray(drive, dtype=complex)) + 1j * lat.loss * np.conj(psi_free)


def chain(
    d: int,
    *,
    hopping: float = 1.0,
    potential: Array | float = 0.0,
    kerr: Array | float = 1.0,
    loss: Array | float = 0.1,
    pump_energy: float = 0.0,
    ring: bool = False,
    train_hopping: bool = False,
) -> GPLattice:
    """A chain of d sites with nearest-neighbour hopping (closed into a ring when ``ring``)."""
    edges = [(j, j + 1) for j in range(d - 1)]
    if ring and d > 2:
        edges.append((d - 1, 0))
    return GPLattice(
        potential=_site_array("potential", potential, d),
        edges=np.array(edges, dtype=np.int64).reshape(-1, 2),
        hopping=np.full(len(edges), float(hopping)),
        kerr=_site_array("kerr", kerr, d),
        loss=_site_array("loss", loss, d),
        pump_energy=pump_energy,
        train_hopping=train_hopping,
    )


def example_chain(
    d: int,
    seed: int,
    *,
    loss: float = 0.5,
    pump_energy: float = 0.5,
    drive_amplitude: float = 0.3,
    kerr: float = 0.5,
) -> tuple[GPLattice, CArray]:
    """The random chain of the tests and benchmarks: V ∈ U[−0.5, 0.5], trainable J ∈ U[0.5, 1]
    (drawn in that order from ``default_rng(seed)``), uniform Kerr and loss, and a drive (d,) of
    amplitude ``drive_amplitude`` on every site with uniformly random phases (drawn last)."""
    rng = np.random.default_rng(seed)
    base = chain(d, potential=rng.uniform(-0.5, 0.5, d), kerr=kerr, loss=loss)
    lat = GPLattice(
        potential=base.potential,
        edges=base.edges,
        hopping=rng.uniform(0.5, 1.0, base.n_edges),
        kerr=base.kerr,
        loss=base.loss,
        pump_energy=pump_energy,
        train_hopping=True,
    )
    phases = rng.uniform(0.0, 2 * np.pi, d)
    return lat, np.asarray(drive_amplitude * np.exp(1j * phases), dtype=np.complex128)


def square(
    nx: int,
    ny: int,
    *,
    hopping: float = 1.0,
    potential: Array | float = 0.0,
    kerr: Array | float = 1.0,
    loss: Array | float = 0.1,
    pump_energy: float = 0.0,
    train_hopping: bool = False,
) -> GPLattice:
    """An nx × ny square lattice (open boundaries), site j = ix·ny + iy."""
    edges = []
    for ix in range(nx):
        for iy in range(ny):
            j = ix * ny + iy
            if ix + 1 < nx:
                edges.append((j, j + ny))
            if iy + 1 < ny:
                edges.append((j, j + 1))
    d = nx * ny
    return GPLattice(
        potential=_site_array("potential", potential, d),
        edges=np.array(edges, dtype=np.int64).reshape(-1, 2),
        hopping=np.full(len(edges), float(hopping)),
        kerr=_site_array("kerr", kerr, d),
        loss=_site_array("loss", loss, d),
        pump_energy=pump_energy,
        train_hopping=train_hopping,
    )


@dataclass(frozen=True)
class DensityCost:
    """The cost on output densities: C = ½ Σ_{j ∈ outputs} w_j (|ψ_j|² − y_j)².

    ``outputs`` (n_out,) site indices, ``targets`` y (n_out,) occupations, ``weights`` w
    (n_out,) ≥ 0 (default ones). C is dimensionless (occupation²).
    """

    outputs: IArray
    targets: Array
    weights: Array | None = None

    def __post_init__(self) -> None:
        out = np.asarray(self.outputs, dtype=np.int64).reshape(-1)
        y = np.asarray(self.targets, dtype=float).reshape(-1)
        w = np.ones_like(y) if self.weights is None else np.asarray(self.weights, float)
        if y.shape != out.shape or w.shape != out.shape:
            raise ConfigError("density cost: outputs, targets and weights must have one length")
        if np.any(w < 0):
            raise ConfigError("density cost: weights must be ≥ 0")
        object.__setattr__(self, "outputs", out)
        object.__setattr__(self, "targets", y)
        object.__setattr__(self, "weights", w)

    def value(self, psi: CArray) -> float:
        """C for the field ψ (d,)."""
        rho = np.abs(psi[self.outputs]) ** 2
        return float(0.5 * np.sum(np.asarray(self.weights) * (rho - self.targets) ** 2))

    def gradient(self, psi: CArray) -> CArray:
        """∂C/∂Re ψ + i ∂C/∂Im ψ (d,): 2 w_j (|ψ_j|² − y_j) ψ_j on the outputs, else 0."""
        g = np.zeros_like(psi)
        rho = np.abs(psi[self.outputs]) ** 2
        np.add.at(
            g,
            self.outputs,
            2.0 * np.asarray(self.weights) * (rho - self.targets) * psi[self.outputs],
        )
        return g
