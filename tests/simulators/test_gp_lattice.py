"""The GP lattice twin (simulators/gp_lattice.py, gp_lattice_adjoint.py; docs/physics.md §9):
stationary states, the Bogoliubov spectrum against a single site's exact bistability and
against integration, and the adjoint gradient against Richardson finite differences."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from physlearn.errors import SolverError
from physlearn.simulators.gp_lattice import (
    GPSolveOptions,
    linear_response,
    real_jacobian,
    residual,
    solve_stationary,
    to_complex,
    to_real,
    vjp,
)
from physlearn.simulators.gp_lattice_adjoint import (
    bogoliubov_spectrum,
    density_gradient,
    ep_limit_gradient,
    nudge_potential,
)
from physlearn.spec.gp_lattice import (
    DensityCost,
    GPLattice,
    chain,
    example_chain,
    phase_conjugate_drive,
)

CArray = np.ndarray


def random_chain(d: int, seed: int) -> tuple[GPLattice, CArray]:
    """`example_chain`: random V and J, pumped inside the band (ω_p = 0.5), γ = 0.5, g = 0.5,
    driven on every site with |F| = 0.3 and random phases."""
    return example_chain(d, seed)


def test_real_jacobian_and_its_transpose_match_the_complex_forms() -> None:
    lat, drive = random_chain(6, 0)
    rng = np.random.default_rng(1)
    psi = rng.normal(size=6) + 1j * rng.normal(size=6)
    jac = real_jacobian(lat, psi)
    z = rng.normal(size=12)
    h = 1e-6
    fd = (
        to_real(residual(lat, psi + h * to_complex(z), drive))
        - to_real(residual(lat, psi - h * to_complex(z), drive))
    ) / (2 * h)
    np.testing.assert_allclose(jac @ z, fd, rtol=0, atol=1e-8)
    np.testing.assert_allclose(jac.T @ z, to_real(vjp(lat, psi, to_complex(z))), rtol=0, atol=1e-13)
    np.testing.assert_array_equal(real_jacobian(lat, psi, sparse=True).toarray(), jac)


def test_loss_is_the_only_non_symmetric_part_of_the_jacobian() -> None:
    """𝒥 − 𝒥ᵀ = γ [[0, I], [−I, 0]] (per site): without loss 𝒥 is ½ the Hessian of the energy
    functional, so the loss alone breaks the symmetry plain EP relies on (docs/physics.md §9)."""
    lat, _ = random_chain(7, 3)
    rng = np.random.default_rng(2)
    psi = rng.normal(size=7) + 1j * rng.normal(size=7)
    jac = real_jacobian(lat, psi)
    gamma = np.diag(lat.loss)
    expected = np.block([[np.zeros((7, 7)), gamma], [-gamma, np.zeros((7, 7))]])
    np.testing.assert_allclose(jac - jac.T, expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("d", [4, 16, 64])
def test_newton_converges_from_the_linear_response(d: int) -> None:
    """Ten random chains: every solve converges; at least nine without the drive ramp."""
    direct = 0
    for seed in range(10):
        lat, drive = random_chain(d, seed)
        state = solve_stationary(lat, drive)
        assert state.method == "dense"
        assert np.max(np.abs(residual(lat, state.psi, drive))) <= 1e-12
        direct += not state.ramped
    assert direct >= 9
    lat, drive = random_chain(d, 0)
    state = solve_stationary(lat, drive)
    assert not state.ramped and state.iterations <= 10
    assert 0.1 < state.density.max() < 2.0  # the Kerr shift g|ψ|² is comparable to γ
    assert bogoliubov_spectrum(lat, state.psi).max_growth_rate < -0.05
    krylov = solve_stationary(lat, drive, opts=GPSolveOptions(method="krylov"))
    np.testing.assert_allclose(krylov.psi, state.psi, rtol=0, atol=1e-11)


def test_an_unstable_stationary_state_is_flagged() -> None:
    """Newton finds stationary states whatever their stability: on this chain the state found
    from the linear response grows (max Re λ > 0), which only the spectrum tells."""
    lat, drive = random_chain(64, 16)
    state = solve_stationary(lat, drive)
    assert not state.ramped
    assert np.max(np.abs(residual(lat, state.psi, drive))) <= 1e-12
    assert not bogoliubov_spectrum(lat, state.psi).stable


def test_newton_krylov_is_the_default_above_the_dense_limit() -> None:
    lat, drive = random_chain(300, 0)
    state = solve_stationary(lat, drive)
    assert state.method == "krylov"
    assert np.max(np.abs(residual(lat, state.psi, drive))) <= 1e-12


def test_the_drive_ramp_rescues_a_failed_direct_newton() -> None:
    lat, drive = random_chain(64, 64)
    with pytest.raises(SolverError):  # Newton from ψ = 0 at the full drive fails too
        solve_stationary(lat, drive, opts=GPSolveOptions(ramp_steps=1))
    state = solve_stationary(lat, drive)
    assert state.ramped and state.iterations > GPSolveOptions().max_iter
    assert np.max(np.abs(residual(lat, state.psi, drive))) <= 1e-12
    assert bogoliubov_spectrum(lat, state.psi).stable


def test_a_solver_that_cannot_converge_raises() -> None:
    lat, drive = random_chain(8, 2)
    with pytest.raises(SolverError, match="drive fraction"):
        solve_stationary(lat, drive, opts=GPSolveOptions(max_iter=1, ramp_steps=2))


def test_linear_lossy_lattice_decays_at_half_the_loss_rate() -> None:
    lat = chain(5, kerr=0.0, loss=0.3, potential=np.linspace(-1, 1, 5), pump_energy=0.2)
    drive = np.full(5, 0.5 + 0.1j)
    psi = solve_stationary(lat, drive).psi
    np.testing.assert_allclose(psi, linear_response(lat, drive), rtol=0, atol=1e-13)
    lam = bogoliubov_spectrum(lat, psi).eigenvalues
    np.testing.assert_allclose(lam.real, -0.15, rtol=0, atol=1e-13)
    np.testing.assert_allclose(
        np.sort(lam.imag),
        np.sort(
            np.concatenate(
                [e := np.linalg.eigvalsh(np.diag(lat.potential - 0.2) - lat.hopping_matrix()), -e]
            )
        ),
        rtol=0,
        atol=1e-12,
    )


def single_site_branches() -> tuple[GPLattice, complex, list[complex]]:
    """One site (g = 1, γ = 0.2, V − ω_p = −1) driven inside its bistable range: the three
    stationary states from the occupation's cubic n((δ + g n)² + γ²/4) = |F|²."""
    lat = chain(1, kerr=1.0, loss=0.2, potential=0.0, pump_energy=1.0)
    f = 0.3 + 0.0j
    delta, g, gamma = -1.0, 1.0, 0.2
    roots = np.roots([g**2, 2 * delta * g, delta**2 + gamma**2 / 4, -(abs(f) ** 2)])
    n = np.sort(roots[np.abs(roots.imag) < 1e-12].real)
    assert n.shape == (3,)
    return lat, f, [-f / (delta + g * nk - 0.5j * gamma) for nk in n]


def test_bogoliubov_flags_the_middle_branch_of_the_bistable_site() -> None:
    lat, f, branches = single_site_branches()
    drive = np.array([f])
    stable = []
    for psi_exact in branches:
        state = solve_stationary(lat, drive, start=np.array([psi_exact * (1 + 1e-3)]))
        np.testing.assert_allclose(state.psi[0], psi_exact, rtol=1e-12)
        stable.append(bogoliubov_spectrum(lat, state.psi).stable)
    assert stable == [True, False, True]


def test_the_unstable_rate_is_the_growth_of_a_deviation_in_time() -> None:
    lat, f, branches = single_site_branches()
    psi0 = np.array([branches[1]])
    rate = bogoliubov_spectrum(lat, psi0).max_growth_rate
    assert rate > 0.01

    def rhs(_t: float, z: np.ndarray) -> np.ndarray:
        return to_real(-1j * residual(lat, to_complex(z), np.array([f])))

    t1, t2 = 4.0 / rate, 8.0 / rate
    sol = solve_ivp(
        rhs, (0, t2), to_real(psi0 * (1 + 1e-9)), t_eval=[t1, t2], rtol=1e-12, atol=1e-16
    )
    dev = np.abs(sol.y.T - to_real(psi0)).max(axis=1)
    measured = np.log(dev[1] / dev[0]) / (t2 - t1)
    assert measured == pytest.approx(rate, rel=0.02)


def richardson_directional(
    lat: GPLattice, drive: CArray, cost: DensityCost, start: CArray, v: np.ndarray, h: float = 1e-3
) -> float:
    """d C(θ + s v)/ds at s = 0 by central differences at h and h/2, Richardson-extrapolated
    (error O(h⁴)); each solve warm-started from the unperturbed state."""
    theta = lat.parameters()

    def cost_at(s: float) -> float:
        psi = solve_stationary(lat.with_parameters(theta + s * v), drive, start=start).psi
        return cost.value(psi)

    def central(step: float) -> float:
        return (cost_at(step) - cost_at(-step)) / (2 * step)

    return (4 * central(h / 2) - central(h)) / 3


@pytest.mark.parametrize("d", [4, 16, 64])
def test_adjoint_gradient_matches_richardson_differences(d: int) -> None:
    lat, drive = random_chain(d, 100 + d)
    state = solve_stationary(lat, drive)
    outputs = np.arange(d // 2, d)
    cost = DensityCost(outputs=outputs, targets=np.full(outputs.shape, 0.3))
    grad = density_gradient(lat, state.psi, cost)
    assert grad.theta.shape == (d + d - 1,)
    rng = np.random.default_rng(d)
    # every coordinate on the small lattices; on d = 64 random directions and 8 coordinates
    if d <= 16:
        directions = list(np.eye(lat.n_params))
    else:
        picks = rng.choice(lat.n_params, 8, replace=False)
        directions = [np.eye(lat.n_params)[k] for k in picks]
        directions += [rng.normal(size=lat.n_params) for _ in range(4)]
    exact = np.array([grad.theta @ v for v in directions])
    fd = np.array([richardson_directional(lat, drive, cost, state.psi, v) for v in directions])
    assert np.linalg.norm(exact - fd) <= 1e-7 * np.linalg.norm(fd)
    assert np.linalg.norm(fd) > 1e-3  # the cost is not flat here
    krylov = density_gradient(lat, state.psi, cost, krylov=True)
    np.testing.assert_allclose(
        krylov.theta, grad.theta, rtol=0, atol=1e-12 * np.abs(grad.theta).max()
    )


def test_drive_gradient_matches_differences() -> None:
    lat, drive = random_chain(6, 9)
    state = solve_stationary(lat, drive)
    cost = DensityCost(outputs=np.array([4, 5]), targets=np.array([0.2, 0.4]))
    grad = density_gradient(lat, state.psi, cost)
    h = 1e-5
    for j in (0, 3):
        for unit in (1.0, 1j):
            e = np.zeros(6, complex)
            e[j] = unit * h
            plus = cost.value(solve_stationary(lat, drive + e, start=state.psi).psi)
            minus = cost.value(solve_stationary(lat, drive - e, start=state.psi).psi)
            exact = grad.drive[j].real if unit == 1.0 else grad.drive[j].imag
            assert (plus - minus) / (2 * h) == pytest.approx(exact, rel=1e-6, abs=1e-10)


def off_resonant_chain(gamma: float) -> tuple[GPLattice, CArray, DensityCost]:
    """`random_chain(16, 1)` pumped below its band (ω_p = −2.5), |F| = 0.6, loss γ on every
    site, J trainable; the cost pulls the last four densities to 0.3."""
    lat, drive = random_chain(16, 1)
    lat = dataclasses.replace(lat, pump_energy=-2.5, loss=np.full(16, gamma))
    outputs = np.arange(12, 16)
    return lat, 2.0 * drive, DensityCost(outputs=outputs, targets=np.full(4, 0.3))


def test_the_ep_limit_is_the_adjoint_without_loss() -> None:
    lat, drive, cost = off_resonant_chain(0.0)
    psi = solve_stationary(lat, drive).psi
    exact = density_gradient(lat, psi, cost).theta
    limit = ep_limit_gradient(lat, psi, cost).theta
    np.testing.assert_allclose(limit, exact, rtol=0, atol=1e-12 * np.abs(exact).max())


def test_the_ep_bias_grows_linearly_with_the_loss_off_resonance() -> None:
    """Measured: relative bias 2.1e-3, 4.3e-3, 8.5e-3 at γ = 0.01, 0.02, 0.04 (rate 1.00)."""
    bias = []
    for gamma in (0.01, 0.02, 0.04):
        lat, drive, cost = off_resonant_chain(gamma)
        psi = solve_stationary(lat, drive).psi
        exact = density_gradient(lat, psi, cost).theta
        limit = ep_limit_gradient(lat, psi, cost).theta
        bias.append(np.linalg.norm(limit - exact) / np.linalg.norm(exact))
    assert bias[0] > 1e-3
    rates = np.log2(np.array(bias[1:]) / np.array(bias[:-1]))
    np.testing.assert_allclose(rates, 1.0, atol=0.02)


def test_potential_nudges_converge_to_the_ep_limit_at_second_order() -> None:
    """Symmetric open-loop nudges ΔV = ∓β w (|ψ|² − y) on the outputs; the estimates
    −Δ|ψ_j|²/2β (for V_j) and +Δ 2Re(ψ̄_a ψ_b)/2β (for J_ab) approach the EP limit as β²."""
    lat, drive, cost = off_resonant_chain(0.2)
    psi = solve_stationary(lat, drive).psi
    limit = ep_limit_gradient(lat, psi, cost).theta
    a, b = lat.edges[:, 0], lat.edges[:, 1]

    def conjugates(beta: float) -> np.ndarray:
        shifted = lat.with_parameters(
            lat.parameters() + np.r_[nudge_potential(cost, psi, beta, 16), np.zeros(lat.n_edges)]
        )
        p = solve_stationary(shifted, drive, start=psi).psi
        return np.r_[np.abs(p) ** 2, -2.0 * np.real(np.conj(p[a]) * p[b])]

    errors = []
    for beta in (1e-2, 5e-3):
        estimate = -(conjugates(beta) - conjugates(-beta)) / (2 * beta)
        errors.append(np.linalg.norm(estimate - limit) / np.linalg.norm(limit))
    assert errors[1] < 1e-4
    assert 3.5 < errors[0] / errors[1] < 4.5


def test_the_phase_conjugated_phase_holds_the_conjugate_state_with_the_same_spectrum() -> None:
    lat, drive, _ = off_resonant_chain(0.2)
    psi = solve_stationary(lat, drive).psi
    learning = solve_stationary(lat, phase_conjugate_drive(lat, psi, drive), start=np.conj(psi))
    np.testing.assert_allclose(learning.psi, np.conj(psi), rtol=0, atol=1e-13)
    free, conj = (bogoliubov_spectrum(lat, p).eigenvalues for p in (psi, learning.psi))
    free, conj = free[np.argsort(free.imag)], conj[np.argsort(conj.imag)]  # distinct Im λ here
    np.testing.assert_allclose(conj, free, rtol=0, atol=1e-12)


def test_nudges_in_the_phase_conjugated_phase_give_the_exact_gradient() -> None:
    """Where near-EP is 4 % off (γ = 0.2 E), the same potential nudges applied in the
    phase-conjugated learning phase reach the adjoint gradient as β² (measured 8.2e-6 at
    β = 1e-2, 2.1e-6 at 5e-3)."""
    lat, drive, cost = off_resonant_chain(0.2)
    psi = solve_stationary(lat, drive).psi
    exact = density_gradient(lat, psi, cost).theta
    near = ep_limit_gradient(lat, psi, cost).theta
    assert np.linalg.norm(near - exact) > 0.03 * np.linalg.norm(exact)
    learning_drive = phase_conjugate_drive(lat, psi, drive)
    a, b = lat.edges[:, 0], lat.edges[:, 1]

    def conjugates(beta: float) -> np.ndarray:
        shift = np.r_[nudge_potential(cost, psi, beta, 16), np.zeros(lat.n_edges)]
        shifted = lat.with_parameters(lat.parameters() + shift)
        p = solve_stationary(shifted, learning_drive, start=np.conj(psi)).psi
        return np.r_[np.abs(p) ** 2, -2.0 * np.real(np.conj(p[a]) * p[b])]

    errors = []
    for beta in (1e-2, 5e-3):
        estimate = -(conjugates(beta) - conjugates(-beta)) / (2 * beta)
        errors.append(np.linalg.norm(estimate - exact) / np.linalg.norm(exact))
    assert errors[1] < 1e-5
    assert 3.5 < errors[0] / errors[1] < 4.5
