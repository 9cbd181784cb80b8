"""The fidelity-map benchmark runs (quick mode) and writes its table and plot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fidelity_map_quick_writes_table_and_plot(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "fidelity_map.py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    md = (tmp_path / "fidelity.md").read_text()
    assert out.stdout.strip() == md.strip()
    for section in (
        "## A. Damping",
        "## B. Detuning",
        "## C. Nudge strength",
        "## D. Steady-state",
    ):
        assert section in md
    assert "| finite_difference | 2P + 1 | 21 | 201 | 2001 |" in md
    png = (tmp_path / "fidelity.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
