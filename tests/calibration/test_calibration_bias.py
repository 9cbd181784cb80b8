"""Issue 5 acceptance 2: the estimator bias closes with the fitted calibration.

On the in-memory emulated reference bench (examples/bench.toml, its modelled noise: 2 mV scope
input noise, sensing drift) the calibration pipeline runs (`run_all`, routines blind to the
truth; the test declares the non-identifiable quantities — mass, reference-sensor gains, delay
gauge — as an experimenter would from the design and datasheets), then the ep_symmetric gradient
is measured through `BenchSystem`

* with the fitted calibration file: it agrees with the ideal twin (cosine ≥ 0.98 both to the ideal
  twin's ep_symmetric gradient — same estimator, exact physics, no instruments — and to its exact
  adjoint gradient);
* with a nominal, uncalibrated file (datasheet values: sensing 0.5 V/unit, no offsets or delays,
  actuator 0.6 N/V, α(V) = design value + 0.3 tanh(V/0.8 V)): it measurably does not (cosine
  below 0.98 and the error several times that of the fitted file).

Measured (seed 20240611, batch gradient of 2 samples, β = 0.05, 8 periods per acquisition):
fitted — cosine 0.992–0.997 to the ideal ep_symmetric, 0.984–0.986 to the exact gradient (the
ideal twin's own ep_symmetric is at 0.986: EP's damping bias at Q ≈ 7); nominal — 0.935–0.967
to the exact gradient. The spread is the noise realisation (three realisations, made by setting
`physlearn.systems.bench.settler._PREDICTION_CUSHION` to 1.02, 1.05 and 1.20: the controller's timing
alone changes which noise samples are read). With 4 periods per acquisition the cosine to
the exact gradient moved between 0.973 and 0.991 with the realisation — 0.98 leaves no room for
noise on top of EP's own 0.986 — so the acquisitions average 8 periods.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_system_helpers import noisy_bench_system

from physlearn.calibration.bench import open_bench
from physlearn.calibration.context import StepContext
from physlearn.calibration.options import CalibrationOptions
from physlearn.calibration.pipeline import run_all
from physlearn.calibration.schema import (
    ActuatorCal,
    CalibrationFile,
    CouplingMap,
    NodeCal,
    SensingCal,
    val,
)
from physlearn.estimators import make_estimator
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.simulators.bench_twin import EmulatedBench, load_twin_config
from physlearn.spec.bench import BenchConfig
from physlearn.spec.clock import TwinClock
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import PhysicalSystem
from physlearn.spec.task import Task
from physlearn.systems.bench.system import BenchSystem
from physlearn.systems.ideal import IdealSystem

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "bench.toml"
SEED = 20240611
_names = itertools.count()
U = np.array([[1.0], [0.5]])
TARGETS = np.array([[0.0], [0.1]])


def controller_spec(bench: EmulatedBench) -> NetworkSpec:
    """The network as the experimenter designed it: the bench's nodes and couplings (the DAC-wired
    couplings trainable, the fixed spring not), a force input on node 0, the output node 1."""
    raw = bench.twin.spec.model_dump(mode="json")
    for c in raw["couplings"]:
        c["trainable"] = c["kind"] == "product"
    raw["inputs"] = {"nodes": [0], "mode": "force", "gain": 0.1}
    raw["outputs"] = {"nodes": [1], "target": {"kind": "inphase", "values": [0.0]}}
    return NetworkSpec.model_validate(raw)


def nominal_calibration(fitted: CalibrationFile, spec: NetworkSpec) -> CalibrationFile:
    """What an uncalibrated controller would assume: datasheet and design values only."""
    m = fitted.mass_kg
    design = {(min(c.nodes), max(c.nodes)): c.value for c in spec.couplings if c.kind == "product"}
    return fitted.model_copy(
        update={
            "nodes": [
                NodeCal(
                    node=n.node,
                    f0_hz=n.f0_hz,
                    q=n.q,
                    damping_per_s=val(25.0, 0.0, "1/s"),
                    omega2_per_s2=n.omega2_per_s2,
                )
                for n in fitted.nodes
            ],
            "actuators": [
                ActuatorCal(
                    node=a.node,
                    instrument=a.instrument,
                    channel=a.channel,
                    gain_per_s2_per_v=val(0.6 / m, 0.0, "unit/s^2/V"),
                    delay_s=val(0.0, 0.0, "s"),
                )
                for a in fitted.actuators
            ],
            "sensing": [
                SensingCal(
                    node=s.node,
                    instrument=s.instrument,
                    channel=s.channel,
                    gain_v_per_unit=val(0.5, 0.0, "V/unit"),
                    offset_v=val(0.0, 0.0, "V"),
                    delay_s=val(0.0, 0.0, "s"),
                    reference=s.reference,
                )
                for s in fitted.sensing
            ],
            "couplings": [
                CouplingMap(
                    nodes=c.nodes,
                    instrument=c.instrument,
                    channel=c.channel,
                    a=design[(min(c.nodes), max(c.nodes))] / m,
                    b=0.3 / m,
                    c_v=0.0,
                    w_v=0.8,
                    cov=[[0.0] * 4 for _ in range(4)],
                    v_min=c.v_min,
                    v_max=c.v_max,
                    mass_kg=m,
                    chi2_per_dof=1.0,
                    linear_kappa_per_s2=val(design[(min(c.nodes), max(c.nodes))] / m, 0.0, ""),
                )
                for c in fitted.couplings
            ],
        }
    )


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()) / np.linalg.norm(a) / np.linalg.norm(b))


async def ep_gradient(system: PhysicalSystem, spec: NetworkSpec, name: str) -> np.ndarray:
    kw: dict[str, Any] = {"beta": 0.05} if name == "ep_symmetric" else {}
    est = make_estimator(name, ModelKnowledge.from_spec(spec), **kw)
    task = Task.from_spec(spec, TARGETS)
    g = await est.estimate(system, spec.initial_parameters(), U, task)
    return np.asarray(g.grad, dtype=float).mean(axis=0)  # the batch gradient an update uses


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    config = BenchConfig.load(EXAMPLE)
    bench = EmulatedBench(config, load_twin_config(config, str(EXAMPLE)), virtual=True, seed=SEED)
    res = bench.serve(memory_prefix=f"calbias{next(_names)}-", control=False)
    tr = bench.twin.truth
    # declared (not identifiable): the design mass, the reference sensors' datasheet gains and
    # the delay gauge; everything else is measured by the routines
    opts = CalibrationOptions(
        mass_kg=float(bench.twin.model.mass[0]),
        reference_gain_v_per_unit=[float(g) for g in tr.sensing_gain_v_per_unit[:4]],
        reference_delay_s=float(tr.sensing_delay_s[0]),
        averages=4,
        coupling_averages=2,
        bias_points=7,
    )
    ctx = StepContext(tmp_path_factory.mktemp("calbias"), opts)
    spec = controller_spec(bench)
    out: dict[str, Any] = {"spec": spec}
    try:

        async def calibrate() -> CalibrationFile:
            async with open_bench(bench.config, res, TwinClock(bench.control)) as b:
                return await run_all(b, ctx)

        fitted = asyncio.run(calibrate())
        out["fitted"] = fitted
        for label, cal in (("fitted", fitted), ("nominal", nominal_calibration(fitted, spec))):
            sysb = noisy_bench_system(bench, cal, spec, res, acquire_periods=8)

            async def run(s: BenchSystem = sysb) -> np.ndarray:
                try:
                    await s.connect()
                    await s.arm()
                    return await ep_gradient(s, spec, "ep_symmetric")
                finally:
                    await s.close()

            out[label] = asyncio.run(run())
    finally:
        bench.stop()
    out["ideal_ep"] = asyncio.run(
        ep_gradient(IdealSystem(spec, 33, cache_size=0), spec, "ep_symmetric")
    )
    out["exact"] = asyncio.run(ep_gradient(IdealSystem(spec, 33, cache_size=0), spec, "adjoint"))
    return out


def test_fitted_calibration_closes_the_bias_nominal_does_not(measured: dict[str, Any]) -> None:
    ideal, exact = measured["ideal_ep"], measured["exact"]
    fit, nom = measured["fitted"], measured["nominal"]
    rel = {
        k: float(np.linalg.norm(g - ideal) / np.linalg.norm(ideal))
        for k, g in (("fit", fit), ("nom", nom))
    }
    cos = {
        "fit/ideal_ep": cosine(fit, ideal),
        "nom/ideal_ep": cosine(nom, ideal),
        "fit/exact": cosine(fit, exact),
        "nom/exact": cosine(nom, exact),
        "ideal_ep/exact": cosine(ideal, exact),
    }
    print("cosines", {k: round(v, 4) for k, v in cos.items()}, "relative errors", rel)
    assert cos["fit/ideal_ep"] >= 0.98 and cos["fit/exact"] >= 0.98
    # The nominal map measurably does not agree. Its errors are mostly common gain factors,
    # which scale the gradient more than they turn it (its cosine can stay near 1), so the
    # disagreement is asserted on the relative error, which sees both.
    assert rel["nom"] > 0.2
    assert rel["nom"] > 3 * rel["fit"]
    assert math.isfinite(rel["fit"])
