"""XOR on autonomous orbits (issue 18, must-show 4): paired-seed training at fixed energy and at
fixed reduced action, EP against the exact adjoint, as rows beside the driven ones.

For each constraint c ∈ {energy, action} the example config examples/autonomous-xor-<c>.toml is
trained with ``ep_fixed_<c>`` and with ``adjoint`` (the exact gradient with the same constraint
held) from the same seeds (a seed sets the initial couplings and the batch order). Rows go to
``docs/results_autonomous.jsonl`` (``--resume`` keeps those already there); the table is printed
and, unless ``--no-docs``, written between the markers of docs/results.md.

    python benchmarks/autonomous_table.py                  # 5 seeds, both constraints
    python benchmarks/autonomous_table.py --seeds 2 --epochs 20 --no-docs
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ROWS = ROOT / "docs" / "results_autonomous.jsonl"
DOC = ROOT / "docs" / "results.md"
BEGIN, END = "<!-- autonomous-table:begin -->", "<!-- autonomous-table:end -->"
CONSTRAINTS = ("energy", "action")


def run_one(
    constraint: str,
    estimator: str,
    seed: int,
    epochs: int | None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One training run of the example config of ``constraint`` (``overrides``: dotted keys of the
    config, e.g. ``{"network.topology.layers": [2, 8, 1]}``, set before the seed)."""
    from physlearn.errors import PhyslearnError
    from physlearn.spec.tomlconfig import read_toml, validate
    from physlearn.training.config import TrainConfig
    from physlearn.training.loop import Trainer
    from physlearn.training.setup import prepare

    data = copy.deepcopy(read_toml(ROOT / "examples" / f"autonomous-xor-{constraint}.toml"))
    for key, value in (overrides or {}).items():
        *path, leaf = key.split(".")
        node = data
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    data["network"]["topology"]["seed"] = seed
    est = data["estimator"] if estimator != "adjoint" else {"name": "adjoint"}
    data["estimator"] = est
    data["training"].update(seed=seed, log_cosine_to_adjoint=False)
    if epochs is not None:
        data["training"]["epochs"] = epochs
    row: dict[str, Any] = {"constraint": constraint, "estimator": estimator, "seed": seed}
    t0 = time.perf_counter()
    try:
        setup = prepare(validate(TrainConfig, data, f"autonomous-xor-{constraint}"))
        res = asyncio.run(Trainer(setup).run(None))
        final = res.summary["final"]
        row.update(
            test_accuracy=float(final["test_accuracy"]),
            test_loss=float(final["test_loss"]),
            epochs=int(res.summary["epochs_run"]),
            solver_failures=int(res.summary["solver_failures"]),
            error="",
        )
    except PhyslearnError as exc:
        row.update(test_accuracy=math.nan, test_loss=math.nan, epochs=0, solver_failures=0)
        row["error"] = f"{type(exc).__name__}: {exc}"[:200]
    row["wall_s"] = time.perf_counter() - t0
    return row


def _ms(values: list[float], scale: float = 1.0, fmt: str = ".3g") -> str:
    v = [scale * x for x in values if math.isfinite(x)]
    if not v:
        return "—"
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):{fmt}} ± {sd:{fmt}}"


def table(rows: list[dict[str, Any]], header: str) -> str:
    out = [
        header,
        "",
        "| constraint | estimator | test accuracy % | runs at 100 % | Δacc vs adjoint (pp) | test loss "
        "| epochs run | wall s/run | solver failures | failed runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in CONSTRAINTS:
        ref = {r["seed"]: r for r in rows if r["constraint"] == c and r["estimator"] == "adjoint"}
        for est in (f"ep_fixed_{c}", "adjoint"):
            mine = sorted(
                (r for r in rows if r["constraint"] == c and r["estimator"] == est),
                key=lambda r: r["seed"],
            )
            if not mine:
                continue
            acc = [r["test_accuracy"] for r in mine]
            dacc = [
                r["test_accuracy"] - ref[r["seed"]]["test_accuracy"]
                for r in mine
                if r["seed"] in ref and est != "adjoint"
            ]
            full = sum(1 for a in acc if a == 1.0)
            out.append(
                f"| {c} | {est} | {_ms(acc, 100, '.1f')} | {full}/{len(mine)} "
                f"| {_ms(dacc, 100, '.1f') if est != 'adjoint' else '—'} "
                f"| {_ms([r['test_loss'] for r in mine])} "
                f"| {statistics.mean(r['epochs'] for r in mine):.0f} "
                f"| {statistics.mean(r['wall_s'] for r in mine):.1f} "
                f"| {sum(r['solver_failures'] for r in mine)} "
                f"| {sum(1 for r in mine if r['error'])}/{len(mine)} |"
            )
    for r in rows:
        if r["error"]:
            out.append(
                f"\n- failed: {r['constraint']}/{r['estimator']}/seed {r['seed']}: {r['error']}"
            )
    return "\n".join(out)


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _guard_value() -> str:
    from physlearn.spec.tomlconfig import read_toml

    vals = {
        str(
            read_toml(ROOT / "examples" / f"autonomous-xor-{c}.toml")["training"].get(
                "min_orbit_stiffness", "none"
            )
        )
        for c in CONSTRAINTS
    }
    return "/".join(sorted(vals))


def _network_text() -> str:
    """The examples' networks in a sentence, read from the configs."""
    from physlearn.spec.tomlconfig import read_toml

    parts = []
    for c in CONSTRAINTS:
        d = read_toml(ROOT / "examples" / f"autonomous-xor-{c}.toml")
        top, auto, tg = d["network"]["topology"], d["system"]["autonomous"], d["targets"]
        unit = "J" if c == "energy" else "J·s"
        sym = "E₀" if c == "energy" else "S₀"
        k_out = top.get("output_stiffness")
        parts.append(
            f"{c}: layers {top['layers']}, k = {top['stiffness']} N/m"
            + (f", readout k_out = {k_out} N/m" if k_out is not None else "")
            + f", input force {top['input_gain']}·(u + {top.get('input_offset', 0.0)}) N"
            + f", {sym} = {auto['value']} {unit}, targets {tg['on']} / {tg['off']} m"
            + f", {d['optimizer']['name']} lr {d['optimizer']['lr']}"
            + f", {d['training']['epochs']} epochs, EP β = {d['estimator']['beta']:g}"
        )
    return "; ".join(parts)


def write_docs(text: str) -> None:
    doc = DOC.read_text()
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in doc:
        i, j = doc.index(BEGIN), doc.index(END) + len(END)
        doc = doc[:i] + block + doc[j:]
    else:  # a section of its own at the end, after the training table's notes mark
        title = "## Autonomous orbits: XOR at fixed energy and at fixed reduced action (issue 18)"
        doc = doc.rstrip("\n") + f"\n\n{title}\n\n{block}\n"
    DOC.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=None, help="override the examples' budget")
    ap.add_argument("--constraints", default=",".join(CONSTRAINTS))
    ap.add_argument("--estimators", default="ep,adjoint", help="ep (ep_fixed_<c>) and/or adjoint")
    ap.add_argument("--resume", action="store_true", help="keep rows already in the jsonl")
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument(
        "--table-only", action="store_true", help="run nothing: the table of the rows file"
    )
    ap.add_argument(
        "--rows", type=Path, default=ROWS, help="the jsonl of rows (default %(default)s)"
    )
    args = ap.parse_args(argv)
    rows: list[dict[str, Any]] = []
    if args.resume and args.rows.exists():
        rows = [json.loads(line) for line in args.rows.read_text().splitlines() if line.strip()]
    done = {(r["constraint"], r["estimator"], r["seed"]) for r in rows}
    t0 = time.perf_counter()
    for c in args.constraints.split(","):
        for e in args.estimators.split(","):
            est = f"ep_fixed_{c}" if e == "ep" else "adjoint"
            for seed in range(args.seeds):
                if (c, est, seed) in done or args.table_only:
                    continue
                rows.append(run_one(c, est, seed, args.epochs))
                print(json.dumps(rows[-1]), flush=True)
                args.rows.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = "python benchmarks/autonomous_table.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    guard = _guard_value()
    header = (
        f"### xor on autonomous orbits (issue 18: fixed energy, fixed reduced action)\n\n"
        f"Generated by `{cmd.strip()}` at commit {_commit()} ({args.seeds} paired seeds "
        f"0–{args.seeds - 1}; {time.perf_counter() - t0:.0f} s in this invocation; raw rows "
        f"`results_autonomous.jsonl`). Networks: examples/autonomous-xor-energy.toml and "
        f"-action.toml, Γ = 0, no drive, static input forces, the orbit of the lowest mode held "
        f"at the set point, output: the time-averaged level ({_network_text()}); orbit guard "
        f"`training.min_orbit_stiffness` = {guard}: initial parameters scaled by ½ⁿ until every "
        f"input's equilibrium keeps ω² ≥ {guard} k/m, updates shortened or refused otherwise). "
        f"β is dimensionless: peak nudge / peak net force."
    )
    text = table(rows, header)
    print(text)
    if not args.no_docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
