"""The bench file's wiring as the calibration steps read it: the network topology, the scopes a
calibration records, each node's reference path and declared gain, and the edge biases."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from physlearn.calibration.bench import CalibrationBench
from physlearn.calibration.model import Topology
from physlearn.calibration.options import CalibrationOptions
from physlearn.errors import CalibrationError

Array = NDArray[np.float64]


def bench_topology(bench: CalibrationBench) -> Topology:
    """Node count (highest node named by the wiring + 1) and the drive and sense nodes."""
    w = bench.config.wiring
    nodes = [d.node for d in w.drives] + [s.node for s in w.sense]
    nodes += [n for e in w.edges for n in e.nodes]
    return Topology(max(nodes) + 1, tuple(d.node for d in w.drives), tuple(s.node for s in w.sense))


def recorded_scopes(bench: CalibrationBench, opts: CalibrationOptions) -> list[str]:
    """The scopes the calibration records (bench-file order): `opts.scope` alone, or all."""
    if opts.scope is not None:
        if opts.scope not in bench.config.by_role("scope"):
            raise CalibrationError(f"scope {opts.scope!r} is not an oscilloscope of the bench")
        return [opts.scope]
    scopes = list(bench.config.by_role("scope"))
    if not scopes:
        raise CalibrationError("calibration needs an oscilloscope on the bench")
    return scopes


def reference_paths(bench: CalibrationBench, scopes: list[str], d: int) -> list[int]:
    """Per node its reference path: its first sense path (wiring order) on any of `scopes`."""
    ref = []
    for node in range(d):
        paths = [
            i
            for i, s in enumerate(bench.config.wiring.sense)
            if s.node == node and s.instrument in scopes
        ]
        if not paths:
            raise CalibrationError(
                f"node {node} has no channel on {', '.join(scopes)}: it cannot be referenced"
            )
        ref.append(paths[0])
    return ref


def declared_gains(opts: CalibrationOptions, d: int) -> Array:
    """The declared reference gains (V per node unit), shape (d,)."""
    g = opts.reference_gain_v_per_unit
    arr = np.array(g if isinstance(g, list) else [g] * d, dtype=np.float64)
    if arr.shape != (d,):
        raise CalibrationError(f"reference_gain_v_per_unit: {arr.size} values for {d} nodes")
    return arr


async def set_all_biases(bench: CalibrationBench, volts: float) -> None:
    """Every edge's DAC channel to `volts` (wiring order)."""
    for e in bench.config.wiring.edges:
        await bench.dac(e.instrument).set_voltage(e.channel, volts)
