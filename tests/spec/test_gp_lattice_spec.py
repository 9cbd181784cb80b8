"""The GP lattice spec (physlearn.spec.gp_lattice, docs/physics.md §9): validation, the
parameter layout, the hopping operator and the density cost."""

from __future__ import annotations

import numpy as np
import pytest

from physlearn.errors import ConfigError
from physlearn.spec.gp_lattice import DensityCost, GPLattice, chain, energy, square


def test_parameters_round_trip_in_the_documented_layout() -> None:
    lat = chain(5, potential=np.arange(5.0), hopping=0.7, train_hopping=True)
    theta = lat.parameters()
    assert theta.shape == (5 + 4,)
    assert lat.parameter_names()[:2] == ["V[0]", "V[1]"]
    assert lat.parameter_names()[5] == "J[0,1]"
    new = lat.with_parameters(theta + 1.0)
    np.testing.assert_array_equal(new.potential, np.arange(5.0) + 1.0)
    np.testing.assert_array_equal(new.hopping, np.full(4, 1.7))
    fixed = chain(5, potential=np.arange(5.0))
    assert fixed.n_params == 5
    assert fixed.with_parameters(np.zeros(5)).hopping[0] == 1.0
    with pytest.raises(ConfigError, match="shape"):
        fixed.with_parameters(np.zeros(9))


def test_hop_matches_the_hopping_matrix_for_single_and_batched_fields() -> None:
    rng = np.random.default_rng(3)
    lat = square(3, 4, hopping=0.5)
    assert lat.n_sites == 12 and lat.n_edges == 3 * 3 + 2 * 4
    mat = lat.hopping_matrix()
    np.testing.assert_array_equal(mat, mat.T)
    assert np.all(np.diag(mat) == 0.0)
    psi = rng.normal(size=(2, 12)) + 1j * rng.normal(size=(2, 12))
    np.testing.assert_allclose(lat.hop(psi), psi @ mat.T, rtol=0, atol=1e-14)
    np.testing.assert_allclose(lat.hop(psi[0]), mat @ psi[0], rtol=0, atol=1e-14)
    ring = chain(4, ring=True)
    assert ring.n_edges == 4 and ring.hopping_matrix()[0, 3] == 1.0


@pytest.mark.parametrize(
    ("edges", "loss", "match"),
    [
        ([(0, 3)], 0.1, "indices"),
        ([(1, 1)], 0.1, "itself"),
        ([(0, 1), (1, 0)], 0.1, "twice"),
        ([(0, 1)], -0.1, "loss"),
    ],
)
def test_invalid_lattices_are_refused(
    edges: list[tuple[int, int]], loss: float, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        GPLattice(
            potential=np.zeros(3),
            edges=np.array(edges),
            hopping=np.ones(len(edges)),
            kerr=np.ones(3),
            loss=np.full(3, loss),
            pump_energy=0.0,
        )


def test_density_cost_value_and_gradient() -> None:
    rng = np.random.default_rng(4)
    psi = rng.normal(size=6) + 1j * rng.normal(size=6)
    cost = DensityCost(
        outputs=np.array([1, 4]), targets=np.array([0.5, 2.0]), weights=np.array([1.0, 3.0])
    )
    rho = np.abs(psi) ** 2
    assert cost.value(psi) == pytest.approx(0.5 * ((rho[1] - 0.5) ** 2 + 3 * (rho[4] - 2.0) ** 2))
    grad = cost.gradient(psi)
    h = 1e-6
    for j in range(6):
        for unit in (1.0, 1j):
            e = np.zeros(6, complex)
            e[j] = unit * h
            fd = (cost.value(psi + e) - cost.value(psi - e)) / (2 * h)
            exact = grad[j].real if unit == 1.0 else grad[j].imag
            assert fd == pytest.approx(exact, rel=1e-7, abs=1e-9)
    with pytest.raises(ConfigError, match="weights"):
        DensityCost(outputs=np.array([0]), targets=np.array([1.0]), weights=np.array([-1.0]))


def test_energy_is_the_potential_of_the_lossless_stationary_equation() -> None:
    """At γ = 0: ∂E/∂Re ψ + i ∂E/∂Im ψ = 2 R(ψ) = 2 ∂E/∂ψ̄, and ∂E/∂V_j = |ψ_j|²."""
    rng = np.random.default_rng(5)
    lat = chain(5, potential=rng.normal(size=5), kerr=0.7, loss=0.0, pump_energy=0.3)
    psi = rng.normal(size=5) + 1j * rng.normal(size=5)
    drive = rng.normal(size=5) + 1j * rng.normal(size=5)
    r = lat.detuning() * psi + lat.kerr * np.abs(psi) ** 2 * psi - lat.hop(psi) + drive
    h = 1e-6
    for j in range(5):
        for unit, part in ((1.0, r[j].real), (1j, r[j].imag)):
            e = np.zeros(5, complex)
            e[j] = unit * h
            fd = (energy(lat, psi + e, drive) - energy(lat, psi - e, drive)) / (2 * h)
            assert fd == pytest.approx(2 * part, rel=1e-8, abs=1e-8)
        dv = np.zeros(5)
        dv[j] = h
        plus = energy(lat.with_parameters(lat.potential + dv), psi, drive)
        minus = energy(lat.with_parameters(lat.potential - dv), psi, drive)
        assert (plus - minus) / (2 * h) == pytest.approx(abs(psi[j]) ** 2, rel=1e-8)
