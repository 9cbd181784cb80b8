"""`GPLatticeTwin`: the ideal twin of a coherently pumped GP lattice (level ``ideal``).

The `GPSystem` of a `physlearn.spec.gp_network.GPNetworkSpec`: parameters θ = V (then J),
inputs → the pump pattern F = gain·(u + offset)·e^{iφ} on the input sites (+ the bias pump),
`measure()` → the stationary states (`simulators.gp_lattice.solve_stationary`, Newton on the real
field) as a `DensityObservation` with the densities and the complex field (the twin "measures"
it exactly; a bench would need holography).

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
from physlearn.spec.gp_lattice import DensityCost, GPLattice
from physlearn.spec.gp_network import GPNetworkSpec
from physlearn.spec.gp_system import DensityObservation, GPSystem, density_targets
from physlearn.spec.system import Level, SettleInfo
from physlearn.spec.task import Task, check_task

log = logging.getLogger(__name__)
Array = NDArray[np.float64]
CArray = NDArray[np.complex128]

__all__ = ["NEUTRAL_TOL", "GPLatticeTwin"]

#: the largest Bogoliubov growth rate (E/ħ) taken as neutral: a lossless lattice's states are at
#: best neutrally stable (Re λ = 0 up to rounding)
NEUTRAL_TOL = 1e-9


class GPLatticeTwin(GPSystem):
    """The ideal twin of a GP lattice network (module docstring).

    Args:
        spec: the lattice, its inputs and outputs.
        options: Newton's options (`GPSolveOptions`).
        stability: which states' Bogoliubov stability `measure` checks: ``free``, ``all``
            (nudged and replaced-pump states too) or ``none``.
    """

    level = Level.IDEAL

    def __init__(
        self,
        spec: GPNetworkSpec,
        options: GPSolveOptions | None = None,
        *,
        stability: Literal["all", "free", "none"] = "free",
    ):
        if stability not in ("all", "free", "none"):
            raise ConfigError(f"stability: 'all', 'free' or 'none', got {stability!r}")
        self.spec = spec
        self.options = options or GPSolveOptions()
        self.stability = stability
        self.experiments = 0
        self._theta = spec.initial_parameters()
        self._lower, self._upper = spec.parameter_bounds()
        self._u: Array | None = None
        self._drive: CArray | None = None
        self._replaced: CArray | None = None
        self._shift: Array | None = None
        self._free_psi: CArray | None = None
        self.last_psi: CArray | None = None

    # ------------------------------------------------------------------ description
    @property
    def n_nodes(self) -> int:
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

    def lattice(self, theta: Array | None = None) -> GPLattice:
        return self.spec.lattice_model(self._theta if theta is None else theta)

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
        self._shift = np.broadcast_to(s, (B, d)).copy()

    async def set_drive(self, drive: CArray | None) -> None:
        if drive is None:
            self._replaced = None
            return
        B, d = self._batch(), self.n_nodes
        f = np.asarray(drive, dtype=np.complex128)
        if f.shape != (B, d) or not np.all(np.isfinite(f)):
            raise ConfigError(f"drive: expected a finite complex array ({B}, {d}), got {f.shape}")
        self._replaced = f.copy()

    async def drive_pattern(self) -> CArray:
        self._batch()
        assert self._drive is not None
        return (self._drive if self._replaced is None else self._replaced).copy()

    # ------------------------------------------------------------------ states
    def _solve(self, lat: GPLattice, drive: CArray, start: CArray | None) -> CArray:
        return solve_stationary(lat, drive, start, self.options).psi

    def stationary(
        self, theta: Array, drive: CArray, shift: Array | None, starts: CArray | None
    ) -> CArray:
        """ψ (B, d) for the pump (B, d) at θ (+ the shift per sample), from ``starts`` (or the
        free-phase recipe); `SteadyStateError` names every sample without a state."""
        B = drive.shape[0]
        psi = np.zeros(drive.shape, dtype=np.complex128)
        failed: list[int] = []
        base = self.lattice(theta)
        for i in range(B):
            lat = base if shift is None else base.with_parameters(self._shifted(theta, shift[i]))
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

    def _shifted(self, theta: Array, shift: Array) -> Array:
        out = np.array(theta, dtype=float)
        out[: self.n_nodes] += shift
        return out

    def growth_rates(self, theta: Array, psi: CArray, shift: Array | None = None) -> Array:
        """max Re λ of the Bogoliubov spectrum per sample (B,), 1/(ħ/E): < 0 when stable."""
        base = self.lattice(theta)
        out = np.zeros(psi.shape[0])
        for i in range(psi.shape[0]):
            lat = base if shift is None else base.with_parameters(self._shifted(theta, shift[i]))
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
        dens = np.abs(psi) ** 2
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
        y = np.broadcast_to(y, (uu.shape[0], self.n_nodes))
        lat = self.lattice(theta)
        grads, costs = np.zeros((uu.shape[0], self.n_params)), np.zeros(uu.shape[0])
        for i in range(uu.shape[0]):
            cost = DensityCost(outs, y[i, outs], w[outs])
            g = density_gradient(lat, psi[i], cost)
            grads[i], costs[i] = g.theta, g.cost
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
