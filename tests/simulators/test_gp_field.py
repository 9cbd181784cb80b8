"""The 1-D GP field twin (physlearn.spec.gp_field with simulators/gp_lattice*.py; docs/physics.md
§9): spectral convergence of the stationary state, stability, and the adjoint gradient against
Richardson finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from physlearn.simulators.gp_lattice import residual, solve_stationary
from physlearn.simulators.gp_lattice_adjoint import bogoliubov_spectrum, density_gradient
from physlearn.spec.gp_field import GPField1D, gaussian_field, periodic_bump
from physlearn.spec.gp_lattice import DensityCost, phase_conjugate_drive

CArray = np.ndarray


def ring(n: int) -> tuple[GPField1D, CArray]:
    """A 40 μm ring with a 1 E well at its centre (c = 0.38 E μm², g = 0.5, γ = 0.2 E,
    ω_p = −0.3 E), pumped by a smooth spot at x = 12 μm carrying 3 wavelengths per ring."""
    field = gaussian_field(n, pump_energy=-0.3, loss=0.2)
    x = field.x_um
    return field, 0.2 * periodic_bump(x, 12.0, 3.0, 40.0) * np.exp(2j * np.pi * 3 * x / 40.0)


def test_the_stationary_field_converges_spectrally_in_the_grid() -> None:
    """Measured max |ψ_n − ψ_2n| on the shared points: 8.2e-5 (n = 48), 1.4e-6 (64)."""
    states = {}
    for n in (48, 64, 96, 128):
        field, drive = ring(n)
        state = solve_stationary(field, drive)
        assert not state.ramped
        assert np.max(np.abs(residual(field, state.psi, drive))) <= 1e-12
        assert bogoliubov_spectrum(field, state.psi).max_growth_rate < -0.05
        states[n] = state.psi
    assert np.abs(states[48] - states[96][::2]).max() < 2e-4
    assert np.abs(states[64] - states[128][::2]).max() < 3e-6


@pytest.mark.parametrize("n", [32, 64])
def test_field_adjoint_matches_richardson_differences(n: int) -> None:
    field, drive = ring(n)
    state = solve_stationary(field, drive)
    outputs = np.arange(3 * n // 4 - 2, 3 * n // 4 + 2)
    cost = DensityCost(outputs=outputs, targets=np.full(4, 0.05))
    grad = density_gradient(field, state.psi, cost).theta
    theta = field.parameters()

    def cost_at(v: np.ndarray, s: float) -> float:
        moved = field.with_parameters(theta + s * v)
        return cost.value(solve_stationary(moved, drive, start=state.psi).psi)

    def richardson(v: np.ndarray, h: float = 1e-3) -> float:
        def central(step: float) -> float:
            return (cost_at(v, step) - cost_at(v, -step)) / (2 * step)

        return (4 * central(h / 2) - central(h)) / 3

    directions = np.eye(n)
    fd = np.array([richardson(v) for v in directions])
    assert np.linalg.norm(grad - fd) <= 1e-7 * np.linalg.norm(fd)
    assert np.linalg.norm(fd) > 1e-4


def test_the_phase_conjugated_phase_is_exact_on_the_field() -> None:
    field, drive = ring(48)
    psi = solve_stationary(field, drive).psi
    cost = DensityCost(outputs=np.arange(34, 38), targets=np.full(4, 0.05))
    exact = density_gradient(field, psi, cost).theta
    learning_drive = phase_conjugate_drive(field, psi, drive)

    def densities(beta: float) -> np.ndarray:
        shift = np.zeros(48)
        rho = np.abs(psi[cost.outputs]) ** 2
        shift[cost.outputs] = -beta * (rho - cost.targets)
        moved = field.with_parameters(field.parameters() + shift)
        return solve_stationary(moved, learning_drive, start=np.conj(psi)).density

    beta = 5e-3
    estimate = -(densities(beta) - densities(-beta)) / (2 * beta)
    assert np.linalg.norm(estimate - exact) < 1e-4 * np.linalg.norm(exact)
