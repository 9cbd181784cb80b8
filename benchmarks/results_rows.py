"""docs/results.md through `physlearn sweep` (issue "Sweeps beyond one machine", must-show 4):
rows of the training table run as a sweep, compared value by value with the rows the docs table
was made from (docs/results.jsonl).

    # the cheapest row of every (task, regime, estimator) under 40 s: the rows to regenerate
    python benchmarks/results_rows.py pick --max-wall-s 40 --out runs/rows-check.jsonl
    # their sweep file, written by the table's own script (one point per row) ...
    python benchmarks/train_table.py --tasks xor,iris,digits,sine --seeds 5 --digits-pooled \
        --only-rows runs/rows-check.jsonl --write-sweep runs/rows-check/sweep.toml
    # ... run by physlearn sweep (a LocalCluster, one worker per core) ...
    physlearn sweep --config runs/rows-check/sweep.toml
    # ... and compared with the docs rows: every value column equal, bit for bit
    python benchmarks/results_rows.py check runs/rows-check --direct

The whole table is the same commands without ``pick`` (``--only-rows docs/results.jsonl``).
Compared: test and train accuracy, test loss, epochs run, selected epoch, solver failures,
the final detuning, and the final stability verdict where the docs row was checked the current
way (``stability_orbits = "evaluated"``); wall times are not compared. Each row is reported
bit-identical or not, and equal or not as the table shows it (floats to 3 significant digits).
``--direct`` reruns each row that is not bit-identical by train_table's direct path (`run_one`:
no sweep, no run directory) and says whether it gives the sweep's values bit for bit — when it
does, the difference is not the sweep's but the code's since the docs row was made. Prints a
Markdown table; exit status 0 when every row is equal as shown.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS_ROWS = ROOT / "docs" / "results.jsonl"
KEY = ("task", "regime", "estimator", "seed")
VALUES = (
    "test_accuracy",
    "train_accuracy",
    "test_loss",
    "epochs",
    "selected_epoch",
    "solver_failures",
    "final_detuning_linewidths",
)


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in KEY)


def pick(rows: list[dict[str, Any]], max_wall_s: float) -> list[dict[str, Any]]:
    """The cheapest finished row of every (task, regime, estimator), if under ``max_wall_s``."""
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        if r.get("error") or r["wall_s"] > max_wall_s:
            continue
        k = _key(r)[:3]
        if k not in best or r["wall_s"] < best[k]["wall_s"]:
            best[k] = r
    return sorted(best.values(), key=_key)


def _same(a: Any, b: Any) -> bool:
    """Equal values (floats bit for bit: ``==`` on the exact repr JSON keeps; NaN equals NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def sweep_rows(root: Path) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The sweep's finished points as training-table rows (train_table.row_of)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from dataclasses import asdict

    import train_table

    from physlearn.sweeps.records import RecordStore

    store = RecordStore(root)
    out = {}
    for path in sorted(store.dir.glob("*.json")):
        rec = store.read(path.stem)
        if rec is not None and "task" in rec.labels:
            row = asdict(train_table.row_of(rec, None))
            out[_key(row)] = row
    return out


def _shown(v: Any) -> Any:
    """A value as the docs table prints it: floats to 3 significant digits."""
    return f"{v:.3g}" if isinstance(v, float) else v


def _diff(ref: dict[str, Any], row: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(columns not bit-identical, columns that differ as the table shows them)."""
    cols = list(VALUES) + (["stable"] if ref.get("stability_orbits") == "evaluated" else [])
    bits = [f"{c}: {ref.get(c)!r} → {row[c]!r}" for c in cols if not _same(ref.get(c), row[c])]
    shown = [c for c in cols if _shown(ref.get(c)) != _shown(row[c])]
    if row["error"] != ref.get("error", ""):
        bits.append("error")
        shown.append("error")
    return bits, shown


def direct_equal(root: Path, row: dict[str, Any]) -> bool:
    """Whether train_table's direct path (`run_one`: no sweep, no run directory) gives the
    sweep's row bit for bit — the sweep's own values, whatever the docs row says. Epochs and
    the digits network as in the point's run directory."""
    import tomllib
    from dataclasses import asdict

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import train_table

    cfg = tomllib.loads((root / train_table.point_name(*_key(row)) / "config.toml").read_text())
    epochs = int(cfg["training"]["epochs"])
    pooled = row["task"] == "digits" and "pool" in cfg["data"].get("options", {})
    task, regime, estimator, seed = _key(row)
    ref = asdict(train_table.run_one(task, regime, estimator, seed, epochs, pooled))
    return not _diff(ref | {"stability_orbits": "evaluated"}, row)[0]


def check(root: Path, docs_rows: Path, direct: bool = False) -> tuple[str, bool, bool]:
    """A Markdown table: each sweep row against its docs row; (text, every row bit-identical,
    every row equal as the table shows it — floats to 3 significant digits)."""
    docs = {_key(r): r for r in _rows(docs_rows)}
    lines = [
        "| task | regime | estimator | seed | test acc | test loss | epochs | docs wall s | "
        "sweep wall s | bit-identical | as shown |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    n_bits = n_shown = n_direct = 0
    rows = sweep_rows(root)
    for key, row in sorted(rows.items()):
        ref = docs.get(key)
        bits, shown = _diff(ref, row) if ref is not None else (["no docs row"], ["no docs row"])
        n_bits += not bits
        n_shown += not shown
        if bits and direct:
            same = direct_equal(root, row)
            n_direct += same
            bits.append(f"**direct path (no sweep) = sweep: {'yes' if same else 'NO'}**")
        lines.append(
            f"| {' | '.join(map(str, key))} | {row['test_accuracy']:.4g} | {row['test_loss']:.6g} | "
            f"{row['epochs']} | {ref['wall_s'] if ref else math.nan:.1f} | {row['wall_s']:.1f} | "
            + ("yes" if not bits else "NO: " + "; ".join(bits))
            + " | "
            + ("yes" if not shown else "NO: " + ", ".join(shown))
            + " |"
        )
    lines.append(
        f"\n{len(rows)} rows of the sweep against {docs_rows.name}: {n_bits} bit-identical, "
        f"{n_shown} equal as the table shows them (floats to 3 significant digits)."
        + (
            f" Of the {len(rows) - n_bits} other rows, {n_direct} are given bit for bit by "
            "train_table's direct path too (the sweep is not the difference: the code changed "
            "since the docs row was made)."
            if direct and n_bits < len(rows)
            else ""
        )
    )
    n = len(rows)
    return "\n".join(lines), n > 0 and n_bits == n, n > 0 and n_shown == n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pick", help="the cheapest docs row of every (task, regime, estimator)")
    p.add_argument("--max-wall-s", type=float, default=40.0)
    p.add_argument("--rows", type=Path, default=DOCS_ROWS)
    p.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("check", help="a sweep's rows against the docs rows")
    c.add_argument("root", type=Path, help="the sweep's run root")
    c.add_argument("--rows", type=Path, default=DOCS_ROWS)
    c.add_argument(
        "--docs",
        type=Path,
        default=None,
        metavar="MD",
        help="also write the table as the 'results_rows' section of this file (docs/benchmarks.md)",
    )
    c.add_argument("--note", default="", help="a sentence put before the table in --docs")
    c.add_argument(
        "--direct",
        action="store_true",
        help="rerun each row that is not bit-identical by train_table.run_one (no sweep) and "
        "say whether it gives the sweep's values",
    )
    args = ap.parse_args(argv)
    if args.cmd == "pick":
        rows = pick(_rows(args.rows), args.max_wall_s)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        total = sum(r["wall_s"] for r in rows)
        print(f"{len(rows)} rows ({total:.0f} s of runs in the docs table) → {args.out}")
        return 0
    text, _, ok = check(args.root, args.rows, args.direct)
    print(text)
    if args.docs is not None:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import doc_sections

        head = f"{args.note.strip()}\n\n" if args.note.strip() else ""
        doc_sections.write_section(
            args.docs,
            "results_rows",
            "## docs/results.md rows through `physlearn sweep`",
            head + text,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
