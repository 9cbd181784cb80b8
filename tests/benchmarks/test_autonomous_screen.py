"""benchmarks/autonomous_screen.py --quick: one validation-seed run of a recipe, its row (with
the recipe's name and overrides) appended to --rows; docs/ untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_screen_appends_one_row_per_run(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    docs = {p.name: p.read_bytes() for p in (ROOT / "docs").iterdir() if p.is_file()}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "autonomous_screen.py"), "--quick"]
    for _ in range(2):
        proc = subprocess.run(
            [*cmd, "--recipe", "smoke", "--set", "optimizer.lr=0.02", "--rows", str(rows)],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    got = [json.loads(line) for line in rows.read_text().splitlines()]
    assert len(got) == 2 and got[0]["recipe"] == "smoke"
    assert got[0]["overrides"] == {"optimizer.lr": 0.02}
    assert 0.0 <= got[0]["test_accuracy"] <= 1.0
    assert {p.name: p.read_bytes() for p in (ROOT / "docs").iterdir() if p.is_file()} == docs
