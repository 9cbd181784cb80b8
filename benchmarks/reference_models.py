"""Digital reference models on the training table's exact splits (issue 3's "why" of a miss).

The training table (benchmarks/train_table.py, docs/results.md) judges each oscillator network
against an accuracy target. Whether a target is within reach of a network of that size is a
question about the data as much as about the physics, so this script trains conventional models
on the *same* splits and features:

* ``logreg`` — multinomial logistic regression (L2, C = 1): a linear classifier;
* ``mlp-xent`` — a one-hidden-layer tanh MLP with the oscillator network's hidden width, trained
  with cross-entropy (scikit-learn ``MLPClassifier``, Adam, to convergence);
* ``mlp-mse`` — the same MLP trained with the oscillator network's loss: squared error to the
  example's in-phase targets (``targets.on`` for the class's output, ``targets.off`` elsewhere),
  class = largest output (``MLPRegressor``, L-BFGS, no weight decay).

Splits: Iris — the table's five stratified folds (seed s on fold s), features scaled as in
examples/iris.toml; digits — examples/digits.toml's fixed split, 64 pixels and the 2×2-pooled 16
features of ``--digits-pooled``. MLP rows are mean ± std over ``--draws`` initialisations.

    python benchmarks/reference_models.py            # writes docs/reference_models.md
    python benchmarks/reference_models.py --quick    # Iris only, one draw
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import doc_sections  # noqa: E402
from train_table import DIGITS_POOL, DIGITS_POOLED_LAYERS, TARGETS  # noqa: E402

N_FOLDS = 5


@dataclass
class Row:
    """One (data set, model) cell: accuracies in [0, 1] over folds × draws."""

    data: str
    model: str
    train: list[float]
    test: list[float]


def _example(task: str) -> dict[str, Any]:
    from physlearn.spec.tomlconfig import read_toml

    return read_toml(ROOT / "examples" / f"{task}.toml")


def data_sets(quick: bool) -> list[tuple[str, list[Any], int, tuple[float, float]]]:
    """(label, splits, hidden width, (target on, target off)) for every data set compared."""
    from physlearn.training.datasets import get_dataset, iris_cv_folds

    out = []
    ex = _example("iris")
    folds = list(
        iris_cv_folds(
            n_splits=N_FOLDS, n_repeats=1, seed=0, scaling=ex["data"]["options"]["scaling"]
        )
    )
    layers = ex["network"]["topology"]["layers"]
    tg = (float(ex["targets"]["on"]), float(ex["targets"]["off"]))
    out.append((f"iris, {N_FOLDS}-fold CV (the table's folds)", folds, layers[1], tg))
    if quick:
        return out
    ex = _example("digits")
    opts = dict(ex["data"].get("options", {}))
    tg = (float(ex["targets"]["on"]), float(ex["targets"]["off"]))
    pixels = get_dataset("digits", **{**opts, "pool": 1})
    out.append(("digits, 64 pixels", [pixels], ex["network"]["topology"]["layers"][1], tg))
    pooled = get_dataset("digits", **{**opts, "pool": DIGITS_POOL})
    out.append(("digits, 16 pooled features", [pooled], DIGITS_POOLED_LAYERS[1], tg))
    return out


def _models(
    hidden: int, targets: tuple[float, float], n_classes: int
) -> dict[str, Callable[[int], Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    on, off = targets

    class _MseMlp:
        """tanh MLP fitted by squared error to in-phase targets; predicts the largest output."""

        def __init__(self, draw: int) -> None:
            self.m = MLPRegressor(
                hidden_layer_sizes=(hidden,),
                activation="tanh",
                solver="lbfgs",
                alpha=0.0,
                max_iter=5000,
                random_state=draw,
            )

        def fit(self, x: np.ndarray, y: np.ndarray) -> _MseMlp:
            t = np.full((len(y), n_classes), off)
            t[np.arange(len(y)), y] = on
            self.m.fit(x, t)
            return self

        def score(self, x: np.ndarray, y: np.ndarray) -> float:
            return float(np.mean(np.argmax(self.m.predict(x), axis=1) == y))

    return {
        "logreg": lambda draw: LogisticRegression(max_iter=5000),
        f"mlp-xent ({hidden} tanh)": lambda draw: MLPClassifier(
            hidden_layer_sizes=(hidden,), activation="tanh", max_iter=5000, random_state=draw
        ),
        f"mlp-mse ({hidden} tanh, targets {on}/{off})": _MseMlp,
    }


def evaluate(quick: bool, draws: int) -> list[Row]:
    rows = []
    for label, splits, hidden, tg in data_sets(quick):
        for name, make in _models(hidden, tg, splits[0].n_classes).items():
            n_draws = 1 if name == "logreg" else draws  # logistic regression is deterministic
            train, test = [], []
            for draw in range(n_draws):
                for d in splits:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # convergence chatter at max_iter
                        m = make(draw).fit(d.x_train, d.y_train)
                    train.append(float(m.score(d.x_train, d.y_train)))
                    test.append(float(m.score(d.x_test, d.y_test)))
            rows.append(Row(label, name, train, test))
            print(f"{label:45s} {name:40s} test {100 * statistics.fmean(test):5.1f} %", flush=True)
    return rows


def _pct(v: Sequence[float]) -> str:
    m = 100 * statistics.fmean(v)
    return f"{m:.1f} ± {100 * statistics.stdev(v):.1f}" if len(v) > 1 else f"{m:.1f}"


def report(rows: list[Row], draws: int, command: str) -> str:
    lines = [
        "# Digital reference models on the training table's splits",
        "",
        f"Generated by `{command}`. What a conventional model of the same size reaches on the "
        "splits of docs/results.md, to judge its targets ("
        + ", ".join(f"{t} ≥ {100 * v:.0f} %" for t, v in TARGETS.items())
        + "). MLP rows: mean ± std over folds × "
        f"{draws} initialisation(s); Iris: over the five folds (30 test points each).",
        "",
        "| data | model | train accuracy % | test accuracy % |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.data} | {r.model} | {_pct(r.train)} | {_pct(r.test)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="Iris only, one initialisation")
    ap.add_argument("--draws", type=int, default=None, help="MLP initialisations (default 3)")
    ap.add_argument(
        "--docs", type=Path, default=None, help="output file (default: docs/, not with --quick)"
    )
    args = ap.parse_args(argv)
    draws = args.draws or (1 if args.quick else 3)
    rows = evaluate(args.quick, draws)
    cmd = "python benchmarks/reference_models.py" + (" --quick" if args.quick else "")
    text = report(rows, draws, cmd + (f" --draws {args.draws}" if args.draws else ""))
    print("\n" + text)
    target = doc_sections.docs_target(args.docs, ROOT / "docs" / "reference_models.md", args.quick)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
