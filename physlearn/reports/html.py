"""One self-contained HTML page: sections of headings, tables, notes and figures (PNG embedded
as data URIs, so the file can be mailed or archived alone)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

__all__ = ["Page", "Section"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; } .note { color: #8a5300; }
"""


@dataclass
class Section:
    """A heading with paragraphs, notes, tables ((header, rows)) and figures ((png, caption))."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    figures: list[tuple[bytes, str]] = field(default_factory=list)

    def render(self) -> str:
        out = [f"<h2>{html.escape(self.title)}</h2>"]
        out += [f"<p>{html.escape(p)}</p>" for p in self.paragraphs]
        out += [f'<p class="note">{html.escape(n)}</p>' for n in self.notes]
        for header, rows in self.tables:
            out.append(_table(header, rows))
        for png, caption in self.figures:
            data = base64.b64encode(png).decode("ascii")
            out.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        return "\n".join(out)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class Page:
    title: str
    intro: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def render(self) -> str:
        intro = "".join(f"<p>{html.escape(p)}</p>" for p in self.intro)
        body = "\n".join(s.render() for s in self.sections)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>\n"
            f"<body><h1>{html.escape(self.title)}</h1>{intro}\n{body}\n</body></html>\n"
        )
