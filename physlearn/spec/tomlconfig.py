"""Loading TOML files into pydantic models with errors that name the file, field path and value."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from physlearn.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; a missing file or a syntax error becomes a ConfigError naming the file."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: ``source: field.path[3].sub: message (got value)``."""
    lines = []
    for err in exc.errors():
        loc = ""
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = err["msg"].removeprefix("Value error, ")
        where = f"{source}: {loc}: " if loc else f"{source}: "
        got = ""
        if loc and err.get("type") not in ("missing",):
            got = f" (got {err.get('input')!r})"
        lines.append(f"{where}{msg}{got}")
    return "\n".join(lines)


def validate(model: type[M], data: Any, source: str) -> M:
    """``model.model_validate(data)``, turning a ValidationError into a ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_model(model: type[M], path: str | Path, section: str | None = None) -> M:
    """Load ``path`` (optionally one top-level table of it) into ``model``."""
    data: Any = read_toml(path)
    source = str(path)
    if section is not None:
        if section not in data:
            raise ConfigError(f"{path}: missing table [{section}]")
        data = data[section]
        source = f"{path}: [{section}]"
    return validate(model, data, source)
