"""The 1-D GP field spec (physlearn.spec.gp_field, docs/physics.md §9): the spectral kinetic
operator, its matrix, the parameter layout and validation."""

from __future__ import annotations

import numpy as np
import pytest

from physlearn.errors import ConfigError
from physlearn.spec.gp_field import GPField, gaussian_field, periodic_bump


def test_plane_waves_are_eigenfunctions_of_the_kinetic_operator() -> None:
    field = gaussian_field(32, length_um=20.0, kinetic=0.38)
    x = field.x_um
    for m in (0, 1, 5, -7):
        k = 2 * np.pi * m / 20.0
        wave = np.exp(1j * k * x)
        np.testing.assert_allclose(field.hop(wave), -0.38 * k**2 * wave, rtol=0, atol=1e-12)


def test_the_kinetic_matrix_is_real_symmetric_and_matches_the_fft() -> None:
    rng = np.random.default_rng(0)
    field = gaussian_field(33)
    mat = field.hopping_matrix()
    np.testing.assert_allclose(mat, mat.T, rtol=0, atol=1e-14)
    psi = rng.normal(size=33) + 1j * rng.normal(size=33)
    np.testing.assert_allclose(field.hop(psi), mat @ psi, rtol=0, atol=1e-12)
    np.testing.assert_allclose(field.hopping_sparse().toarray(), mat, rtol=0, atol=0)
    assert np.linalg.eigvalsh(mat).max() <= 1e-12  # c ∂² is negative semidefinite


def test_parameters_and_validation() -> None:
    field = gaussian_field(16, depth=2.0)
    assert field.n_params == 16 and field.parameter_names()[3] == "V[3]"
    assert field.potential.min() == pytest.approx(-2.0)
    assert field.with_parameters(np.zeros(16)).potential.max() == 0.0
    assert field.hopping_contraction(np.ones(16, complex), np.ones(16, complex)).shape == (0,)
    with pytest.raises(ConfigError, match="shape"):
        field.with_parameters(np.zeros(3))
    with pytest.raises(ConfigError, match="loss"):
        GPField(np.zeros(8), np.ones(8), -np.ones(8), 0.0, 10.0, 0.38)
    with pytest.raises(ConfigError, match="kinetic"):
        GPField(np.zeros(8), np.ones(8), np.ones(8), 0.0, 10.0, 0.0)


def test_the_periodic_bump_is_a_gaussian_near_its_centre() -> None:
    x = np.linspace(18.0, 22.0, 41)
    bump = periodic_bump(x, 20.0, 1.0, 200.0)
    np.testing.assert_allclose(bump, np.exp(-((x - 20.0) ** 2) / 2), rtol=1e-3)
    assert periodic_bump(np.array([0.0]), 20.0, 1.0, 40.0)[0] == pytest.approx(
        periodic_bump(np.array([40.0]), 20.0, 1.0, 40.0)[0], rel=1e-12
    )
