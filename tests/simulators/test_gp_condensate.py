"""Condensates of an incoherently pumped GP lattice (simulators/gp_condensate.py; docs/physics.md
§9): the single site against its closed form, the phase mode, the state selected from noise and
the bordered adjoint against Richardson finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from physlearn.errors import SolverError
from physlearn.simulators.gp_condensate import (
    CondensateState,
    condensate_gradient,
    condensate_jacobian,
    condensate_residual,
    condensate_spectrum,
    settle_condensate,
    solve_condensate,
)
from physlearn.simulators.gp_lattice import to_real
from physlearn.spec.gp_condensate import SaturablePump
from physlearn.spec.gp_lattice import DensityCost, GPLattice, chain


def pumped_chain(d: int, seed: int) -> tuple[GPLattice, SaturablePump]:
    """A chain with random V ∈ [−0.3, 0.3], J ∈ [0.5, 1] (trainable), g = 0.5, γ = 0.2, random
    pump rates P ∈ [0, 0.8] and n_s = 2."""
    rng = np.random.default_rng(seed)
    base = chain(d, potential=rng.uniform(-0.3, 0.3, d), kerr=0.5, loss=0.2)
    hopping = rng.uniform(0.5, 1.0, base.n_edges)
    lat = GPLattice(base.potential, base.edges, hopping, base.kerr, base.loss, 0.0, True)
    return lat, SaturablePump(rate=rng.uniform(0.0, 0.8, d), saturation=np.full(d, 2.0))


def test_a_single_site_condenses_at_its_closed_form() -> None:
    """n = n_s (P/γ − 1), μ = V + g n; the phase mode at 0, the density mode decays."""
    lat = chain(1, potential=0.3, kerr=0.5, loss=0.2)
    pump = SaturablePump(rate=np.array([0.5]), saturation=np.array([2.0]))
    state = solve_condensate(lat, pump)
    assert state.density[0] == pytest.approx(2.0 * (0.5 / 0.2 - 1.0), rel=1e-12)
    assert state.mu == pytest.approx(0.3 + 0.5 * 3.0, rel=1e-12)
    spectrum = condensate_spectrum(lat, pump, state)
    assert abs(spectrum.symmetry_eigenvalues[0]) < 1e-12
    assert spectrum.stable and spectrum.max_growth_rate < -0.05


def test_below_threshold_there_is_no_condensate() -> None:
    lat = chain(3, kerr=0.5, loss=0.2)
    with pytest.raises(SolverError, match="threshold"):
        solve_condensate(lat, SaturablePump(rate=np.full(3, 0.15), saturation=1.0))


def test_the_phase_rotation_is_a_null_vector_of_the_jacobian() -> None:
    lat, pump = pumped_chain(6, 1)
    state = solve_condensate(lat, pump)
    assert state.phi[state.reference].imag == 0.0
    rotation = to_real(1j * state.phi)
    jac = condensate_jacobian(lat, pump, state.phi, state.mu)
    assert np.max(np.abs(jac @ rotation)) < 1e-12 * np.max(np.abs(jac))


@pytest.mark.parametrize("d", [4, 16])
def test_the_condensate_selected_from_noise_is_stable(d: int) -> None:
    lat, pump = pumped_chain(d, 0)
    state = settle_condensate(lat, pump, np.random.default_rng(7))
    assert np.max(np.abs(condensate_residual(lat, pump, state.phi, state.mu))) <= 1e-12
    spectrum = condensate_spectrum(lat, pump, state)
    assert abs(spectrum.symmetry_eigenvalues[0]) < 1e-10
    assert spectrum.stable


def richardson(
    lat: GPLattice,
    pump: SaturablePump,
    state: CondensateState,
    cost: DensityCost,
    v: np.ndarray,
    h: float = 1e-3,
) -> float:
    theta = lat.parameters()

    def cost_at(s: float) -> float:
        moved = lat.with_parameters(theta + s * v)
        return cost.value(solve_condensate(moved, pump, start=(state.phi, state.mu)).phi)

    def central(step: float) -> float:
        return (cost_at(step) - cost_at(-step)) / (2 * step)

    return (4 * central(h / 2) - central(h)) / 3


@pytest.mark.parametrize("d", [4, 16])
def test_condensate_adjoint_matches_richardson_differences(d: int) -> None:
    """Measured relative error 2.8e-12 (d = 4), 3.0e-10 (d = 16), every coordinate (V and J)."""
    lat, pump = pumped_chain(d, 0)
    state = settle_condensate(lat, pump, np.random.default_rng(7))
    cost = DensityCost(outputs=np.arange(d // 2, d), targets=np.full(d - d // 2, 0.5))
    grad = condensate_gradient(lat, pump, state, cost).theta
    fd = np.array([richardson(lat, pump, state, cost, v) for v in np.eye(lat.n_params)])
    assert np.linalg.norm(grad - fd) <= 1e-7 * np.linalg.norm(fd)
    assert np.linalg.norm(fd) > 1e-3
