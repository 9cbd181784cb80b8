"""The steps' shared state: their names and dependency order, and `StepContext` (the output
directory, the options, each completed step's result `<step>.json` and raw data `<step>.npz`).
A step is done when its result file exists, which makes the pipeline resumable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.calibration.options import CalibrationOptions
from physlearn.calibration.schema import utc_now, write_atomic
from physlearn.errors import CalibrationError

Array = NDArray[np.float64]

#: every step, in dependency order (`run_all` runs them in this order)
STEPS = ("dac", "resonance", "sensing", "actuators", "couplings", "active", "tuners")
#: the steps each step needs completed first
DEPENDS: dict[str, tuple[str, ...]] = {
    "dac": (),
    "resonance": (),
    "sensing": ("resonance",),
    "actuators": ("resonance",),
    "couplings": ("resonance", "dac"),
    "active": ("sensing", "actuators", "couplings"),
    "tuners": ("sensing", "actuators", "couplings"),
}


class StepContext:
    """Output directory and options shared by the steps."""

    def __init__(self, out: Path, opts: CalibrationOptions) -> None:
        self.out = Path(out)
        self.opts = opts
        self.out.mkdir(parents=True, exist_ok=True)

    def result_path(self, step: str) -> Path:
        return self.out / f"{step}.json"

    def done(self, step: str) -> bool:
        return self.result_path(step).exists()

    def load(self, step: str) -> dict[str, Any]:
        if not self.done(step):
            raise CalibrationError(f"step {step!r} has not been run (needed first)")
        out: dict[str, Any] = json.loads(self.result_path(step).read_text())
        return out

    def save(self, step: str, result: dict[str, Any], raw: dict[str, Array]) -> None:
        np.savez_compressed(self.out / f"{step}.npz", allow_pickle=False, **raw)
        result["completed_utc"] = utc_now()
        write_atomic(self.result_path(step), json.dumps(result, indent=1))
