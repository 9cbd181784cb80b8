"""`physlearn calibrate`: bench calibration steps (docs/calibration.md).

    physlearn calibrate STEP --config examples/bench.toml [--output DIR] [--options FILE]
                        [--connection FILE] [--resources name=RESOURCE ...]
                        [--twin-control tcp://HOST:PORT] [--force]
    physlearn calibrate show FILE

STEP is dac, resonance, sensing, actuators, couplings, active (the active coupling elements, when
the bench has any), tuners (the node tuners' κ(V), when the bench has any) or all (every step in dependency order;
completed steps are skipped unless --force, so an interrupted run resumes). Instruments are
reached at --resources (default: the `resource` of each instrument in the bench file). With
--connection (the file `physlearn twin serve` writes) every resource and, for a --virtual twin,
the twin-control address come from that file. With --twin-control the bench is the emulated one
(`physlearn twin serve --virtual`) and waits advance its virtual clock; otherwise waits are
wall-clock sleeps. The result is DIR/calibration.json
plus per step DIR/<step>.json, .npz (raw data) and .png (fit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

STEP_CHOICES = (
    "dac",
    "resonance",
    "sensing",
    "actuators",
    "couplings",
    "active",
    "tuners",
    "all",
    "show",
)


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="calibrate the bench (DAC, resonances, actuators, sensing, couplings)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("step", choices=STEP_CHOICES)
    p.add_argument("file", nargs="?", type=Path, help="show: the calibration file")
    p.add_argument("--config", type=Path, help="bench TOML file")
    p.add_argument("--output", type=Path, default=Path("calibration-out"), help="output dir")
    p.add_argument("--options", type=Path, help="calibration options (TOML, [calibration])")
    p.add_argument(
        "--resources", nargs="*", default=[], metavar="NAME=RESOURCE", help="VISA addresses"
    )
    p.add_argument("--twin-control", help="twin-control address of an emulated bench")
    p.add_argument(
        "--connection",
        type=Path,
        help="connection file of `physlearn twin serve` (resources, clock)",
    )
    p.add_argument("--force", action="store_true", help="redo completed steps")


def _resources(config: Any, items: list[str], file_defaults: bool = True) -> dict[str, str]:
    from physlearn.errors import ConfigError

    out = (
        {n: i.resource for n, i in config.instruments.items() if i.resource}
        if file_defaults
        else {}
    )
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--resources: expected NAME=RESOURCE, got {item!r}")
        name, res = item.split("=", 1)
        if name not in config.instruments:
            raise ConfigError(f"--resources: no instrument {name!r} in the bench file")
        out[name] = res
    return out


def load_options(path: Path | None) -> Any:
    from physlearn.calibration.options import CalibrationOptions
    from physlearn.spec.tomlconfig import read_toml, validate

    if path is None:
        return CalibrationOptions()
    raw = read_toml(path)
    return validate(CalibrationOptions, raw.get("calibration", raw), str(path))


async def _run(args: argparse.Namespace) -> int:
    from physlearn.calibration.bench import open_bench
    from physlearn.calibration.context import StepContext
    from physlearn.calibration.pipeline import run_all, run_step
    from physlearn.errors import ConfigError
    from physlearn.simulators.twin_control import TwinControlClient
    from physlearn.spec.bench import BenchConfig
    from physlearn.spec.clock import Clock, TwinClock, WallClock

    if args.config is None:
        raise ConfigError("--config: the bench file is required")
    config = BenchConfig.load(args.config).controller_view()
    opts = load_options(args.options)
    resources = _resources(config, args.resources)
    if args.connection is not None:
        from physlearn.spec.connection import TwinConnection

        conn = TwinConnection.read(args.connection, wait_s=30.0)
        unknown = sorted(set(conn.resources) - set(config.instruments))
        if unknown:
            raise ConfigError(
                f"--connection {args.connection}: instruments {unknown} are not in {args.config} "
                f"(the twin serves bench {conn.bench!r} from {conn.config})"
            )
        # the bench file's addresses < the connection file < explicit --resources
        resources = {**resources, **conn.resources, **_resources(config, args.resources, False)}
        if conn.virtual and args.twin_control is None:
            args.twin_control = conn.twin_control
    created = not args.output.exists()  # a failed first run leaves no empty folder behind
    ctx = StepContext(args.output, opts)
    client = None
    clock: Clock
    if args.twin_control:
        client = TwinControlClient(args.twin_control)
        await client.connect()
        clock = TwinClock(client)
    else:
        clock = WallClock()
    try:
        async with open_bench(config, resources, clock) as bench:
            if args.step == "all":
                cal = await run_all(bench, ctx, force=args.force)
            else:
                cal = await run_step(bench, ctx, args.step, force=args.force)
    except BaseException:
        if created and args.output.is_dir() and not any(args.output.iterdir()):
            args.output.rmdir()
        raise
    finally:
        if client is not None:
            await client.close()
    print(f"calibration: steps {', '.join(cal.steps)} → {args.output / 'calibration.json'}")
    return 0


def show(path: Path) -> int:
    from physlearn.calibration.schema import CalibrationFile

    cal = CalibrationFile.read(path)
    print(f"bench {cal.bench_name!r}, created {cal.created_utc}, schema {cal.schema_version}")
    print(f"config sha256 {cal.bench_config_sha256[:16]}…, mass {cal.mass_kg} kg (declared)")
    for name, ident in cal.instruments.items():
        print(f"  {name}: {ident.model} serial {ident.serial} firmware {ident.firmware}")
    for n in cal.nodes:
        print(
            f"node {n.node}: f0 {n.f0_hz.value:.4f} ± {n.f0_hz.sigma:.4f} Hz, "
            f"Q {n.q.value:.3f} ± {n.q.sigma:.3f}"
        )
    for a in cal.actuators:
        print(
            f"actuator node {a.node} ({a.instrument} ch{a.channel}): gain "
            f"{a.gain_per_s2_per_v.value:.6g} ± {a.gain_per_s2_per_v.sigma:.2g} unit/s²/V, "
            f"delay {a.delay_s.value * 1e6:.1f} ± {a.delay_s.sigma * 1e6:.1f} µs"
        )
    for s in cal.sensing:
        ch = "" if s.channel is None else f" ch{s.channel}"
        print(
            f"sensing node {s.node} ({s.instrument}{ch}): gain {s.gain_v_per_unit.value:.5g} "
            f"± {s.gain_v_per_unit.sigma:.2g} V/unit{' (reference)' if s.reference else ''}, "
            f"offset {s.offset_v.value * 1e3:.3f} mV, delay {s.delay_s.value * 1e6:.1f} µs"
        )
    for c in cal.couplings:
        lo, hi = c.alpha_range()
        print(
            f"coupling {c.nodes} ({c.instrument} ch{c.channel}): α ∈ [{lo:.4g}, {hi:.4g}] N/m "
            f"over [{c.v_min}, {c.v_max}] V, χ²/dof {c.chi2_per_dof:.2f}"
        )
    for a in cal.active:
        lo, hi = a.alpha_range()
        print(
            f"active element {a.target}<-{a.source} ({a.instrument} ch{a.channel}, switch "
            f"ch{a.switch_channel}): α ∈ [{lo:.4g}, {hi:.4g}] N/m over [{a.v_min}, {a.v_max}] V, "
            f"delay {a.delay_s.value * 1e6:.1f} ± {a.delay_s.sigma * 1e6:.1f} µs, reversed gain "
            f"{a.reverse_rel_diff:+.2%}, χ²/dof {a.chi2_per_dof:.2f}"
        )
    for t in cal.tuners:
        lo, hi = t.alpha_range()
        print(
            f"tuner of node {t.node} ({t.instrument} ch{t.channel}): κ ∈ [{lo:.4g}, {hi:.4g}] N/m "
            f"over [{t.v_min}, {t.v_max}] V (κ = 0 at {t.ref_v} V), slope {t.slope_per_v:.4g} "
            f"N/m/V, curvature {t.curvature_per_v2:.3g} N/m/V², χ²/dof {t.chi2_per_dof:.2f}"
        )
    print(json.dumps({"steps": cal.steps}))
    return 0


def run(args: argparse.Namespace) -> int:
    from physlearn.errors import ConfigError

    if args.step == "show":
        if args.file is None:
            raise ConfigError("calibrate show FILE: which calibration file?")
        return show(args.file)
    return asyncio.run(_run(args))
