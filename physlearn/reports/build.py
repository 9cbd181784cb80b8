"""`write_report`: the report of one or several runs — ``report.html`` (self-contained) and one
PNG per figure, written into the run directory or an output directory."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from physlearn.errors import ConfigError
from physlearn.reports import bench_figures, figures, tables
from physlearn.reports.collector import FigureCollector, write_file
from physlearn.reports.html import Page, Section
from physlearn.reports.run_data import RunData, load_run

log = logging.getLogger(__name__)

__all__ = ["ReportFiles", "write_report"]

REPORT_FILE = "report.html"


@dataclass(frozen=True)
class ReportFiles:
    """What a report wrote: the HTML page and the PNG of every figure."""

    html: Path
    pngs: list[Path]


def _run_sections(run: RunData, out: FigureCollector, step: int | None) -> list[Section]:
    facts = Section(f"Run {run.name}", notes=list(run.notes))
    facts.paragraphs.append(f"Run directory: {run.run_dir}")
    facts.tables.append((["fact", "value"], tables.summary_rows(run)))
    learning = Section("Learning")
    out.add(
        learning, "learning", lambda: figures.learning_curves(run), "Loss and accuracy per epoch"
    )
    out.add(
        learning,
        "adjoint",
        lambda: figures.adjoint_agreement(run),
        "Estimator against the exact adjoint gradient",
    )
    params = Section("Parameters")
    out.add(params, "parameters", lambda: figures.parameter_traces(run), "Parameters over epochs")
    init = figures._initial_params(run)
    params.tables.append(
        (
            ["parameter", "unit", "lower", "upper", "initial", "final"],
            tables.parameter_rows(run, init),
        )
    )
    steps = Section("Steps: failures, reverts and step length")
    out.add(steps, "failures", lambda: figures.failures_and_steps(run), "Failures and step length")
    sections = [facts, learning, params, steps]
    if run.is_bench:
        sections.append(bench_figures.bench_section(run, out, step))
    return sections


def _compare_sections(runs: Sequence[RunData], out: FigureCollector) -> list[Section]:
    sec = Section(f"{len(runs)} runs compared")
    header, rows = tables.paired_seeds(runs)
    sec.tables.append((header, rows))
    out.add(sec, "overlay", lambda: figures.overlay_curves(runs), "Held-out curves of every run")
    return [sec]


def write_report(
    run_dirs: Sequence[Path | str], output: Path | str | None = None, *, step: int | None = None
) -> ReportFiles:
    """Write the report of ``run_dirs``. One run: into its directory unless ``output``; several:
    ``output`` is required (one page: the comparison, then each run). ``step``: the training step
    whose bench waveforms are shown (default the last recorded)."""
    if not run_dirs:
        raise ConfigError("report: no run directory given")
    runs = [load_run(d) for d in run_dirs]
    if output is None and len(runs) > 1:
        raise ConfigError("report: several runs need --output DIR for the combined report")
    out_dir = Path(output) if output is not None else runs[0].run_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"report: cannot create {out_dir}: {exc.strerror}") from None
    page = Page(
        f"physlearn report: {runs[0].name}"
        if len(runs) == 1
        else f"physlearn report: {len(runs)} runs",
        intro=[
            "β is dimensionless (nudge force peak / drive force peak); with L = L0 + βC the nudge "
            "pushes the outputs away from their targets for β > 0 (docs/physics.md)."
        ],
    )
    collector = FigureCollector(out_dir, "report-")
    if len(runs) > 1:
        page.sections += _compare_sections(runs, collector)
    for k, run in enumerate(runs):
        sub = FigureCollector(out_dir, "report-" if len(runs) == 1 else f"report-{k}-{run.name}-")
        page.sections += _run_sections(run, sub, step)
        collector.files.update(sub.files)
    for path, data in collector.files.items():
        write_file(path, data)
    html_path = out_dir / REPORT_FILE
    write_file(html_path, page.render().encode("utf-8"))
    return ReportFiles(html_path, sorted(collector.files))
