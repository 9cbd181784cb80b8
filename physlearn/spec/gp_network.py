"""A GP lattice as a trainable network: the ``[network.gp_lattice]`` table of ``physlearn train``.

The lattice (docs/physics.md §9, `physlearn.spec.gp_lattice`) is built by name — a ``chain``,
a ``ring``, an ``nx × ny`` ``square``, an explicit ``graph`` of ``edges``, or a ``bipartite``
coupler of ``sites`` sites in which every input site is coupled to every output site (a one-layer
network: each output mode hybridises with every pumped mode) — with uniform
hopping J, Kerr g, loss γ and pump frequency ω_p (energy unit E, ħ = 1). The trainable
parameters are the potentials V_j of every site (then the hoppings, ``train_hopping``), bounded
by ``potential_bound`` (|V_j| ≤ bound) and ``hopping_bounds``; they start at ``potential`` plus a
uniform draw in ±``init_scale``, and trainable hoppings at ``hopping`` plus a uniform draw in
±``hopping_init_scale`` (drawn after the potentials from ``default_rng(seed)``).

**Inputs** are pump profiles: a feature vector u (n_in,) becomes the coherent drive amplitude

    F_j = gain · (u_k + offset) · e^{i φ_k}    on input site j = ``inputs.nodes[k]``,

plus the fixed pump ``bias_amplitude · e^{i bias_phase_rad}`` on every site of
``inputs.bias_nodes`` (the part of the pump pattern that does not carry a feature). Drive
amplitudes are energies (E). **Outputs** are the occupations |ψ_j|² of ``outputs.nodes`` (what a
camera reads), with the cost C = ½ Σ_out w (|ψ_j|² − y_j)², w = ``outputs.weight``.

Observations of a GP system are stationary: one "sample" per state (`STATIONARY_PERIOD`), the
densities in ``x`` (B, 1, d) (`physlearn.spec.gp_system.DensityObservation`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from physlearn.errors import ConfigError
from physlearn.spec.gp_lattice import GPLattice, chain, square

Array = NDArray[np.float64]
CArray = NDArray[np.complex128]

__all__ = ["GPInputs", "GPNetworkSpec", "GPOutputs", "input_phases"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def input_phases(phase_rad: float | list[float], n: int, what: str) -> Array:
    """φ_k (n,) rad of ``phase_rad`` (one value, or one per input ``what``); ValueError naming
    ``phase_rad`` for a wrong count or a non-finite value."""
    if isinstance(phase_rad, list) and len(phase_rad) != n:
        raise ValueError(f"phase_rad: one phase per input {what} ({n}), got {len(phase_rad)}")
    p = np.broadcast_to(np.asarray(phase_rad, dtype=float), (n,))
    if not np.all(np.isfinite(p)):
        raise ValueError("phase_rad: must be finite")
    return np.array(p, dtype=float)


class GPInputs(_Model):
    """``[network.gp_lattice.inputs]``: which sites the features pump (module docstring)."""

    nodes: list[int] = Field(min_length=1)
    gain: float = Field(1.0, allow_inf_nan=False)
    offset: float = Field(0.0, allow_inf_nan=False)
    phase_rad: float | list[float] = 0.0
    bias_nodes: list[int] = Field(default_factory=list)
    bias_amplitude: float = Field(0.0, allow_inf_nan=False)
    bias_phase_rad: float = Field(0.0, allow_inf_nan=False)

    def phases(self) -> Array:
        """φ_k (n_in,) rad."""
        return input_phases(self.phase_rad, len(self.nodes), "node")

    @model_validator(mode="after")
    def _check(self) -> GPInputs:
        if len(set(self.nodes)) != len(self.nodes):
            raise ValueError(f"nodes: a site is listed twice in {self.nodes}")
        self.phases()
        if self.bias_nodes and self.bias_amplitude == 0.0:
            raise ValueError("bias_amplitude: bias_nodes are listed but their amplitude is 0")
        return self


class GPOutputs(_Model):
    """``[network.gp_lattice.outputs]``: the sites whose occupations are the outputs, and the
    cost weight w of each (dimensionless)."""

    nodes: list[int] = Field(min_length=1)
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check(self) -> GPOutputs:
        if len(set(self.nodes)) != len(self.nodes):
            raise ValueError(f"nodes: a site is listed twice in {self.nodes}")
        return self


class GPNetworkSpec(_Model):
    """A driven-dissipative GP lattice trained through its potentials (module docstring).

    Energies in E (ħ = 1): ``hopping`` J, ``kerr`` g (per unit occupation), ``loss`` γ ≥ 0,
    ``pump_energy`` ω_p, ``potential`` V (initial), bounds.
    """

    kind: Literal["gp_lattice"] = "gp_lattice"
    lattice: Literal["chain", "ring", "square", "graph", "bipartite"] = "chain"
    sites: int | None = Field(None, ge=1)
    shape: tuple[int, int] | None = None
    edges: list[tuple[int, int]] | None = None
    hopping: float = Field(1.0, allow_inf_nan=False)
    kerr: float = Field(1.0, allow_inf_nan=False)
    loss: float = Field(0.2, ge=0, allow_inf_nan=False)
    pump_energy: float = Field(0.0, allow_inf_nan=False)
    potential: float | list[float] = 0.0
    init_scale: float = Field(0.0, ge=0, allow_inf_nan=False)
    hopping_init_scale: float = Field(0.0, ge=0, allow_inf_nan=False)
    seed: int = 0
    train_hopping: bool = False
    potential_bound: float = Field(5.0, gt=0, allow_inf_nan=False)
    hopping_bounds: tuple[float, float] = (0.0, 3.0)
    inputs: GPInputs
    outputs: GPOutputs

    @model_validator(mode="after")
    def _check(self) -> GPNetworkSpec:
        d = self._count()
        if isinstance(self.potential, list):
            if len(self.potential) != d:
                raise ValueError(f"potential: one value per site ({d}), got {len(self.potential)}")
            if not np.all(np.isfinite(self.potential)):
                raise ValueError("potential: must be finite")
        for name, nodes in (
            ("inputs.nodes", self.inputs.nodes),
            ("inputs.bias_nodes", self.inputs.bias_nodes),
            ("outputs.nodes", self.outputs.nodes),
        ):
            bad = [j for j in nodes if not 0 <= j < d]
            if bad:
                raise ValueError(f"{name}: sites {bad} are not in 0..{d - 1}")
        both = sorted(set(self.inputs.nodes) & set(self.outputs.nodes))
        if both:
            raise ValueError(f"outputs.nodes: sites {both} are also input sites")
        lo, hi = self.hopping_bounds
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"hopping_bounds: need finite lo < hi, got {self.hopping_bounds}")
        j = self._initial()[1]
        if self.train_hopping and not (np.all(lo <= j) and np.all(j <= hi)):
            raise ValueError(
                f"hopping / hopping_init_scale: initial hoppings leave hopping_bounds {lo, hi}"
            )
        if self.hopping_init_scale > 0 and not self.train_hopping:
            raise ValueError("hopping_init_scale: only with train_hopping = true")
        if np.max(np.abs(self._initial_potential())) > self.potential_bound:
            raise ValueError(
                f"potential: initial values exceed potential_bound {self.potential_bound}"
            )
        try:
            self.lattice_model()
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def _count(self) -> int:
        if self.lattice in ("chain", "ring", "graph", "bipartite"):
            if self.sites is None:
                raise ValueError(f"sites: lattice = {self.lattice!r} needs the number of sites")
            if self.shape is not None:
                raise ValueError(f"shape: only for lattice = 'square', not {self.lattice!r}")
            if (self.edges is None) != (self.lattice != "graph"):
                raise ValueError("edges: required with lattice = 'graph' and only then")
            if self.lattice == "ring" and self.sites < 3:
                raise ValueError(f"sites: a ring needs ≥ 3 sites, got {self.sites}")
            return self.sites
        if self.shape is None or min(self.shape) < 1:
            raise ValueError(f"shape: lattice = 'square' needs [nx, ny] ≥ 1, got {self.shape}")
        if self.sites is not None or self.edges is not None:
            raise ValueError("sites / edges: lattice = 'square' takes only shape = [nx, ny]")
        return int(self.shape[0] * self.shape[1])

    # ------------------------------------------------------------------ description
    @property
    def n_sites(self) -> int:
        return self._count()

    @property
    def n_inputs(self) -> int:
        return len(self.inputs.nodes)

    @property
    def n_outputs(self) -> int:
        return len(self.outputs.nodes)

    @property
    def n_channels(self) -> int:
        """Observed channels: the sites' occupations (a field adds its region integrals)."""
        return self._count()

    @property
    def output_channels(self) -> list[int]:
        """The channels the cost reads: the output sites."""
        return list(self.outputs.nodes)

    def readout_matrix(self) -> None:
        """No region integrals: the outputs are site occupations (`GPFieldNetworkSpec` has one)."""
        return None

    def potential_basis(self) -> None:
        """θ holds the potentials themselves (a field's bumps have a basis)."""
        return None

    def _initial_potential(self) -> Array:
        return self._initial()[0]

    def _initial(self) -> tuple[Array, Array]:
        """(V₀ (d,), J₀ (E,)): the initial potentials and hoppings (module docstring)."""
        d, n = self._count(), self._edge_count()
        rng = np.random.default_rng(self.seed)
        v = np.broadcast_to(np.asarray(self.potential, dtype=float), (d,)).copy()
        v += rng.uniform(-self.init_scale, self.init_scale, d)
        j = np.full(n, self.hopping)
        if self.train_hopping:
            j += rng.uniform(-self.hopping_init_scale, self.hopping_init_scale, n)
        return v, j

    def lattice_model(self, theta: Array | None = None) -> GPLattice:
        """The `GPLattice` at parameters θ (default: the initial ones)."""
        d = self._count()
        common = dict(
            hopping=self.hopping,
            kerr=self.kerr,
            loss=self.loss,
            pump_energy=self.pump_energy,
            train_hopping=self.train_hopping,
        )
        if self.lattice == "square":
            assert self.shape is not None
            lat = square(self.shape[0], self.shape[1], **common)  # type: ignore[arg-type]
        elif self.lattice in ("graph", "bipartite"):
            edges = self._edge_list()
            lat = GPLattice(
                potential=np.zeros(d),
                edges=np.array(edges, dtype=np.int64).reshape(-1, 2),
                hopping=np.full(len(edges), self.hopping),
                kerr=np.full(d, self.kerr),
                loss=np.full(d, self.loss),
                pump_energy=self.pump_energy,
                train_hopping=self.train_hopping,
            )
        else:
            lat = chain(d, ring=self.lattice == "ring", **common)  # type: ignore[arg-type]
        if theta is None:
            theta = self.initial_parameters()
        return lat.with_parameters(np.asarray(theta, dtype=float))

    def initial_parameters(self) -> Array:
        """θ₀: the potentials V (d,), then the hoppings when trainable (energy E)."""
        v, j = self._initial()
        return np.concatenate([v, j]) if self.train_hopping else v

    def _edge_list(self) -> list[tuple[int, int]]:
        """The explicit edges of a ``graph`` or the input × output pairs of a ``bipartite``."""
        if self.lattice == "bipartite":
            return [(k, c) for k in self.inputs.nodes for c in self.outputs.nodes]
        return list(self.edges or [])

    def _edge_count(self) -> int:
        if self.lattice in ("graph", "bipartite"):
            return len(self._edge_list())
        if self.lattice == "square":
            assert self.shape is not None
            nx, ny = self.shape
            return (nx - 1) * ny + nx * (ny - 1)
        d = self._count()
        return d if self.lattice == "ring" else d - 1

    def parameter_bounds(self) -> tuple[Array, Array]:
        """(lower, upper) per parameter: |V| ≤ potential_bound, J in hopping_bounds."""
        d, b = self._count(), self.potential_bound
        lo, hi = np.full(d, -b), np.full(d, b)
        if self.train_hopping:
            n = self._edge_count()
            lo = np.concatenate([lo, np.full(n, self.hopping_bounds[0])])
            hi = np.concatenate([hi, np.full(n, self.hopping_bounds[1])])
        return lo, hi

    def parameter_names(self) -> list[str]:
        return self.lattice_model().parameter_names()

    def parameter_units(self) -> list[str]:
        """Every parameter is an energy in the lattice's unit E."""
        return ["E"] * (self._count() + (self._edge_count() if self.train_hopping else 0))

    def drive(self, u: Array) -> CArray:
        """The pump pattern F (B, d) complex (energy E) of features u (B, n_in)."""
        uu = np.asarray(u, dtype=float)
        if uu.ndim != 2 or uu.shape[1] != self.n_inputs:
            raise ConfigError(f"inputs: expected shape (batch, {self.n_inputs}), got {uu.shape}")
        inp = self.inputs
        f = np.zeros((uu.shape[0], self._count()), dtype=np.complex128)
        f[:, inp.nodes] = inp.gain * (uu + inp.offset) * np.exp(1j * inp.phases())[None, :]
        if inp.bias_nodes:
            f[:, inp.bias_nodes] += inp.bias_amplitude * np.exp(1j * inp.bias_phase_rad)
        return f
