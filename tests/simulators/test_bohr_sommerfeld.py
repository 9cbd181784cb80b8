"""Must-show 3: the fixed-action solver reproduces Bohr–Sommerfeld levels, ∮ p dx = 2π(n + ½)ħ.

ħ = 1, H = p² + V(x) (m = ½): harmonic V = x² (exact: E = 2(n + ½)); pure quartic V = x⁴ against
the closed form of the WKB quadrature, E_n = [3√π Γ(3/4)(n + ½)/Γ(1/4)]^{4/3} (0.8671, 3.7519,
7.4140, 11.6115, 16.2336 — Bender & Orszag's WKB column); V = x² + x⁴ against an independent
quadrature of ∮ p dx = 2∫√(E − V) dx (scipy quad, brentq).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.special import gamma

from physlearn.simulators.autonomous import (
    AutonomousProblem,
    OrbitConstraint,
    StaticLoad,
    solve_orbit,
)
from physlearn.simulators.autonomous_family import galerkin_start, orbit_from_mode
from physlearn.spec.model import NetworkModel
from physlearn.spec.network import NetworkSpec


def _oscillator(k: float, quartic: float, n: int = 65) -> AutonomousProblem:
    """One node, m = ½: H = p² + ½ k x² + ¼ α'' x⁴."""
    spec = NetworkSpec.model_validate(
        {
            "nodes": {"count": 1, "stiffness": k, "mass": 0.5},
            "quartic": [{"node": 0, "value": quartic}] if quartic else [],
        }
    )
    model = NetworkModel.from_spec(spec)
    return AutonomousProblem(
        model, model.full_theta(spec.initial_parameters()), StaticLoad.zeros(1, 1), n
    )


def _level(problem: AutonomousProblem, n: int, start: tuple[np.ndarray, np.ndarray]) -> float:
    sol = solve_orbit(
        problem, *start, OrbitConstraint("action", np.array([2 * math.pi * (n + 0.5)])), tol=1e-13
    )
    return float(sol.energy[0])


def bs_quadrature(v, n: int) -> float:
    """E with 2 ∫ √(E − V) dx = 2π(n + ½) for an even, increasing V (m = ½, ħ = 1)."""

    def action(e: float) -> float:
        xt = brentq(lambda x: v(x) - e, 0.0, 10.0)
        return (
            4.0
            * quad(
                lambda x: math.sqrt(max(e - v(x), 0.0)),
                0.0,
                xt,
                epsabs=1e-14,
                epsrel=1e-13,
                limit=200,
            )[0]
        )

    return brentq(
        lambda e: action(e) - 2 * math.pi * (n + 0.5), 1e-6, 200.0, xtol=1e-15, rtol=1e-15
    )


def test_harmonic_levels_exact() -> None:
    pr = _oscillator(2.0, 0.0, 17)  # V = x²: ω = 2
    for n in range(5):
        sol = orbit_from_mode(pr, OrbitConstraint("action", np.array([2 * math.pi * (n + 0.5)])))
        assert sol.energy[0] == pytest.approx(2.0 * (n + 0.5), rel=1e-12)


def test_quartic_levels_match_the_wkb_closed_form() -> None:
    pr = _oscillator(0.0, 4.0)  # V = x⁴: no normal mode, a harmonic-balance start
    start = galerkin_start(pr, np.ones((1, 1)), np.array([1.0]))
    for n in range(5):
        closed = (3 * math.sqrt(math.pi) * gamma(0.75) * (n + 0.5) / gamma(0.25)) ** (4 / 3)
        assert _level(pr, n, start) == pytest.approx(closed, rel=1e-10)
    assert _level(pr, 0, start) == pytest.approx(0.8671453, abs=1e-7)


def test_anharmonic_levels_match_quadrature() -> None:
    pr = _oscillator(2.0, 4.0)  # V = x² + x⁴
    for n in (0, 2, 4):
        sol = orbit_from_mode(
            pr, OrbitConstraint("action", np.array([2 * math.pi * (n + 0.5)])), tol=1e-13
        )
        assert sol.energy[0] == pytest.approx(bs_quadrature(lambda x: x**2 + x**4, n), rel=1e-9)
