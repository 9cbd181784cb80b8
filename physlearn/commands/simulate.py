"""`physlearn simulate`: solve a network's steady state (or boundary-value problem) on the ideal
twin; print the orbit, Floquet multipliers, cost and exact gradient; write them to a folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from physlearn.spec.network import NetworkSpec
from physlearn.spec.tomlconfig import read_toml, validate


class SolverSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points_per_period: int = Field(65, ge=3)
    tol: float = Field(1e-12, gt=0.0)


class SimulateConfig(BaseModel):
    """A simulate config file: ``[network]`` (a NetworkSpec) and optional ``[solver]``."""

    model_config = ConfigDict(extra="forbid")

    network: NetworkSpec
    solver: SolverSettings = Field(default_factory=SolverSettings)


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="solve a network on the ideal twin", description=__doc__)
    p.add_argument("--config", required=True, type=Path, help="TOML file with a [network] table")
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="folder for trajectory.csv and summary.json (default: simulate-out/<config name>)",
    )


def run(args: argparse.Namespace) -> int:
    cfg = validate(SimulateConfig, read_toml(args.config), str(args.config))
    spec = cfg.network
    out = args.output or Path("simulate-out") / args.config.stem
    out.mkdir(parents=True, exist_ok=True)
    if spec.boundary.kind == "periodic":
        summary, t, x = _periodic(spec, cfg.solver)
    else:
        summary, t, x = _bvp(spec)
    names = spec.parameter_names()
    _print_summary(spec, summary, t, x, names)
    header = "t_s," + ",".join(f"x{j}" for j in range(spec.nodes.count))
    np.savetxt(
        out / "trajectory.csv", np.column_stack([t, x]), delimiter=",", header=header, comments=""
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {out / 'trajectory.csv'} and {out / 'summary.json'}")
    return 0


def _periodic(
    spec: NetworkSpec, s: SolverSettings
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    from physlearn.simulators.problem import PeriodicProblem

    prob = PeriodicProblem.from_spec(spec, points_per_period=s.points_per_period)
    sol = prob.solve(tol=s.tol)
    grad = prob.gradient(sol)[0]
    mult = sol.multipliers[0] if sol.multipliers is not None else np.array([])
    summary = {
        "boundary": "periodic",
        "period_s": spec.period_s,
        "points_per_period": s.points_per_period,
        "residual": float(sol.residual[0]),
        "newton_iterations": int(sol.iterations[0]),
        "floquet_multipliers": [[float(m.real), float(m.imag)] for m in mult],
        "max_multiplier_modulus": float(np.abs(mult).max()) if mult.size else None,
        "cost": float(prob.cost(sol)[0]),
        "gradient": dict(zip(spec.parameter_names(), map(float, grad), strict=True)),
    }
    return summary, prob.grid.t, sol.x[0]


def _bvp(spec: NetworkSpec) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    from physlearn.simulators.bvp import BoundaryValueProblem
    from physlearn.simulators.excitation import build_excitation
    from physlearn.spec.model import NetworkModel

    model = NetworkModel.from_spec(spec)
    prob = BoundaryValueProblem(spec, model, build_excitation(spec))
    theta = model.full_theta(spec.initial_parameters())
    sol = prob.solve(theta)
    grad = prob.adjoint_gradient(sol, theta)[0]
    summary = {
        "boundary": spec.boundary.kind,
        "steps": prob.M,
        "residual": sol.residual,
        "newton_iterations": sol.iterations,
        "cost": float(prob.cost(sol.x)[0]),
        "gradient": dict(zip(spec.parameter_names(), map(float, grad), strict=True)),
    }
    return summary, prob.t, sol.x[0]


def _print_summary(
    spec: NetworkSpec, s: dict[str, Any], t: np.ndarray, x: np.ndarray, names: list[str]
) -> None:
    print(
        f"boundary: {s['boundary']}   residual {s['residual']:.2e}   "
        f"Newton iterations {s['newton_iterations']}"
    )
    if s["boundary"] == "periodic":
        omega = spec.drive.omega_rad_s
        c = 2.0 / t.size * (x * np.cos(omega * t)[:, None]).sum(axis=0)
        q = 2.0 / t.size * (x * np.sin(omega * t)[:, None]).sum(axis=0)
        print(f"\n{'node':>4} {'min x':>10} {'max x':>10} {'|X(ω)|':>10} {'phase(ω) rad':>13}")
        for j in range(x.shape[1]):
            print(
                f"{j:>4} {x[:, j].min():>10.4f} {x[:, j].max():>10.4f} "
                f"{np.hypot(c[j], q[j]):>10.4f} {np.arctan2(-q[j], c[j]):>13.4f}"
            )
        mods = np.hypot(*np.array(s["floquet_multipliers"]).T)
        print(
            "\nFloquet multipliers |μ| (largest first): "
            + " ".join(f"{m:.6f}" for m in mods[:8])
            + (" …" if mods.size > 8 else "")
        )
        verdict = "attracting" if mods.max() < 1 else "marginal (|μ| = 1)"
        print(f"orbit: {verdict}")
    print(f"\ncost C = {s['cost']:.6e}")
    print("exact gradient dC/dα (adjoint):")
    for n in names:
        print(f"  {n:<32} {s['gradient'][n]: .6e}")
