"""Screen a recipe for XOR on autonomous orbits on *validation* seeds (issue 18, must-show 4).

XOR has no held-out data, so seeds stand in for it: a recipe (overrides of the example configs
examples/autonomous-xor-<c>.toml) is chosen on seeds 5–9 here, and only the chosen one is run on
the paired seeds 0–4 of the table (benchmarks/autonomous_table.py). A seed sets both the network
draw and the batch order, as in the table. Rows (one per run, with the recipe's name and
overrides) are appended to ``--rows``.

    python benchmarks/autonomous_screen.py --recipe centred \\
        --set network.topology.input_offset=-0.5 --set network.topology.input_gain=4.0 \\
        --constraints energy --estimators adjoint --seeds 5-9
    python benchmarks/autonomous_screen.py --recipe smoke --quick --rows /tmp/rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from autonomous_table import CONSTRAINTS, run_one


def parse_set(items: list[str]) -> dict[str, Any]:
    """``a.b.c=<json>`` → {"a.b.c": value} (a value that is not JSON is kept as a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def seeds(spec: str) -> list[int]:
    if "-" in spec:
        a, b = spec.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in spec.split(",")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", required=True, help="a name for the rows")
    ap.add_argument("--set", action="append", default=[], help="dotted.key=<json> override")
    ap.add_argument("--seeds", default="5-9")
    ap.add_argument("--constraints", default=",".join(CONSTRAINTS))
    ap.add_argument("--estimators", default="adjoint", help="ep (ep_fixed_<c>) and/or adjoint")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--stop-on-fail", action="store_true", help="stop at the first run < 100 %%")
    ap.add_argument("--rows", type=Path, default=Path("autonomous_screen.jsonl"))
    ap.add_argument(
        "--quick", action="store_true", help="seed 5, fixed action, the adjoint, 3 epochs"
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.constraints, args.estimators, args.epochs = "5", "action", "adjoint", 3
    overrides = parse_set(args.set)
    for c in args.constraints.split(","):
        for e in args.estimators.split(","):
            est = f"ep_fixed_{c}" if e == "ep" else "adjoint"
            for seed in seeds(args.seeds):
                row = run_one(c, est, seed, args.epochs, overrides)
                row = {"recipe": args.recipe, "overrides": overrides, **row}
                print(json.dumps(row), flush=True)
                with args.rows.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                if args.stop_on_fail and not row["test_accuracy"] == 1.0:
                    return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
