"""The first hour of a new user (issue "Run reports … without a stumble"): everyday moves that
used to stumble, each checked as the user makes it — from the command line, on real files."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(180)


def _cli(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "physlearn.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_calibrate_against_nothing_names_the_instrument_and_leaves_no_folder(
    tmp_path: Path,
) -> None:
    """A resource where nothing listens: "cannot connect" (not "connection lost"), the
    instrument named, exit 2, and no empty output folder left behind."""
    names = ("fgen", "scope", "lockin1", "lockin2", "qdac")
    res = [f"{n}=TCPIP0::127.0.0.1::{_free_port()}::SOCKET" for n in names]
    out = tmp_path / "cal"
    r = _cli(
        "calibrate",
        "dac",
        "--config",
        str(ROOT / "examples" / "bench.toml"),
        "--output",
        str(out),
        "--resources",
        *res,
    )
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "cannot connect" in last and "connection lost" not in r.stderr
    assert last.startswith("physlearn calibrate: error: fgen: TCPIP0::127.0.0.1::")
    assert not out.exists()
