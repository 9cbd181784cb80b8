"""Figures of a report as PNG files and embedded images, and atomic writes of report files."""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure

from physlearn.errors import ConfigError
from physlearn.reports.html import Section

log = logging.getLogger(__name__)

__all__ = ["FigureCollector", "write_file"]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def write_file(path: Path, data: bytes) -> None:
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
