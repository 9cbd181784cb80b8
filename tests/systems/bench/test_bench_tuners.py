"""Node tuners on the emulated bench (issue 16): a DAC-tuned on-site spring per node
(`[[wiring.tuners]]`, examples/bench-tuners.toml) realises the network's trainable on-site
stiffness κ_j.

The emulated tuner follows its hidden nonideal curve κ(V) = κ0 + s (V − z) + q (V − z)²; the
`tuners` calibration step recovers s and q from the shift of each node's diagonal dynamic
stiffness (with the answer key for the sensing and actuator terms it builds on); the planner
refuses a κ outside the calibrated range before anything is written; the wiring and the layout
refuse a tuner without an on-site term and the reverse, naming them; and XOR trains three epochs
through `BenchSystem` (`physlearn train --arm`, in-memory emulated bench) with the couplings and
the tuners' κ trainable, its loss falling every epoch (measured, with the step's maps:
2.27e-5 → 2.20e-5, 2.12e-5, 2.08e-5, κ moving to ±0.009 N/m; accuracy stays 50 % in so few
epochs). Measured calibration (seed 20240611): slopes 0.0942/0.0973/0.1011 vs truth
0.0932/0.0982/0.1015 N/m/V, curvatures 0.0177/0.0153/0.0160 vs 0.0189/0.0185/0.0165 N/m/V²."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
from bench_system_helpers import truth_calibration

from physlearn.calibration import plots
from physlearn.calibration.assemble import assemble
from physlearn.calibration.bench import open_bench
from physlearn.calibration.context import StepContext
from physlearn.calibration.options import CalibrationOptions
from physlearn.calibration.schema import CalibrationFile, TunerMap
from physlearn.calibration.tuners import measure_tuners
from physlearn.cli import main
from physlearn.errors import ConfigError, LimitError
from physlearn.simulators.bench_twin import EmulatedBench, load_twin_config
from physlearn.spec.bench import BenchConfig
from physlearn.spec.clock import TwinClock
from physlearn.spec.network import NetworkSpec
from physlearn.spec.tomlconfig import read_toml
from physlearn.systems.bench.options import BenchOptions
from physlearn.systems.bench.planner import Planner

ROOT = Path(__file__).resolve().parents[3]
TUNER_BENCH = ROOT / "examples" / "bench-tuners.toml"
TUNED = (1, 2, 3)


def tuner_bench(seed: int = 20240611) -> EmulatedBench:
    config = BenchConfig.load(TUNER_BENCH)
    return EmulatedBench(
        config, load_twin_config(config, str(TUNER_BENCH)), virtual=True, seed=seed
    )


def truth_tuner_maps(bench: EmulatedBench, ref_v: float = 0.0) -> list[TunerMap]:
    """The tuners' hidden curves as calibrated maps relative to ``ref_v`` (the answer key)."""
    tr = bench.twin.truth
    out = []
    for i, t in enumerate(bench.config.wiring.tuners):
        s, q, z = (
            float(tr.tuner_slope_per_v[i]),
            float(tr.tuner_curvature_per_v2[i]),
            float(tr.tuner_zero_v[i]),
        )
        out.append(
            TunerMap(
                node=t.node,
                instrument=t.instrument,
                channel=t.channel,
                ref_v=ref_v,
                slope_per_v=s + 2.0 * q * (ref_v - z),
                curvature_per_v2=q,
                cov=[[0.0, 0.0], [0.0, 0.0]],
                v_min=-1.0,
                v_max=1.0,
                chi2_per_dof=1.0,
            )
        )
    return out


def designed(bench: EmulatedBench, kappa_bound: float = 0.04) -> NetworkSpec:
    """The tuner bench's network as designed for XOR: force inputs (u + 1) on nodes 0 and 1, the output
    node 3, the DAC-wired couplings and the tuned nodes' κ trainable."""
    raw = bench.twin.spec.model_dump(mode="json")
    for c in raw["couplings"]:
        c["trainable"] = c["kind"] == "product"
        if c["trainable"]:
            c["lower"], c["upper"] = c["value"] - 0.1, c["value"] + 0.1
    raw["onsite"] = [
        {"node": j, "value": 0.0, "lower": -kappa_bound, "upper": kappa_bound} for j in TUNED
    ]
    raw["inputs"] = {"nodes": [0, 1], "mode": "force", "gain": 0.05, "offset": 1.0}
    raw["outputs"] = {"nodes": [3], "target": {"kind": "inphase", "values": [0.0]}}
    return NetworkSpec.model_validate(raw)


def test_twin_tuner_realises_its_hidden_curve_on_the_node() -> None:
    bench = tuner_bench()
    try:
        twin, tr = bench.twin, bench.twin.truth
        e = len(bench.config.wiring.edges)
        volts = np.array([0.7, -0.4, 1.0])
        theta = twin.couplings_at(np.concatenate([np.zeros(e), volts]))
        for i, j in enumerate(TUNED):
            u = volts[i] - tr.tuner_zero_v[i]
            expected = tr.tuner_slope_per_v[i] * u + tr.tuner_curvature_per_v2[i] * u * u
            assert theta[twin._tuner_terms[i]] == pytest.approx(expected, rel=1e-12)
            assert twin.spec.terms()[twin._tuner_terms[i]][0].endswith(f":{j}")
        # the curve is not linear: the map the calibration fits must carry the curvature
        assert np.all(np.abs(tr.tuner_curvature_per_v2) > 0.1 * np.abs(tr.tuner_slope_per_v) / 2)
    finally:
        bench.stop()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tuner_calibration_recovers_the_curve_and_xor_trains_through_the_tuners(
    tmp_path: Path,
) -> None:
    bench = tuner_bench()
    res = bench.serve(memory_prefix="tuners-", control=False)
    cal0 = truth_calibration(bench)
    opts = CalibrationOptions(
        mass_kg=float(bench.twin.model.mass[0]), coupling_averages=2, tuner_points=5
    )
    try:

        async def calibrate() -> tuple[dict[str, Any], dict[str, Any], CalibrationFile]:
            async with open_bench(bench.config, res, TwinClock(bench.control)) as b:
                result, raw = await measure_tuners(b, cal0, opts)
                # the step's result as the pipeline keeps it, and the file assembled from it
                ctx = StepContext(tmp_path / "cal", opts)
                ctx.save("tuners", dict(result), raw)
                return result, raw, assemble(b, ctx)

        result, raw, assembled = asyncio.run(calibrate())
    finally:
        bench.stop()
    assembled.save(tmp_path / "cal" / "calibration.json")
    reread = CalibrationFile.read(tmp_path / "cal" / "calibration.json")
    assert reread.tuners == [TunerMap(**m) for m in result["maps"]]
    assert "tuners" in reread.steps
    plots.plot_tuners(
        tmp_path / "cal" / "tuners.png",
        raw["biases_v"],
        raw["kappa"],
        raw["kappa_sigma"],
        result["maps"],
    )
    assert (tmp_path / "cal" / "tuners.png").stat().st_size > 0
    maps = [TunerMap(**m) for m in result["maps"]]
    truth = truth_tuner_maps(bench)
    for m, t in zip(maps, truth, strict=True):
        print(
            f"node {m.node}: slope {m.slope_per_v:.5f} (truth {t.slope_per_v:.5f}), curvature "
            f"{m.curvature_per_v2:.5f} (truth {t.curvature_per_v2:.5f})"
        )
        assert m.slope_per_v == pytest.approx(t.slope_per_v, rel=0.03)
        assert m.curvature_per_v2 == pytest.approx(
            t.curvature_per_v2, abs=0.15 * abs(t.slope_per_v)
        )
        v = np.linspace(-1.0, 1.0, 9)
        np.testing.assert_allclose(m.alpha(v), t.alpha(v), atol=0.05 * abs(t.slope_per_v))
        np.testing.assert_allclose(m.alpha(m.volts(m.alpha(v))), m.alpha(v), atol=1e-12)
    assert np.all(np.isfinite(raw["kappa"]))

    # Train XOR for a few epochs through the tuners (a fresh bench of the same seed).
    cal = cal0.model_copy(update={"tuners": maps, "steps": {**cal0.steps, "tuners": "now"}})
    cal_path = tmp_path / "calibration.json"
    cal.save(cal_path)
    spec = designed(tuner_bench())
    cfg = {
        "network": {"spec": spec.model_dump(mode="json", exclude_none=True)},
        "data": {"name": "xor"},
        "targets": {"kind": "inphase", "on": 0.05, "off": 0.0},
        "estimator": {"name": "ep_symmetric", "beta": 0.1},
        "optimizer": {"name": "adam", "lr": 0.003},
        "training": {"epochs": 3, "batch_size": 4, "seed": 0},
        "system": {
            "kind": "bench",
            "points_per_period": 33,
            "bench": {
                "config": str(TUNER_BENCH),
                "calibration": str(cal_path),
                "twin_control": "memory",
                "options": {
                    "points_per_period": 33,
                    "calibration_max_age_days": 36500,
                    "safety": {"max_response": 1.0},
                    "settle": {"acquire_periods": 1},
                },
            },
        },
    }
    cfg_path = tmp_path / "train.toml"
    cfg_path.write_text(tomli_w.dumps(cfg))
    args = ["train", "--config", str(cfg_path), "--run-dir", str(tmp_path / "runs")]
    assert main([*args, "--name", "tuners", "--arm", "--quiet"]) == 0
    summary = json.loads((tmp_path / "runs" / "tuners" / "summary.json").read_text())
    metrics = [json.loads(x) for x in (tmp_path / "runs" / "tuners" / "metrics.jsonl").open()]
    names = summary["parameter_names"]
    final = np.asarray(summary["final_params"])
    kappa = final[[i for i, n in enumerate(names) if n.startswith("onsite")]]
    print("losses", summary["initial"]["train_loss"], [m["train_loss"] for m in metrics])
    print("kappa", kappa.tolist())
    assert summary["epochs_run"] == 3
    assert summary["level"] == "emulated-memory"
    assert np.all(np.abs(kappa) > 1e-4)  # every tuner was trained (they start at 0)
    losses = [summary["initial"]["train_loss"]] + [m["train_loss"] for m in metrics]
    assert all(b < a for a, b in itertools.pairwise(losses)), losses


def test_planner_refuses_kappa_outside_the_calibrated_range_before_writing() -> None:
    bench = tuner_bench()
    try:
        spec = designed(bench)
        cal = truth_calibration(bench).model_copy(update={"tuners": truth_tuner_maps(bench)})
        planner = Planner(
            bench.config.controller_view(),
            cal,
            spec,
            BenchOptions(safety={"max_response": 1.0}),
            "truth",
        )
        a = spec.initial_parameters()
        names = spec.parameter_names()
        p = names.index("onsite[0]:1")
        plan = planner.dac_plan(a)
        assert plan[("qdac", 5)] == pytest.approx(float(cal.tuners[0].volts(0.0)))
        lo, hi = cal.tuners[0].alpha_range()
        assert planner.alpha_lo[p] == pytest.approx(lo) and planner.alpha_hi[p] == pytest.approx(hi)
        a[p] = hi + 0.01
        with pytest.raises(LimitError, match=r"onsite\[0\]:1.*node tuner 1"):
            planner.dac_plan(a)
        # the output limits narrow the range: κ reachable only within [−0.5, 0.5] V
        data = read_toml(TUNER_BENCH)
        data["instruments"]["qdac"]["limits"]["channels"] = {"5": {"min_v": -0.5, "max_v": 0.5}}
        narrow = Planner(
            BenchConfig.model_validate(data).controller_view(),
            cal.model_copy(update={"bench_config_sha256": "x"}),
            spec,
            BenchOptions(safety={"max_response": 1.0}),
            "truth",
        )
        k_half = float(cal.tuners[0].alpha(0.5))
        assert narrow.alpha_hi[p] == pytest.approx(max(k_half, float(cal.tuners[0].alpha(-0.5))))
        assert narrow.alpha_hi[p] < hi
        a[p] = 0.5 * (narrow.alpha_hi[p] + hi)  # calibrated, but beyond the channel's limits
        with pytest.raises(LimitError, match="node tuner"):
            narrow.dac_plan(a)
    finally:
        bench.stop()


def test_tuner_map_round_trip_and_monotone_branch() -> None:
    m = TunerMap(
        node=1,
        instrument="qdac",
        channel=5,
        ref_v=0.1,
        slope_per_v=-0.05,
        curvature_per_v2=0.012,
        cov=[[0.0, 0.0], [0.0, 0.0]],
        v_min=-1.0,
        v_max=1.0,
        chi2_per_dof=1.0,
    )
    v = np.linspace(-1.0, 1.0, 21)
    np.testing.assert_allclose(m.volts(m.alpha(v)), v, atol=1e-12)
    assert m.alpha(0.1) == 0.0
    linear = m.model_copy(update={"curvature_per_v2": 0.0})
    np.testing.assert_allclose(linear.volts(linear.alpha(v)), v, atol=1e-12)
    with pytest.raises(Exception, match="outside the calibrated range"):
        m.volts(1.0)
    with pytest.raises(Exception, match="outside the calibrated range"):
        m.alpha(1.5)


def _bench_data() -> dict[str, Any]:
    data = read_toml(TUNER_BENCH)
    data.pop("twin")
    return data


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (
            lambda d: d["wiring"]["tuners"].append({"node": 1, "instrument": "qdac", "channel": 9}),
            "wiring.tuners[3].node: node 1 is already tuned by tuners[0]",
        ),
        (
            lambda d: d["wiring"]["tuners"][0].update(channel=1),
            "wiring.tuners[0]: qdac channel 1 is already used by wiring.edges[0]",
        ),
        (
            lambda d: d["wiring"]["tuners"][0].update(instrument="fgen"),
            "wiring.tuners[0].instrument: 'fgen' is a",
        ),
    ],
)
def test_tuner_wiring_refusals_name_the_field(mutate: Any, needle: str) -> None:
    data = _bench_data()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        from physlearn.spec.tomlconfig import validate

        validate(BenchConfig, data, "bench.toml")
    assert needle in str(info.value), str(info.value)


def test_layout_refuses_untuned_onsite_terms_and_unused_tuners() -> None:
    bench = tuner_bench()
    try:
        cal = truth_calibration(bench).model_copy(update={"tuners": truth_tuner_maps(bench)})
        cfg = bench.config.controller_view()
        opts = BenchOptions(safety={"max_response": 1.0})

        def planner(spec: NetworkSpec) -> Planner:
            return Planner(cfg, cal, spec, opts, "truth")

        data = designed(bench).model_dump()
        data["onsite"].append({"node": 0, "value": 0.0})
        with pytest.raises(ConfigError, match=r"onsite\[3\]:0 has no tuner on node 0"):
            planner(NetworkSpec.model_validate(data))
        data = designed(bench).model_dump()
        data["onsite"] = data["onsite"][:2]
        with pytest.raises(ConfigError, match=r"tuners of nodes \[3\] are not on-site terms"):
            planner(NetworkSpec.model_validate(data))
        data = designed(bench).model_dump()
        data["onsite"][1]["trainable"] = False
        with pytest.raises(ConfigError, match=r"onsite\[1\]:2: a bench sets on-site"):
            planner(NetworkSpec.model_validate(data))
        no_tuners = cal.model_copy(update={"tuners": []})
        with pytest.raises(Exception, match="calibrate tuners"):
            Planner(cfg, no_tuners, designed(bench), opts, "truth")
    finally:
        bench.stop()


def test_truth_draws_of_a_bench_without_tuners_are_unchanged() -> None:
    """Tuners are drawn last: the other devices of a seed are those drawn before tuners existed."""
    from physlearn.simulators.bench_truth import BenchTruth, TruthNominals

    nom = TruthNominals()
    a = BenchTruth.generate(nom, np.array([0.1, 0.2]), 2, 3, np.random.default_rng(5), 1)
    b = BenchTruth.generate(
        nom, np.array([0.1, 0.2]), 2, 3, np.random.default_rng(5), 1, np.zeros(2)
    )
    for f in ("map_offset", "actuator_gain_n_per_v", "sensing_gain_v_per_unit", "active_zero_v"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert a.tuner_slope_per_v.size == 0 and b.tuner_slope_per_v.size == 2
    assert math.isfinite(float(b.tuner_stiffness(np.array([0.3, -0.3]))[0]))
