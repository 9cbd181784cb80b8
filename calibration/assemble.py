"""The calibration file from the completed steps' results (`<step>.json`): the couplings step's
joint fit, when it has run, supersedes the resonance fit's node, actuator and sensing terms."""

from __future__ import annotations

from typing import Any

from physlearn.calibration.bench import CalibrationBench, config_hash
from physlearn.calibration.context import STEPS, StepContext
from physlearn.calibration.schema import (
    ActiveMap,
    ActuatorCal,
    CalibrationFile,
    CouplingMap,
    DacChannelCal,
    Identity,
    NodeCal,
    SensingCal,
    TunerMap,
    utc_now,
    val,
)
from physlearn.spec.bench import BenchConfig


def assemble(bench: CalibrationBench, ctx: StepContext) -> CalibrationFile:
    """The calibration file from every completed step's result."""
    cfg = bench.config
    opts = ctx.opts
    m_kg = opts.mass_kg
    steps = {s: ctx.load(s)["completed_utc"] for s in STEPS if ctx.done(s)}
    cal = CalibrationFile(
        created_utc=utc_now(),
        bench_name=cfg.name,
        bench_config_sha256=config_hash(cfg),
        instruments={n: Identity.parse(i) for n, i in bench.identities().items()},
        mass_kg=m_kg,
        nonlinearity=opts.nonlinearity,
        steps=steps,
        notes=[
            f"node coordinate defined by each node's reference scope path with declared gain "
            f"{opts.reference_gain_v_per_unit} V/unit; delay gauge: sense path 0 has "
            f"{opts.reference_delay_s} s; mass declared {m_kg} kg"
        ],
    )
    if "dac" in steps:
        _add_dac(cal, ctx)
    # the couplings step's joint fit (all biases, the lock-in sweep) supersedes the resonance
    # fit's node, actuator and sensing terms
    joint = ctx.load("couplings").get("joint") if "couplings" in steps else None
    if "resonance" in steps:
        _add_nodes(cal, ctx, joint)
    if "actuators" in steps:
        _add_actuators(cal, ctx, cfg, joint)
    if "sensing" in steps:
        _add_sensing(cal, ctx, cfg, joint)
    if "couplings" in steps:
        _add_couplings(cal, ctx, m_kg)
    if "active" in steps:
        for mp in ctx.load("active")["maps"]:
            tau, tau_sigma = mp["delay_s"]
            cal.active.append(ActiveMap(**{**mp, "delay_s": val(tau, tau_sigma, "s")}))
    if "tuners" in steps:
        cal.tuners.extend(TunerMap(**mp) for mp in ctx.load("tuners")["maps"])
    return cal


def _add_dac(cal: CalibrationFile, ctx: StepContext) -> None:
    for c in ctx.load("dac")["channels"]:
        cal.dac.append(
            DacChannelCal(
                instrument=c["instrument"],
                channel=c["channel"],
                offset_v=val(*c["offset_v"], "V"),
                gain=val(*c["gain"], "V/V"),
                max_nonlinearity_v=c["max_nonlinearity_v"],
                method=c["method"],
            )
        )


def _add_nodes(cal: CalibrationFile, ctx: StepContext, joint: dict[str, Any] | None) -> None:
    for n in ctx.load("resonance")["nodes"] if joint is None else joint["nodes"]:
        cal.nodes.append(
            NodeCal(
                node=n["node"],
                f0_hz=val(*n["f0_hz"], "Hz"),
                q=val(*n["q"], ""),
                damping_per_s=val(*n["damping_per_s"], "1/s"),
                omega2_per_s2=val(*n["omega2_per_s2"], "1/s^2"),
            )
        )


def _add_actuators(
    cal: CalibrationFile, ctx: StepContext, cfg: BenchConfig, joint: dict[str, Any] | None
) -> None:
    for a in ctx.load("actuators")["drives"] if joint is None else joint["drives"]:
        dw = cfg.wiring.drives[a["drive"]]
        cal.actuators.append(
            ActuatorCal(
                node=dw.node,
                instrument=dw.instrument,
                channel=dw.channel,
                gain_per_s2_per_v=val(*a["gain"], "unit/s^2/V"),
                delay_s=val(*a["delay"], "s"),
            )
        )


def _add_sensing(
    cal: CalibrationFile, ctx: StepContext, cfg: BenchConfig, joint: dict[str, Any] | None
) -> None:
    for s in ctx.load("sensing")["paths"]:
        if joint is not None and str(s["path"]) in joint["paths"]:
            js = joint["paths"][str(s["path"])]
            s = {
                **s,
                "gain": js["gain"] if not s["reference"] else s["gain"],
                "delay": js["delay"],
                "phase": js["phase"] if s["phase"] is not None else None,
            }
        sw = cfg.wiring.sense[s["path"]]
        cal.sensing.append(
            SensingCal(
                node=sw.node,
                instrument=sw.instrument,
                channel=sw.channel,
                gain_v_per_unit=val(*s["gain"], "V/unit"),
                offset_v=val(*s["offset"], "V"),
                delay_s=val(*s["delay"], "s"),
                phase_rad=None if s["phase"] is None else val(*s["phase"], "rad"),
                reference=bool(s["reference"]),
            )
        )


def _add_couplings(cal: CalibrationFile, ctx: StepContext, m_kg: float) -> None:
    cp = ctx.load("couplings")
    res = ctx.load("resonance")["fit"]
    for mp in cp["maps"]:
        a, b, c, w = mp["params"]
        ka, kb = sorted(mp["nodes"])
        cal.couplings.append(
            CouplingMap(
                nodes=(mp["nodes"][0], mp["nodes"][1]),
                instrument=mp["instrument"],
                channel=mp["channel"],
                a=a,
                b=b,
                c_v=c,
                w_v=w,
                cov=mp["cov"],
                v_min=cp["v_min"],
                v_max=cp["v_max"],
                mass_kg=m_kg,
                chi2_per_dof=mp["chi2_per_dof"],
                linear_kappa_per_s2=val(
                    res["kappa"][ka][kb], res["sigma"]["kappa"][ka][kb], "1/s^2"
                ),
            )
        )
    cal.fixed_couplings_per_s2 = {k: val(*v, "1/s^2") for k, v in cp["fixed"].items()}
