"""Tables of a run report, as rows of strings: the run's facts, its parameters, and several runs
paired by seed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from physlearn.reports.run_data import RunData

__all__ = ["paired_seeds", "parameter_rows", "summary_rows"]

Row = list[str]


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "—"
        return f"{v:.{digits}g}"
    return str(v)


def _pct(v: Any) -> str:
    return "—" if not isinstance(v, int | float) or not math.isfinite(v) else f"{100 * v:.1f} %"


def summary_rows(run: RunData) -> list[Row]:
    """(fact, value) rows: level, task, estimator, progress, final metrics, failures, stability."""
    cfg, s = run.config, run.summary or {}
    final = s.get("final") or (run.metrics[-1] if run.metrics else {})
    est = cfg.get("estimator", {})
    rows: list[Row] = [
        ["level", run.level],
        ["data set", str(cfg.get("data", {}).get("name", "?"))],
        ["estimator", f"{run.estimator} (β = {_fmt(est.get('beta'))}, dimensionless)"],
        [
            "optimizer",
            f"{cfg.get('optimizer', {}).get('name')} lr {_fmt(cfg.get('optimizer', {}).get('lr'))}",
        ],
        ["seed", _fmt(run.seed)],
        ["epochs run", f"{len(run.metrics)} of {cfg.get('training', {}).get('epochs')}"],
        ["stop reason", str(s.get("stop_reason") or ("unfinished" if not s else "epochs done"))],
        ["selected epoch", _fmt(s.get("selected_epoch"))],
        ["final train accuracy", _pct(final.get("train_accuracy"))],
        ["final test accuracy", _pct(final.get("test_accuracy"))],
        [f"final test loss ({run.cost_unit})", _fmt(final.get("test_loss"))],
        ["steps", _fmt(s.get("steps", final.get("steps")))],
        ["experiments (steady states)", _fmt(s.get("experiments", final.get("experiments")))],
        ["wall time (s)", _fmt(s.get("wall_time_s", final.get("wall_time_s")))],
    ]
    for key in ("solver_failures", "nonfinite_steps", "evaluation_reverts", "clipped_parameters"):
        if key in s:
            rows.append([key.replace("_", " "), _fmt(s[key])])
    stab = s.get("stability") or {}
    if "stable" in stab:
        rows.append(
            [
                "final orbits attract",
                f"{_fmt(stab['stable'])} (largest Floquet multiplier "
                f"{_fmt(stab.get('max_floquet_multiplier'), 6)}, "
                f"{_fmt(stab.get('unstable_samples'))} of {_fmt(stab.get('samples_checked'))} "
                "samples not attracting)",
            ]
        )
    if run.records is not None:
        attrs = run.records.get("attrs") or {}
        rows.append(["calibration", str(attrs.get("calibration_version", "?"))])
    return rows


def parameter_rows(run: RunData, initial: np.ndarray | None) -> list[Row]:
    """name, unit, lower, upper, initial, final per trainable parameter."""
    info = run.parameters
    final = run.params[-1] if run.params.size else None
    rows = []
    for i, name in enumerate(info.names):
        rows.append(
            [
                name,
                info.units[i],
                _fmt(float(info.lower[i])),
                _fmt(float(info.upper[i])),
                _fmt(None if initial is None else float(initial[i])),
                _fmt(None if final is None else float(final[i])),
            ]
        )
    return rows


def _final(run: RunData, key: str) -> float:
    s = run.summary or {}
    final = s.get("final") or (run.metrics[-1] if run.metrics else {})
    v = final.get(key)
    return float(v) if isinstance(v, int | float) else math.nan


def paired_seeds(runs: Sequence[RunData]) -> tuple[Row, list[Row]]:
    """Final test accuracy and loss of every run, one row per seed and one column per recipe
    (estimator, else run name); a mean ± sd row, and paired differences to the first recipe
    (mean ± standard error over the seeds both have)."""
    recipes: list[str] = []
    cells: dict[tuple[int | None, str], RunData] = {}
    # one column per estimator when that pairs the runs unambiguously, else one per run
    by_estimator = len({(r.seed, r.estimator) for r in runs}) == len(runs)
    for run in runs:
        recipe = run.estimator if by_estimator else run.name
        if recipe not in recipes:
            recipes.append(recipe)
        cells[(run.seed, recipe)] = run
    seeds = sorted({s for s, _ in cells}, key=lambda s: (s is None, s))
    header = ["seed", *(f"{r}: test acc / loss" for r in recipes)]
    rows: list[Row] = []
    acc: dict[str, list[float]] = {r: [] for r in recipes}
    for seed in seeds:
        row = [_fmt(seed)]
        for r in recipes:
            cell = cells.get((seed, r))
            if cell is None:
                row.append("—")
                acc[r].append(math.nan)
                continue
            a, loss = _final(cell, "test_accuracy"), _final(cell, "test_loss")
            acc[r].append(a)
            row.append(f"{_pct(a)} / {_fmt(loss)}")
        rows.append(row)
    mean_row = ["mean ± sd"]
    for r in recipes:
        got = np.asarray(acc[r], dtype=float)
        got = got[np.isfinite(got)]
        mean_row.append(
            f"{100 * got.mean():.1f} ± {100 * got.std(ddof=1):.1f} %"
            if got.size > 1
            else _pct(got.mean() if got.size else math.nan)
        )
    rows.append(mean_row)
    if len(recipes) > 1:
        base = np.asarray(acc[recipes[0]], dtype=float)
        diff_row = [f"paired Δ to {recipes[0]}"]
        diff_row.append("")
        for r in recipes[1:]:
            d = np.asarray(acc[r], dtype=float) - base
            d = d[np.isfinite(d)]
            se = d.std(ddof=1) / math.sqrt(d.size) if d.size > 1 else math.nan
            diff_row.append(
                f"{100 * d.mean():+.1f} ± {100 * se:.1f} pp ({d.size} seeds)" if d.size else "—"
            )
        rows.append(diff_row)
    return header, rows
