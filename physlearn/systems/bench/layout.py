"""The bench layout: the wiring checked against the network spec and the calibration — which
DAC wire tunes each trainable coupling and on-site stiffness, which nodes have actuators, which scope channel senses
which node, the stitch reference node, the generators and DACs the loop drives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from physlearn.calibration.schema import ActiveMap, CalibrationFile, CouplingMap, TunerMap
from physlearn.errors import CalibrationError, ConfigError
from physlearn.spec.bench import ActiveWire, BenchConfig, EdgeWire, TunerWire
from physlearn.spec.network import Coupling, DirectedCoupling, NetworkSpec, Onsite

#: a DAC wire that sets one trainable parameter, and its calibrated map
ParamWire: TypeAlias = EdgeWire | ActiveWire | TunerWire
ParamMap: TypeAlias = CouplingMap | ActiveMap | TunerMap

__all__ = ["BenchLayout", "check_layout"]


@dataclass(frozen=True)
class BenchLayout:
    """The checked wiring (see the module docstring).

    param_edges, maps, names: per trainable parameter (spec order) its DAC wire (an edge, an
    active element's gain channel or a node tuner), calibrated α(V) (κ(V)) map and name; active: the active elements
    (spec order of the directed couplings they realise); drive_nodes: actuated nodes (sorted); scope_channels: per scope (wiring
    order) scope channel → sense wire index; reference_node: the node every scope senses (the
    stitch check), None with one scope and none configured; generators, dacs: names (sorted)."""

    param_edges: list[ParamWire]
    maps: list[ParamMap]
    names: list[str]
    drive_nodes: list[int]
    scope_channels: dict[str, dict[int, int]]
    reference_node: int | None
    generators: list[str]
    dacs: list[str]
    active: list[ActiveWire]


def check_layout(
    config: BenchConfig,
    cal: CalibrationFile,
    spec: NetworkSpec,
    reference_node: int | None,
    version: str,
) -> BenchLayout:
    """The layout of ``config`` (controller view) for ``spec``; ConfigError or CalibrationError
    on the first mismatch. ``reference_node``: the configured stitch reference (None: the
    smallest node every scope senses); ``version``: the calibration's name for messages."""
    _check_network(spec, cal, version)
    edges, maps = _trainable_edges(config, cal, spec, version)
    names = [n for n, t in spec.terms() if t.trainable]
    if spec.inputs.nodes and spec.inputs.mode != "force":
        raise ConfigError("network.inputs.mode: a bench drives inputs as forces, not clamps")
    drive_nodes = _drive_nodes(config, spec)
    scopes = _scope_channels(config, spec)
    ref = _reference_node(config, scopes, reference_node)
    w = config.wiring
    gens = {dw.instrument for dw in w.drives}
    if w.sync is None or w.sync.instrument not in gens:
        raise ConfigError("wiring.sync: the scopes trigger on a drive generator's sync")
    return BenchLayout(
        edges,
        maps,
        names,
        drive_nodes,
        scopes,
        ref,
        sorted(gens),
        sorted({e.instrument for e in edges}),
        [e for e in edges if isinstance(e, ActiveWire)],
    )


def _check_network(spec: NetworkSpec, cal: CalibrationFile, version: str) -> None:
    if spec.boundary.kind != "periodic":
        raise ConfigError("network: a bench runs a periodic drive (boundary.kind periodic)")
    masses = np.asarray(spec.nodes.arrays()[0], dtype=float)
    if not np.allclose(masses, cal.mass_kg, rtol=1e-9, atol=0.0):
        raise CalibrationError(
            f"calibration {version}: declared mass {cal.mass_kg} kg, "
            f"the network spec's node masses are {sorted(set(masses.tolist()))} kg; α in N/m "
            "would be misread (set network.nodes.mass to the calibration's mass)"
        )


def _active_element(
    config: BenchConfig, cal: CalibrationFile, name: str, term: DirectedCoupling, version: str
) -> tuple[ActiveWire, ActiveMap]:
    """The wired, calibrated active element realising directed coupling ``term``."""
    wired = {a.key: a for a in config.wiring.active}
    key = (term.target, term.source)
    if key not in wired:
        raise ConfigError(
            f"network: directed coupling {name} has no active element on this bench "
            "([[wiring.active]] target/source)"
        )
    if term.kind != "linear" or not term.trainable:
        raise ConfigError(
            f"network: {name}: a bench's active elements are linear amplifiers with a DAC-set "
            'gain; the directed coupling must be kind = "linear" and trainable'
        )
    amap = cal.active_map(*key)
    aw = wired[key]
    if (amap.instrument, amap.channel) != (aw.instrument, aw.channel):
        raise CalibrationError(
            f"calibration {version}: active element {key[0]}<-{key[1]} was calibrated on "
            f"{amap.instrument} channel {amap.channel}, the wiring has {aw.instrument} "
            f"channel {aw.channel}"
        )
    return aw, amap


def _tuner(
    config: BenchConfig, cal: CalibrationFile, name: str, term: Onsite, version: str
) -> tuple[TunerWire, TunerMap]:
    """The wired, calibrated node tuner realising on-site term ``term``."""
    wired = {t.node: t for t in config.wiring.tuners}
    if term.node not in wired:
        raise ConfigError(
            f"network: on-site stiffness {name} has no tuner on node {term.node} on this bench "
            "([[wiring.tuners]])"
        )
    if not term.trainable:
        raise ConfigError(
            f"network: {name}: a bench sets on-site stiffness through its node tuners only "
            "while training it; make the term trainable, or fold a fixed κ into "
            "nodes.stiffness"
        )
    tmap = cal.tuner_map(term.node)
    tw = wired[term.node]
    if (tmap.instrument, tmap.channel) != (tw.instrument, tw.channel):
        raise CalibrationError(
            f"calibration {version}: the tuner of node {term.node} was calibrated on "
            f"{tmap.instrument} channel {tmap.channel}, the wiring has {tw.instrument} "
            f"channel {tw.channel}"
        )
    return tw, tmap


def _trainable_edges(
    config: BenchConfig, cal: CalibrationFile, spec: NetworkSpec, version: str
) -> tuple[list[ParamWire], list[ParamMap]]:
    """Per trainable term: its DAC wire and calibrated map (a bench trains DAC-tuned couplings,
    the gains of its active elements and the stiffness of its node tuners only)."""
    edge_of = {e.key: e for e in config.wiring.edges}
    edges: list[ParamWire] = []
    maps: list[ParamMap] = []
    used = {(d.target, d.source) for d in spec.directed}
    unused = [f"{a.target}<-{a.source}" for a in config.wiring.active if a.key not in used]
    if unused:
        raise ConfigError(
            f"wiring.active: elements {', '.join(unused)} are not directed couplings of the "
            "network; an element left on would be an unmodelled coupling"
        )
    onsite = {o.node for o in spec.onsite}
    untuned = [t.node for t in config.wiring.tuners if t.node not in onsite]
    if untuned:
        raise ConfigError(
            f"wiring.tuners: the tuners of nodes {untuned} are not on-site terms of the network "
            "([[onsite]]); a tuner the controller never sets would be an unmodelled stiffness"
        )
    for name, term in spec.terms():
        if isinstance(term, DirectedCoupling):
            aw, amap = _active_element(config, cal, name, term, version)
            edges.append(aw)
            maps.append(amap)
            continue
        if isinstance(term, Onsite):
            tw, tmap = _tuner(config, cal, name, term, version)
            edges.append(tw)
            maps.append(tmap)
            continue
        if not term.trainable:
            continue
        if not isinstance(term, Coupling):
            raise ConfigError(
                f"network: trainable term {name} is not a coupling or an on-site stiffness; a "
                "bench trains only the DAC-tuned couplings of [[wiring.edges]], the gains of "
                "[[wiring.active]] and the node tuners of [[wiring.tuners]]"
            )
        key = (min(term.nodes), max(term.nodes))
        if key not in edge_of:
            raise ConfigError(f"network: trainable coupling {name} {key} has no DAC wire")
        cmap = cal.coupling(key)
        ew = edge_of[key]
        if (cmap.instrument, cmap.channel) != (ew.instrument, ew.channel):
            raise CalibrationError(
                f"calibration {version}: edge {key} was calibrated on "
                f"{cmap.instrument} channel {cmap.channel}, the wiring has {ew.instrument} "
                f"channel {ew.channel}"
            )
        edges.append(ew)
        maps.append(cmap)
    return edges, maps


def _drive_nodes(config: BenchConfig, spec: NetworkSpec) -> list[int]:
    """The actuated nodes (sorted); every input node and tone node must be one."""
    w, d = config.wiring, spec.nodes.count
    nodes = sorted({dw.node for dw in w.drives})
    for dw in w.drives:
        if dw.node >= d:
            raise ConfigError(f"wiring.drives: node {dw.node} not in the network ({d} nodes)")
    needed = set(spec.inputs.nodes) | {t.node for t in spec.drive.tones}
    missing = sorted(needed - set(nodes))
    if missing:
        raise ConfigError(f"wiring.drives: nodes {missing} are driven but have no actuator")
    return nodes


def _scope_channels(config: BenchConfig, spec: NetworkSpec) -> dict[str, dict[int, int]]:
    """Per scope: scope channel → sense wire index; every node must be sensed by a scope."""
    w, d = config.wiring, spec.nodes.count
    scopes: dict[str, dict[int, int]] = {}
    for i, sw in enumerate(w.sense):
        inst = config.instruments[sw.instrument]
        if inst.role == "scope":
            assert sw.channel is not None
            scopes.setdefault(sw.instrument, {})[sw.channel] = i
    sensed = {w.sense[i].node for chans in scopes.values() for i in chans.values()}
    unsensed = sorted(set(range(d)) - sensed)
    if unsensed:
        raise ConfigError(
            f"wiring.sense: nodes {unsensed} are not sensed by any scope; the conjugate "
            "quantities need every node's waveform"
        )
    if not scopes:
        raise ConfigError("wiring.sense: a bench needs at least one oscilloscope")
    return scopes


def _reference_node(
    config: BenchConfig, scopes: dict[str, dict[int, int]], ref: int | None
) -> int | None:
    """The stitch reference: with several scopes, a node sensed by every one of them."""
    w = config.wiring
    if len(scopes) > 1:
        common = set.intersection(
            *({w.sense[i].node for i in ch.values()} for ch in scopes.values())
        )
        if ref is None:
            ref = min(common) if common else None
        if ref is None or ref not in common:
            raise ConfigError(
                "wiring.sense: with several scopes (groups), one reference node must be sensed "
                f"by every scope to check the stitch; common nodes: {sorted(common)}"
            )
    return ref
