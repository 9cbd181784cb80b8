"""How far a GP estimator's batch gradient is from the adjoint's, on a train config's own network.

For a GP train config (`[network.gp_lattice]` or `[network.gp_field]`), on its first ``--samples``
training samples, at the initial parameters (the config's seed, or ``--seed``) and, with
``--run``, at a run directory's last saved parameters: the relative error ‖ḡ − ḡ_adj‖/‖ḡ_adj‖
of the batch-mean gradient ḡ of ``--estimator`` (default ``gp_phase_conjugate``) for each β, its
cosine, and the fraction of parameters whose sign disagrees with the adjoint's. An exact
estimator's error falls as β²; a biased one's does not.

    python benchmarks/gp_estimator_error.py [--config examples/gp-digits.toml] [--seed S]
        [--run RUN_DIR] [--samples 32] [--betas 1e-2 1e-3] [--estimator gp_phase_conjugate]
        [--quick]                              # the gp-xor example, 4 samples

prints a Markdown table (nothing is written).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import numpy as np

from physlearn.estimators import make_estimator
from physlearn.systems.gp_lattice import GPLatticeTwin
from physlearn.training.config import load_train_config
from physlearn.training.setup import prepare

ROOT = Path(__file__).resolve().parents[1]


def rows(
    config: Path,
    seed: int | None,
    run: Path | None,
    samples: int,
    betas: list[float],
    estimator: str,
) -> list[dict[str, object]]:
    """One row per (parameters, β): relative error, cosine and sign disagreement."""
    cfg = load_train_config(config)
    net = cfg.network.gp_lattice or cfg.network.gp_field
    if net is None:
        raise SystemExit(f"{config}: not a GP network ([network.gp_lattice] or [network.gp_field])")
    if seed is not None:
        net.seed = seed
    setup = prepare(cfg, config.parent)
    spec, ds = setup.spec, setup.dataset
    u, task = ds.x_train[:samples], setup.targets.task(spec, ds.y_train[:samples])
    thetas = {"initial": spec.initial_parameters()}
    if run is not None:
        saved = sorted((run / "params").glob("*.npy"))
        if not saved:
            raise SystemExit(f"{run}: no params/*.npy")
        thetas[f"{run.name}/{saved[-1].name}"] = np.load(saved[-1])
    out: list[dict[str, object]] = []
    for label, theta in thetas.items():
        twin = GPLatticeTwin(spec)  # type: ignore[arg-type]  # a GP setup builds a GP spec
        exact = twin.exact_gradient(theta, u, task)[0].mean(axis=0)
        for beta in betas:
            est = make_estimator(estimator, setup.knowledge, beta=beta)
            g = asyncio.run(est.estimate(twin, theta, u, task)).grad.mean(axis=0)
            out.append(
                {
                    "parameters": label,
                    "beta": beta,
                    "rel": float(np.linalg.norm(g - exact) / np.linalg.norm(exact)),
                    "cos": float(g @ exact / (np.linalg.norm(g) * np.linalg.norm(exact))),
                    "signs": float(np.mean(np.sign(g) != np.sign(exact))),
                }
            )
    return out


def table(found: list[dict[str, object]]) -> str:
    lines = [
        "| parameters | β | relative error | cosine | signs disagreeing |",
        "|---|---|---|---|---|",
    ]
    for r in found:
        lines.append(
            f"| {r['parameters']} | {r['beta']:g} | {r['rel']:.2e} | {r['cos']:.10f} "
            f"| {100 * float(r['signs']):.2f} % |"  # type: ignore[arg-type]
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "examples" / "gp-digits.toml")
    ap.add_argument("--seed", type=int, default=None, help="the network's initial draw")
    ap.add_argument("--run", type=Path, default=None, help="also at this run's last parameters")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--betas", type=float, nargs="+", default=[1e-2, 1e-3])
    ap.add_argument("--estimator", default="gp_phase_conjugate")
    ap.add_argument("--quick", action="store_true", help="examples/gp-xor.toml, 4 samples")
    a = ap.parse_args(argv)
    if a.quick:
        a.config, a.samples = ROOT / "examples" / "gp-xor.toml", 4
    print(table(rows(a.config, a.seed, a.run, a.samples, a.betas, a.estimator)))


if __name__ == "__main__":
    main()
