"""Train configs edited for a test: an example's TOML with dotted keys set or removed."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w


def edited_config(source: Path, dest: Path, edit: dict[str, Any]) -> Path:
    """``source`` with every dotted key of ``edit`` set (None: removed), written to ``dest``."""
    data = tomllib.loads(source.read_text())
    for key, value in edit.items():
        node = data
        *head, last = key.split(".")
        for part in head:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    dest.write_text(tomli_w.dumps(data))
    return dest
