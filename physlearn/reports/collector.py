"""Figures of a report as PNG files and embedded images, and atomic writes of report files."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure

from physlearn.errors import ConfigError
from physlearn.reports.html import Section
from physlearn.spec.files import atomic_write_bytes

log = logging.getLogger(__name__)

__all__ = ["FigureCollector", "write_file"]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def write_file(path: Path, data: bytes) -> None:
    """Write a report file atomically with the umask's permissions; ConfigError naming the
    folder when it cannot be written."""
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise ConfigError(f"report: cannot write {path}: {exc.strerror}") from None


class FigureCollector:
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
