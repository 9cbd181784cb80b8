"""The one factory of physical systems: the system of a train config's ``[system]``, named
after its level, and the knowledge that level gives the estimators.

* ``kind = "ideal"``: the ideal twin (`IdealSystem`, `Level.IDEAL`); for a GP lattice
  (``[network.gp_lattice]``) or field (``[network.gp_field]``) its twin `GPLatticeTwin`
  (`Level.IDEAL`);
* ``kind = "autonomous"``: the ideal twin of an autonomous network (`AutonomousTwin`,
  `Level.IDEAL`), held at the set point of ``[system.autonomous]``;
* ``kind = "bench"``: a `BenchSystem` (scope readout) or `LockinBenchSystem` (``readout =
  "lockin"``) of ``[system.bench]``, whose level follows ``twin_control``:

  - ``"memory"``: the bench file's emulated bench served in this process (in-memory transport,
    the twin's virtual clock) — `Level.EMULATED_MEMORY`;
  - ``"tcp://HOST:PORT"``: a `TwinControlClient` to ``physlearn twin serve --virtual`` (the
    served bench's virtual clock; resources from ``resources`` or the bench file) —
    `Level.EMULATED_SERVED`;
  - absent: real instruments on the wall clock — `Level.BENCH`.

`make_system` is an async context manager: it starts what the bench needs (the emulated bench,
the twin-control connection) and stops it on exit. The bench itself is returned unconnected;
connecting, arming and its safe state (`close`, e.g. through `run_with_safe_exit`) belong to
the session that uses it. `make_twin` builds the extra ideal twins a trainer uses (evaluation,
adjoint reference, stability check) synchronously.

`level_knowledge`: what the estimators may know (masses, damping rates) — the network spec on
the twin, the calibration file on a bench (the designed Γ may differ from the bench's); for a
GP lattice or field, `GPKnowledge` (its parameter layout and declared loss rates).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING, Any

from physlearn.errors import ConfigError
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.clock import Clock, TwinClock, WallClock
from physlearn.spec.gp_field_network import GPFieldNetworkSpec
from physlearn.spec.gp_network import GPNetworkSpec
from physlearn.spec.gp_system import GPKnowledge, GPSpec
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import Level, PhysicalSystem
from physlearn.training.config import BenchSessionConfig, TrainConfig

if TYPE_CHECKING:
    from physlearn.systems.autonomous import AutonomousTwin
    from physlearn.systems.gp_lattice import GPLatticeTwin
    from physlearn.systems.ideal import IdealSystem

log = logging.getLogger(__name__)
_memory_names = count()

__all__ = ["bench_level", "level_knowledge", "make_system", "make_twin", "resolve_path"]


def resolve_path(config_dir: Path | None, p: Path) -> Path:
    """``p`` relative to the config's directory (the current directory if None)."""
    return p if p.is_absolute() or config_dir is None else config_dir / p


def _bench_section(cfg: TrainConfig) -> BenchSessionConfig:
    b = cfg.system.bench
    if b is None:
        raise ConfigError('[system.bench] is required with kind = "bench"')
    return b


def bench_level(b: BenchSessionConfig) -> Level:
    """The level of a bench session: by its ``twin_control``."""
    if b.twin_control == "memory":
        return Level.EMULATED_MEMORY
    return Level.BENCH if b.twin_control is None else Level.EMULATED_SERVED


def level_knowledge(
    cfg: TrainConfig, spec: NetworkSpec | GPSpec, config_dir: Path | None = None
) -> ModelKnowledge | GPKnowledge:
    """What the estimators may know at the config's level: the spec's masses and damping on
    the ideal twin; on a bench, the calibration file's (paths relative to ``config_dir``); a GP
    lattice's layout and loss rates from its spec."""
    if isinstance(spec, GPNetworkSpec | GPFieldNetworkSpec):
        return GPKnowledge.from_spec(spec)
    if cfg.system.kind != "bench":
        return ModelKnowledge.from_spec(spec)
    from physlearn.calibration.schema import CalibrationFile

    cal = CalibrationFile.read(resolve_path(config_dir, _bench_section(cfg).calibration))
    return ModelKnowledge.from_calibration(spec, cal)


def make_twin(
    cfg: TrainConfig, spec: NetworkSpec | GPSpec | None = None, floquet: str | None = None
) -> IdealSystem | AutonomousTwin | GPLatticeTwin:
    """An ideal twin of ``[system]`` (collocation points, tolerance, echo settling), checking
    the Floquet multipliers of ``floquet`` ("all", "free", "none"; default ``[system] floquet``);
    the `AutonomousTwin` for ``kind = "autonomous"``; the `GPLatticeTwin` of a GP lattice or
    field (its
    states' Bogoliubov stability checked as ``floquet`` says: free states, all, none)."""
    from physlearn.systems.ideal import IdealSystem

    fl = cfg.system.floquet if floquet is None else floquet
    assert fl in ("all", "free", "none")
    if spec is None:
        spec = cfg.network.build()
    if isinstance(spec, GPNetworkSpec | GPFieldNetworkSpec):
        from physlearn.systems.gp_lattice import GPLatticeTwin

        return GPLatticeTwin(spec, stability=fl)  # type: ignore[arg-type]
    if cfg.system.kind == "autonomous":
        from physlearn.systems.autonomous import AutonomousTwin

        assert cfg.system.autonomous is not None
        return AutonomousTwin(
            spec,
            cfg.system.autonomous,
            floquet=fl,  # type: ignore[arg-type]
        )
    return IdealSystem(
        spec,
        cfg.system.points_per_period,
        floquet=fl,  # type: ignore[arg-type]
        tol=cfg.system.tol,
        echo_settle=cfg.system.echo_settle,
    )


@asynccontextmanager
async def make_system(
    cfg: TrainConfig,
    config_dir: Path | None = None,
    *,
    spec: NetworkSpec | GPSpec | None = None,
) -> AsyncIterator[PhysicalSystem]:
    """The system of ``[system]`` for the network ``spec`` (default: built from the config);
    ``config_dir`` resolves the relative paths of ``[system.bench]``. See the module docstring."""
    if spec is None:
        spec = cfg.network.build()
    if cfg.system.kind != "bench":
        yield make_twin(cfg, spec)
        return
    if isinstance(spec, GPNetworkSpec | GPFieldNetworkSpec):
        raise ConfigError("system.kind: no bench class exists for a GP lattice or field yet")
    async with AsyncExitStack() as stack:
        yield await _bench_system(cfg, config_dir, spec, stack)


async def _bench_system(
    cfg: TrainConfig, config_dir: Path | None, spec: NetworkSpec, stack: AsyncExitStack
) -> PhysicalSystem:
    """The bench of ``[system.bench]``, unconnected; what keeps its clock alive goes on
    ``stack``."""
    from physlearn.calibration.schema import CalibrationFile
    from physlearn.spec.bench import BenchConfig
    from physlearn.systems.bench.system import BenchSystem

    b = _bench_section(cfg)
    bench_path = resolve_path(config_dir, b.config)
    config = BenchConfig.load(bench_path)
    cal = CalibrationFile.read(resolve_path(config_dir, b.calibration))
    resources = dict(b.resources)
    clock: Clock
    if b.twin_control == "memory":
        from physlearn.simulators.bench_twin import EmulatedBench

        emulated = EmulatedBench.from_file(bench_path, virtual=True)
        stack.callback(emulated.stop)
        prefix = f"train{next(_memory_names)}-"
        resources = {**emulated.serve(memory_prefix=prefix, control=False), **resources}
        clock = TwinClock(emulated.control)
    elif b.twin_control is not None:
        from physlearn.simulators.twin_control import TwinControlClient

        client = TwinControlClient(b.twin_control)
        stack.push_async_callback(client.close)
        await client.connect()
        clock = TwinClock(client)
    else:
        clock = WallClock()
    kw: dict[str, Any] = {"resources": resources, "level": bench_level(b)}
    if b.readout == "lockin":
        from physlearn.systems.bench.lockin import LockinBenchSystem

        return LockinBenchSystem(config, cal, spec, clock, b.options, lockin=b.lockin, **kw)
    return BenchSystem(config, cal, spec, clock, b.options, **kw)
