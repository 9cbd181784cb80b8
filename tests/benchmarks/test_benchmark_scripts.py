"""Smoke tests of the benchmark scripts: quick mode runs and writes only its own doc section.

No timing is asserted: benchmarks report times, tests only check that the scripts work.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEADY_STATE = ROOT / "benchmarks" / "steady_state.py"
REFERENCE_MODELS = ROOT / "benchmarks" / "reference_models.py"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


def run_quick(script: Path, *args: str, timeout: float = 240) -> str:
    """Run a benchmark script with ``--quick`` (and ``args``) from the project root; its stdout."""
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_steady_state_section_is_rewritten_in_place(tmp_path: Path) -> None:
    bench = _load(STEADY_STATE)
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# Benchmarks\n\n## Other\n\n<!-- other:begin -->\nkeep me\n<!-- other:end -->\n"
    )
    bench.write_section(doc, "first body")
    bench.write_section(doc, "second body")
    text = doc.read_text()
    assert "keep me" in text and "second body" in text and "first body" not in text
    assert text.count(bench.BEGIN) == 1 and text.count(bench.END) == 1
    assert text.count(bench.HEADING) == 1
    assert text.index("<!-- other:end -->") < text.index(bench.BEGIN)


def test_steady_state_quick_mode(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    run_quick(STEADY_STATE, "--docs", str(doc))
    text = doc.read_text()
    assert "<!-- steady_state:begin -->" in text and "<!-- steady_state:end -->" in text
    rows = [line.split("|") for line in text.splitlines() if line.startswith(("| 4 |", "| 8 |"))]
    case_rows = [r for r in rows if len(r) > 10]
    assert len(case_rows) == 4  # d ∈ {4, 8} × Q ∈ {5, 20}
    for r in case_rows:
        eps_newton = float(r[7])
        eps_brute = float(r[12].split("/")[0])
        assert eps_brute <= eps_newton  # the brute force ran to the Newton solver's accuracy
        assert r[13].strip().startswith("**")  # measured, not extrapolated


def test_settle_margin_quick_mode_measures_every_transient_settled() -> None:
    # one EP step on the in-memory emulated XOR bench (virtual time); docs not rewritten
    out = run_quick(ROOT / "benchmarks" / "settle_margin.py", timeout=300)
    rows = [r.split("|") for r in out.splitlines() if r.startswith("| 1 |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0]]
    assert cells[2] == "12"  # 12 measurements: free, +β, −β for a batch of 4
    assert float(cells[6]) <= 1.0 and cells[9] == "yes"  # the true transient within tol


def test_reference_models_quick_writes_iris_rows(tmp_path: Path) -> None:
    doc = tmp_path / "reference_models.md"
    run_quick(REFERENCE_MODELS, "--docs", str(doc))
    rows = [line.split("|") for line in doc.read_text().splitlines() if line.startswith("| iris")]
    models = [r[2].strip().split(" ")[0] for r in rows]
    assert models == ["logreg", "mlp-xent", "mlp-mse"]
    for r in rows:
        train, test = (float(r[k].split("±")[0]) for k in (3, 4))
        assert 85.0 <= test <= 100.0 and 85.0 <= train <= 100.0  # Iris is near-separable


def test_unsolved_batch_quick_sets_every_failing_sample_aside_at_once() -> None:
    out = run_quick(ROOT / "benchmarks" / "unsolved_batch.py")
    rows = {
        int(r[1]): (int(r[3]), int(r[4]))
        for r in (line.split("|") for line in out.splitlines())
        if len(r) == 7 and r[1].strip().isdigit()
    }
    # k = 0: one solve of all 128; k = 2: the error names both failing samples, one more solve
    assert rows == {0: (1, 128), 2: (2, 126)}


def test_train_table_set_overrides_the_example_config() -> None:
    table = _load(ROOT / "benchmarks" / "train_table.py")
    assert table.parse_override("optimizer.lr=0.02") == ("optimizer.lr", 0.02)
    assert table.parse_override("network.topology.layers = [4, 12, 3]") == (
        "network.topology.layers",
        [4, 12, 3],
    )
    overrides = (("optimizer.lr", 0.02), ("network.topology.layers", [4, 12, 3]))
    data = table._config("iris", "conservative", "adjoint", 1, 60, overrides=overrides)
    plain = table._config("iris", "conservative", "adjoint", 1, 60)
    assert data["optimizer"]["lr"] == 0.02 != plain["optimizer"]["lr"]
    assert data["network"]["topology"]["layers"] == [4, 12, 3]
    assert data["training"]["epochs"] == 60 and data["network"]["topology"]["seed"] == 1
    for bad in ("optimizer.lr", "=0.1", "optimizer.lr=fast"):
        with pytest.raises(ValueError, match="--set"):
            table.parse_override(bad)


def test_quick_modes_never_rewrite_the_tracked_docs() -> None:
    """Without an explicit output, a --quick run prints (or writes to a temporary folder) and
    leaves docs/ as it was; a full run writes the tracked doc; an explicit path always wins."""
    docs = ROOT / "docs"
    before = {p.name: p.read_bytes() for p in docs.iterdir() if p.is_file()}
    run_quick(STEADY_STATE)
    run_quick(REFERENCE_MODELS)
    after = {p.name: p.read_bytes() for p in docs.iterdir() if p.is_file()}
    assert after == before
    helper = _load(ROOT / "benchmarks" / "doc_sections.py")
    default = docs / "x.md"
    assert helper.docs_target(None, default, quick=True) is None
    assert helper.docs_target(None, default, quick=False) == default
    assert helper.docs_target(Path("mine.md"), default, quick=True) == Path("mine.md")
    table = _load(ROOT / "benchmarks" / "train_table.py")
    import argparse

    out = table._output(argparse.Namespace(output=None, quick=True))
    assert docs not in out.parents and out.name == "results.md"


def test_gp_field_speed_quick_mode_writes_its_table(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    out = run_quick(ROOT / "benchmarks" / "gp_field_speed.py", "--docs", str(doc), timeout=120)
    assert "| 32 × 32 | 2048 |" in out
    text = doc.read_text()
    assert "## GP field speed" in text and "<!-- gp_field_speed:begin -->" in text


def test_gp_fidelity_quick_mode_writes_its_tables_and_figure(tmp_path: Path) -> None:
    """Near-EP's bias is linear in γ below the band and the exact variant within 1e-6 off the
    band (the quick run's three pumps)."""
    out = run_quick(ROOT / "benchmarks" / "gp_fidelity.py", "--out", str(tmp_path), timeout=120)
    md = (tmp_path / "gp_fidelity.md").read_text()
    assert out.strip() == md.strip()
    assert "## ω_p = -2.5 E — bias ∝ γ^p with p = 1.00" in md
    rows = [line.split("|") for line in md.splitlines() if line.startswith("| ")]
    exact = [float(cells[4]) for cells in rows if "e-" in cells[4]]  # solved points only
    assert len(exact) == 12 and max(exact) < 1e-6
    png = (tmp_path / "gp_fidelity.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_ep_step_speed_worker_measures_this_tree() -> None:
    """The worker of benchmarks/ep_step_speed.py (the base-commit comparison needs a git
    worktree and is left to the full run): one small EP gradient, free solve and step."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "ep_step_speed.py"),
            *("--worker", "--batch", "16", "--steps", "1", "--repeats", "1"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["nodes"] == 91 and out["steps"] == 1
    assert out["periodic"].startswith(str(ROOT))
    assert 0 < out["free_cpu"] and 0 < out["ep_cpu"] and math.isfinite(out["grad_norm"])


def test_train_table_counts_unstable_runs_over_their_test_orbits_only() -> None:
    """The "unstable final" column counts runs checked on every test sample (and their
    non-attracting orbits); rows of the older checks (64 training samples, a cold start) do not
    count."""
    table = _load(ROOT / "benchmarks" / "train_table.py")

    def row(split: str, stable: bool, bad: int, n: int, orbits: str = "evaluated") -> object:
        return table.RunResult(
            "xor",
            "conservative",
            "adjoint",
            0,
            1.0,
            0.0,
            1.0,
            5,
            1.0,
            0,
            4,
            stable,
            stability_orbits=orbits,
            stability_split=split,
            stability_samples=n,
            unstable_samples=bad,
        )

    rows = [row("test", True, 0, 30), row("test", False, 2, 30), row("train", False, 5, 64)]
    assert table._unstable(rows) == "1/2 (2 of 60)"
    assert table._unstable([row("", False, 0, 0, "cold start")]) == "not checked"
