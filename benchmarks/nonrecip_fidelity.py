"""Fidelity of the estimators on non-reciprocal networks, against the antisymmetric fraction f of
the couplings (docs/fidelity.md, docs/fidelity-nonrecip.png).

Networks: `physlearn.simulators.ensemble.random_nonreciprocal_network`, d = 6, coupling matrix
W = √(1 − f²) S + f A (S symmetric, A antisymmetric), three draws per point:

* ``linear``, stationary (constant drive and targets, Γ = 2 1/s): the paper's setting;
* ``tanh_active``, periodic (cos drive, Γ = 0.2 1/s): tanh product couplings plus linear
  active couplings f A; ep_asymmetric with the echo (and, to show why, without it).

Relative error ‖g − g_adjoint‖ / ‖g_adjoint‖ of ep_asymmetric (β = 1e-3) and ep_vector_field
(β = 1e-3) per point: mean and max over draws and the batch of 2.

    python benchmarks/nonrecip_fidelity.py        # ≈ 1–2 min; writes the PNG and a JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRACTIONS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
SETTINGS = {
    "linear, stationary (Γ = 2)": {"family": "linear", "static": True, "damping": 2.0},
    "tanh + active, periodic (Γ = 0.2)": {"family": "tanh_active", "static": False, "damping": 0.2},
}
ESTIMATORS: dict[str, dict[str, Any]] = {
    "ep_asymmetric": {"name": "ep_asymmetric"},
    "ep_asymmetric, no echo": {"name": "ep_asymmetric", "echo": False},
    "ep_vector_field": {"name": "ep_vector_field"},
}


async def point(setting: dict[str, Any], f: float, draw: int) -> dict[str, float]:
    from physlearn.estimators import make_estimator
    from physlearn.estimators.knowledge import ModelKnowledge
    from physlearn.simulators.ensemble import random_nonreciprocal_network
    from physlearn.spec.task import Task
    from physlearn.systems.ideal import IdealSystem

    rng = np.random.default_rng(1000 + draw)
    spec = random_nonreciprocal_network(6, rng, asymmetry=f, **setting)
    system = IdealSystem(spec, 5 if setting["static"] else 33, echo_settle="newton")
    kn = ModelKnowledge.from_spec(spec)
    u = rng.uniform(0.5, 1.0, (2, 2))
    task = Task.from_spec(spec, rng.uniform(-0.5, 0.5, (2, 1)))
    alpha = spec.initial_parameters()
    ref = (await make_estimator("adjoint", kn).estimate(system, alpha, u, task)).grad
    out = {}
    for label, cfg in ESTIMATORS.items():
        cfg = dict(cfg)
        if setting["static"] and label == "ep_asymmetric, no echo":
            continue
        if cfg["name"] == "ep_asymmetric" and setting["static"]:
            cfg["echo"] = False
        g = (
            await make_estimator(cfg.pop("name"), kn, beta=1e-3, **cfg).estimate(
                system, alpha, u, task
            )
        ).grad
        err = np.linalg.norm(g - ref, axis=1) / np.linalg.norm(ref, axis=1)
        out[label] = float(err.max())
    return out


COLORS = {"ep_asymmetric": "C0", "ep_asymmetric, no echo": "C2", "ep_vector_field": "C3"}


def plot(results: dict[str, dict[str, list[list[float]]]], out: Path) -> None:
    """Two log panels (every estimator per setting) and one linear panel (VF-EP's error)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, (name, res) in zip(axes[:2], results.items(), strict=True):
        for label, vals in res.items():
            v = np.maximum(np.array(vals), 1e-16)
            ax.semilogy(FRACTIONS, v.mean(axis=1), "o-", color=COLORS[label], label=label)
            ax.fill_between(FRACTIONS, v.min(axis=1), v.max(axis=1), color=COLORS[label], alpha=0.2)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("relative gradient error vs adjoint")
    for style, (name, res) in zip(("o-", "s--"), results.items(), strict=True):
        v = np.array(res["ep_vector_field"])
        axes[2].plot(FRACTIONS, v.mean(axis=1), style, color="C3", label=f"ep_vector_field, {name}")
        axes[2].fill_between(FRACTIONS, v.min(axis=1), v.max(axis=1), color="C3", alpha=0.15)
    axes[2].set_title("Vector-Field EP's error (linear scale)", fontsize=10)
    for ax in axes:
        ax.set_xlabel("antisymmetric fraction f of the couplings")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1, fontsize=8)
    fig.suptitle("Non-reciprocal networks, d = 6, β = 1e-3 (mean over draws, band = min–max)")
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--output", default=str(ROOT / "docs" / "fidelity-nonrecip.png"))
    ap.add_argument("--replot", action="store_true", help="redraw from the JSON beside the PNG")
    a = ap.parse_args(argv)
    out = Path(a.output)
    if a.replot:
        results = json.loads(out.with_suffix(".json").read_text())["results"]
    else:
        results = {}
        for name, setting in SETTINGS.items():
            res: dict[str, list[list[float]]] = {}
            for f in FRACTIONS:
                pts = [asyncio.run(point(setting, f, k)) for k in range(a.draws)]
                for label in pts[0]:
                    res.setdefault(label, []).append([p[label] for p in pts])
                print(name, f, {k: max(p[k] for p in pts) for k in pts[0]}, flush=True)
            results[name] = res
        out.with_suffix(".json").write_text(
            json.dumps({"fractions": FRACTIONS, "results": results}, indent=1) + "\n"
        )
    plot(results, out)
    print("wrote", a.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
