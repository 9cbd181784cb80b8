"""EMULATOR ONLY: the calibration file an ideal calibration would produce, read from the emulated
bench's hidden truth (the answer key). Tests and the XOR and Iris examples' committed calibrations
(`examples/bench-xor-calibration.json`, `examples/bench-iris-calibration.json`) use it; the
controller never sees the truth.

    python tests/bench_system_helpers.py        # rewrite examples/bench-xor-calibration.json
    python tests/bench_system_helpers.py iris   # rewrite examples/bench-iris-calibration.json
"""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from physlearn.calibration.bench import config_hash, open_bench
from physlearn.calibration.context import StepContext
from physlearn.calibration.options import CalibrationOptions
from physlearn.calibration.pipeline import run_all
from physlearn.calibration.schema import (
    ActuatorCal,
    CalibrationFile,
    CouplingMap,
    Identity,
    NodeCal,
    SensingCal,
    val,
)
from physlearn.simulators.bench_twin import EmulatedBench
from physlearn.spec.clock import TwinClock
from physlearn.spec.network import NetworkSpec
from physlearn.systems.bench.options import BenchOptions
from physlearn.systems.bench.system import BenchSystem

ROOT = Path(__file__).resolve().parents[1]
XOR_BENCH = ROOT / "examples" / "bench-xor-bench.toml"
XOR_CALIBRATION = ROOT / "examples" / "bench-xor-calibration.json"
IRIS_BENCH = ROOT / "examples" / "bench-iris-bench.toml"
IRIS_CALIBRATION = ROOT / "examples" / "bench-iris-calibration.json"
TRUTH_DATE = "2025-01-01T00:00:00+00:00"


def truth_calibration(bench: EmulatedBench, created_utc: str = TRUTH_DATE) -> CalibrationFile:
    """The hidden truth of `bench` in the calibration file's schema (σ = 0)."""
    cfg = bench.config
    tr = bench.twin.truth
    spec = bench.twin.spec
    mass, stiffness, damping = (np.asarray(a, dtype=float) for a in spec.nodes.arrays()[:3])
    m = float(mass[0])
    w = cfg.wiring
    seen: set[int] = set()
    sensing = []
    for i, sw in enumerate(w.sense):
        sensing.append(
            SensingCal(
                node=sw.node,
                instrument=sw.instrument,
                channel=sw.channel,
                gain_v_per_unit=val(tr.sensing_gain_v_per_unit[i], 0.0, "V/unit"),
                offset_v=val(tr.sensing_offset_v[i], 0.0, "V"),
                delay_s=val(tr.sensing_delay_s[i], 0.0, "s"),
                reference=sw.node not in seen,
            )
        )
        seen.add(sw.node)
    nodes = []
    for n in range(spec.nodes.count):
        w2 = float(stiffness[n] / mass[n])
        nodes.append(
            NodeCal(
                node=n,
                f0_hz=val(math.sqrt(w2) / (2 * math.pi), 0.0, "Hz"),
                q=val(math.sqrt(w2) / damping[n] if damping[n] > 0 else math.inf, 0.0, ""),
                damping_per_s=val(damping[n], 0.0, "1/s"),
                omega2_per_s2=val(w2, 0.0, "1/s^2"),
            )
        )
    couplings = []
    for e, ew in enumerate(w.edges):
        lim = cfg.output_limits(ew.instrument).limit_for(ew.channel)
        couplings.append(
            CouplingMap(
                nodes=(ew.nodes[0], ew.nodes[1]),
                instrument=ew.instrument,
                channel=ew.channel,
                a=float(tr.map_offset[e]) / m,
                b=float(tr.map_span[e]) / m,
                c_v=float(tr.map_center_v[e]),
                w_v=float(tr.map_width_v[e]),
                cov=[[0.0] * 4 for _ in range(4)],
                v_min=lim.min_v,
                v_max=lim.max_v,
                mass_kg=m,
                chi2_per_dof=1.0,
                linear_kappa_per_s2=val(float(tr.map_offset[e]) / m, 0.0, "1/s^2"),
            )
        )
    return CalibrationFile(
        created_utc=created_utc,
        bench_name=cfg.name,
        bench_config_sha256=config_hash(cfg),
        instruments={n: Identity.parse(e.identity()) for n, e in bench.emulators.items()},
        drive_frequency_hz=spec.drive.omega_rad_s / (2 * math.pi),
        mass_kg=m,
        nonlinearity=str(spec.nonlinearity),
        steps={"truth": created_utc},
        actuators=[
            ActuatorCal(
                node=dw.node,
                instrument=dw.instrument,
                channel=dw.channel,
                gain_per_s2_per_v=val(tr.actuator_gain_n_per_v[j] / m, 0.0, "unit/s^2/V"),
                delay_s=val(tr.actuator_delay_s[j], 0.0, "s"),
            )
            for j, dw in enumerate(w.drives)
        ],
        sensing=sensing,
        nodes=nodes,
        couplings=couplings,
        notes=["EMULATOR ANSWER KEY: the emulated bench's hidden truth, not a measurement"],
    )


def controller_spec(bench: EmulatedBench) -> NetworkSpec:
    """The network as the experimenter designed it: the bench's nodes and couplings (the DAC-wired
    couplings trainable, the fixed spring not), a force input on node 0, the output node 1."""
    raw = bench.twin.spec.model_dump(mode="json")
    for c in raw["couplings"]:
        c["trainable"] = c["kind"] == "product"
    raw["inputs"] = {"nodes": [0], "mode": "force", "gain": 0.1}
    raw["outputs"] = {"nodes": [1], "target": {"kind": "inphase", "values": [0.0]}}
    return NetworkSpec.model_validate(raw)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The cosine of the angle between two gradients."""
    return float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))


def declared_options(bench: EmulatedBench) -> CalibrationOptions:
    """What an experimenter declares to the calibration pipeline (not identifiable from the
    bench: the mass, the reference sensors' gains and the delay gauge), read from the truth."""
    tr = bench.twin.truth
    return CalibrationOptions(
        mass_kg=float(bench.twin.model.mass[0]),
        reference_gain_v_per_unit=[float(g) for g in tr.sensing_gain_v_per_unit[:4]],
        reference_delay_s=float(tr.sensing_delay_s[0]),
        averages=4,
        coupling_averages=2,
        bias_points=7,
    )


def calibrate_blind(
    bench: EmulatedBench, res: Any, directory: Path, opts: CalibrationOptions
) -> CalibrationFile:
    """The whole calibration pipeline (`run_all`) on the served emulated bench, blind to the
    truth but for ``opts``; plots go to ``directory``."""

    async def run() -> CalibrationFile:
        async with open_bench(bench.config, res, TwinClock(bench.control)) as b:
            return await run_all(b, StepContext(directory, opts))

    return asyncio.run(run())


def noisy_bench_system(
    bench: EmulatedBench,
    cal: CalibrationFile,
    spec: NetworkSpec,
    res: Any,
    acquire_periods: int = 4,
) -> BenchSystem:
    """A `BenchSystem` on the served emulated bench with ``acquire_periods`` periods per
    acquisition and the noise-tolerant periodicity threshold of a noisy bench: on the smallest
    scope channel of examples/bench.toml the modelled noise is ~20 % of the swing, which the
    single-period harmonic-fit check would read as a non-periodic response. Non-periodicity is
    not under test where this is used."""
    return BenchSystem(
        bench.config,
        cal,
        spec,
        TwinClock(bench.control),
        BenchOptions(
            safety={"max_response": 1.0},
            settle={"periodic_residual": 0.5, "acquire_periods": acquire_periods},
        ),
        resources=res,
    )


if __name__ == "__main__":
    bench_file, cal_file = {
        "xor": (XOR_BENCH, XOR_CALIBRATION),
        "iris": (IRIS_BENCH, IRIS_CALIBRATION),
    }[sys.argv[1] if len(sys.argv) > 1 else "xor"]
    b = EmulatedBench.from_file(bench_file, virtual=True)
    truth_calibration(b).save(cal_file)
    print(f"wrote {cal_file}", file=sys.stderr)
