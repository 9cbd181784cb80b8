"""Start a run from another run's parameters: ``physlearn train --init-from RUN_DIR[:EPOCH]``.

The lab's path from the twin to the bench: train on the ideal twin, then start a bench run (or a
run on any system with the same network) from the selected parameters — its initial evaluation,
before any step, is the twin-trained network's accuracy on the new system; its steps fine-tune
in situ.

``RUN_DIR`` is a finished or interrupted run directory; the parameters are those of its selected
epoch (``summary.json`` ``selected_epoch``), of ``EPOCH`` when given, or, for an unfinished run
without a summary, of its last saved epoch. They must belong to the same network: the same
parameter names and units, in the same order (``parameters.json`` of both runs), every value
finite and within the new config's bounds — checked before anything is written or switched on.
A bench run also checks them against the calibrated ranges and output limits (its planner) before
the first write, as for any parameters.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError, LimitError
from physlearn.training.runstore import RunStore

Array = NDArray[np.float64]

__all__ = ["InitFrom", "load_init_from", "parse_init_from"]


@dataclass(frozen=True)
class InitFrom:
    """Parameters (P,) taken from ``run`` at ``epoch`` (SI units, in parameter order)."""

    run: Path
    epoch: int
    values: Array

    def describe(self) -> dict[str, object]:
        """What parameters.json records: where the initial values came from."""
        return {"run": str(self.run.resolve()), "epoch": self.epoch}


def parse_init_from(text: str) -> tuple[Path, int | None]:
    """``RUN_DIR`` or ``RUN_DIR:EPOCH`` → (run directory, epoch or None)."""
    head, sep, tail = text.rpartition(":")
    if sep and tail.isdigit() and head:
        return Path(head), int(tail)
    return Path(text), None


def _epoch(store: RunStore, epoch: int | None) -> int:
    saved = store.param_epochs()
    if not saved:
        raise ConfigError(f"--init-from {store.run_dir}: the run saved no parameters yet")
    if epoch is not None:
        if epoch not in saved:
            raise ConfigError(
                f"--init-from {store.run_dir}:{epoch}: no parameters for epoch {epoch} "
                f"(saved: epochs {saved[0]}–{saved[-1]})"
            )
        return epoch
    if store.summary_path.is_file():
        summary = store.read_summary()
        selected = summary.get("selected_epoch")
        if isinstance(selected, int) and selected in saved:
            return selected
        if selected is None and summary.get("epochs_run"):
            raise ConfigError(
                f"--init-from {store.run_dir}: the run ended on its initial parameters (no "
                "epoch's evaluation solved every sample, and the last was reverted); name an "
                f"epoch: {store.run_dir}:EPOCH (saved: epochs {saved[0]}–{saved[-1]})"
            )
    return saved[-1]


def load_init_from(
    text: str, names: list[str], units: list[str], lower: Array, upper: Array
) -> InitFrom:
    """The parameters ``text`` (``RUN_DIR[:EPOCH]``) names, checked against the new run's
    parameter ``names``, ``units`` and bounds (``lower``, ``upper``; (P,) each)."""
    run, epoch = parse_init_from(text)
    try:
        store = RunStore.open(run)
    except ConfigError as exc:
        raise ConfigError(f"--init-from: {exc}") from None
    info_path = run / "parameters.json"
    if not info_path.is_file():
        raise ConfigError(f"--init-from {run}: no parameters.json (not a physlearn run directory)")
    info = json.loads(info_path.read_text())
    theirs, their_units = list(info.get("names", [])), list(info.get("units", []))
    if len(theirs) != len(names):
        raise ConfigError(
            f"--init-from {run}: its network has {len(theirs)} trainable parameters, this config "
            f"{len(names)}: not the same network"
        )
    for i, (a, b, ua, ub) in enumerate(zip(theirs, names, their_units, units, strict=True)):
        if a != b or ua != ub:
            raise ConfigError(
                f"--init-from {run}: parameter {i} is {a!r} ({ua}) there and {b!r} ({ub}) in this "
                "config: not the same network"
            )
    k = _epoch(store, epoch)
    values = store.load_params(k)
    if values.shape != (len(names),):
        raise ConfigError(
            f"--init-from {run}: params/epoch_{k:04d}.npy has shape {values.shape}, "
            f"expected ({len(names)},)"
        )
    bad = [
        f"{n} = {v!r} {u} (allowed [{lo:g}, {hi:g}])"
        for n, u, v, lo, hi in zip(names, units, values.tolist(), lower, upper, strict=True)
        if not math.isfinite(v) or not lo <= v <= hi
    ]
    if bad:
        raise LimitError(
            f"--init-from {run} (epoch {k}): {len(bad)} parameter(s) outside this config's "
            f"bounds, nothing written: {'; '.join(bad[:5])}{' …' if len(bad) > 5 else ''}"
        )
    return InitFrom(run, k, values)
