"""Training table for non-reciprocal networks: ep_asymmetric against the adjoint, with
Vector-Field EP and plain ep_symmetric beside it (docs/results.md, "Non-reciprocal networks").

Each task's example recipe (examples/<task>.toml: layers, data, targets, optimizer, batch size)
is trained on two non-reciprocal variants of its layered network
(`physlearn.spec.topology.layered`):

* ``bidirected`` — every coupling non-reciprocal: two directed couplings through ρ with
  independent gains per pair of consecutive-layer nodes;
* ``directed`` — fully feedforward: one directed coupling per pair, forward only;

both with Γ = ``--damping`` (default 0.5 1/s: the initial bidirected networks flutter at
Γ = 0.1), so ep_asymmetric runs its learning phases on the echo dynamics. Seeds are paired (a
seed sets the initial couplings and the mini-batch order, the same for every estimator); Iris
uses the stratified 5-fold split of benchmarks/train_table.py (seed s trains on fold s).
Reported per (task, network, estimator): test accuracy and loss (mean ± std), train loss after
the first epoch (``train_loss_epoch0``: the metrics record of epoch index 0, written after that
epoch's steps; rows also keep ``train_loss_epoch1`` and the whole ``train_loss_curve``) and at
the end, the paired differences to the adjoint and to ep_vector_field, the epochs run.

    python benchmarks/nonrecip_table.py --tasks xor --seeds 5 --epochs 60
    python benchmarks/nonrecip_table.py --tasks iris --nets directed --epochs 8

Raw rows are appended to ``--rows`` (JSON lines; ``--resume`` skips rows already there); the
markdown table is printed and written to ``--table``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
ESTIMATORS = ("ep_asymmetric", "ep_vector_field", "adjoint", "ep_symmetric")
NETS = ("bidirected", "directed")


def config(
    task: str, net: str, estimator: str, seed: int, epochs: int, damping: float
) -> dict[str, Any]:
    from physlearn.spec.tomlconfig import read_toml

    data = copy.deepcopy(read_toml(ROOT / "examples" / f"{task}.toml"))
    topo = data["network"]["topology"]
    topo.update(coupling=net, damping=damping, seed=seed, regime="conservative")
    data["estimator"] = {"name": estimator}
    if estimator != "adjoint":
        data["estimator"]["beta"] = 1e-3
    tr = data.setdefault("training", {})
    tr.update(seed=seed, epochs=epochs, log_cosine_to_adjoint=False)
    data.setdefault("system", {}).update(floquet="none", echo_settle="newton")
    return data


def run_one(
    task: str, net: str, estimator: str, seed: int, epochs: int, damping: float
) -> dict[str, Any]:
    """Train one configuration (no run directory); errors are reported, never raised."""
    from physlearn.errors import PhyslearnError
    from physlearn.spec.tomlconfig import validate
    from physlearn.training.config import TrainConfig
    from physlearn.training.datasets import iris_cv_folds
    from physlearn.training.loop import Trainer
    from physlearn.training.setup import prepare

    row: dict[str, Any] = {"task": task, "net": net, "estimator": estimator, "seed": seed}
    t0 = time.perf_counter()
    try:
        cfg = validate(TrainConfig, config(task, net, estimator, seed, epochs, damping), task)
        setup = prepare(cfg)
        if task == "iris":
            folds = list(iris_cv_folds(n_splits=5, n_repeats=1, seed=0, scaling="standard"))
            setup.dataset = folds[seed % 5]
        res = asyncio.run(Trainer(setup).run(None))
        final = res.summary["final"]
        row.update(
            test_accuracy=final["test_accuracy"],
            test_loss=final["test_loss"],
            train_loss_epoch0=res.metrics[0]["train_loss"],
            train_loss_epoch1=res.metrics[min(1, len(res.metrics) - 1)]["train_loss"],
            train_loss_curve=[m["train_loss"] for m in res.metrics],
            train_loss_end=res.metrics[-1]["train_loss"],
            epochs=res.summary["epochs_run"],
            solver_failures=int(res.summary["solver_failures"]),
        )
    except PhyslearnError as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"[:240]
    row["wall_s"] = time.perf_counter() - t0
    return row


def _ms(v: list[float], pct: bool = False) -> str:
    v = [x for x in v if x is not None and math.isfinite(x)]
    if not v:
        return "—"
    f = 100.0 if pct else 1.0
    s = statistics.stdev(v) * f if len(v) > 1 else 0.0
    return (
        (f"{statistics.fmean(v) * f:.1f} ± {s:.1f}")
        if pct
        else f"{statistics.fmean(v) * f:.3g} ± {s:.2g}"
    )


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| task | network | estimator | test acc % | test loss | train loss after 1 epoch | "
        "train loss, end | Δ end loss vs adjoint | Δ loss vs VF-EP (1 epoch; end) | epochs run "
        "| runs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["task"], r["net"]) for r in rows})
    for task, net in keys:
        by = {
            e: {
                r["seed"]: r
                for r in rows
                if (r["task"], r["net"], r["estimator"]) == (task, net, e)
            }
            for e in ESTIMATORS
        }
        for est in ESTIMATORS:
            rs = [r for r in by[est].values()]
            if not rs:
                continue
            ok = [r for r in rs if "error" not in r]
            if not ok:
                out.append(
                    f"| {task} | {net} | {est} | refused: {rs[0]['error'][:90]}… | | | | | | | 0/{len(rs)} |"
                )
                continue

            def paired(
                ref: str, key: str, rows_: list[dict[str, Any]] = ok, by: dict[str, Any] = by
            ) -> list[float]:
                return [
                    r[key] - by[ref][r["seed"]][key]
                    for r in rows_
                    if r["seed"] in by[ref] and "error" not in by[ref][r["seed"]]
                ]

            dvf = "—"
            if est == "ep_asymmetric":
                dvf = f"{_ms(paired('ep_vector_field', 'train_loss_epoch0'))}; {_ms(paired('ep_vector_field', 'train_loss_end'))}"
            dad = _ms(paired("adjoint", "train_loss_end")) if est != "adjoint" else "—"
            out.append(
                f"| {task} | {net} | {est} | {_ms([r['test_accuracy'] for r in ok], True)} | "
                f"{_ms([r['test_loss'] for r in ok])} | {_ms([r['train_loss_epoch0'] for r in ok])} | "
                f"{_ms([r['train_loss_end'] for r in ok])} | {dad} | {dvf} | "
                f"{statistics.fmean(r['epochs'] for r in ok):.0f} | {len(ok)}/{len(rs)} |"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="xor")
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--estimators", default=",".join(ESTIMATORS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--damping", type=float, default=0.5)
    ap.add_argument("--rows", default=str(ROOT / "docs" / "results-nonrecip.jsonl"))
    ap.add_argument("--table", default="")
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    rows_path = Path(a.rows)
    rows = [json.loads(x) for x in rows_path.read_text().splitlines()] if rows_path.exists() else []
    done = {(r["task"], r["net"], r["estimator"], r["seed"]) for r in rows} if a.resume else set()
    for task in a.tasks.split(","):
        for net in a.nets.split(","):
            for seed in range(a.seeds):
                for est in a.estimators.split(","):
                    if (task, net, est, seed) in done:
                        continue
                    row = run_one(task, net, est, seed, a.epochs, a.damping)
                    row["epochs_budget"] = a.epochs
                    print(json.dumps(row), flush=True)
                    with rows_path.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    rows.append(row)
    text = table(rows)
    print(text)
    if a.table:
        Path(a.table).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
