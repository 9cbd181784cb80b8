"""`physlearn report`: the report of finished, stopped or running runs.

    physlearn report RUN_DIR [RUN_DIR ...] [--output DIR] [--step N]

One run: ``report.html`` and ``report-*.png`` in its directory (or ``--output``). Several runs:
one page comparing them (curves overlaid, final metrics paired by seed) followed by each run;
``--output`` is required. ``--step``: the training step whose bench waveforms are shown
(default: the last one recorded).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="write report.html and PNG figures of one or several runs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--output", type=Path, help="directory for report.html and the PNGs")
    p.add_argument("--step", type=int, help="training step whose bench waveforms are shown")


def run(args: argparse.Namespace) -> int:
    from physlearn.reports.build import write_report

    files = write_report(args.runs, args.output, step=args.step)
    print(f"report: {files.html} ({len(files.pngs)} figures)")
    return 0
