"""Pseudo-arclength continuation of GP stationary states in the drive amplitude, through folds.

Natural continuation (the drive ramp of `simulators.gp_lattice.solve_stationary`) stops at the
first fold of a multistable branch. Here the drive is s·F and the curve (z(σ), s(σ)) of solutions
of R(ψ; sF) = 0 is followed by its arclength σ from (ψ = 0, s = 0): a secant-free tangent
predictor and a Newton corrector on the bordered system

    [[𝒥, (Re F, Im F)], [tᵀ]] (Δz, Δs) = −(R, tᵀ(w − w_pred)),

with the tangent t re-solved at every point (its orientation kept). The first crossing of s = 1
is polished at s = 1 by Newton. The state found lies on the branch connected to ψ = 0 and may be
unstable (past a fold): the Bogoliubov spectrum tells. Dense linear algebra (lattices and small
fields).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import SolverError
from physlearn.simulators.gp_lattice import (
    GPSolveOptions,
    StationaryState,
    real_jacobian,
    residual,
    solve_stationary,
    to_complex,
    to_real,
)
from physlearn.spec.gp_lattice import GPModel

Array = NDArray[np.float64]
CArray = NDArray[np.complex128]


@dataclass(frozen=True)
class ContinuationOptions:
    """``step`` initial arclength step (in the units of (Re ψ, Im ψ, s)), ``max_step``,
    ``min_step`` (below it: `SolverError`), ``max_points`` along the curve, ``tol`` of the
    corrector on max |R|."""

    step: float = 0.05
    max_step: float = 0.5
    min_step: float = 1e-7
    max_points: int = 5000
    tol: float = 1e-10


def _bordered(lat: GPModel, psi: CArray, drive_r: Array, tangent: Array) -> Array:
    n = 2 * lat.n_sites
    mat = np.zeros((n + 1, n + 1))
    mat[:n, :n] = np.asarray(real_jacobian(lat, psi))
    mat[:n, n] = drive_r
    mat[n] = tangent
    return mat


def _tangent(lat: GPModel, psi: CArray, drive_r: Array, previous: Array) -> Array:
    """The unit tangent of the curve at ψ, oriented along ``previous``."""
    rhs = np.zeros(previous.shape[0])
    rhs[-1] = 1.0
    t = np.linalg.solve(_bordered(lat, psi, drive_r, previous), rhs)
    return t / np.linalg.norm(t)


def _correct(
    lat: GPModel, drive: CArray, w_pred: Array, tangent: Array, tol: float
) -> Array | None:
    """Newton on (R(ψ; sF), tᵀ(w − w_pred)) from w_pred; None after 8 steps without converging."""
    drive_r, n, w = to_real(drive), 2 * lat.n_sites, w_pred.copy()
    for _ in range(8):
        psi = to_complex(w[:n])
        r = residual(lat, psi, w[n] * drive)
        if np.max(np.abs(r)) <= tol:
            return w
        eqs = np.r_[to_real(r), tangent @ (w - w_pred)]
        w = w - np.linalg.solve(_bordered(lat, psi, drive_r, tangent), eqs)
    return None


def continue_in_drive(
    lat: GPModel,
    drive: CArray,
    opts: ContinuationOptions | None = None,
    solve_opts: GPSolveOptions | None = None,
) -> StationaryState:
    """The first stationary state at the full drive F (d,) along the arclength curve from
    ψ = 0 (module docstring); `SolverError` if the step falls below ``min_step`` or the curve
    does not reach s = 1 within ``max_points``."""
    opts = opts or ContinuationOptions()
    drive = np.asarray(drive, dtype=complex)
    n = 2 * lat.n_sites
    drive_r = to_real(drive)
    w = np.zeros(n + 1)
    seed = np.zeros(n + 1)
    seed[n] = 1.0
    tangent = _tangent(lat, np.zeros(lat.n_sites, complex), drive_r, seed)
    h = opts.step
    for _ in range(opts.max_points):
        w_new = _correct(lat, drive, w + h * tangent, tangent, opts.tol)
        if w_new is None:
            h *= 0.5
            if h < opts.min_step:
                raise SolverError(
                    f"GP continuation: the step fell below {opts.min_step:g} at s = {w[n]:.4f}"
                )
            continue
        if w_new[n] >= 1.0 > w[n]:
            frac = (1.0 - w[n]) / (w_new[n] - w[n])
            start = to_complex(w[:n] + frac * (w_new[:n] - w[:n]))
            return solve_stationary(lat, drive, start=start, opts=solve_opts)
        w, h = w_new, min(1.5 * h, opts.max_step)
        tangent = _tangent(lat, to_complex(w[:n]), drive_r, tangent)
    raise SolverError(
        f"GP continuation: s = 1 not reached in {opts.max_points} points (s = {w[n]:.4f})"
    )
