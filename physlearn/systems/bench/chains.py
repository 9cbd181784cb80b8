"""The calibration file resolved against the bench wiring: per drive wire its actuator, per sense
wire its gain, offset and delay, and the slowest calibrated transient decay rate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from physlearn.calibration.schema import ActuatorCal, CalibrationFile
from physlearn.errors import CalibrationError
from physlearn.spec.bench import BenchConfig

Array = NDArray[np.float64]

__all__ = ["Chains", "calibration_version", "resolve_chains"]


@dataclass(frozen=True)
class Chains:
    """What the controller takes from the calibration file, per wiring entry (config order):
    per drive wire the actuator (force/mass per volt, delay), per sense wire gain (V/unit),
    offset (V) and delay (s) as arrays (n_sense,); the slowest calibrated transient decay rate
    Γ/2 (1/s), None when the file has no Γ."""

    actuators: list[ActuatorCal]
    sense_gain: Array
    sense_offset: Array
    sense_delay: Array
    decay_rate_per_s: float | None


def resolve_chains(cal: CalibrationFile, config: BenchConfig) -> Chains:
    """The chains of ``config``'s wiring in ``cal``; CalibrationError naming the first wire the
    file does not calibrate (or calibrates on another node)."""
    w = config.wiring
    acts: list[ActuatorCal] = []
    for j, dw in enumerate(w.drives):
        found = [
            a for a in cal.actuators if (a.instrument, a.channel) == (dw.instrument, dw.channel)
        ]
        if not found or found[0].node != dw.node:
            raise CalibrationError(
                f"calibration of {cal.created_utc}: no actuator calibration for wiring.drives[{j}] "
                f"({dw.instrument} channel {dw.channel} → node {dw.node}); recalibrate (actuators)"
            )
        acts.append(found[0])
    gains, offsets, delays = [], [], []
    for i, sw in enumerate(w.sense):
        s = cal.sense(sw.instrument, sw.channel)
        if s.node != sw.node:
            raise CalibrationError(
                f"calibration: {sw.instrument} channel {sw.channel} senses node {s.node} in the "
                f"file, node {sw.node} in wiring.sense[{i}]"
            )
        gains.append(s.gain_v_per_unit.value)
        offsets.append(s.offset_v.value)
        delays.append(s.delay_s.value)
    decay = (
        min(n.damping_per_s.value for n in cal.nodes) / 2.0
        if cal.nodes and min(n.damping_per_s.value for n in cal.nodes) > 0
        else None
    )
    return Chains(
        acts,
        np.array(gains, dtype=float),
        np.array(offsets, dtype=float),
        np.array(delays, dtype=float),
        decay,
    )


def calibration_version(cal: CalibrationFile) -> str:
    """How the records name a calibration: bench name and creation time (UTC)."""
    return f"{cal.bench_name}@{cal.created_utc}"
