"""Run reports (`physlearn report`, and `physlearn train` at the end of a run): on an ideal-twin
run and an emulated-bench run the HTML page and the PNGs exist, every figure is embedded, and
every figure has a title, labelled axes and curves with data; several runs compare."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from physlearn.reports import bench_figures, figures
from physlearn.reports.run_data import load_run

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(600)


def _train(config: str, runs: Path, name: str, *extra: str) -> Path:
    r = subprocess.run(
        [
            *(sys.executable, "-m", "physlearn.cli", "train", "--config", str(ROOT / config)),
            *("--quiet", "--run-dir", str(runs), "--name", name, *extra),
        ],
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return runs / name


def _check_figure(fig: Figure | None, what: str) -> None:
    """A title, every visible axes labelled, and at least one curve (or bar) with finite data."""
    assert fig is not None, what
    title = fig.get_suptitle() if hasattr(fig, "get_suptitle") else fig._suptitle.get_text()
    assert title, f"{what}: no title"
    drawn = 0
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert any(ax.get_xlabel() for ax in visible), f"{what}: no x label"  # shared x: the bottom
    for ax in visible:
        assert ax.get_ylabel(), f"{what}: an axes without a y label"
        for line in ax.get_lines():
            y = np.asarray(line.get_ydata(), dtype=float)
            drawn += int(y.size > 0 and np.isfinite(y).any())
        drawn += len(ax.patches) + len(ax.collections)
    assert drawn, f"{what}: nothing drawn"


def _check_page(run_or_out: Path, expected: set[str]) -> None:
    html = (run_or_out / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    pngs = {p.stem.removeprefix("report-") for p in run_or_out.glob("report-*.png")}
    assert expected <= pngs, pngs
    assert len(images) == len(list(run_or_out.glob("report-*.png")))
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    import matplotlib.image

    for png in run_or_out.glob("report-*.png"):
        pixels = matplotlib.image.imread(png)
        assert pixels.ndim == 3 and float(np.std(pixels)) > 0.01, png  # not a blank image


def test_twin_run_report(tmp_path: Path) -> None:
    run = _train("examples/xor.toml", tmp_path, "xor", "--epochs", "4")
    _check_page(run, {"learning", "parameters", "failures", "adjoint"})
    data = load_run(run)
    assert data.level == "ideal" and len(data.metrics) == 4
    _check_figure(figures.learning_curves(data), "learning curves")
    _check_figure(figures.parameter_traces(data), "parameters")
    _check_figure(figures.failures_and_steps(data), "failures")
    _check_figure(figures.adjoint_agreement(data), "adjoint")
    html = (run / "report.html").read_text()
    assert "couplings[0]:product:0-2" in html and "N/m" in html  # the parameter table
    assert "final test loss (m²·s)" in html
    assert figures.learning_curves(data).axes[0].get_ylabel() == "mean task cost (m²·s)"


def test_gp_run_report_gives_the_cost_its_own_unit(tmp_path: Path) -> None:
    """A GP network's cost is on occupations (dimensionless), not the oscillators' m²·s."""
    run = _train("examples/gp-field-xor.toml", tmp_path, "gpf", "--epochs", "2")
    _check_page(run, {"learning", "parameters"})
    data = load_run(run)
    assert data.cost_unit == "occupation², dimensionless"
    fig = figures.learning_curves(data)
    _check_figure(fig, "learning curves")
    assert fig.axes[0].get_ylabel() == "mean task cost (occupation², dimensionless)"
    assert "final test loss (occupation², dimensionless)" in (run / "report.html").read_text()


@pytest.mark.slow
def test_emulated_bench_run_report_and_comparison(tmp_path: Path) -> None:
    run = _train("examples/bench-xor.toml", tmp_path, "bench", "--epochs", "2", "--arm")
    _check_page(run, {"learning", "parameters", "failures", "waveforms", "settling"})
    data = load_run(run)
    assert data.level == "emulated-memory" and data.records is not None
    _check_figure(bench_figures.step_waveforms(data, None), "waveforms")
    _check_figure(bench_figures.settle_against_minimum(data), "settling")
    html = (run / "report.html").read_text()
    assert "xor-bench@" in html  # the calibration the run used
    # two twin runs of paired seeds, side by side
    a = _train("examples/xor.toml", tmp_path, "s0", "--epochs", "2")
    b = _train("examples/xor.toml", tmp_path, "s1", "--epochs", "2", "--seed", "1")
    out = tmp_path / "compare"
    r = subprocess.run(
        [sys.executable, "-m", "physlearn.cli", "report", str(a), str(b), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    _check_page(out, {"overlay"})
    assert "mean ± sd" in (out / "report.html").read_text()
    r = subprocess.run(
        [sys.executable, "-m", "physlearn.cli", "report", str(a), str(b)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "--output" in r.stderr


@pytest.mark.parametrize(
    ("config", "unit"),
    [
        ({"system": {"kind": "ideal"}}, "m²·s"),
        ({"system": {"kind": "autonomous"}}, "m²"),  # ⟨c⟩, time-averaged by default
        ({"system": {"kind": "autonomous"}, "targets": {"orbit_cost": "integrated"}}, "m²·s"),
        ({"network": {"gp_lattice": {}}}, "occupation², dimensionless"),
    ],
)
def test_cost_unit_follows_the_config(config: dict, unit: str) -> None:
    from physlearn.reports.run_data import ParameterInfo, RunData

    info = ParameterInfo([], [], np.zeros(0), np.zeros(0))
    run = RunData(Path("."), "r", config, info, [], [], np.zeros((0, 0)), None)
    assert run.cost_unit == unit
