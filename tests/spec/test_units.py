"""The physical-units front ends map LC and mechanical networks onto the model with the
documented scaling: the dimensionless steady state, scaled back, solves the SI equations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from physlearn.errors import ConfigError
from physlearn.simulators.problem import PeriodicProblem
from physlearn.spec.tomlconfig import validate
from physlearn.spec.units import LCNetwork, MechanicalNetwork


def _si_residual(m, k, c, cubic, springs, f_amp, omega, t_s, x_m, inputs):
    """Max residual of m ẍ + c ẋ + k x + k3 x³ + Σ k_jk (x_j − x_k) − F(t) in SI units."""
    n = t_s.size
    w = 2 * np.pi * np.fft.rfftfreq(n, d=t_s[1] - t_s[0])
    X = np.fft.rfft(x_m, axis=0)
    v = np.fft.irfft(1j * w[:, None] * X, n=n, axis=0)
    a = np.fft.irfft(-(w**2)[:, None] * X, n=n, axis=0)
    r = m * a + c * v + k * x_m + cubic * x_m**3
    for (j, kk), s in springs:
        r[:, j] += s * (x_m[:, j] - x_m[:, kk])
        r[:, kk] += s * (x_m[:, kk] - x_m[:, j])
    for j in inputs:
        r[:, j] -= f_amp * np.cos(omega * t_s)
    return np.abs(r).max() / f_amp


def test_mechanical_network_scaling_round_trip() -> None:
    net = MechanicalNetwork(
        nodes=[
            {
                "mass_kg": 2e-3,
                "stiffness_n_per_m": 80.0,
                "damping_n_s_per_m": 4e-3,
                "cubic_n_per_m3": 5e4,
            },
            {"mass_kg": 3e-3, "stiffness_n_per_m": 150.0, "damping_n_s_per_m": 2e-3},
        ],
        springs=[{"nodes": [0, 1], "stiffness_n_per_m": 20.0}],
        drive_frequency_hz=25.0,
        input_nodes=[0],
        output_nodes=[1],
        drive_amplitude=0.05,
        input_values=[1.0],
        target_values=[1e-3],
        x_ref=1e-3,
    )
    spec, sc = net.to_spec()
    assert sc.omega_ref == pytest.approx(math.sqrt(80.0 / 2e-3))
    assert spec.nodes.arrays()[0][0] == pytest.approx(1.0)
    prob = PeriodicProblem.from_spec(spec)
    sol = prob.solve()
    t_si = prob.grid.t / sc.omega_ref
    x_si = sol.x[0] * sc.x_ref
    res = _si_residual(
        np.array([2e-3, 3e-3]),
        np.array([80.0, 150.0]),
        np.array([4e-3, 2e-3]),
        np.array([5e4, 0.0]),
        [((0, 1), 20.0)],
        0.05,
        2 * math.pi * 25.0,
        t_si,
        x_si,
        [0],
    )
    assert res < 1e-9


def test_lc_network_maps_inductance_capacitance_resistance() -> None:
    net = LCNetwork(
        nodes=[
            {"inductance_h": 1e-3, "capacitance_f": 1e-6, "resistance_ohm": 2.0},
            {"inductance_h": 1e-3, "capacitance_f": 0.8e-6, "resistance_ohm": 2.0},
        ],
        capacitors=[{"nodes": [0, 1], "capacitance_f": 4e-6, "min_capacitance_f": 1e-6}],
        drive_frequency_hz=4000.0,
        input_nodes=[0],
        input_values=[1.0],
        drive_amplitude=0.1,
        x_ref=1e-7,
    )
    spec, sc = net.to_spec()
    assert sc.omega_ref == pytest.approx(1 / math.sqrt(1e-3 * 1e-6))
    _, k, g = spec.nodes.arrays()
    assert k[1] == pytest.approx(1.25)  # C_ref / C_1
    assert g[0] == pytest.approx(2.0 / 1e-3 / sc.omega_ref)  # R/L in units of ω_ref
    c = spec.couplings[0]
    assert c.value == pytest.approx(0.25) and c.upper == pytest.approx(1.0) and c.lower is None
    prob = PeriodicProblem.from_spec(spec)
    sol = prob.solve()
    res = _si_residual(
        np.array([1e-3, 1e-3]),
        np.array([1e6, 1.25e6]),
        np.array([2.0, 2.0]),
        np.zeros(2),
        [((0, 1), 1 / 4e-6)],
        0.1,
        2 * math.pi * 4000.0,
        prob.grid.t / sc.omega_ref,
        sol.x[0] * sc.x_ref,
        [0],
    )
    assert res < 1e-9


def test_bad_physical_network_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"springs\[0\].nodes: node 5 does not exist"):
        validate(
            MechanicalNetwork,
            {
                "nodes": [{"mass_kg": 1.0, "stiffness_n_per_m": 1.0}],
                "springs": [{"nodes": [0, 5], "stiffness_n_per_m": 1.0}],
                "drive_frequency_hz": 1.0,
            },
            "mech.toml",
        )
    with pytest.raises(ConfigError, match=r"nodes\[0\]\.inductance_h"):
        validate(
            LCNetwork,
            {"nodes": [{"inductance_h": -1.0, "capacitance_f": 1e-6}], "drive_frequency_hz": 1.0},
            "lc.toml",
        )
