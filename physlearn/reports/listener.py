"""`ReportWriter`: a listener of a training run's events that writes the run's report when the
run finishes, pauses or stops (`physlearn train` subscribes one unless ``--no-report``).

A paused run (waiting for resume, its system already in the safe state) gets its report at
once. When the run ends — finished, stopped, aborted, interrupted, a persistent fault — the
report is only marked ``pending``: the caller writes it (`write`) after the system is closed,
so that rendering figures never delays a bench's safe state."""

from __future__ import annotations

import logging
from pathlib import Path

from physlearn.errors import PhyslearnError
from physlearn.training.events import RunEvent, RunFinished, RunPaused

log = logging.getLogger(__name__)

__all__ = ["ReportWriter"]


class ReportWriter:
    """Writes ``report.html`` and its PNGs into ``run_dir`` on `RunFinished` and `RunPaused`.
    A report that cannot be written is logged, never raised: the run's outcome stands."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.written: Path | None = None
        self.pending = False

    def __call__(self, event: RunEvent) -> None:
        if isinstance(event, RunPaused) and event.reason == "paused":
            self.write()
        elif isinstance(event, RunFinished | RunPaused):
            self.pending = True

    def write(self) -> Path | None:
        from physlearn.reports.build import write_report

        try:
            self.written = write_report([self.run_dir]).html
        except (PhyslearnError, OSError, ValueError) as exc:
            log.warning("the run's report could not be written: %s", exc)
            return None
        self.pending = False
        log.info("report written: %s", self.written)
        return self.written
