"""`write_report`: the report of one or several runs — ``report.html`` (self-contained) and one
PNG per figure, written into the run directory or an output directory."""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from physlearn.errors import ConfigError
from physlearn.reports import bench_figures, figures, tables
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


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    """Write atomically (temp file + rename), with the permissions the user's umask gives."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise ConfigError(f"report: cannot write into {path.parent}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Collector:
    """Figures of a report: each becomes a PNG file and an embedded image of its section."""

    def __init__(self, out_dir: Path, prefix: str) -> None:
        self.out_dir, self.prefix = out_dir, prefix
        self.files: dict[Path, bytes] = {}

    def add(
        self, section: Section, name: str, make: Callable[[], Figure | None], caption: str
    ) -> None:
        try:
            fig = make()
        except (ValueError, KeyError, IndexError) as exc:  # a figure the data cannot feed
            section.notes.append(f"{caption}: not drawn ({exc})")
            log.warning("report figure %s not drawn: %s", name, exc)
            return
        if fig is None:
            return
        png = _png(fig)
        path = self.out_dir / f"{self.prefix}{name}.png"
        self.files[path] = png
        section.figures.append((png, f"{caption} ({path.name})"))


def _run_sections(run: RunData, out: _Collector, step: int | None) -> list[Section]:
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


def _compare_sections(runs: Sequence[RunData], out: _Collector) -> list[Section]:
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
    collector = _Collector(out_dir, "report-")
    if len(runs) > 1:
        page.sections += _compare_sections(runs, collector)
    for k, run in enumerate(runs):
        sub = _Collector(out_dir, "report-" if len(runs) == 1 else f"report-{k}-{run.name}-")
        page.sections += _run_sections(run, sub, step)
        collector.files.update(sub.files)
    for path, data in collector.files.items():
        _write(path, data)
    html_path = out_dir / REPORT_FILE
    _write(html_path, page.render().encode("utf-8"))
    return ReportFiles(html_path, sorted(collector.files))
