"""A GP field as a trainable network: the ``[network.gp_field]`` table of ``physlearn train``.

The field (docs/physics.md §9, `physlearn.spec.gp_field.GPField`) lives on a periodic grid of
``grid = [n]`` points (a ring of length ``length_um``, μm) or ``[nx, ny]`` (an L × L torus),
with the kinetic coefficient ``kinetic`` c = ħ²/2m (E·μm²), uniform Kerr g, loss γ and pump
frequency ω_p (energy unit E, ħ = 1). There are no nodes: every position is given in μm.

**Trainable landscape** (``landscape``), bounded in E by ``potential_bound``:

* ``"grid"`` — V(x_j) at every grid point, θ = V (n,);
* ``"bumps"`` — V(r) = Σ_m a_m b_m(r) on ``bumps`` smooth periodic Gaussians per axis
  (`physlearn.spec.gp_field.periodic_bump`, width ``bump_width_um``) centred on an even mesh
  (m·L/M per axis): θ = a (M,) or (M_x·M_y,), each an energy (what a coarse SLM pattern writes).

Parameters start at ``potential`` plus a uniform draw in ±``init_scale`` from
``default_rng(seed)``; the bounds apply to θ (|θ| ≤ ``potential_bound``).

**Inputs** are pump profiles: feature u_k drives the spot p_k(r) (a periodic Gaussian of width
``inputs.width_um`` and peak 1 centred on ``inputs.centers_um[k]``)

    F(r) = Σ_k gain · (u_k + offset) · e^{i φ_k} p_k(r) + Σ_b bias_amplitude · e^{i bias_phase} p_b(r)

with the fixed bias spots at ``inputs.bias_centers_um`` (energies E).
**Outputs** are the integrated densities N_k = Σ_{j ∈ R_k} |ψ_j|² ΔA of the output regions R_k
(the grid points within ``outputs.radius_um`` of ``outputs.centers_um[k]``, periodic distance;
ΔA = Π L/n_axis, μm or μm²) — what a camera integrates over a window — with the cost
C = ½ Σ_k w (N_k − y_k)², w = ``outputs.weight``.

A position is one number (1-D) or one per axis (2-D), each in [0, L).

**Readout channels.** A field's observation holds its density image (n grid points) followed
by the K region integrals: channel n + k is N_k (`output_channels`). The density task and the
GP estimators work on these channels as on a lattice's sites; a nudge written on channel n + k
is the potential shift ΔV_j = s_k ΔA on R_k (`channel_potential`: ∂N_k/∂|ψ_j|² = ΔA), which is
what the cost's derivative becomes in the energy functional.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from physlearn.errors import ConfigError
from physlearn.spec.gp_field import GPField, periodic_bump
from physlearn.spec.gp_network import input_phases

Array = NDArray[np.float64]
CArray = NDArray[np.complex128]

__all__ = ["GPFieldInputs", "GPFieldNetworkSpec", "GPFieldOutputs"]

Position = float | list[float]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _finite(values: list[Position], name: str) -> list[Position]:
    for p in values:
        if not np.all(np.isfinite(np.asarray(p, dtype=float))):
            raise ValueError(f"{name}: positions must be finite, got {p}")
    return values


class GPFieldInputs(_Model):
    """``[network.gp_field.inputs]``: the pump spots the features drive (module docstring)."""

    centers_um: list[Position] = Field(min_length=1)
    width_um: float = Field(2.0, gt=0, allow_inf_nan=False)
    gain: float = Field(1.0, allow_inf_nan=False)
    offset: float = Field(0.0, allow_inf_nan=False)
    phase_rad: float | list[float] = 0.0
    bias_centers_um: list[Position] = Field(default_factory=list)
    bias_amplitude: float = Field(0.0, allow_inf_nan=False)
    bias_phase_rad: float = Field(0.0, allow_inf_nan=False)

    _c = field_validator("centers_um")(lambda v: _finite(v, "centers_um"))
    _b = field_validator("bias_centers_um")(lambda v: _finite(v, "bias_centers_um"))

    def phases(self) -> Array:
        """φ_k (n_in,) rad."""
        return input_phases(self.phase_rad, len(self.centers_um), "spot")

    @model_validator(mode="after")
    def _check(self) -> GPFieldInputs:
        self.phases()
        if self.bias_centers_um and self.bias_amplitude == 0.0:
            raise ValueError("bias_amplitude: bias_centers_um are listed but their amplitude is 0")
        return self


class GPFieldOutputs(_Model):
    """``[network.gp_field.outputs]``: the regions whose integrated densities are the outputs,
    and the cost weight w of each (module docstring)."""

    centers_um: list[Position] = Field(min_length=1)
    radius_um: float = Field(2.0, gt=0, allow_inf_nan=False)
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)

    _c = field_validator("centers_um")(lambda v: _finite(v, "centers_um"))


class GPFieldNetworkSpec(_Model):
    """A driven-dissipative GP field trained through its potential landscape (module docstring).

    Energies in E (ħ = 1), lengths in μm: ``kinetic`` c (E·μm²), ``kerr`` g, ``loss`` γ ≥ 0,
    ``pump_energy`` ω_p, ``potential`` (the initial θ), ``potential_bound``.
    """

    kind: Literal["gp_field"] = "gp_field"
    grid: list[int] = Field(min_length=1, max_length=2)
    length_um: float = Field(gt=0, allow_inf_nan=False)
    kinetic: float = Field(0.38, gt=0, allow_inf_nan=False)
    kerr: float = Field(0.5, allow_inf_nan=False)
    loss: float = Field(0.2, ge=0, allow_inf_nan=False)
    pump_energy: float = Field(0.0, allow_inf_nan=False)
    landscape: Literal["grid", "bumps"] = "bumps"
    bumps: list[int] | None = None
    bump_width_um: float | None = Field(None, gt=0, allow_inf_nan=False)
    potential: float = Field(0.0, allow_inf_nan=False)
    init_scale: float = Field(0.0, ge=0, allow_inf_nan=False)
    seed: int = 0
    potential_bound: float = Field(3.0, gt=0, allow_inf_nan=False)
    inputs: GPFieldInputs
    outputs: GPFieldOutputs

    @model_validator(mode="after")
    def _check(self) -> GPFieldNetworkSpec:
        if min(self.grid) < 4:
            raise ValueError(f"grid: at least 4 points per axis, got {self.grid}")
        dim = len(self.grid)
        if self.landscape == "bumps":
            if self.bumps is None or self.bump_width_um is None:
                raise ValueError(
                    "bumps / bump_width_um: landscape = 'bumps' needs the bump count per axis "
                    "and their width (μm)"
                )
            if len(self.bumps) != dim or min(self.bumps) < 1:
                raise ValueError(f"bumps: one count ≥ 1 per grid axis ({dim}), got {self.bumps}")
            if any(m > g for m, g in zip(self.bumps, self.grid, strict=True)):
                raise ValueError(f"bumps: at most one bump per grid point, got {self.bumps}")
        elif self.bumps is not None or self.bump_width_um is not None:
            raise ValueError("bumps / bump_width_um: only with landscape = 'bumps'")
        for name, positions in (
            ("inputs.centers_um", self.inputs.centers_um),
            ("inputs.bias_centers_um", self.inputs.bias_centers_um),
            ("outputs.centers_um", self.outputs.centers_um),
        ):
            self._positions(positions, name)
        if not self.outputs.radius_um < self.length_um / 2:
            raise ValueError(
                f"outputs.radius_um: a region must be smaller than half the field "
                f"({self.length_um / 2} μm), got {self.outputs.radius_um}"
            )
        readout = self._region_masks()
        empty = [k for k in range(readout.shape[0]) if not readout[k].any()]
        if empty:
            raise ValueError(
                f"outputs.radius_um: regions {empty} hold no grid point (spacing "
                f"{self.length_um / min(self.grid):.3g} μm)"
            )
        if np.any(readout.sum(axis=0) > 1):
            raise ValueError("outputs.centers_um: output regions overlap")
        inside = [
            k for k, c in enumerate(self._positions(self.inputs.centers_um, "")) if self._in(c)
        ]
        if inside:
            raise ValueError(f"inputs.centers_um: input spots {inside} lie in an output region")
        if np.max(np.abs(self._initial())) > self.potential_bound:
            raise ValueError(
                f"potential / init_scale: initial values exceed potential_bound "
                f"{self.potential_bound}"
            )
        try:
            self.lattice_model()
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    # ------------------------------------------------------------------ geometry
    def _positions(self, positions: list[Position], name: str) -> Array:
        """(K, D) positions in μm; ValueError naming ``name`` for a wrong length or range."""
        dim = len(self.grid)
        out = np.zeros((len(positions), dim))
        for k, p in enumerate(positions):
            c = np.atleast_1d(np.asarray(p, dtype=float))
            if c.shape != (dim,):
                raise ValueError(
                    f"{name}: position {k} must have {dim} coordinate(s) (μm), got {p}"
                )
            if np.any(c < 0) or np.any(c >= self.length_um):
                raise ValueError(f"{name}: position {k} = {p} is not in [0, {self.length_um}) μm")
            out[k] = c
        return out

    def _distance(self, center: Array) -> Array:
        """Periodic distance (n,) μm of every grid point from ``center`` (D,)."""
        coords = self._coordinates()
        sq = np.zeros(self.n_sites)
        for axis, x in enumerate(coords):
            d = np.abs(x - center[axis]) % self.length_um
            sq += np.minimum(d, self.length_um - d) ** 2
        return np.asarray(np.sqrt(sq))

    def _in(self, center: Array) -> bool:
        """Whether ``center`` (D,) lies within an output region (periodic distance)."""
        for c in self._positions(self.outputs.centers_um, "outputs.centers_um"):
            d = np.abs(center - c) % self.length_um
            if np.sqrt(np.sum(np.minimum(d, self.length_um - d) ** 2)) <= self.outputs.radius_um:
                return True
        return False

    def _coordinates(self) -> tuple[Array, ...]:
        axes = [np.arange(g) * self.length_um / g for g in self.grid]
        return tuple(c.reshape(-1) for c in np.meshgrid(*axes, indexing="ij"))

    def _spot(self, center: Array, width: float) -> Array:
        """The peak-1 periodic Gaussian (n,) of width ``width`` at ``center`` (product over axes)."""
        out = np.ones(self.n_sites)
        for axis, x in enumerate(self._coordinates()):
            out *= periodic_bump(x, float(center[axis]), width, self.length_um)
        return out

    def _region_masks(self) -> NDArray[np.bool_]:
        outs = self._positions(self.outputs.centers_um, "outputs.centers_um")
        return np.array([self._distance(c) <= self.outputs.radius_um for c in outs])

    @property
    def cell_area(self) -> float:
        """ΔA = Π L/n_axis (μm or μm²): the grid cell of the region integrals."""
        return float(np.prod([self.length_um / g for g in self.grid]))

    # ------------------------------------------------------------------ description
    @property
    def n_sites(self) -> int:
        """Grid points n."""
        return int(np.prod(self.grid))

    @property
    def n_inputs(self) -> int:
        return len(self.inputs.centers_um)

    @property
    def n_outputs(self) -> int:
        return len(self.outputs.centers_um)

    @property
    def n_channels(self) -> int:
        """Observed channels: the n grid densities, then the K region integrals."""
        return self.n_sites + self.n_outputs

    @property
    def output_channels(self) -> list[int]:
        """The channels of the region integrals N_k: n, …, n + K − 1."""
        return list(range(self.n_sites, self.n_channels))

    def readout_matrix(self) -> Array:
        """R (K, n): N = R |ψ|², R_kj = ΔA on region k (module docstring)."""
        return self._region_masks().astype(float) * self.cell_area

    def potential_basis(self) -> Array | None:
        """B (n, P) with V = B θ for ``bumps`` (each column a bump on the grid); None for
        ``grid`` (θ = V)."""
        if self.landscape == "grid":
            return None
        assert self.bumps is not None and self.bump_width_um is not None
        mesh = [np.arange(m) * self.length_um / m for m in self.bumps]
        centers = np.stack([c.reshape(-1) for c in np.meshgrid(*mesh, indexing="ij")], axis=1)
        return np.stack([self._spot(c, self.bump_width_um) for c in centers], axis=1)

    @property
    def n_params(self) -> int:
        return self.n_sites if self.landscape == "grid" else int(np.prod(self.bumps or [0]))

    def _initial(self) -> Array:
        rng = np.random.default_rng(self.seed)
        p = self.n_params
        return self.potential + rng.uniform(-self.init_scale, self.init_scale, p)

    def initial_parameters(self) -> Array:
        """θ₀: V on the grid or the bump amplitudes (energy E)."""
        return self._initial()

    def parameter_bounds(self) -> tuple[Array, Array]:
        """(lower, upper): |θ| ≤ potential_bound (E)."""
        b = self.potential_bound
        return np.full(self.n_params, -b), np.full(self.n_params, b)

    def parameter_names(self) -> list[str]:
        """``V[j]`` (grid point j) or ``a[m]`` (bump m, row-major over the bump mesh)."""
        head = "V" if self.landscape == "grid" else "a"
        return [f"{head}[{j}]" for j in range(self.n_params)]

    def parameter_units(self) -> list[str]:
        return ["E"] * self.n_params

    def potential_of(self, theta: Array) -> Array:
        """V on the grid (n,) for θ (energy E)."""
        basis = self.potential_basis()
        t = np.asarray(theta, dtype=float)
        if t.shape != (self.n_params,):
            raise ConfigError(f"gp_field: θ must have shape ({self.n_params},), got {t.shape}")
        return t.copy() if basis is None else np.asarray(basis @ t)

    def lattice_model(self, theta: Array | None = None) -> GPField:
        """The `GPField` at parameters θ (default: the initial ones)."""
        if theta is None:
            theta = self.initial_parameters()
        n = self.n_sites
        return GPField(
            potential=self.potential_of(theta),
            kerr=np.full(n, self.kerr),
            loss=np.full(n, self.loss),
            pump_energy=self.pump_energy,
            length_um=self.length_um,
            kinetic=self.kinetic,
            grid=tuple(self.grid),
        )

    def drive(self, u: Array) -> CArray:
        """The pump pattern F (B, n) complex (energy E) of features u (B, n_in)."""
        uu = np.asarray(u, dtype=float)
        if uu.ndim != 2 or uu.shape[1] != self.n_inputs:
            raise ConfigError(f"inputs: expected shape (batch, {self.n_inputs}), got {uu.shape}")
        inp = self.inputs
        spots = np.stack(
            [self._spot(c, inp.width_um) for c in self._positions(inp.centers_um, "")], axis=0
        )
        amp = inp.gain * (uu + inp.offset) * np.exp(1j * inp.phases())[None, :]
        f = np.asarray(amp @ spots, dtype=np.complex128)
        for c in self._positions(inp.bias_centers_um, ""):
            f += inp.bias_amplitude * np.exp(1j * inp.bias_phase_rad) * self._spot(c, inp.width_um)
        return f
