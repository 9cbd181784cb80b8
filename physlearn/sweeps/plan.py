"""The sweep file of ``physlearn sweep`` and the points it expands to.

A sweep file (TOML; docs/sweeps.md) names a base train config and a grid and/or a list of
overrides over it::

    [sweep]
    base = "xor.toml"                     # train config of every point (relative to this file)
    root = "../runs/sweep-xor"            # run root: one run directory per point (default
                                          #   runs/<sweep file stem>, relative to the cwd)
    name = "{estimator.name}-s{training.seed}"   # run directory name (template; optional)
    set = { "training.epochs" = 40 }      # overrides of every point
    unset = []                            # config keys removed from every point

    [grid]                                # every combination of these values
    "estimator.name" = ["ep_symmetric", "adjoint"]
    "training.seed" = [0, 1, 2]

    [[points]]                            # and/or a list (crossed with the grid)
    set = { "network.topology.regime" = "lossy_resonant" }
    unset = ["training.min_mode_margin"]
    tags = { regime = "lossy" }           # extra columns of the results table

    [benches.rig-a]                       # bench points: one bench, one Dask worker
    worker = "rig-a"
    set = { "system.bench.resources" = { ... } }

A point's config is the base file, minus ``unset`` keys, plus the overrides in this order:
``[sweep] set``, the point's ``set``, the bench's ``set``, the grid values. Keys are dotted
config paths (``optimizer.lr``); every point is validated like a train config before anything
runs, and an error names the point. Each point gets a run directory ``<root>/<name>``: two
points with the same name (the same run directory) are refused.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from physlearn.errors import ConfigError
from physlearn.spec.tomlconfig import read_toml, validate
from physlearn.training.config import TrainConfig

__all__ = ["Point", "SweepFile", "SweepPlan", "apply_overrides", "load_sweep", "point_name"]

#: a run directory name (physlearn.training.runstore): letters, digits, '.', '_' and '-'
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TEMPLATE_RE = re.compile(r"\{([^{}]+)\}")
Scalar = str | int | float | bool


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SweepSection(_Model):
    """``[sweep]``: the base config, the run root, the name template, common overrides."""

    base: Path | None = None
    root: Path | None = None
    name: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    unset: list[str] = Field(default_factory=list)
    bench: str | None = None


class PointEntry(_Model):
    """One ``[[points]]`` entry: overrides (``set``), removed keys (``unset``), its own base
    config, extra table columns (``tags``), a run name and the bench it runs on."""

    name: str | None = None
    base: Path | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    unset: list[str] = Field(default_factory=list)
    tags: dict[str, Scalar] = Field(default_factory=dict)
    bench: str | None = None


class BenchEntry(_Model):
    """``[benches.NAME]``: the one Dask worker (``dask worker --name WORKER``) that drives this
    bench, and the overrides of the points on it (addresses, bench file, calibration)."""

    worker: str
    set: dict[str, Any] = Field(default_factory=dict)


class SweepFile(_Model):
    """A sweep file (module docstring)."""

    sweep: SweepSection = Field(default_factory=SweepSection)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    points: list[PointEntry] = Field(default_factory=list)
    benches: dict[str, BenchEntry] = Field(default_factory=dict)


@dataclass(frozen=True)
class Point:
    """One run of a sweep.

    Attributes:
        name: the run directory's name under the sweep root (unique in the sweep).
        base: the train config file the point starts from (its folder resolves the config's
            relative paths, as for ``physlearn train --config``).
        overrides: (dotted key, value) in the order they apply.
        unset: dotted keys removed from the base config first.
        labels: the table columns of this point — its own overrides (not the common ones), the
            grid values and its tags.
        bench: the bench the point runs on (`SweepPlan.benches`), or None.
    """

    name: str
    base: Path
    overrides: tuple[tuple[str, Any], ...] = ()
    unset: tuple[str, ...] = ()
    labels: Mapping[str, Any] = field(default_factory=dict)
    bench: str | None = None

    def config_data(self) -> dict[str, Any]:
        """The point's config as plain data (base file, unset keys removed, overrides set)."""
        return apply_overrides(read_toml(self.base), self.overrides, self.unset)

    def config(self) -> TrainConfig:
        """The validated config; a ConfigError names the point and the field."""
        return validate(TrainConfig, self.config_data(), f"point {self.name!r} ({self.base})")


@dataclass(frozen=True)
class SweepPlan:
    """The points of a sweep, their run root and the benches they may drive."""

    root: Path
    points: tuple[Point, ...]
    benches: Mapping[str, BenchEntry] = field(default_factory=dict)
    source: Path | None = None

    def worker_of(self, point: Point) -> str | None:
        """The Dask worker a bench point is pinned to (None: any worker)."""
        return self.benches[point.bench].worker if point.bench is not None else None


def apply_overrides(
    data: Mapping[str, Any], overrides: Sequence[tuple[str, Any]], unset: Sequence[str] = ()
) -> dict[str, Any]:
    """A deep copy of ``data`` with the dotted ``unset`` keys removed, then ``overrides`` set
    (missing tables are created). A key through a non-table value is a ConfigError."""
    out = copy.deepcopy(dict(data))
    for key in unset:
        *path, leaf = key.split(".")
        node: Any = out
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    for key, value in overrides:
        *path, leaf = key.split(".")
        node = out
        for i, part in enumerate(path):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                where = ".".join(path[: i + 1])
                raise ConfigError(f"override {key}: {where} is a value, not a table")
        node[leaf] = copy.deepcopy(value)
    return out


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _slug(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "x"


def point_name(labels: Mapping[str, Any], leaves: Mapping[str, str]) -> str:
    """The default run name of a point: ``<leaf>-<value>`` of each label, joined by ``_``
    (``estimator.name = "adjoint"``, ``training.seed = 2`` → ``name-adjoint_seed-2``); a leaf
    shared by two keys of the sweep is spelled out in full (``training.seed``)."""
    parts = [f"{leaves.get(k, k)}-{_slug(v)}" for k, v in labels.items()]
    return "_".join(parts) or "point"


def _render(template: str, data: Mapping[str, Any], labels: Mapping[str, Any], where: str) -> str:
    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key in labels:
            return _slug(labels[key])
        try:
            return _slug(_lookup(data, key))
        except KeyError:
            raise ConfigError(f"{where}: name template: no config key {key!r}") from None

    return _TEMPLATE_RE.sub(sub, template)


def _leaves(keys: Sequence[str]) -> dict[str, str]:
    """Each key's short spelling in names: its last part, unless another key shares it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (leaf if last.count(leaf) == 1 else k) for k, leaf in zip(keys, last, strict=True)}


def _entries(sf: SweepFile) -> list[tuple[PointEntry, dict[str, Any]]]:
    """(list entry, grid values) of every point: the list crossed with the grid."""
    entries = sf.points or [PointEntry()]
    keys = list(sf.grid)
    combos = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*sf.grid.values())]
    return [(e, g) for e in entries for g in combos]


def _check_benches(sf: SweepFile, where: str) -> None:
    workers: dict[str, str] = {}
    for name, b in sf.benches.items():
        if b.worker in workers:
            raise ConfigError(
                f"{where}: benches {workers[b.worker]!r} and {name!r} both name worker "
                f"{b.worker!r}: one bench, one process"
            )
        workers[b.worker] = name


def _point(
    sf: SweepFile, entry: PointEntry, grid: dict[str, Any], here: Path, leaves: dict[str, str]
) -> Point:
    s = sf.sweep
    base_path = entry.base or s.base
    if base_path is None:
        raise ConfigError(f"{here}: no base config: give [sweep] base (or base per point)")
    base = base_path if base_path.is_absolute() else here.parent / base_path
    bench = entry.bench or s.bench
    labels: dict[str, Any] = {**entry.set, **grid, **entry.tags}
    overrides = [*s.set.items(), *entry.set.items()]
    if bench is not None:
        if bench not in sf.benches:
            known = ", ".join(sf.benches) or "none declared"
            raise ConfigError(f"{here}: bench {bench!r} is not declared in [benches] ({known})")
        overrides += sf.benches[bench].set.items()
        labels["bench"] = bench
    overrides += grid.items()
    draft = Point("?", base, tuple(overrides), (*s.unset, *entry.unset), labels, bench)
    data = draft.config_data()
    if entry.name is not None:
        name = _render(entry.name, data, labels, str(here))
        if grid:
            name += "_" + (
                _render(s.name, data, labels, str(here)) if s.name else point_name(grid, leaves)
            )
    elif s.name is not None:
        name = _render(s.name, data, labels, str(here))
    else:
        name = point_name({k: v for k, v in labels.items() if k != "bench"}, leaves)
    if not _NAME_RE.match(name):
        raise ConfigError(f"{here}: point name {name!r} is not a run directory name")
    return Point(name, base, draft.overrides, draft.unset, labels, bench)


def plan_from(sf: SweepFile, here: Path, root: Path | None = None) -> SweepPlan:
    """Expand a parsed sweep file (``here``: its path) into points, each validated; refuses
    unknown keys (the point is named), two points on one run directory and bench points
    without a bench named per worker."""
    _check_benches(sf, str(here))
    all_keys = list(
        dict.fromkeys(k for e in sf.points for k in (*e.set, *e.tags)) | dict.fromkeys(sf.grid)
    )
    leaves = _leaves(all_keys)
    points: list[Point] = []
    seen: dict[str, int] = {}
    for i, (entry, grid) in enumerate(_entries(sf)):
        p = _point(sf, entry, grid, here, leaves)
        if p.name in seen:
            raise ConfigError(
                f"{here}: points {seen[p.name]} and {i} both write run directory {p.name!r} "
                "(give [sweep] name a template that tells them apart, or a name per point)"
            )
        seen[p.name] = i
        cfg = p.config()
        if cfg.system.kind == "bench" and p.bench is None:
            raise ConfigError(
                f"point {p.name!r}: a bench point runs only on a bench named per worker (one "
                'bench, one process): give it bench = "NAME" and declare [benches.NAME] '
                'worker = "<dask worker name>"'
            )
        points.append(p)
    if root is None:
        s_root = sf.sweep.root
        root = (
            (s_root if s_root.is_absolute() else here.parent / s_root)
            if s_root is not None
            else Path("runs") / here.stem
        )
    return SweepPlan(Path(os.path.normpath(root)), tuple(points), dict(sf.benches), here)


def load_sweep(path: Path | str, root: Path | None = None) -> SweepPlan:
    """Read, validate and expand a sweep file (see `plan_from`)."""
    path = Path(path)
    sf = validate(SweepFile, read_toml(path), str(path))
    return plan_from(sf, path, root)
