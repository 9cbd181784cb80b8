"""Cost of samples without a steady state in a batched twin solve (an evaluation chunk).

An epoch's evaluation solves 128 samples per batched Newton–Krylov problem on the ideal twin.
When some have no steady state (the network crossed a bifurcation), the twin tries Newton from
the warm start, amplitude continuation from rest and plain Newton from rest on those samples,
and the evaluation sets the samples the error names aside and solves the rest again
(physlearn.training.evaluation._free_outputs). This script measures that cost against the same batch
without the failing samples, side by side in one run:

* network: 6 oscillators with quartic terms (Q = 100), random couplings (seed 3); drive
  amplitudes uniform in 0.8–1.2 × nominal, warm-started from the orbits at parameters 1e-3 away;
* k samples driven at 2 × nominal, where this network has no steady state that Newton or
  continuation finds.

    python benchmarks/unsolved_batch.py            # rewrites its section of docs/benchmarks.md
    python benchmarks/unsolved_batch.py --quick    # k ∈ {0, 2}, docs not rewritten
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from physlearn.spec.system import PhysicalSystem

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import doc_sections  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
BATCH = 128


async def _measure(system: PhysicalSystem, scales: np.ndarray, alpha: np.ndarray) -> None:
    """One batched free measurement: drive amplitudes ``scales`` (B,) × nominal on both inputs."""
    await system.set_parameters(alpha)
    await system.set_input(np.ones((scales.size, 2)) * scales[:, None])
    await system.measure()


def run_case(k: int, repeats: int) -> tuple[float, int, int]:
    """(best wall s over repeats, solves, samples solved) for k failing samples in the batch."""
    from twin_helpers import with_trainable_everything

    from physlearn.errors import SolverError
    from physlearn.simulators.ensemble import random_network
    from physlearn.spec.network import NetworkSpec
    from physlearn.systems.ideal import IdealSystem

    spec: NetworkSpec = with_trainable_everything(
        random_network(6, np.random.default_rng(3), damping=0.01, kinds=("product", "difference")),
        quartic=1.0,
    )
    a0 = spec.initial_parameters()
    scales = np.random.default_rng(0).uniform(0.8, 1.2, BATCH)
    bad = np.linspace(1, BATCH - 1, k, dtype=int) if k else np.zeros(0, dtype=int)
    scales[bad] = 2.0
    good = [i for i in range(BATCH) if i not in set(bad.tolist())]
    times, solves, solved = [], 0, 0
    for _ in range(repeats):
        system = IdealSystem(spec, floquet="none")
        asyncio.run(_measure(system, scales[good], a0))  # warm starts, as after an epoch
        t0 = time.perf_counter()
        todo, solves = list(range(BATCH)), 0
        while todo:
            solves += 1
            try:
                asyncio.run(_measure(system, scales[todo], a0 + 1e-3))
                break
            except SolverError as err:  # what the evaluation does: set the named samples aside
                # (errors from before ``samples`` existed name the first failing sample only)
                named = set(getattr(err, "samples", None) or (getattr(err, "sample", None),))
                todo = [c for j, c in enumerate(todo) if j not in named]
        times.append(time.perf_counter() - t0)
        solved = len(todo)
    return min(times), solves, solved


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="k ∈ {0, 2}, docs not rewritten")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    ks = (0, 2) if args.quick else (0, 1, 2, 4, 8)
    rows = [(k, *run_case(k, 1 if args.quick else args.repeats)) for k in ks]
    base = rows[0][1]
    lines = [
        f"Batch of {BATCH} warm-started samples on the ideal twin, k of them without a steady "
        f"state; best of {1 if args.quick else args.repeats} (`python "
        "benchmarks/unsolved_batch.py`). Ratio: wall time over the batch without failures.",
        "",
        "| k without steady state | wall s | solves | samples solved | ratio to k = 0 |",
        "|---|---|---|---|---|",
    ]
    for k, t, solves, solved in rows:
        lines.append(f"| {k} | {t:.2f} | {solves} | {solved} | {t / base:.2f} |")
    lines.append(
        "\nMedian ratio over k > 0: "
        f"{statistics.median(r[1] / base for r in rows[1:]):.2f}. The same script at commit "
        "9075a68 (continuation and Newton's tail on the whole batch, a whole-batch retry from "
        "rest, one failing sample named per error; run from a worktree of that commit, best of "
        "1, same machine): k = 0, 1, 2, 4, 8 took 0.19, 10.30, 20.57, 39.36, 81.85 s with "
        "1, 2, 3, 5, 9 solves (ratios 1, 54, 107, 205, 426)."
    )
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        doc_sections.write_section(
            DOCS, "unsolved_batch", "## Samples without a steady state", text
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
