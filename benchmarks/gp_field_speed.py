"""GP field speed (issue 19, must-show 4): stationary states of a 2-D Gross–Pitaevskii field.

For each grid n × n of `physlearn.spec.gp_field.example_torus` (a well and a pump spot on a
40 μm torus): the wall time of a cold solve (Newton–Krylov from the linear response), of a warm
solve (the potential moved by a random 1e-3 E, started from the previous state: what a training
step does) and of the adjoint gradient of a density cost on a 6 μm output square; medians over
``--repeats`` runs, on however many BLAS threads the environment gives (OMP_NUM_THREADS).

    python benchmarks/gp_field_speed.py                   # 32, 48, 64; docs/benchmarks.md
    python benchmarks/gp_field_speed.py --quick           # 32 only, docs not rewritten
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from physlearn.simulators.gp_lattice import solve_stationary
from physlearn.simulators.gp_lattice_adjoint import density_gradient
from physlearn.spec.gp_field import example_torus
from physlearn.spec.gp_lattice import DensityCost

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling helper below
import doc_sections

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"


def measure(n: int, repeats: int, rng: np.random.Generator) -> dict[str, float]:
    """Median cold, warm and adjoint wall times (s) and the cold Newton steps on an n × n grid."""
    field, drive = example_torus(n)
    x, y = field.coordinates_um()
    outputs = np.flatnonzero((np.abs(x - 28.0) < 3.0) & (np.abs(y - 20.0) < 3.0))
    cost = DensityCost(outputs=outputs, targets=np.full(outputs.shape, 0.05))
    cold, warm, adjoint, steps, warm_steps = [], [], [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state = solve_stationary(field, drive)
        cold.append(time.perf_counter() - t0)
        steps.append(state.iterations)
        moved = field.with_parameters(field.parameters() + 1e-3 * rng.normal(size=n * n))
        t0 = time.perf_counter()
        warm_state = solve_stationary(moved, drive, start=state.psi)
        warm.append(time.perf_counter() - t0)
        warm_steps.append(warm_state.iterations)
        t0 = time.perf_counter()
        density_gradient(field, state.psi, cost)
        adjoint.append(time.perf_counter() - t0)
    return {
        "n": n,
        "cold_s": float(np.median(cold)),
        "warm_s": float(np.median(warm)),
        "adjoint_s": float(np.median(adjoint)),
        "steps": float(np.median(steps)),
        "warm_steps": float(np.median(warm_steps)),
    }


def section(rows: list[dict[str, float]], repeats: int) -> str:
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    lines = [
        f"`python benchmarks/gp_field_speed.py` — medians of {repeats} runs, "
        f"OMP_NUM_THREADS={threads}; the 2-D example of `example_torus` (tolerance 1e-12 on "
        "the residual):",
        "",
        "| grid | unknowns (real) | cold solve s | Newton steps | warm solve s | warm steps "
        "| adjoint s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n = int(r["n"])
        lines.append(
            f"| {n} × {n} | {2 * n * n} | {r['cold_s']:.3f} | {r['steps']:.0f} | "
            f"{r['warm_s']:.3f} | {r['warm_steps']:.0f} | {r['adjoint_s']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", default="32,48,64", help="comma list of n (n × n grids)")
    ap.add_argument("--repeats", type=int, default=None, help="runs per grid (default 5)")
    ap.add_argument("--quick", action="store_true", help="32 × 32 once, docs not rewritten")
    ap.add_argument("--docs", type=Path, default=None, help="markdown file to write the section to")
    args = ap.parse_args(argv)
    grids = [32] if args.quick else [int(g) for g in args.grids.split(",")]
    repeats = args.repeats or (1 if args.quick else 5)
    rng = np.random.default_rng(0)
    text = section([measure(n, repeats, rng) for n in grids], repeats)
    print(text)
    target = doc_sections.docs_target(args.docs, DOCS, args.quick)
    if target is not None:
        doc_sections.write_section(target, "gp_field_speed", "## GP field speed", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
