"""`GPLatticeTwin`: the ideal twin of a coherently pumped GP lattice or field (level ``ideal``).

The `GPSystem` of a `physlearn.spec.gp_network.GPNetworkSpec` (a lattice: parameters θ = V, then
J; inputs → the pump pattern F = gain·(u + offset)·e^{iφ} on the input sites, + the bias pump)
or of a `physlearn.spec.gp_field_network.GPFieldNetworkSpec` (a field on a grid: θ = V on the
grid or the amplitudes of smooth bumps; inputs → pump spots; its observed channels are the grid
densities followed by the output regions' integrated densities, and a potential shift written
on a region's channel is spread over the region — that spec's "Readout channels"). Both are
`GPModel`s to the same solvers: `measure()` → the stationary states
(`simulators.gp_lattice.solve_stationary`, Newton on the real field) as a `DensityObservation`
with the channels and the complex field (the twin "measures" it exactly; a bench would need
holography).

Which stationary state: a free phase (no shift, the inputs' own pump) starts from the linear
response and, if Newton fails, ramps the pump from zero (the state a bench reaches by raising
the pump slowly). A nudged phase or a replaced pump starts from the last free state of the same
sample (a bench nudges the state it sits in); under a replaced pump the start is its complex
conjugate (the phase-conjugated learning phase's own state). A free state must be stable: its
Bogoliubov spectrum is checked, and a state with a growing mode (Re λ > `NEUTRAL_TOL`; at γ = 0
a state is at best neutral) raises `UnstableOrbitError`
naming the samples (no bench can sit there) — when ``stability`` asks for it: ``free`` (the free
phases), ``all`` (every phase) or ``none`` (no check while training: an eigenvalue problem of size
2d per sample, on an 80-site lattice four times the cost of the state itself; the trainer still
checks the final parameters through `floquet_check`).

Twin-only: `exact_gradient` (the adjoint of the density cost, `ExactGradients`) and
`floquet_check` (the stability of the free states as multipliers over one unit time ħ/E,
e^{max Re λ}: ≤ 1 for a stable state, `StabilityCheck`).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import (
    ConfigError,
    LimitError,
    SolverError,
    SteadyStateError,
    UnstableOrbitError,
)
from physlearn.simulators.gp_lattice import GPSolveOptions, solve_stationary
from physlearn.simulators.gp_lattice_adjoint import bogoliubov_spectrum, density_gradient
from physlearn.spec.gp_field import RegionDensityCost
from physlearn.spec.gp_lattice import DensityCost, GPCost, GPModel
from physlearn.spec.gp_system import DensityObservation, GPSpec, GPSystem, density_targets
from physlearn.spec.system import Level, SettleInfo
from physlearn.spec.task import Task, check_task

log = logging.getLogger(__name__)
Array = NDArray[np.float64]
CArray = NDArray[np.complex128]

__all__ = ["BOGOLIUBOV_MAX_SITES", "NEUTRAL_TOL", "GPLatticeTwin"]

#: the largest Bogoliubov growth rate (E/ħ) taken as neutral: a lossless lattice's states are at
#: best neutrally stable (Re λ = 0 up to rounding)
NEUTRAL_TOL = 1e-9

#: the most sites (grid points) whose Bogoliubov spectrum `measure` computes: it is a dense
#: eigenproblem of size 2n (O(n³)): ~4 s per state at 1024 points (a 32 × 32 field), ~4 min and
#: 0.5 GB at 4096 (64 × 64) on one core of this project's reference machine
BOGOLIUBOV_MAX_SITES = 1024


class GPLatticeTwin(GPSystem):
    """The ideal twin of a GP lattice or field network (module docstring).

    Args:
        spec: the lattice or field, its inputs and outputs.
        options: Newton's options (`GPSolveOptions`).
        stability: which states' Bogoliubov stability `measure` checks: ``free``, ``all``
            (nudged and replaced-pump states too) or ``none``.
    """

    level = Level.IDEAL

    def __init__(
        self,
        spec: GPSpec,
        options: GPSolveOptions | None = None,
        *,
        stability: Literal["all", "free", "none"] = "free",
    ):
        if stability not in ("all", "free", "none"):
            raise ConfigError(f"stability: 'all', 'free' or 'none', got {stability!r}")
        if stability != "none" and spec.n_sites > BOGOLIUBOV_MAX_SITES:
            raise ConfigError(
                f"system.floquet = {stability!r}: the Bogoliubov spectrum of a network of "
                f"{spec.n_sites} sites is a dense {2 * spec.n_sites}-square eigenproblem per "
                f"state (~4 s at {BOGOLIUBOV_MAX_SITES} sites, growing as n³); above "
                f'{BOGOLIUBOV_MAX_SITES} sites set [system] floquet = "none" (or use a '
                "coarser grid)"
            )
        self.spec = spec
        self.options = options or GPSolveOptions()
        self.stability = stability
        self.experiments = 0
        self._theta = spec.initial_parameters()
        self._lower, self._upper = spec.parameter_bounds()
        self._readout = spec.readout_matrix()  # a field's region integrals (K, n), else None
        self._basis = spec.potential_basis()  # V = basis θ (a field's bumps), else None
        self._u: Array | None = None
        self._drive: CArray | None = None
        self._replaced: CArray | None = None
        self._shift: Array | None = None
        self._free_psi: CArray | None = None
        self.last_psi: CArray | None = None

    # ------------------------------------------------------------------ description
    @property
    def n_nodes(self) -> int:
        """Observed channels: the sites (grid points), then a field's output regions."""
        return self.spec.n_channels

    @property
    def n_sites(self) -> int:
        """Sites of the lattice, points of the field's grid."""
        return self.spec.n_sites

    @property
    def n_params(self) -> int:
        return int(self._theta.shape[0])

    @property
    def measures_field(self) -> bool:
        return True

    @property
    def parameters(self) -> Array:
        return self._theta.copy()

    def lattice(self, theta: Array | None = None) -> GPModel:
        return self.spec.lattice_model(self._theta if theta is None else theta)

    def observe(self, density: Array) -> Array:
        """The observed channels (B, n_nodes) of site densities (B, n_sites)."""
        if self._readout is None:
            return density
        return np.concatenate([density, density @ self._readout.T], axis=1)

    def channel_potential(self, shift: Array) -> Array:
        """The potential shift ΔV (B, n_sites) of a shift (B, n_nodes) on the channels: a
        region's channel spreads over its grid points (∂N_k/∂|ψ_j|² = R_kj)."""
        if self._readout is None:
            return shift
        n = self.n_sites
        return np.asarray(shift[:, :n] + shift[:, n:] @ self._readout)

    # ------------------------------------------------------------------ settings
    def _check_theta(self, theta: Array) -> Array:
        a = np.asarray(theta, dtype=float)
        if a.shape != (self.n_params,):
            raise ConfigError(f"parameters: expected shape ({self.n_params},), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise LimitError(f"parameters: refusing non-finite values {a.tolist()}")
        bad = np.flatnonzero((a < self._lower) | (a > self._upper))
        if bad.size:
            i = int(bad[0])
            raise LimitError(
                f"parameters[{i}] ({self.spec.parameter_names()[i]}) = {a[i]} is outside its "
                f"bounds [{self._lower[i]}, {self._upper[i]}]"
            )
        return a.copy()

    async def set_parameters(self, alpha: Array) -> None:
        self._theta = self._check_theta(alpha)

    async def set_input(self, u: Array) -> None:
        """The pump pattern of features u (B, n_in); removes any shift or replaced pump."""
        uu = np.asarray(u, dtype=float)
        if uu.ndim != 2 or uu.shape[1] != self.spec.n_inputs or uu.shape[0] < 1:
            raise ConfigError(
                f"inputs: expected shape (batch, {self.spec.n_inputs}), got {uu.shape}"
            )
        if not np.all(np.isfinite(uu)):
            raise LimitError("inputs: refusing NaN or inf input values")
        self._u, self._drive = uu.copy(), self.spec.drive(uu)
        self._replaced, self._shift, self._free_psi = None, None, None

    def _batch(self) -> int:
        if self._drive is None:
            raise ConfigError("no input set: call set_input(u) before measurements")
        return int(self._drive.shape[0])

    async def set_potential_shift(self, shift: Array | None) -> None:
        if shift is None:
            self._shift = None
            return
        B, d = self._batch(), self.n_nodes
        s = np.asarray(shift, dtype=float)
        if s.ndim != 2 or s.shape[1] != d or s.shape[0] not in (1, B):
            raise ConfigError(f"potential shift: expected shape ({B} or 1, {d}), got {s.shape}")
        if not np.all(np.isfinite(s)):
            raise LimitError("potential shift: refusing non-finite values")
        self._shift = self.channel_potential(np.broadcast_to(s, (B, d)))

    async def set_drive(self, drive: CArray | None) -> None:
        if drive is None:
            self._replaced = None
            return
        B, d = self._batch(), self.n_sites
        f = np.asarray(drive, dtype=np.complex128)
        if f.shape != (B, d) or not np.all(np.isfinite(f)):
            raise ConfigError(f"drive: expected a finite complex array ({B}, {d}), got {f.shape}")
        self._replaced = f.copy()

    async def drive_pattern(self) -> CArray:
        self._batch()
        assert self._drive is not None
        return (self._drive if self._replaced is None else self._replaced).copy()

    # ------------------------------------------------------------------ states
    def _solve(self, lat: GPModel, drive: CArray, start: CArray | None) -> CArray:
        return solve_stationary(lat, drive, start, self.options).psi

    def stationary(
        self, theta: Array, drive: CArray, shift: Array | None, starts: CArray | None
    ) -> CArray:
        """ψ (B, n_sites) for the pump (B, n_sites) at θ (+ the potential shift ΔV (B, n_sites)
        per sample), from ``starts`` (or the free-phase recipe); `SteadyStateError` names every
        sample without a state."""
        B = drive.shape[0]
        psi = np.zeros(drive.shape, dtype=np.complex128)
        failed: list[int] = []
        base = self.lattice(theta)
        for i in range(B):
            lat = base if shift is None else self._shifted(base, shift[i])
            start = None if starts is None else starts[i]
            try:
                psi[i] = self._solve(lat, drive[i], start)
            except SolverError as exc:
                if start is None:
                    failed.append(i)
                    log.info("sample %d: no stationary state (%s)", i, exc)
                    continue
                try:  # the nudged state from the free recipe, if the warm start failed
                    psi[i] = self._solve(lat, drive[i], None)
                except SolverError:
                    failed.append(i)
        if failed:
            raise SteadyStateError(
                f"GP lattice: no stationary state for samples {failed}",
                sample=failed[0],
                samples=tuple(failed),
            )
        return psi

    def _shifted(self, model: GPModel, shift: Array) -> GPModel:
        """``model`` with ΔV (n_sites,) added to its potential."""
        out = np.array(model.parameters(), dtype=float)
        out[: self.n_sites] += shift
        return model.with_parameters(out)

    def growth_rates(self, theta: Array, psi: CArray, shift: Array | None = None) -> Array:
        """max Re λ of the Bogoliubov spectrum per sample (B,), 1/(ħ/E): < 0 when stable."""
        base = self.lattice(theta)
        out = np.zeros(psi.shape[0])
        for i in range(psi.shape[0]):
            lat = base if shift is None else self._shifted(base, shift[i])
            out[i] = bogoliubov_spectrum(lat, psi[i]).max_growth_rate
        return out

    def _check_stable(self, rates: Array) -> None:
        bad = np.flatnonzero(rates > NEUTRAL_TOL)
        if bad.size:
            i = int(bad[0])
            raise UnstableOrbitError(
                f"the stationary state of sample {i} is unstable: Bogoliubov growth rate "
                f"{rates[i]:.4g} E/ħ > 0",
                sample=i,
                multiplier=float(np.exp(rates[i])),
                samples=tuple(int(j) for j in bad),
            )

    async def measure(self) -> DensityObservation:
        B = self._batch()
        assert self._drive is not None
        free = self._shift is None and self._replaced is None
        drive = self._drive if self._replaced is None else self._replaced
        starts: CArray | None = None
        if not free and self._free_psi is not None:
            starts = self._free_psi if self._replaced is None else np.conj(self._free_psi)
        psi = self.stationary(self._theta, drive, self._shift, starts)
        rates = np.full(B, np.nan)
        if self.stability == "all" or (free and self.stability == "free"):
            rates = self.growth_rates(self._theta, psi, self._shift)
            self._check_stable(rates)
        if free:
            self._free_psi = psi.copy()
        self.experiments += B
        self.last_psi = psi
        dens = self.observe(np.abs(psi) ** 2)
        settle = SettleInfo(np.zeros(B), np.zeros(B), np.ones(B, dtype=bool))
        meta: dict[str, object] = {"level": str(self.level), "bogoliubov_growth_rate": rates}
        return DensityObservation(
            np.zeros(1), dens[:, None, :], 1.0, 1, "occupation", 0.0, settle, meta, psi=psi
        )

    # ------------------------------------------------------------------ twin-only
    def exact_gradient(self, alpha: Array, u: Array, task: Task) -> tuple[Array, Array]:
        """(dC/dθ (B, P), C (B,)) of the density task at the free stationary states (the
        adjoint, one linear solve per sample; counted as experiments)."""
        theta = self._check_theta(alpha)
        uu = np.asarray(u, dtype=float)
        check_task(self, task, uu.shape[0])
        drive = self.spec.drive(uu)
        psi = self.stationary(theta, drive, None, None)
        self.experiments += int(uu.shape[0])
        w, y = density_targets(task)
        outs = np.array(task.output_nodes, dtype=np.int64)
        if self._readout is not None and np.any(outs < self.n_sites):
            raise ConfigError(
                f"task: a field's outputs are its region channels {self.spec.output_channels}, "
                f"got {task.output_nodes}"
            )
        y = np.broadcast_to(y, (uu.shape[0], self.n_nodes))
        lat = self.lattice(theta)
        grads, costs = np.zeros((uu.shape[0], self.n_params)), np.zeros(uu.shape[0])
        for i in range(uu.shape[0]):
            cost: GPCost
            if self._readout is None:
                cost = DensityCost(outs, y[i, outs], w[outs])
            else:
                cost = RegionDensityCost(self._readout[outs - self.n_sites], y[i, outs], w[outs])
            g = density_gradient(lat, psi[i], cost)
            grads[i] = g.theta if self._basis is None else g.theta @ self._basis
            costs[i] = g.cost
        return grads, costs

    async def floquet_check(
        self, alpha: Array, u: Array, task: Task, method: str = "full"
    ) -> Array:
        """e^{max Re λ} per sample (B,): the growth of the worst Bogoliubov mode over one unit
        time ħ/E at the free stationary states (≤ 1: stable); counted as experiments. There is
        one computation (the dense Bogoliubov spectrum): ``method`` is accepted for
        `StabilityCheck`."""
        theta = self._check_theta(alpha)
        uu = np.asarray(u, dtype=float)
        psi = self.stationary(theta, self.spec.drive(uu), None, None)
        self.experiments += int(uu.shape[0])
        return np.asarray(np.exp(self.growth_rates(theta, psi)), dtype=float)
