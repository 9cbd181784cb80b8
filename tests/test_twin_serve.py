"""Acceptance 5: `physlearn twin serve` serves every instrument of the example bench (free-running);
plain pyvisa resource strings reach each one; SIGTERM / SIGINT stop it cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue

import pytest
import pyvisa
import tomli_w
from test_bench_twin_helpers import EXAMPLE, restrict_to_emulated

from physlearn.simulators.bench_twin import available_emulators
from physlearn.spec.tomlconfig import read_toml

pytestmark = pytest.mark.timeout(60)

_LINE = re.compile(r"^instrument (\S+) (\S+) (\S+)$")
#: Reply terminations as the manuals give them (the SR830 ends replies with CR).
_READ_TERMINATION = {"sr830": "\r"}


def _bench_file(tmp_path: Path) -> tuple[Path, set[str]]:
    """The example bench with every instrument whose emulator exists (all, once all landed)."""
    raw = restrict_to_emulated(read_toml(EXAMPLE), available_emulators())
    assert {"qdac", "scope"} <= set(raw["instruments"])
    path = tmp_path / "bench.toml"
    path.write_bytes(tomli_w.dumps(raw).encode())
    return path, set(raw["instruments"])


class Served:
    """A `physlearn twin serve` subprocess whose stdout is read line by line in a thread."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "physlearn.cli", "twin", "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: Queue[str] = Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def until(self, marker: str, timeout_s: float) -> list[str]:
        out: list[str] = []
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except Empty:
                raise AssertionError(
                    f"no {marker!r} line within {timeout_s} s; got {out}"
                ) from None
            out.append(line)
            if line == marker:
                return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, set[str]]]:
    path, names = _bench_file(tmp_path)
    s = Served(path)
    try:
        yield s, names
    finally:
        s.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_twin_serve_every_instrument_answers_plain_pyvisa(
    served: tuple[Served, set[str]], sig: signal.Signals
) -> None:
    server, names = served
    lines = server.until("ready", 30.0)
    resources = {m[1]: (m[2], m[3]) for m in map(_LINE.match, lines) if m}
    assert set(resources) == names
    control = next(line.split()[1] for line in lines if line.startswith("twin-control "))

    rm = pyvisa.ResourceManager("@py")
    try:
        for name, (kind, resource) in resources.items():
            assert resource.startswith(("TCPIP0::127.0.0.1::", "ASRL/dev/pts/"))
            inst = rm.open_resource(
                resource,
                read_termination=_READ_TERMINATION.get(kind, "\n"),
                write_termination="\n",
            )
            try:
                inst.timeout = 5000
                idn = inst.query("*IDN?")
            finally:
                inst.close()
            assert idn.count(",") == 3, (name, kind, idn)
    finally:
        rm.close()

    host, port = control.removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5.0) as sock:
        sock.sendall(b"MODE?\nNOW?\n")
        reply = b""
        while reply.count(b"\n") < 2:
            chunk = sock.recv(256)
            assert chunk
            reply += chunk
    mode, now = reply.decode().splitlines()
    assert mode == "FREE 1.0" and float(now) > 0.0

    server.proc.send_signal(sig)
    assert server.proc.wait(15) == 0
    assert "stopped" in server.until("stopped", 5.0)
    assert server.proc.stderr is not None
    assert "Traceback" not in server.proc.stderr.read()
