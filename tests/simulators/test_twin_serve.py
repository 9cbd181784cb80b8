"""Acceptance 5: `physlearn twin serve` serves every instrument of the example bench (free-running);
plain pyvisa resource strings reach each one; SIGTERM / SIGINT stop it cleanly."""

from __future__ import annotations

import json
import math
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

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]

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

    def __init__(self, config: Path, *args: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "physlearn.cli", "twin", "serve"),
                *("--config", str(config), *args),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=cwd if cwd is not None else config.parent,
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


def _readme_block(marker: str) -> str:
    """The code block of the README between ``<!-- marker:begin -->`` and its end marker."""
    text = (ROOT / "README.md").read_text()
    block = text.split(f"<!-- {marker}:begin -->", 1)[1].split(f"<!-- {marker}:end -->", 1)[0]
    return block.split("```python\n", 1)[1].rsplit("```", 1)[0]


def test_connection_file_and_the_readme_pyvisa_example_as_pasted(tmp_path: Path) -> None:
    """`twin serve` writes its connection file (the printed resources and control address) in
    the current folder and removes it on exit; the README's pyvisa example, pasted as it is
    into that folder, gets both identities (the SR830 over its RS-232 pty with CR and OUTX 0);
    a second serve refuses to take over a live server's connection file."""
    server = Served(ROOT / "examples" / "bench.toml", cwd=tmp_path)
    try:
        lines = server.until("ready", 30.0)
        conn_path = tmp_path / "twin-reference-bench.json"
        assert f"connection-file {conn_path.name}" in lines
        conn = json.loads(conn_path.read_text())
        printed = {m[1]: m[3] for m in map(_LINE.match, lines) if m}
        assert conn["resources"] == printed and conn["virtual"] is False
        assert conn["twin_control"] == next(
            ln.split()[1] for ln in lines if ln.startswith("twin-control ")
        )
        snippet = subprocess.run(
            [sys.executable, "-c", _readme_block("pyvisa-example")],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert snippet.returncode == 0, snippet.stderr[-2000:]
        idns = snippet.stdout.splitlines()
        assert idns[0].startswith("Agilent Technologies,33522B") or "33522B" in idns[0], idns
        assert idns[1].startswith("Stanford_Research_Systems,SR830"), idns
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "physlearn.cli",
                "twin",
                "serve",
                "--config",
                str(ROOT / "examples" / "bench.toml"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert second.returncode == 2 and "another running" in second.stderr, second.stderr
    finally:
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(15) == 0
        server.stop()
    assert not conn_path.exists()


def test_version_and_twin_help_keep_their_layout() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "physlearn.cli", "--version"], capture_output=True, text=True
    )
    assert run.returncode == 0 and re.fullmatch(r"physlearn \d+\.\d+\.\d+\S*\n", run.stdout)
    helptext = subprocess.run(
        [sys.executable, "-m", "physlearn.cli", "twin", "--help"], capture_output=True, text=True
    ).stdout
    # the example output keeps its own lines (not squashed into one paragraph)
    assert "\n    instrument fgen keysight33500b TCPIP0::127.0.0.1::40211::SOCKET\n" in helptext
    assert "\n    ready\n" in helptext


def test_free_running_lockins_answer_after_idling_under_load(tmp_path: Path) -> None:
    """On the wall clock, after idling longer than the twin's kept history, with both cores
    busy, both lock-ins still answer *IDN? and SNAP? (a server thread used to die with 'older
    than the kept history' and the lock-ins went silent); nothing is lost silently."""
    server = Served(ROOT / "examples" / "bench.toml", "--connection-file", str(tmp_path / "c.json"))
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        server.until("ready", 30.0)
        conn = json.loads((tmp_path / "c.json").read_text())
        time.sleep(6.0)  # > [twin] history_s = 4 s of examples/bench.toml
        rm = pyvisa.ResourceManager("@py")
        try:
            for name, term in (("lockin1", "\r"), ("lockin2", "\n"), ("lockin1", "\r")):
                kw = {"baud_rate": 9600} if name == "lockin1" else {}
                inst = rm.open_resource(
                    conn["resources"][name], read_termination=term, write_termination=term, **kw
                )
                try:
                    inst.timeout = 10000
                    if name == "lockin1":
                        inst.write("OUTX 0")
                    assert inst.query("*IDN?").startswith("Stanford_Research_Systems")
                    x, y = (float(v) for v in inst.query("SNAP? 1,2").split(","))
                    assert math.isfinite(x) and math.isfinite(y)
                finally:
                    inst.close()
                time.sleep(1.0)
        finally:
            rm.close()
    finally:
        for h in hogs:
            h.kill()
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(15) == 0
        server.stop()
    assert server.proc.stderr is not None
    err = server.proc.stderr.read()
    assert "Traceback" not in err and "older than the kept history" not in err, err[-2000:]
