"""Pseudo-arclength continuation of GP stationary states in the drive (simulators/gp_continuation.py;
docs/physics.md §9): through the folds of a bistable site, and on a resonant chain where the
drive ramp fails."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from physlearn.errors import SolverError
from physlearn.simulators.gp_continuation import continue_in_drive
from physlearn.simulators.gp_lattice import GPSolveOptions, residual, solve_stationary
from physlearn.simulators.gp_lattice_adjoint import bogoliubov_spectrum
from physlearn.spec.gp_lattice import chain, example_chain


def site_roots(f: float) -> np.ndarray:
    """Occupations of one site (g = 1, γ = 0.2, V − ω_p = −1) driven at |F| = f (the cubic)."""
    roots = np.roots([1.0, -2.0, 1.0 + 0.01, -(f**2)])
    return np.sort(roots[np.abs(roots.imag) < 1e-10].real)


@pytest.mark.parametrize(("f", "branch"), [(0.3, 0), (0.5, -1)])
def test_the_curve_from_rest_reaches_the_documented_branch(f: float, branch: int) -> None:
    """Inside the bistable range (0.0999 < |F| < 0.389) the first crossing of the full drive is
    the lower branch; above it the curve has passed both folds onto the only (upper) branch
    (checked once by counting the sign changes of the tangent's s-component: 0 and 2)."""
    lat = chain(1, kerr=1.0, loss=0.2, potential=0.0, pump_energy=1.0)
    state = continue_in_drive(lat, np.array([f + 0j]))
    assert abs(state.density[0] - site_roots(f)[branch]) < 1e-10
    assert bogoliubov_spectrum(lat, state.psi).stable


def test_continuation_finds_a_state_where_the_drive_ramp_fails() -> None:
    """A chain driven inside its band at γ = 0.02: Newton and the ramp fail; the continuation
    finds a stationary state, which its spectrum flags as unstable."""
    base, drive = example_chain(16, 1, pump_energy=0.5, drive_amplitude=0.6)
    lat = dataclasses.replace(base, loss=np.full(16, 0.02))
    with pytest.raises(SolverError):
        solve_stationary(lat, drive)
    state = continue_in_drive(lat, drive, solve_opts=GPSolveOptions(ramp_steps=1))
    assert np.max(np.abs(residual(lat, state.psi, drive))) <= 1e-12
    assert not bogoliubov_spectrum(lat, state.psi).stable
