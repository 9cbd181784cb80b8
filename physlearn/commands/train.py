"""`physlearn train`: train a network from a TOML config, with a progress bar — on the ideal twin
(``[system] kind = "ideal"``) or on a bench, real or emulated (``kind = "bench"``: ``--dry-run``
checks every planned setting without switching anything on; ``--arm`` is required to enable the
outputs; see physlearn.commands.bench_session and README "Bench session"). The system comes from
`physlearn.systems.factory.make_system`; the run from `physlearn.training.session.run_session`,
whose event stream the progress bar listens to.

Writes a run directory (resolved config, per-epoch metrics and parameters, checkpoint, summary;
see physlearn.training.runstore) and prints its path at the end. The checkpoint is rewritten atomically
after every mini-batch; ``--resume RUN_DIR`` continues an interrupted or paused run from it (the
run's own config.toml, or ``--config`` if given, which must resolve to the same config), with the
same parameters, optimizer state, shuffle order and step-length state as if it had not stopped.
A bench run also records the config it was started with (``source.json``), against whose
directory the relative paths of ``[system.bench]`` resolve on ``--resume RUN_DIR --arm``.

Every event is also written to the run's ``telemetry.jsonl`` (what ``physlearn watch RUN_DIR``
shows); with ``[telemetry]`` the run publishes on an MQTT broker and takes pause, resume and
abort from ``physlearn control`` (docs/telemetry.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from physlearn.errors import ConfigError
from physlearn.reports.listener import ReportWriter
from physlearn.systems.safety import PersistentFault
from physlearn.training.config import TrainConfig, load_train_config
from physlearn.training.control import Command, RunControl, RunStopped
from physlearn.training.events import EpochDone, Listener, RunEvent, StepDone
from physlearn.training.init_from import load_init_from
from physlearn.training.loop import TrainResult
from physlearn.training.runstore import CONFIG_FILE, RunStore, atomic_write_bytes
from physlearn.training.setup import TrainSetup, default_run_name, prepare, write_network

#: in a bench run's directory: the config file the run was started with (``{"config": path}``)
SOURCE_FILE = "source.json"


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="train a network by equilibrium propagation", description=__doc__)
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML train config (examples/*.toml); with --resume, default RUN_DIR/config.toml",
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its checkpoint",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="folder holding run directories (default: [output].root, 'runs')",
    )
    p.add_argument(
        "--name", default=None, help="run name (default: <config>-<estimator>-s<seed>-<time>)"
    )
    p.add_argument(
        "--init-from",
        default=None,
        metavar="RUN_DIR[:EPOCH]",
        help="start from another run's parameters (its selected epoch, or EPOCH) of the same "
        "network, e.g. a twin-trained run on the bench: the initial evaluation is their accuracy "
        "here (physlearn.training.init_from)",
    )
    p.add_argument(
        "--on-twin",
        action="store_true",
        help='a bench config\'s network on its ideal twin: [system] becomes kind = "ideal" at the '
        "same points_per_period, nothing connects (pretrain, then --init-from on the bench)",
    )
    p.add_argument("--epochs", type=int, default=None, help="override [training].epochs")
    p.add_argument("--seed", type=int, default=None, help="override [training].seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--connection",
        type=Path,
        default=None,
        help="bench: the connection file of `physlearn twin serve --virtual` (its resources and "
        "twin control replace [system.bench] twin_control and resources)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="bench: check every planned setting and the calibration, switch nothing on",
    )
    p.add_argument(
        "--arm", action="store_true", help="bench: enable the outputs (required to train)"
    )
    p.add_argument(
        "--no-report",
        action="store_true",
        help="do not write report.html and its figures into the run directory",
    )


def _fmt(v: object) -> str:
    return "nan" if not isinstance(v, int | float) or not math.isfinite(v) else f"{v:.3g}"


class ProgressBar:
    """A listener of the run's events: a tqdm bar over the steps, with the epoch, the last batch
    loss and the last evaluation's accuracies (nothing with ``quiet``)."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar: Any = None
        self.last: dict[str, Any] = {}

    def _bar(self, total_steps: int) -> Any:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, unit="step", desc="train", dynamic_ncols=True)
        return self.bar

    def __call__(self, ev: RunEvent) -> None:
        if self.quiet:
            return
        if isinstance(ev, StepDone):
            bar = self._bar(ev.total_steps)
            bar.update(ev.step - bar.n)
            acc = _fmt(self.last.get("train_accuracy"))
            bar.set_postfix(epoch=ev.epoch, loss=_fmt(ev.loss), acc=acc)
        elif isinstance(ev, EpochDone):
            self.last.update(ev.metrics)
            self._bar(ev.total_steps).set_postfix(
                epoch=ev.epoch,
                loss=_fmt(ev.metrics.get("train_loss")),
                acc=_fmt(ev.metrics.get("train_accuracy")),
                test=_fmt(ev.metrics.get("test_accuracy")),
            )

    def logging(self) -> contextlib.AbstractContextManager[None]:
        """While training: log records go through the bar (printed above it, the bar redrawn
        below) instead of into the middle of its line."""
        if self.quiet:
            return contextlib.nullcontext()
        from tqdm.contrib.logging import logging_redirect_tqdm

        return logging_redirect_tqdm()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass(frozen=True)
class RunTarget:
    """What to train and where: the config, the config whose directory the relative paths of
    ``[system.bench]`` resolve against, the run directory (``root/name``), resumed or new."""

    cfg: TrainConfig
    config_path: Path
    paths_from: Path
    root: Path | None
    name: str
    resume: bool

    @property
    def run_dir(self) -> Path:
        return (Path(self.root) if self.root is not None else self.cfg.output.root) / self.name

    def create_store(self, setup: TrainSetup) -> RunStore:
        """The run directory (a bench run also records the config it started from)."""
        base = Path(self.root) if self.root is not None else self.cfg.output.root
        store = RunStore.create(base, self.name, self.cfg.resolved(), resume=self.resume)
        if not self.resume:
            write_network(store, setup.spec, setup.init_from)
            if self.cfg.system.kind == "bench":
                text = json.dumps({"config": str(Path(self.config_path).resolve())})
                atomic_write_bytes(store.run_dir / SOURCE_FILE, text.encode())
        return store


def _connection_overrides(path: Path) -> dict[str, Any]:
    """[system.bench] twin_control and resources from a served twin's connection file."""
    from physlearn.spec.connection import TwinConnection

    conn = TwinConnection.read(path, wait_s=30.0)
    if not conn.virtual or conn.twin_control is None:
        raise ConfigError(
            f"--connection {path}: the twin {conn.bench!r} runs free on the wall clock; training "
            "drives its clock: serve it with `physlearn twin serve --virtual`"
        )
    return {
        "system.bench.twin_control": conn.twin_control,
        "system.bench.resources": dict(conn.resources),
    }


def run_target(args: argparse.Namespace) -> RunTarget | str:
    """The run the arguments ask for, or a usage error."""
    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["training.epochs"] = args.epochs
    if args.seed is not None:
        overrides["training.seed"] = args.seed

    resume: Path | None = args.resume
    config_path: Path | None = args.config
    if resume is not None:
        if args.name is not None or args.run_dir is not None:
            return "--resume RUN_DIR names the run directory: leave out --name and --run-dir"
        if args.init_from is not None:
            return "--resume continues from the run's checkpoint: leave out --init-from"
        if config_path is None:
            config_path = resume / CONFIG_FILE
            if not config_path.is_file():
                raise ConfigError(f"--resume: {config_path} does not exist (not a run directory?)")
    elif config_path is None:
        return "--config is required (or --resume RUN_DIR)"
    cfg = load_train_config(config_path, overrides)
    if args.on_twin:
        if cfg.system.kind != "bench":
            return '--on-twin applies to [system] kind = "bench" configs'
        if resume is not None or args.connection is not None:
            return "--on-twin starts a new twin run: leave out --resume and --connection"
        ppp = cfg.system.points_per_period
        overrides["system"] = {"kind": "ideal", "points_per_period": ppp}
        cfg = load_train_config(config_path, overrides)
    if args.connection is not None:
        if cfg.system.kind != "bench":
            return '--connection applies to [system] kind = "bench" configs'
        overrides.update(_connection_overrides(args.connection))
        cfg = load_train_config(config_path, overrides)
    # relative paths of [system.bench] resolve against the directory of the config the run was
    # started with (recorded in the run directory), not against RUN_DIR/config.toml's
    paths_from = config_path
    source = resume / SOURCE_FILE if resume is not None else None
    if source is not None and args.config is None and source.is_file():
        paths_from = Path(json.loads(source.read_text())["config"])
    if resume is not None:
        return RunTarget(cfg, config_path, paths_from, resume.parent, resume.name, True)
    name = args.name or cfg.output.name or default_run_name(cfg, config_path)
    return RunTarget(cfg, config_path, paths_from, args.run_dir, name, False)


async def train_target(
    t: RunTarget,
    args: argparse.Namespace,
    bar: ProgressBar,
    control: RunControl | None = None,
    reports: list[ReportWriter] | None = None,
) -> TrainResult | None:
    """Prepare, build the system of the config's level, (bench: dry run, connect, --arm), create
    the run directory and train; None after a bench dry run."""
    from physlearn.commands import bench_session
    from physlearn.systems.bench.system import BenchSystem
    from physlearn.systems.factory import make_system
    from physlearn.telemetry.session import attach_session, open_telemetry
    from physlearn.training.session import run_session

    config_dir = t.paths_from.parent
    setup = prepare(t.cfg, config_dir)
    if args.init_from is not None:
        lo, hi = setup.spec.parameter_bounds()
        names, units = setup.spec.parameter_names(), setup.spec.parameter_units()
        setup.init_from = load_init_from(args.init_from, names, units, lo, hi)
    async with make_system(t.cfg, config_dir, spec=setup.spec) as system:
        if isinstance(system, BenchSystem) and not await bench_session.ready(setup, system, args):
            return None
        store = t.create_store(setup)
        control = control if control is not None else RunControl()
        telemetry = open_telemetry(t.cfg, store.run_dir, setup.spec, control, config_dir)
        listeners: list[Listener] = [bar, telemetry]
        if reports is not None:
            reports.append(ReportWriter(store.run_dir))
            listeners.append(reports[-1])
        hooks = [attach_session(telemetry, t.cfg)]
        try:
            result = await run_session(setup, system, store, listeners, control, hooks)
        except (RunStopped, PersistentFault, KeyboardInterrupt, asyncio.CancelledError):
            telemetry.close()  # the run's state was said by its last event (stopped)
            raise
        except BaseException as exc:
            telemetry.close("failed", f"{type(exc).__name__}: {exc}")
            raise
        telemetry.close()
        return result


@contextlib.contextmanager
def stop_on_signals(control: RunControl) -> Iterator[None]:
    """While training: the first SIGINT or SIGTERM asks the run to stop at the next step
    boundary (checkpoint committed, `RunStopped`); a second one interrupts at once
    (KeyboardInterrupt). A bench run's own handlers (`run_with_safe_exit`: stop now, safe
    state) take over while it is armed."""
    got: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if got:
            raise KeyboardInterrupt(f"signal {signum} again")
        got.append(signum)
        name = signal.Signals(signum).name
        print(
            f"\nphyslearn train: {name}: stopping after the current step "
            f"({name} again to stop at once)",
            file=sys.stderr,
        )
        control.request(Command.STOP, name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    t = run_target(args)
    if isinstance(t, str):
        print(t)
        return 2
    if t.cfg.system.kind != "bench" and (args.dry_run or args.arm):
        print('--dry-run and --arm apply to [system] kind = "bench" only')
        return 2
    bar = ProgressBar(quiet=args.quiet)
    control = RunControl()
    hint = f"continue with: physlearn train --resume {t.run_dir}" + (
        " --arm" if t.cfg.system.kind == "bench" else ""
    )
    reports: list[ReportWriter] | None = None if args.no_report else []
    try:
        with stop_on_signals(control), bar.logging():
            result = asyncio.run(train_target(t, args, bar, control, reports))
    except RunStopped as exc:
        return _ended(bar, reports, f"physlearn train: {exc}; the checkpoint is committed.", hint)
    except KeyboardInterrupt:
        return _ended(
            bar, reports, "physlearn train: interrupted; the last checkpoint stands.", hint
        )
    except PersistentFault as exc:
        _ended(bar, reports)
        raise PersistentFault(
            f"{exc}. The bench is in its safe state and the run is paused at its last "
            f"checkpoint; after fixing {exc.instrument}, {hint}",
            instrument=exc.instrument,
            fault=exc.fault,
        ) from exc
    except BaseException:
        _ended(bar, reports)
        raise
    _ended(bar, reports)
    if result is not None:
        _print_result(result)
    return 0


def _ended(bar: ProgressBar, reports: list[ReportWriter] | None, *lines: str) -> int:
    """After the run, its system closed: the bar closed, the report written (if the run asked
    for one), ``lines`` and the report's path on stderr. 130: the exit code of a stopped run."""
    bar.close()
    for line in lines:
        print(line, file=sys.stderr)
    for writer in reports or []:
        if writer.pending and writer.write() is not None:
            print(f"report: {writer.written}", file=sys.stderr)
    return 130


def _print_result(result: TrainResult) -> None:
    final = result.summary.get("final") or {}
    print(
        f"epochs {result.summary['epochs_run']}: train loss {_fmt(final.get('train_loss'))} "
        f"acc {_fmt(final.get('train_accuracy'))}, test loss {_fmt(final.get('test_loss'))} "
        f"acc {_fmt(final.get('test_accuracy'))}, {result.summary['wall_time_s']:.1f} s"
    )
    print(f"run directory: {result.run_dir}")
