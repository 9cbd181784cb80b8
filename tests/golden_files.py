"""Reference outputs recorded from the code before the "One house" redesign (commit 73400ae), so
that tests can show the redesign kept behaviour bit for bit.

Recorded with, on a clean clone of 73400ae:

    physlearn train --config examples/xor.toml                 → golden/xor_params.npz
    physlearn train --config examples/bench-xor.toml --arm     → golden/bench_xor_params.npz
    physlearn twin serve --config examples/bench.toml --virtual, then
    physlearn calibrate all --config examples/bench.toml --options examples/bench-calibration.toml
        --twin-control … --resources …                         → golden/bench_calibration.json

The parameter files hold one array per epoch (``epoch_0000`` …), as the run's params/ folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

GOLDEN = Path(__file__).resolve().parent / "golden"


def assert_params_as_recorded(params_dir: Path, golden: str) -> int:
    """Every epoch's parameters in a run's ``params/`` equal the recorded ones bit for bit, and
    the run made exactly the recorded epochs; returns the number of epochs compared."""
    with np.load(GOLDEN / golden) as ref:
        want = {k: ref[k] for k in ref.files}
    got = {p.stem: np.load(p) for p in sorted(Path(params_dir).glob("epoch_*.npy"))}
    assert sorted(got) == sorted(want), (sorted(got)[-3:], sorted(want)[-3:])
    for k in sorted(want):
        assert got[k].dtype == want[k].dtype and np.array_equal(got[k], want[k]), k
    return len(want)


def calibration_content(path: Path) -> dict[str, Any]:
    """A calibration file without its creation and step completion times."""
    data: dict[str, Any] = json.loads(Path(path).read_text())
    data.pop("created_utc")
    data.pop("steps")
    return data
