"""A real mosquitto for the telemetry tests: started on loopback on free ports, with a generated
password file (users ``run``, ``operator``, ``viewer``) and ACL (the run publishes its topics
and reads ``control/+``; the operator reads everything and writes only ``control/operator``;
the viewer only reads), and, with ``tls=True``, a second listener whose server certificate is
signed by a CA generated here by openssl (``ca_file``; ``wrong_ca_file`` is another CA).

The ACL is the one docs/telemetry.md gives a lab. Skips the test when mosquitto is missing
(``.ci/run`` installs it)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)
PASSWORDS = {"run": "run-secret-1", "operator": "op-secret-2", "viewer": "view-secret-3"}

ACL = """\
# the run's account: its own topics, and the commands addressed to it
user run
topic write physlearn/+/+/status
topic write physlearn/+/+/metrics
topic write physlearn/+/+/params
topic write physlearn/+/+/events
topic write physlearn/+/+/waveforms
topic read physlearn/+/+/control/+

# an operator: reads everything, commands only under their own name
user operator
topic read physlearn/#
topic write physlearn/+/+/control/operator

# a viewer: reads only
user viewer
topic read physlearn/#
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA (cert, key) in ``directory``."""
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN=physlearn test {name}",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.crt", directory / f"{name}.key"


def make_server_cert(directory: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A server certificate for localhost / 127.0.0.1 signed by ``ca``."""
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext",
        cwd=directory,
    )  # fmt: skip
    return directory / "server.crt", directory / "server.key"


class Mosquitto:
    """One broker (module docstring); `start`, `stop` (SIGTERM), `kill` (SIGKILL), `restart`
    (same ports)."""

    def __init__(self, directory: Path, *, tls: bool = False) -> None:
        if MOSQUITTO is None:
            pytest.skip("mosquitto is not installed (.ci/run installs it)")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.proc: subprocess.Popen[bytes] | None = None
        passwd = self.dir / "passwd"
        passwd.write_text("")
        for user, pw in PASSWORDS.items():
            subprocess.run(
                ["mosquitto_passwd", "-b", str(passwd), user, pw], check=True, capture_output=True
            )
        (self.dir / "acl").write_text(ACL)
        lines = [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {self.dir / 'acl'}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            f"listener {self.port} 127.0.0.1",
        ]
        if os.geteuid() == 0:  # do not switch to the mosquitto user: it could not read tmp files
            lines.insert(0, "user root")
        if tls:
            self.ca_file, ca_key = make_ca(self.dir, "ca")
            self.wrong_ca_file, _ = make_ca(self.dir, "other-ca")
            cert, key = make_server_cert(self.dir, (self.ca_file, ca_key))
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.ca_file}",
                f"certfile {cert}",
                f"keyfile {key}",
                "tls_version tlsv1.2",
            ]
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = self.dir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://localhost:{self.tls_port}"

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        assert MOSQUITTO is not None
        log = open(self.log, "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout_s
        for port in (self.port, self.tls_port):
            if port is None:
                continue
            while True:
                assert self.proc.poll() is None, self.log.read_text()[-2000:]
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    assert time.monotonic() < deadline, "mosquitto did not listen"
                    time.sleep(0.05)
        return self

    def _end(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def restart(self) -> Mosquitto:
        self.stop()
        return self.start()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Recorder:
    """A subscriber (paho-mqtt, MQTT 5, in its own network thread) recording every message on
    ``topic`` as (topic, JSON payload or raw bytes, retain)."""

    def __init__(self, url_port: int, user: str = "viewer", topic: str = "physlearn/#") -> None:
        import threading

        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, object, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(user, PASSWORDS[user])
        self.topic = topic
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.port = url_port

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None
    ) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        import json

        try:
            payload: object = json.loads(msg.payload)
        except ValueError:
            payload = bytes(msg.payload)
        with self._lock:
            self.messages.append((msg.topic, payload, bool(msg.retain)))

    def start(self) -> Recorder:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the recorder could not subscribe"
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def of(self, suffix: str) -> list[dict[str, Any]]:
        """The JSON payloads of topics ending in ``/suffix``, in arrival order."""
        with self._lock:
            return [
                p for t, p, _ in self.messages if t.endswith("/" + suffix) and isinstance(p, dict)
            ]

    def wait_for(self, pred: Callable[[], Any], timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not pred():
            assert time.monotonic() < deadline, "timed out waiting for telemetry"
            time.sleep(0.05)
