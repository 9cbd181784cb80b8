"""The README's main job gives, epoch for epoch, the recorded parameters (tests/golden_files.py):
`physlearn train --config examples/xor.toml`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from golden_files import assert_params_as_recorded

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_main_job_parameters_as_recorded(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            *(sys.executable, "-m", "physlearn.cli", "train"),
            *("--config", str(ROOT / "examples" / "xor.toml"), "--quiet"),
            *("--run-dir", str(tmp_path), "--name", "xor"),
        ],
        capture_output=True,
        text=True,
        timeout=800,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert assert_params_as_recorded(tmp_path / "xor" / "params", "xor_params.npz") == 97
