"""The documented ensemble of random test networks (tests, benchmarks, fidelity maps).

A draw (``random_network``), with m = 1, ω = 1 (T = 2π) unless told otherwise:

- stiffness k_j ~ U[k_range] (default [2, 3]: linear modes near √2…√3 rad/s, off ω and 2ω);
- couplings of the requested kinds between every pair j < k: product α_jk ~ N(0, (coupling_scale/√d)²)
  (a semicircle of half-width 2·coupling_scale around the on-site stiffness), difference
  α_jk = |N(0, (coupling_scale/d)²)| (springs are positive; a row sum of order coupling_scale);
  biases α'_j ~ N(0, 0.1²) on every node; optional on-site quartic terms (fixed);
- inputs: the first ``n_in`` nodes, force drive cos(ωt) with input values ~ U[0.5, 1];
  outputs: the last ``n_out`` nodes, in-phase targets ~ U[−0.5, 0.5];
- the linear modes of the network at rest (eigenvalues of M⁻¹K̄ at x = 0) must stay ≥ 0.1·ω away
  from ω and 2ω (redrawn otherwise) unless ``resonant``, in which case the stiffness range is
  ``resonant_k_range`` (default [0.8, 1.3]: modes around ω) and no check is made;
- the input gain is rescaled so that the free orbit's max|x| equals ``amplitude`` (default 1: the
  nonlinear regime of tanh), and the draw is kept only if the orbit converges and is attracting
  (Floquet multipliers inside the unit circle; Γ = 0 orbits are accepted as marginal).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from physlearn.errors import SolverError
from physlearn.simulators.excitation import build_excitation
from physlearn.simulators.periodic import solve_periodic
from physlearn.simulators.spectral import PeriodicGrid
from physlearn.spec.model import NetworkModel, linear_mode_frequencies
from physlearn.spec.network import NetworkSpec

log = logging.getLogger(__name__)


def random_network(
    d: int,
    rng: np.random.Generator,
    *,
    damping: float = 0.0,
    kinds: Sequence[str] = ("product",),
    n_in: int = 2,
    n_out: int = 1,
    amplitude: float = 1.0,
    k_range: tuple[float, float] = (2.0, 3.0),
    coupling_scale: float = 0.25,
    quartic: float = 0.0,
    nonlinearity: str = "tanh",
    resonant: bool = False,
    resonant_k_range: tuple[float, float] = (0.8, 1.3),
    boundary: dict[str, Any] | None = None,
    points_per_period: int = 65,
    max_draws: int = 50,
) -> NetworkSpec:
    """A random network of the documented ensemble (see the module docstring)."""
    omega = 1.0
    for draw in range(max_draws):
        lo, hi = resonant_k_range if resonant else k_range
        k = rng.uniform(lo, hi, d)
        couplings = []
        for kind in kinds:
            for j in range(d):
                for jj in range(j + 1, d):
                    if kind == "difference":
                        val = abs(float(rng.normal(0.0, coupling_scale / d)))
                    else:
                        val = float(rng.normal(0.0, coupling_scale / np.sqrt(d)))
                    couplings.append({"kind": kind, "nodes": [j, jj], "value": val})
        data: dict[str, Any] = {
            "nodes": {"count": d, "stiffness": k.tolist(), "damping": damping},
            "nonlinearity": nonlinearity,
            "couplings": couplings,
            "biases": [{"node": j, "value": float(rng.normal(0.0, 0.1))} for j in range(d)],
            "quartic": ([{"node": j, "value": quartic} for j in range(d)] if quartic else []),
            "drive": {"omega_rad_s": omega},
            "inputs": {
                "nodes": list(range(n_in)),
                "values": rng.uniform(0.5, 1.0, n_in).tolist(),
                "gain": 1.0,
            },
            "outputs": {
                "nodes": list(range(d - n_out, d)),
                "target": {"kind": "inphase", "values": rng.uniform(-0.5, 0.5, n_out).tolist()},
            },
        }
        spec = NetworkSpec.model_validate(data)
        if not resonant:
            modes = linear_mode_frequencies(spec)
            if any(np.min(np.abs(modes - h * omega)) < 0.1 * omega for h in (1, 2)):
                continue
        try:
            gain = _scale_gain(spec, amplitude, points_per_period)
        except SolverError as exc:
            log.debug("draw %d rejected: %s", draw, exc)
            continue
        data["inputs"]["gain"] = gain
        if boundary is not None:
            data["boundary"] = boundary
        return NetworkSpec.model_validate(data)
    raise SolverError(f"no acceptable network in {max_draws} draws (d={d}, resonant={resonant})")


def _scale_gain(spec: NetworkSpec, amplitude: float, n: int) -> float:
    """Input gain giving max|x| = amplitude on the free orbit (a few secant steps)."""
    model = NetworkModel.from_spec(spec)
    grid = PeriodicGrid(n, spec.period_s)
    theta = model.full_theta(spec.initial_parameters())
    gain = 1.0
    x0 = None
    for _ in range(6):
        s = spec.model_copy(update={"inputs": spec.inputs.model_copy(update={"gain": gain})})
        exc = build_excitation(s).on_grid(grid.t)
        sol = solve_periodic(model, theta, exc, grid, x0=x0, floquet="none")
        peak = float(np.max(np.abs(sol.x)))
        if abs(peak - amplitude) < 1e-3 * amplitude:
            break
        gain *= amplitude / peak
        x0 = sol.x * amplitude / peak
    s = spec.model_copy(update={"inputs": spec.inputs.model_copy(update={"gain": gain})})
    exc = build_excitation(s).on_grid(grid.t)
    solve_periodic(model, theta, exc, grid, x0=x0)  # raises if unstable
    return gain


def random_nonreciprocal_network(
    d: int,
    rng: np.random.Generator,
    *,
    family: str = "linear",
    asymmetry: float = 1.0,
    damping: float = 0.2,
    static: bool = False,
    n_in: int = 2,
    n_out: int = 1,
    amplitude: float = 1.0,
    k_range: tuple[float, float] = (2.0, 3.0),
    coupling_scale: float = 0.25,
    points_per_period: int = 65,
    max_draws: int = 50,
) -> NetworkSpec:
    """A random network with non-reciprocal couplings (m = 1, ω = 1, k_j ~ U[k_range]).

    The coupling matrix is W = √(1 − f²) S + f A with S symmetric and A antisymmetric, entries
    ~ N(0, (coupling_scale/√d)²), f = ``asymmetry`` ∈ [0, 1] (‖A-part‖/‖W‖ ≈ f):
    ``family="linear"``: ρ = identity, every W_jk a ``linear`` directed coupling j ← k;
    ``family="tanh_active"``: S as tanh ``product`` couplings (conservative, nonlinear), f A as
    ``linear`` directed couplings j ← k and k ← j (active elements). Biases ~ N(0, 0.1²).
    ``static``: constant input forces and constant targets (stationary states); else cos(ωt)
    drive and in-phase targets. Inputs the first ``n_in`` nodes (values ~ U[0.5, 1]), outputs
    the last ``n_out`` (targets ~ U[−0.5, 0.5]); the input gain is scaled so that max|x| =
    ``amplitude``, and a draw is kept only if its orbit converges and attracts.
    """
    if family not in ("linear", "tanh_active"):
        raise ValueError(f"family: 'linear' or 'tanh_active', got {family!r}")
    if not 0.0 <= asymmetry <= 1.0:
        raise ValueError(f"asymmetry: must be in [0, 1], got {asymmetry}")
    sym = np.sqrt(1.0 - asymmetry**2)
    for draw in range(max_draws):
        k = rng.uniform(*k_range, d)
        s = rng.normal(0.0, coupling_scale / np.sqrt(d), (d, d))
        a = rng.normal(0.0, coupling_scale / np.sqrt(d), (d, d))
        S, A = np.triu(s, 1) + np.triu(s, 1).T, np.triu(a, 1) - np.triu(a, 1).T
        pairs = [(j, kk) for j in range(d) for kk in range(d) if j != kk]
        if family == "linear":
            W = sym * S + asymmetry * A
            couplings: list[dict[str, Any]] = []
            directed = [{"target": j, "source": kk, "value": float(W[j, kk])} for j, kk in pairs]
        else:
            couplings = [
                {"nodes": [j, kk], "value": float(sym * S[j, kk])} for j, kk in pairs if j < kk
            ]
            directed = [
                {"target": j, "source": kk, "value": float(asymmetry * A[j, kk])} for j, kk in pairs
            ]
        data: dict[str, Any] = {
            "nodes": {"count": d, "stiffness": k.tolist(), "damping": damping},
            "nonlinearity": "identity" if family == "linear" else "tanh",
            "couplings": couplings,
            "directed": directed,
            "biases": [{"node": j, "value": float(rng.normal(0.0, 0.1))} for j in range(d)],
            "inputs": {
                "nodes": list(range(n_in)),
                "values": rng.uniform(0.5, 1.0, n_in).tolist(),
                "gain": 1.0,
                "waveform": "constant" if static else "cos",
            },
            "outputs": {
                "nodes": list(range(d - n_out, d)),
                "target": {
                    "kind": "constant" if static else "inphase",
                    "values": rng.uniform(-0.5, 0.5, n_out).tolist(),
                },
            },
        }
        spec = NetworkSpec.model_validate(data)
        try:
            data["inputs"]["gain"] = _scale_gain(spec, amplitude, points_per_period)
        except SolverError as exc:
            log.debug("draw %d rejected: %s", draw, exc)
            continue
        return NetworkSpec.model_validate(data)
    raise SolverError(f"no acceptable non-reciprocal network in {max_draws} draws (d={d})")
