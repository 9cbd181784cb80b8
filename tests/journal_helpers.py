"""Measurement records for the per-step records' tests: the fields a test gives, NaN (or none)
elsewhere — what a records file holds for fields the bench did not report."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from physlearn.spec.system import Level
from physlearn.systems.bench.journal import MeasurementRecord, SampleRecord


def measurement(
    settle_s: list[float],
    remaining: list[float] | None = None,
    volts: list[dict[str, Any]] | None = None,
    level: Level = Level.EMULATED_MEMORY,
    x: np.ndarray | None = None,
    nudged: bool = False,
) -> MeasurementRecord:
    """One measurement of ``len(settle_s)`` samples; ``volts``: raw volts per channel of the
    first samples (the others have none)."""
    nan = math.nan
    samples = [
        SampleRecord(
            volts={
                k: np.asarray(v, dtype=np.float32)
                for k, v in (volts[b] if volts and b < len(volts) else {}).items()
            },
            fit_residual_rel=nan,
            stitch_rel=nan,
            t_change=nan,
            t_trigger=nan,
            t_window=nan,
            t_settle=nan,
            settle_s=s,
            remaining=remaining[b] if remaining else nan,
            rho_predicted=nan,
            predicted_from_memory=False,
            rho_measured=nan,
            decay_rate_per_s=nan,
            contraction=nan,
            acquisitions=0,
            reranges=0,
            previews=0,
            records=0,
        )
        for b, s in enumerate(settle_s)
    ]
    xs = x if x is not None else np.zeros((len(samples), 0, 0))
    return MeasurementRecord(level, xs, nudged, samples)
