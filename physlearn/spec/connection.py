"""The connection file of a served emulated bench (`physlearn twin serve`): what a client needs
to reach it — the VISA resource of every instrument and the twin-control address — so that
`physlearn train` and `physlearn calibrate` connect with one flag (``--connection FILE``).

JSON, written atomically when the bench is ready and removed when it stops::

    {"format": "physlearn-twin-connection", "version": 1, "bench": "xor-bench",
     "config": "/abs/path/bench.toml", "virtual": true, "pid": 1234,
     "resources": {"fgen": "TCPIP0::127.0.0.1::40211::SOCKET", ...},
     "twin_control": "tcp://127.0.0.1:40215"}
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from physlearn.errors import ConfigError
from physlearn.spec.files import atomic_write_bytes

__all__ = ["CONNECTION_FORMAT", "TwinConnection"]

log = logging.getLogger(__name__)

CONNECTION_FORMAT = "physlearn-twin-connection"


class TwinConnection(BaseModel):
    """How to reach a served emulated bench (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    format: str = CONNECTION_FORMAT
    version: int = 1
    bench: str
    config: Path
    virtual: bool
    pid: int = Field(default_factory=os.getpid)
    resources: dict[str, str]
    twin_control: str | None = None

    def write(self, path: Path) -> None:
        """Write atomically with the user's umask."""
        atomic_write_bytes(path, self.model_dump_json(indent=2).encode() + b"\n")

    @staticmethod
    def claim(path: Path) -> None:
        """Refuse ``path`` when it is the connection file of another running `twin serve`
        (a stale file, whose process is gone, may be overwritten)."""
        path = Path(path)
        if not path.exists():
            return
        try:
            pid = int(json.loads(path.read_text()).get("pid", -1))
        except (OSError, ValueError, AttributeError):
            return
        if pid > 0 and pid != os.getpid() and _alive(pid):
            raise ConfigError(
                f"{path} belongs to another running `physlearn twin serve` (pid {pid}); give "
                "this one its own --connection-file"
            )

    @classmethod
    def read(cls, path: Path | str, wait_s: float = 0.0) -> TwinConnection:
        """Read a connection file; ConfigError naming the file and what is wrong. ``wait_s``:
        how long to wait for the file to appear (a `twin serve` just started)."""
        path = Path(path)
        deadline = time.monotonic() + wait_s
        if not path.exists() and wait_s > 0:
            log.warning("waiting up to %.0f s for %s (physlearn twin serve)", wait_s, path)
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: no such connection file (is `physlearn twin serve` running?)"
            ) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable connection file ({exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != CONNECTION_FORMAT:
            raise ConfigError(f"{path}: not a physlearn twin connection file")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{path}: {where}: {first['msg']}") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
