"""The `physlearn` command line: one sub-command per module in physlearn.commands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from physlearn.errors import PhyslearnError

# Sub-command name → module in physlearn.commands providing add_parser() and run().
COMMANDS = {
    "simulate": "simulate",
    "train": "train",
    "twin": "twin",
    "calibrate": "calibrate",
    "report": "report",
    "watch": "watch",
    "control": "control",
    "sweep": "sweep",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("physlearn")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="physlearn", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"physlearn.commands.{module}")
        mod.add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    mod = importlib.import_module(f"physlearn.commands.{COMMANDS[args.command]}")
    try:
        return int(mod.run(args) or 0)
    except PhyslearnError as exc:
        print(f"physlearn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"physlearn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
