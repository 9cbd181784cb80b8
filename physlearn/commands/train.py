"""`physlearn train`: train a network from a TOML config, with a progress bar — on the ideal twin
(``[system] kind = "ideal"``) or on a bench, real or emulated (``kind = "bench"``: ``--dry-run``
checks every planned setting without switching anything on; ``--arm`` is required to enable the
outputs; see physlearn.commands.bench_session and README "Bench session").

Writes a run directory (resolved config, per-epoch metrics and parameters, checkpoint, summary;
see physlearn.training.runstore) and prints its path at the end. The checkpoint is rewritten atomically
after every mini-batch; ``--resume RUN_DIR`` continues an interrupted or paused run from it (the
run's own config.toml, or ``--config`` if given, which must resolve to the same config), with the
same parameters, optimizer state, shuffle order and step-length state as if it had not stopped.
A bench run also records the config it was started with (``source.json``), against whose
directory the relative paths of ``[system.bench]`` resolve on ``--resume RUN_DIR --arm``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from physlearn.errors import ConfigError
from physlearn.training.config import load_train_config
from physlearn.training.loop import ProgressEvent, default_run_name, train
from physlearn.training.runstore import CONFIG_FILE, atomic_write_bytes

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
    p.add_argument("--epochs", type=int, default=None, help="override [training].epochs")
    p.add_argument("--seed", type=int, default=None, help="override [training].seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="bench: check every planned setting and the calibration, switch nothing on",
    )
    p.add_argument(
        "--arm", action="store_true", help="bench: enable the outputs (required to train)"
    )


def _fmt(v: object) -> str:
    return "nan" if not isinstance(v, int | float) or not math.isfinite(v) else f"{v:.3g}"


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["training.epochs"] = args.epochs
    if args.seed is not None:
        overrides["training.seed"] = args.seed
    resume: Path | None = args.resume
    config_path: Path | None = args.config
    if resume is not None:
        if args.name is not None or args.run_dir is not None:
            print("--resume RUN_DIR names the run directory: leave out --name and --run-dir")
            return 2
        if config_path is None:
            config_path = resume / CONFIG_FILE
            if not config_path.is_file():
                raise ConfigError(f"--resume: {config_path} does not exist (not a run directory?)")
    elif config_path is None:
        print("--config is required (or --resume RUN_DIR)")
        return 2
    cfg = load_train_config(config_path, overrides)
    # relative paths of [system.bench] resolve against the directory of the config the run was
    # started with (recorded in the run directory), not against RUN_DIR/config.toml's
    paths_from = config_path
    source = resume / SOURCE_FILE if resume is not None else None
    if source is not None and args.config is None and source.is_file():
        paths_from = Path(json.loads(source.read_text())["config"])
    if resume is not None:
        root, name = resume.parent, resume.name
    else:
        root = args.run_dir
        name = args.name or cfg.output.name or default_run_name(cfg, config_path)
    bar: Any = None
    last: dict[str, Any] = {}

    def progress(ev: ProgressEvent) -> None:
        nonlocal bar
        if args.quiet:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=ev.total_steps, unit="step", desc="train", dynamic_ncols=True)
        if ev.kind == "step":
            bar.update(ev.step - bar.n)
            bar.set_postfix(
                epoch=ev.epoch, loss=_fmt(ev.batch_loss), acc=_fmt(last.get("train_accuracy"))
            )
        elif ev.metrics is not None:
            last.update(ev.metrics)
            bar.set_postfix(
                epoch=ev.epoch,
                loss=_fmt(ev.metrics.get("train_loss")),
                acc=_fmt(ev.metrics.get("train_accuracy")),
                test=_fmt(ev.metrics.get("test_accuracy")),
            )

    try:
        if cfg.system.kind == "bench":
            from physlearn.commands.bench_session import run_bench_sync
            from physlearn.systems.safety import PersistentFault
            from physlearn.training.loop import TrainSetup, _write_network
            from physlearn.training.runstore import RunStore

            def store_factory(setup: TrainSetup) -> RunStore:
                base = Path(root) if root is not None else cfg.output.root
                store = RunStore.create(base, name, cfg.resolved(), resume=resume is not None)
                if resume is None:
                    _write_network(store, setup.spec)
                    text = json.dumps({"config": str(Path(config_path).resolve())})
                    atomic_write_bytes(store.run_dir / SOURCE_FILE, text.encode())
                return store

            try:
                bench_result = run_bench_sync(cfg, paths_from, args, store_factory, progress)
            except PersistentFault as exc:
                base = Path(root) if root is not None else cfg.output.root
                raise PersistentFault(
                    f"{exc}. The bench is in its safe state and the run is paused at its last "
                    f"checkpoint; after fixing {exc.instrument}, continue with: physlearn train "
                    f"--resume {base / name} --arm",
                    instrument=exc.instrument,
                    fault=exc.fault,
                ) from exc
            if bench_result is None:
                return 0
            result = bench_result
        else:
            if args.dry_run or args.arm:
                print('--dry-run and --arm apply to [system] kind = "bench" only')
                return 2
            result = train(cfg, root=root, name=name, progress=progress, resume=resume is not None)
    finally:
        if bar is not None:
            bar.close()
    final = result.summary.get("final") or {}
    print(
        f"epochs {result.summary['epochs_run']}: train loss {_fmt(final.get('train_loss'))} "
        f"acc {_fmt(final.get('train_accuracy'))}, test loss {_fmt(final.get('test_loss'))} "
        f"acc {_fmt(final.get('test_accuracy'))}, {result.summary['wall_time_s']:.1f} s"
    )
    print(f"run directory: {result.run_dir}")
    return 0
