"""Rewrite one benchmark's section of a markdown file (between its begin/end markers)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["docs_target", "write_section"]

_PREAMBLE = (
    "# Benchmarks\n\nEach section below is written by the benchmark script it names; "
    "rerun the script to refresh it (it rewrites only its own section).\n"
)


def write_section(path: Path, name: str, heading: str, body: str) -> None:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``path``
    with ``body`` (markers kept), or append ``heading`` and the marked body; the rest of the
    file is left untouched."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else _PREAMBLE
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def docs_target(given: Path | None, default: Path, quick: bool) -> Path | None:
    """Where a benchmark writes its documentation: the path given on the command line; else
    the tracked doc ``default`` for a full run and nothing for ``--quick`` (a quick run never
    rewrites the project's docs)."""
    if given is not None:
        return given
    return None if quick else default
