"""`physlearn watch [RUN | RUN_DIR]`: a live terminal view of runs — state, epoch and step, ETA,
loss and accuracy sparklines, step time against the physical minimum, the last events.

* with ``--broker`` (or $PHYSLEARN_BROKER): every run on the broker, or the run id ``RUN``
  (viewer credentials suffice: it only subscribes);
* with a run directory ``RUN_DIR``: its ``telemetry.jsonl``, as it grows (no broker needed).

``--once`` prints one frame after ``--settle`` seconds and exits (for scripts); otherwise it
redraws until Ctrl-C. Rendering: `rich` (docs/telemetry.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from physlearn.commands.control import add_broker_arguments, broker_from_args
from physlearn.errors import ConfigError
from physlearn.telemetry.publisher import LOG_FILE
from physlearn.telemetry.watch_model import BrokerFeed, FileFeed, WatchModel, render


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="live view of runs on an MQTT broker or of a run directory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", nargs="?", default=None, help="a run id, or a run directory")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--settle", type=float, default=2.0, help="--once: seconds to listen first")
    p.add_argument("--refresh", type=float, default=0.5, help="seconds between redraws")
    add_broker_arguments(p)


def _feed(args: argparse.Namespace) -> tuple[Any, str]:
    target = args.target
    if target is not None and Path(target).is_dir():
        path = Path(target) / LOG_FILE
        if not path.exists() and not (Path(target) / "config.toml").exists():
            raise ConfigError(f"{target} is not a run directory (no {LOG_FILE})")
        return FileFeed(path), f"physlearn watch — {path}"
    broker = broker_from_args(args)
    run = target or "+"
    topics = [f"{args.prefix}/+/{run}/{t}" for t in ("status", "metrics", "events")]
    feed = BrokerFeed(broker, topics).start()
    return feed, f"physlearn watch — {broker.url} {args.prefix}/+/{run}/"


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    feed, title = _feed(args)
    model = WatchModel()
    console = Console()

    def pump() -> None:
        for topic, payload in feed.poll():
            model.feed(topic, payload)

    def frame() -> Any:
        error = getattr(feed, "error", None)
        return render(model, title + (f"  [{error}]" if error else ""))

    try:
        if args.once:
            end = time.monotonic() + args.settle
            while time.monotonic() < end:
                pump()
                time.sleep(0.05)
            pump()
            console.print(frame())
            return 0 if model.runs else 1
        with Live(frame(), console=console, refresh_per_second=4, screen=False) as live:
            while True:
                pump()
                live.update(frame())
                time.sleep(args.refresh)
    except KeyboardInterrupt:
        return 0
    finally:
        if isinstance(feed, BrokerFeed):
            feed.stop()
        sys.stdout.flush()
