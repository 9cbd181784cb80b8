"""What a controller may do to a driven-dissipative GP lattice, and what it reads.

A GP system (docs/physics.md §9) is a wave lattice under a coherent pump: its trainable
parameters are the on-site potentials V_j (an SLM-written light pattern; then the hoppings when
they are trainable), its input is the pump pattern F (`physlearn.spec.gp_network`), and it sits
in a *stationary* state of the pump's rotating frame — there is no period to sample. `GPSystem`
extends `PhysicalSystem` with what the GP estimators need:

* `set_potential_shift` — add ΔV (B, d) to the potentials (the nudge: the cost's derivative
  written as a potential on the output sites; an SLM writes it with V);
* `set_drive` — replace the input pump pattern by an arbitrary complex one (B, d) (the
  phase-conjugated learning phase F' = F̄ + iγψ̄_free);
* `drive_pattern` — the complex pump currently applied (B, d);
* `measure` — a `DensityObservation`: the occupations |ψ_j|² (a camera) and, when the system
  can (``measures_field``: off-axis holography against a reference beam), the complex field ψ.

Force waveforms do not exist here: `set_forces` accepts only None. A task on a GP system is a
`density_task`: static targets y on the output occupations, C = ½ Σ_out w (|ψ_j|² − y_j)²,
with the `Task` machinery on the one-sample "time grid" of a stationary observation.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError, GradientError
from physlearn.spec.gp_field_network import GPFieldNetworkSpec
from physlearn.spec.gp_network import GPNetworkSpec
from physlearn.spec.modulation import Constant
from physlearn.spec.system import ForceWaveform, Observation, PhysicalSystem
from physlearn.spec.task import Task

Array = NDArray[np.float64]
CArray = NDArray[np.complex128]

#: a GP network of ``physlearn train``: a lattice (``[network.gp_lattice]``) or a field
#: (``[network.gp_field]``)
GPSpec = GPNetworkSpec | GPFieldNetworkSpec

#: the nominal "period" of a stationary observation: one sample per state, weight 1
STATIONARY_PERIOD = 1.0

__all__ = [
    "STATIONARY_PERIOD",
    "DensityObservation",
    "GPKnowledge",
    "GPSpec",
    "GPSystem",
    "density_targets",
    "density_task",
]


@dataclass(frozen=True)
class DensityObservation(Observation):
    """Stationary states of a GP system: x (B, 1, d) the occupations |ψ_j|² (node unit
    ``occupation``) at t_s = [0] (period `STATIONARY_PERIOD`); ``psi`` (B, d) complex, the
    amplitudes ψ when the system measures them (else an empty array)."""

    psi: CArray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.complex128))

    @property
    def density(self) -> Array:
        """|ψ_j|² (B, d)."""
        return np.asarray(self.x[:, 0, :], dtype=float)


def density_task(n_sites: int, outputs: list[int], weight: float, values: Array) -> Task:
    """The cost C = ½ Σ_out w (n_j − y_j)² on occupations n, targets ``values`` (B, n_out)."""
    outs = tuple(int(j) for j in outputs)
    v = np.atleast_2d(np.asarray(values, dtype=float)).reshape(-1, len(outs))

    def targets(t: Array) -> Array:
        return np.broadcast_to(v[:, None, :], (v.shape[0], np.size(t), v.shape[1])).copy()

    return Task(n_sites, outs, Constant(value=weight), STATIONARY_PERIOD, targets)


def density_targets(task: Task) -> tuple[Array, Array]:
    """(weight w (d,), targets y (B, d)) of a density task (zeros off the outputs)."""
    t = np.zeros(1)
    return task.cost_weight(t)[0], task.target(t)[:, 0, :]


@dataclass(frozen=True)
class GPKnowledge:
    """What the GP estimators may know: the parameter layout (site count, the hopping edges when
    they are trainable, a field's potential basis) and the loss rates γ_j (E) — declared by the
    spec on the twin, calibrated on a bench; never a solver's internals.

    ``basis`` (n_sites, P): V = basis · θ when θ is not the potential itself (a field's bumps);
    the conjugate of θ_m is then Σ_j basis_jm |ψ_j|². Observed channels beyond the sites (a
    field's region integrals) carry no conjugate."""

    n_sites: int
    edges: NDArray[np.int64]
    train_hopping: bool
    loss: Array
    source: str = "gp_lattice spec"
    basis: Array | None = None

    @classmethod
    def from_spec(cls, spec: GPSpec) -> GPKnowledge:
        if isinstance(spec, GPFieldNetworkSpec):
            field = spec.lattice_model()
            no_edges = np.zeros((0, 2), dtype=np.int64)
            basis = spec.potential_basis()
            return cls(field.n_sites, no_edges, False, field.loss.copy(), "gp_field spec", basis)
        lat = spec.lattice_model()
        return cls(lat.n_sites, lat.edges.copy(), lat.train_hopping, lat.loss.copy())

    @property
    def n_params(self) -> int:
        if self.basis is not None:
            return int(self.basis.shape[1])
        return self.n_sites + (self.edges.shape[0] if self.train_hopping else 0)

    def conjugates(self, density: Array, psi: CArray | None) -> Array:
        """∂E/∂θ per sample (B, P) from the observed channels (B, ≥ n_sites): the occupations
        |ψ_j|² for V_j (through ``basis`` for a field's bumps), then −2 Re ψ̄_aψ_b for each
        trainable hopping (a, b) (which needs the complex field)."""
        dens = np.asarray(density, dtype=float)[:, : self.n_sites]
        if self.basis is not None:
            return np.asarray(dens @ self.basis)
        if not self.train_hopping:
            return dens
        if psi is None or psi.size == 0:
            raise GradientError(
                "trainable hoppings: their conjugate −2 Re ψ̄_aψ_b needs the complex field "
                "(a system that measures it, measures_field)"
            )
        a, b = self.edges[:, 0], self.edges[:, 1]
        hop = -2.0 * np.real(np.conj(psi[:, a]) * psi[:, b])
        return np.concatenate([dens, hop], axis=1)


class GPSystem(PhysicalSystem):
    """A coherently pumped GP lattice (module docstring): the twin or an optical bench."""

    @property
    def period_s(self) -> float:
        """`STATIONARY_PERIOD`: observations are stationary states (one sample each)."""
        return STATIONARY_PERIOD

    @property
    def actuated_nodes(self) -> list[int]:
        """No node takes a force waveform (the nudge is a potential shift)."""
        return []

    @property
    @abc.abstractmethod
    def measures_field(self) -> bool:
        """Whether `measure` returns the complex field ψ (holography), not only densities."""

    @abc.abstractmethod
    async def set_potential_shift(self, shift: Array | None) -> None:
        """Add ΔV (B or 1, d) (energy E) to the potentials for the samples of the input batch;
        None removes it. A new `set_input` removes it too."""

    @abc.abstractmethod
    async def set_drive(self, drive: CArray | None) -> None:
        """Replace the input pump pattern by ``drive`` (B, d) complex (energy E); None goes back
        to the pattern of the inputs. A new `set_input` goes back too."""

    @abc.abstractmethod
    async def drive_pattern(self) -> CArray:
        """The complex pump pattern applied now (B, d), energy E."""

    async def drive_peak(self) -> Array:
        """max_j |F_j| per sample (B,): the scale of the dimensionless β (energy E)."""
        return np.asarray(np.max(np.abs(await self.drive_pattern()), axis=1), dtype=float)

    async def set_forces(self, forces: ForceWaveform | None) -> None:
        if forces is not None:
            raise GradientError(
                f"{type(self).__name__}: a GP lattice takes no force waveforms; its nudge is a "
                "potential shift (set_potential_shift)"
            )

    @abc.abstractmethod
    async def measure(self) -> DensityObservation:
        """The stationary state of every sample under the current potentials, shift and pump."""


def check_density_observation(obs: Observation, name: str) -> DensityObservation:
    """``obs`` as a `DensityObservation` (a GP estimator refuses anything else)."""
    if not isinstance(obs, DensityObservation):
        raise GradientError(f"{name}: the system returned no density observation")
    return obs


def check_gp_system(system: PhysicalSystem, name: str) -> GPSystem:
    """``system`` as a `GPSystem` (ConfigError naming the estimator otherwise)."""
    if not isinstance(system, GPSystem):
        raise ConfigError(
            f"estimator {name!r}: needs a GP system ([network.gp_lattice] or "
            f"[network.gp_field]); "
            f"{type(system).__name__} is an oscillator network"
        )
    return system
