"""`physlearn twin serve`: start the whole emulated bench described by a bench config.

Every instrument of `[instruments]` is emulated and served on the transport chosen in
`[twin.instruments.<name>]` (TCP on 127.0.0.1, port 0 = any free port, or a serial pty); the
twin-control endpoint (ADVANCE <s> / NOW? / MODE?) is served on its own local socket. The
command prints one line per instrument and the control address, writes them to a connection
file (--connection-file, default twin-<bench name>.json in the current directory; removed on
exit), then prints `ready`, and runs until SIGINT or SIGTERM, when it stops every server and
exits 0:

    instrument fgen keysight33500b TCPIP0::127.0.0.1::40211::SOCKET
    instrument qdac qdac2 ASRL/dev/pts/7::INSTR
    twin-control tcp://127.0.0.1:40215
    connection-file twin-xor-bench.json
    ready

Clients connect with one flag: `physlearn calibrate ... --connection twin-xor-bench.json`,
`physlearn train ... --connection twin-xor-bench.json`.

Free-running (the twin follows the wall clock × --speed) unless --virtual.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="the emulated bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="twin_action", required=True)
    s = actions.add_parser(
        "serve",
        help="serve every instrument of a bench config, emulated",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--config", required=True, type=Path, help="bench TOML file with a [twin]")
    s.add_argument(
        "--virtual",
        action="store_true",
        help="virtual clock advanced through twin control (default: free-running)",
    )
    s.add_argument(
        "--speed", type=float, default=1.0, help="free-running: twin seconds per wall second"
    )
    s.add_argument("--seed", type=int, default=None, help="override [twin].seed (hidden truth)")
    s.add_argument(
        "--connection-file",
        type=Path,
        default=None,
        help="where to write the connection file (default: twin-<bench name>.json here)",
    )


def run(args: argparse.Namespace) -> int:
    from physlearn.simulators.bench_twin import EmulatedBench
    from physlearn.spec.connection import TwinConnection

    bench = EmulatedBench.from_file(
        args.config, virtual=args.virtual, speed=args.speed, seed=args.seed
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    conn_path = args.connection_file or Path(f"twin-{bench.config.name}.json")
    TwinConnection.claim(conn_path)
    written = False
    try:
        resources = bench.serve()
        mode = "virtual clock" if args.virtual else f"free-running, speed {args.speed:g}"
        print(f"# emulated bench {bench.config.name!r} ({mode}), truth seed {bench.twin.seed}")
        for name, resource in resources.items():
            print(f"instrument {name} {bench.config.instruments[name].kind} {resource}")
        print(f"twin-control {bench.control_address}")
        TwinConnection(
            bench=bench.config.name,
            config=args.config.resolve(),
            virtual=args.virtual,
            resources=resources,
            twin_control=bench.control_address,
        ).write(conn_path)
        written = True
        print(f"connection-file {conn_path}")
        print("ready", flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        if written:
            conn_path.unlink(missing_ok=True)
        bench.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopped", flush=True)
    sys.stdout.flush()
    return 0
