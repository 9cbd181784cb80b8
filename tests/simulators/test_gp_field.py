"""The 1-D GP field twin (physlearn.spec.gp_field with simulators/gp_lattice*.py; docs/physics.md
§9): spectral convergence of the stationary state, stability, and the adjoint gradient against
Richardson finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from physlearn.simulators.gp_lattice import GPSolveOptions, residual, solve_stationary
from physlearn.simulators.gp_lattice_adjoint import bogoliubov_spectrum, density_gradient
from physlearn.spec.gp_field import GPField, example_torus, gaussian_field, periodic_bump
from physlearn.spec.gp_lattice import DensityCost, phase_conjugate_drive

CArray = np.ndarray


def ring(n: int) -> tuple[GPField, CArray]:
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


def disk(n: int) -> tuple[GPField, CArray]:
    """`example_torus`: a well at the centre of a 40 μm torus and a pump spot beside it."""
    return example_torus(n)


def test_the_2d_laplacian_is_the_sum_of_the_axes() -> None:
    field, _ = disk(8)
    x, y = field.coordinates_um()
    wave = np.exp(2j * np.pi * (2 * x + 3 * y) / 40.0)
    k2 = (2 * np.pi / 40.0) ** 2 * (4 + 9)
    np.testing.assert_allclose(field.hop(wave), -0.38 * k2 * wave, rtol=0, atol=1e-12)
    rhs = np.random.default_rng(0).normal(size=64) + 0j
    x_sol = field.shifted_inverse(0.3 - 0.1j, rhs)
    np.testing.assert_allclose((0.3 - 0.1j) * x_sol - field.hop(x_sol), rhs, rtol=0, atol=1e-12)


def test_newton_krylov_on_the_2d_field_agrees_with_dense_and_scales() -> None:
    """16 × 16: Newton–Krylov (Fourier preconditioner) = dense LAPACK; 48 × 48 solved by
    Newton–Krylov by default (docs/benchmarks.md: 6 Newton steps, 64 × 64 in 0.27 s)."""
    field, drive = disk(16)
    dense = solve_stationary(field, drive, opts=GPSolveOptions(method="dense"))
    krylov = solve_stationary(field, drive, opts=GPSolveOptions(method="krylov"))
    np.testing.assert_allclose(krylov.psi, dense.psi, rtol=0, atol=1e-12)
    field, drive = disk(48)
    state = solve_stationary(field, drive)
    assert state.method == "krylov" and not state.ramped and state.iterations <= 10
    assert np.max(np.abs(residual(field, state.psi, drive))) <= 1e-12


def test_2d_adjoint_by_krylov_matches_dense_and_differences() -> None:
    field, drive = disk(16)
    psi = solve_stationary(field, drive).psi
    x, y = field.coordinates_um()
    outputs = np.flatnonzero((np.abs(x - 28.0) < 3.0) & (np.abs(y - 20.0) < 3.0))
    cost = DensityCost(outputs=outputs, targets=np.full(outputs.shape, 0.05))
    dense = density_gradient(field, psi, cost, krylov=False).theta
    krylov = density_gradient(field, psi, cost, krylov=True).theta
    np.testing.assert_allclose(krylov, dense, rtol=0, atol=1e-11 * np.abs(dense).max())
    rng = np.random.default_rng(1)
    theta = field.parameters()
    for v in (rng.normal(size=256), np.eye(256)[outputs[0]]):

        def cost_at(s: float, v: np.ndarray = v) -> float:
            moved = field.with_parameters(theta + s * v)
            return cost.value(solve_stationary(moved, drive, start=psi).psi)

        def central(h: float) -> float:
            return (cost_at(h) - cost_at(-h)) / (2 * h)

        fd = (4 * central(5e-4) - central(1e-3)) / 3
        assert abs(dense @ v - fd) <= 1e-7 * abs(fd)  # measured 8.5e-10 and 3.5e-12
        assert abs(fd) > 1e-4
