"""Fidelity map of the gradient estimators (issue 3, acceptance 4).

Every estimator against the exact adjoint on ensemble networks of the twin
(`physlearn.simulators.ensemble.random_network`), over

  A. damping Γ·T from 0 to 1, off resonance and near resonance (tanh networks);
  B. detuning of the drive from a mode, in linewidths Γ, at Q ≈ 20 (Γ·T = 0.3), for a linear and
     a tanh network;
  C. the dimensionless β (peak nudge force / peak drive force), conservative and lossy;

next to the exact bias of plain EP, −(∂R/∂α)ᵀ(J⁻¹ − J⁻ᵀ)∂C/∂x (`PeriodicSensitivity.ep_bias`):
the column "EP limit" is the β → 0 limit of ep_symmetric predicted by that formula. Figures
compare the batch-mean gradient (what a mini-batch step uses): cosine and relative error
‖ĝ − g‖/‖g‖. Also the steady-state experiments per gradient and sample against finite
differences for P ∈ {10, 100, 1000}.

    python benchmarks/fidelity_map.py [--quick] [--out docs] [--workers 2 | --scheduler ADDR]

Every (panel, network, x) is a point of a sweep (physlearn.sweeps): one process by default, a
Dask LocalCluster with ``--workers N``, an existing cluster with ``--scheduler tcp://HOST:PORT``;
the tables and figures do not depend on where the points ran.

writes docs/fidelity.md and docs/fidelity.png and prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from physlearn.errors import SolverError
from physlearn.estimators import make_estimator
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.simulators.ensemble import random_network
from physlearn.simulators.problem import PeriodicProblem
from physlearn.spec.model import linear_mode_frequencies
from physlearn.spec.network import NetworkSpec
from physlearn.spec.task import Task
from physlearn.systems.ideal import IdealSystem

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the sibling helper below
import doc_sections  # noqa: E402

ESTIMATORS = (
    "ep_symmetric",
    "ep_one_sided",
    "ep_time_reversed",
    "ep_echo",
    "finite_difference",
    "spsa",
)
EP = ("ep_symmetric", "ep_one_sided", "ep_time_reversed", "ep_echo")
BATCH = 4
SPSA_DRAWS = 10
BETA = 1e-3
AMPLITUDE = [0.3]  # peak |x| of the nominal free orbit (set from --amplitude)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ------------------------------------------------------------------------------- networks
def with_changes(
    spec: NetworkSpec, damping: float | None = None, omega: float | None = None
) -> NetworkSpec:
    data = spec.model_dump()
    if damping is not None:
        data["nodes"]["damping"] = damping
    if omega is not None:
        data["drive"]["omega_rad_s"] = omega
    return NetworkSpec.model_validate(data)


def _with_gain(spec: NetworkSpec, gain: float) -> NetworkSpec:
    data = spec.model_dump()
    data["inputs"]["gain"] = gain
    return NetworkSpec.model_validate(data)


def scale_to_amplitude(spec: NetworkSpec, amplitude: float) -> NetworkSpec | None:
    """Rescale the input gain so that the oscillating part of the nominal input's free orbit
    (x minus its time average: the biases add a static offset) peaks at ``amplitude``
    (continuation in the gain with warm starts; None if no such orbit is found)."""
    gain, x0, sol = spec.inputs.gain, None, None
    for _ in range(12):  # find a gain that converges
        try:
            sol = PeriodicProblem.from_spec(_with_gain(spec, gain), 65).solve(floquet="none")
            break
        except SolverError:
            gain *= 0.5
    if sol is None:
        return None
    for _ in range(20):
        peak = float(np.max(np.abs(sol.x - sol.x.mean(axis=1, keepdims=True))))
        if abs(peak - amplitude) < 1e-3 * amplitude:
            return _with_gain(spec, gain)
        ratio = float(np.clip(amplitude / peak, 0.5, 2.0))
        x0 = sol.x * ratio
        for _ in range(6):
            try:
                sol = PeriodicProblem.from_spec(_with_gain(spec, gain * ratio), 65).solve(
                    x0=x0, floquet="none"
                )
                gain *= ratio
                break
            except SolverError:
                ratio = 1.0 + 0.5 * (ratio - 1.0)
        else:
            return None
    return None


def nearest_mode(spec: NetworkSpec, omega: float = 1.0) -> float:
    modes = linear_mode_frequencies(spec)
    return float(modes[np.argmin(np.abs(modes - omega))])


def base_networks(seed: int) -> dict[str, NetworkSpec]:
    """Off resonance (k ∈ [2, 3]) and near resonance (k ∈ [0.8, 1.3]; the first draw whose mode
    nearest ω lies 2–5 % from it, so that the sweep in Γ spans ~1 to ~10 linewidths of detuning
    without the amplitude-dependent tanh detuning folding the response) tanh networks, and a
    linear network near resonance; 6 nodes, product couplings (21 parameters)."""
    off = random_network(6, np.random.default_rng(seed), damping=0.0)
    rng = np.random.default_rng(seed + 1)
    for _ in range(50):
        near = random_network(6, rng, damping=0.05, resonant=True)
        if 0.02 <= abs(nearest_mode(near) - 1.0) <= 0.05:
            break
    lin = random_network(
        6, np.random.default_rng(seed + 2), damping=0.05, resonant=True, nonlinearity="identity"
    )
    return {"off resonance": off, "near resonance": near, "linear": lin}


# ------------------------------------------------------------------------------- one point
@dataclass
class Point:
    label: str
    x: float
    cos: dict[str, float] = field(default_factory=dict)
    err: dict[str, float] = field(default_factory=dict)
    experiments: dict[str, int] = field(default_factory=dict)
    note: str = ""


def evaluate(
    spec: NetworkSpec | None,
    label: str,
    x: float,
    names: tuple[str, ...],
    seed: int,
    beta: float = BETA,
) -> Point:
    """Every estimator in ``names`` and the bias formula against the adjoint, at one network."""
    if spec is None:
        return Point(label, x, note="no orbit at the requested amplitude")
    rng = np.random.default_rng(seed)
    u = rng.uniform(0.5, 1.0, (BATCH, len(spec.inputs.nodes)))
    y = rng.uniform(-0.5, 0.5, (BATCH, len(spec.outputs.nodes)))
    task = Task.from_spec(spec, values=y)
    knowledge = ModelKnowledge.from_spec(spec)
    # Echo phases by Newton from the echo orbit (fast; the integration from the free state, as a
    # bench settles, is exercised by tests/estimators/test_ep_echo.py).
    system = IdealSystem(spec, floquet="free", echo_settle="newton")
    alpha = spec.initial_parameters()
    pt = Point(label, x)
    try:
        sens = system.sensitivity(alpha, u, task)  # the free orbit, stability checked
    except SolverError as exc:
        pt.note = f"no stable free orbit ({type(exc).__name__})"
        return pt
    system.floquet = "none"  # nudged/perturbed phases: the free orbit was checked
    g = sens.adjoint_gradient().mean(axis=0)
    limit = g + sens.ep_bias().mean(axis=0)
    pt.cos["EP limit (formula)"] = cosine(limit, g)
    pt.err["EP limit (formula)"] = rel_err(limit, g)
    for name in names:
        cfg: dict[str, Any] = {}
        if name in EP:
            cfg["beta"] = beta
        if name == "spsa":
            cfg = {"n_draws": SPSA_DRAWS, "rng": np.random.default_rng(seed + 99)}
        est = make_estimator(name, knowledge, **cfg)
        try:
            res = asyncio.run(est.estimate(system, alpha, u, task))
        except SolverError as exc:
            pt.note += f"{name}: {type(exc).__name__}; "
            continue
        gm = res.grad.mean(axis=0)
        pt.cos[name] = cosine(gm, g)
        pt.err[name] = rel_err(gm, g)
        pt.experiments[name] = res.experiments // BATCH
    return pt


# ------------------------------------------------------------------------------- sweeps
# Every (panel, regime, x) is one point of a sweep (physlearn.sweeps): `fidelity_point` runs on
# whichever worker (or serially, --workers 1), and the panels are put back together in order.


def fidelity_point(
    panel: str, regime: str, label: str, x: float, spec: NetworkSpec, seed: int, amplitude: float
) -> dict[str, Any]:
    """One point of panel A (damping Γ·T = x), B (detuning x linewidths at Γ·T = 0.3) or C
    (β = x) at the ``regime`` network ``spec``: the spec rescaled to ``amplitude``, every
    estimator evaluated; the `Point` flattened to scalars (``cos:NAME``, ``err:NAME``,
    ``exp:NAME``, ``note``)."""
    AMPLITUDE[0] = amplitude
    if panel == "A":
        s = scale_to_amplitude(with_changes(spec, damping=x / spec.period_s), amplitude)
        pt = evaluate(s, label, x, ESTIMATORS, seed)
    elif panel == "B":
        w0 = nearest_mode(spec)
        gamma = 0.3 * w0 / (2 * math.pi)  # Γ·T = 0.3 at ω = ω_mode
        s = scale_to_amplitude(with_changes(spec, damping=gamma, omega=w0 + x * gamma), amplitude)
        pt = evaluate(s, label, x, ESTIMATORS, seed)
    else:
        gt = 0.0 if regime == "off resonance" else 0.3
        s = scale_to_amplitude(with_changes(spec, damping=gt / spec.period_s), amplitude)
        pt = evaluate(s, label, x, EP, seed, beta=x)
    out: dict[str, Any] = {"note": pt.note}
    out.update({f"cos:{k}": v for k, v in pt.cos.items()})
    out.update({f"err:{k}": v for k, v in pt.err.items()})
    out.update({f"exp:{k}": v for k, v in pt.experiments.items()})
    return out


def point_of(label: str, x: float, metrics: dict[str, Any]) -> Point:
    pt = Point(label, x, note=str(metrics.get("note") or ""))
    for key, v in metrics.items():
        kind, _, name = key.partition(":")
        if kind == "cos":
            pt.cos[name] = v
        elif kind == "err":
            pt.err[name] = v
        elif kind == "exp":
            pt.experiments[name] = int(v)
    return pt


def grid(
    nets: dict[str, NetworkSpec], gts: list[float], dets: list[float], betas: list[float]
) -> list[tuple[str, str, str, float]]:
    """(panel, regime, label, x) of every point, in the tables' order."""
    out = [("A", r, r, gt) for r in ("off resonance", "near resonance") for gt in gts]
    out += [("B", r, r, d) for r in ("linear", "near resonance") for d in dets]
    cases = (
        ("off resonance, Γ·T = 0", "off resonance"),
        ("near resonance, Γ·T = 0.3", "near resonance"),
    )
    out += [("C", r, label, b) for label, r in cases for b in betas]
    return out


def run_points(
    nets: dict[str, NetworkSpec],
    points: list[tuple[str, str, str, float]],
    args: argparse.Namespace,
) -> tuple[list[Point], list[Point], list[Point]]:
    """Every point through the sweep machinery: one process (``--workers 1``), a Dask
    LocalCluster or ``--scheduler``; records in ``--sweep-root`` (a finished point is not
    run again) or a temporary folder. The panels A, B, C in order."""
    import cloudpickle

    from physlearn.sweeps import Task, open_executor, run_tasks

    if __name__ != "__main__":  # imported (tests): the workers cannot import this script
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    tasks = [
        Task(
            f"{panel}-{_slug(label)}-{x:g}",
            fidelity_point,
            {
                "panel": panel,
                "regime": regime,
                "label": label,
                "x": x,
                "spec": nets[regime],
                "seed": args.seed,
                "amplitude": AMPLITUDE[0],
            },
            labels={"panel": panel, "regime": label, "x": x},
        )
        for panel, regime, label, x in points
    ]
    root = args.sweep_root or Path(tempfile.mkdtemp(prefix="fidelity-sweep-"))
    scheduler = args.scheduler or ("serial" if args.workers == 1 else None)
    with open_executor(scheduler, args.workers) as ex:
        records = run_tasks(tasks, ex, root, title="Fidelity map points")
    failed = [r for r in records if r.status != "done"]
    if failed:
        raise SystemExit(f"fidelity_map: {len(failed)} points failed: {failed[0].error}")
    pts = [point_of(lab, x, r.metrics) for (_, _, lab, x), r in zip(points, records, strict=True)]
    panel = [p for p, *_ in points]
    a, b, c = ([pt for pt, k in zip(pts, panel, strict=True) if k == c] for c in "ABC")
    return a, b, c


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def experiments_table(points: list[Point]) -> list[tuple[str, str, list[int]]]:
    """Steady states per gradient and sample; the measured counts (from the sweeps, at the
    benchmark networks' P) must match the formulas used for P ∈ {10, 100, 1000}."""
    formulas = {
        "ep_symmetric": ("3", lambda p: 3),
        "ep_one_sided": ("2", lambda p: 2),
        "ep_time_reversed": ("3", lambda p: 3),
        "ep_echo": ("4", lambda p: 4),
        "spsa": (f"2·n_draws (n_draws = {SPSA_DRAWS})", lambda p: 2 * SPSA_DRAWS),
        "finite_difference": ("2P + 1", lambda p: 2 * p + 1),
        "adjoint (twin only)": ("1", lambda p: 1),
    }
    return [(n, f, [fn(p) for p in (10, 100, 1000)]) for n, (f, fn) in formulas.items()]


# ------------------------------------------------------------------------------- output
def fmt_table(points: list[Point], xname: str, cols: tuple[str, ...]) -> str:
    head = f"| regime | {xname} | " + " | ".join(f"{c} cos / rel. err" for c in cols) + " |"
    sep = "|---|---:|" + "---|" * len(cols)
    rows = [head, sep]
    for p in points:
        cells = []
        for c in cols:
            if c in p.cos:
                cells.append(f"{p.cos[c]:.4f} / {p.err[c]:.1e}")
            else:
                cells.append("—")
        note = f" ({p.note.strip('; ')})" if p.note else ""
        rows.append(f"| {p.label}{note} | {p.x:g} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _legend_below(ax: Any) -> None:
    """The panel's legend under its axes, never over its curves."""
    ax.legend(fontsize=6, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.12))


def plot(
    damp: list[Point],
    det: list[Point],
    beta: list[Point],
    exp_rows: list[tuple[str, str, list[int]]],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 13), layout="constrained")
    styles = {"off resonance": "-", "near resonance": "--", "linear": ":"}
    colors = {
        "ep_symmetric": "C0",
        "ep_one_sided": "C1",
        "ep_time_reversed": "C2",
        "ep_echo": "C6",
        "finite_difference": "C3",
        "spsa": "C4",
        "EP limit (formula)": "k",
    }

    def curves(ax: Any, pts: list[Point], keys: tuple[str, ...], what: str) -> None:
        for regime in dict.fromkeys(p.label for p in pts):
            sub = [p for p in pts if p.label == regime]
            for k in keys:
                xs = [p.x for p in sub if k in p.cos]
                ys = [(p.cos if what == "cos" else p.err)[k] for p in sub if k in p.cos]
                if xs:
                    marker = "x" if k == "EP limit (formula)" else "o"
                    ax.plot(
                        xs,
                        ys,
                        styles.get(regime, "-."),
                        color=colors[k],
                        marker=marker,
                        ms=4,
                        label=f"{k} — {regime}",
                    )

    keys = (*ESTIMATORS, "EP limit (formula)")
    ax = axes[0, 0]
    curves(ax, damp, keys, "cos")
    ax.set(
        xlabel="Γ·T",
        ylabel="cosine with adjoint",
        title=f"A. damping (tanh, peak |x − x̄| = {AMPLITUDE[0]:g})",
    )
    ax.set_ylim(-1.05, 1.05)
    _legend_below(ax)
    ax = axes[0, 1]
    curves(ax, det, keys, "cos")
    ax.set(
        xlabel="detuning (ω − ω_mode)/Γ",
        ylabel="cosine with adjoint",
        title="B. detuning at Q ≈ 20 (Γ·T = 0.3)",
    )
    ax.set_ylim(-1.05, 1.05)
    _legend_below(ax)
    ax = axes[1, 0]
    curves(ax, beta, (*EP, "EP limit (formula)"), "err")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="β (peak nudge / peak drive)",
        ylabel="relative error",
        title="C. nudge strength β",
    )
    _legend_below(ax)
    ax = axes[1, 1]
    ps = np.array([10, 100, 1000])
    for name, _, counts in exp_rows:
        ax.plot(ps, counts, marker="o", color=colors.get(name, "C5"), label=name)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="parameters P",
        ylabel="steady states per gradient and sample",
        title="D. experiments per gradient",
    )
    _legend_below(ax)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def headline(damp: list[Point], det: list[Point], beta: list[Point]) -> list[str]:
    lines = []

    def worst(pts: list[Point], k: str) -> tuple[float, float]:
        c = [p.cos[k] for p in pts if k in p.cos]
        return (min(c), max(p.err[k] for p in pts if k in p.err)) if c else (math.nan, math.nan)

    allp = damp + det
    for k in (*ESTIMATORS, "EP limit (formula)"):
        c, e = worst(allp, k)
        lines.append(
            f"- {k}: worst cosine {c:.4f}, worst relative error {e:.1e} over sweeps A and B"
        )
    lin = [p for p in det if p.label == "linear"]
    c, e = worst(lin, "ep_time_reversed")
    lines.append(
        f"- ep_time_reversed on the linear network (every detuning): worst rel. error {e:.1e}"
    )
    sym = [(p.x, p.err.get("ep_symmetric", math.nan)) for p in beta if p.label.startswith("off")]
    lines.append(
        "- ep_symmetric, conservative: rel. error "
        + ", ".join(f"{e:.1e} at β = {b:g}" for b, e in sym)
    )
    fdp = [p for p in damp if p.experiments.get("finite_difference")]
    if fdp:
        P = (fdp[0].experiments["finite_difference"] - 1) // 2
        lines.append(
            f"- at P = {P}: EP 3 steady states per sample, finite differences {2 * P + 1}, "
            f"SPSA {2 * SPSA_DRAWS} (n_draws = {SPSA_DRAWS})"
        )
    return lines


#: everything after this line of docs/fidelity.md belongs to other benchmarks and is kept
KEEP_MARK = "<!-- kept: sections below are written by other benchmarks -->"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="a small run (coarse sweeps)")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for fidelity.md/.png (default docs/, not with --quick)",
    )
    ap.add_argument("--seed", type=int, default=20240)
    ap.add_argument(
        "--workers", type=int, default=1, help="Dask LocalCluster processes (1: one process)"
    )
    ap.add_argument("--scheduler", default=None, help="tcp://HOST:PORT of a Dask cluster")
    ap.add_argument(
        "--sweep-root",
        type=Path,
        default=None,
        help="keep the points' records here (a rerun skips finished points)",
    )
    ap.add_argument(
        "--amplitude",
        type=float,
        default=0.3,
        help="peak oscillation |x − mean x| of the free orbit",
    )
    args = ap.parse_args()
    AMPLITUDE[0] = args.amplitude
    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    if args.quick:
        gts = [0.0, 0.1, 1.0]
        dets = [-2.0, 0.0, 2.0]
        betas = [1e-3, 1e-2, 1e-1]
    else:
        gts = [0.0, 0.01, 0.03, 0.1, 0.3, 0.6, 1.0]
        dets = [-8.0, -4.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
        betas = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3]
    nets = base_networks(args.seed)
    damp, det, beta = run_points(nets, grid(nets, gts, dets, betas), args)
    exp_rows = experiments_table(damp)
    out = doc_sections.docs_target(args.out, ROOT / "docs", args.quick)
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="fidelity-quick-"))
        print(f"quick run: fidelity.md and fidelity.png in {out} (docs/ untouched)")
    out.mkdir(parents=True, exist_ok=True)
    plot(damp, det, beta, exp_rows, out / "fidelity.png")
    wall = time.perf_counter() - t0
    cols = (*ESTIMATORS, "EP limit (formula)")
    P = nets["off resonance"].initial_parameters().size
    exp_md = "\n".join(
        ["| estimator | per sample | P = 10 | P = 100 | P = 1000 |", "|---|---|---:|---:|---:|"]
        + [f"| {n} | {f} | {c[0]} | {c[1]} | {c[2]} |" for n, f, c in exp_rows]
    )
    measured = {k: v for p in damp for k, v in p.experiments.items()}
    md = f"""# Gradient-estimator fidelity map

Generated by `python benchmarks/fidelity_map.py{" --quick" if args.quick else ""}` (seed {args.seed},
{wall:.0f} s wall). Reference: the exact adjoint gradient of the periodic steady-state cost.
Figures compare the batch-mean gradient over {BATCH} samples (inputs ~ U[0.5, 1], in-phase targets
~ U[−0.5, 0.5]): cosine and relative error ‖ĝ − g‖/‖g‖. β = {BETA:g} (dimensionless: peak nudge force
/ peak drive force; +β pushes the outputs away from their targets) unless swept. SPSA averages
{SPSA_DRAWS} draws; finite differences use relative step 1e-3 (floor 0.1). ep_echo's echo phases are
solved by Newton here (`echo_settle = "newton"`); tests/estimators/test_ep_echo.py checks the same accuracy
with the echo reached by integration from the free state.

Networks (`random_network`, 6 nodes, product couplings + biases, P = {P}, m = 1): *off resonance*
(k ∈ [2, 3], drive ω = 1 rad/s), *near resonance* (k ∈ [0.8, 1.3], nearest mode {nearest_mode(nets["near resonance"]):.3f} rad/s; tanh), and
*linear* (ρ = identity, k ∈ [0.8, 1.3]). Every point rescales the input gain so that the nominal
input's free orbit oscillates with peak |x − x̄| = {AMPLITUDE[0]:g} around its static offset (tanh(0.3) is 3 % below linear, tanh(1) 24 %). Only stable free orbits
are used (Floquet multipliers checked). "EP limit (formula)" is adjoint + the exact bias
−(∂R/∂α)ᵀ(J⁻¹ − J⁻ᵀ)∂C/∂x, i.e. ep_symmetric's β → 0 limit predicted by docs/physics.md.

![fidelity map](fidelity.png)

## Headline

{chr(10).join(headline(damp, det, beta))}

## A. Damping (Γ·T from 0 to 1)

{fmt_table(damp, "Γ·T", cols)}

## B. Detuning (in linewidths Γ, Γ·T = 0.3 at the mode, Q ≈ 20)

Drive ω = ω_mode + detuning·Γ with ω_mode the linear mode nearest 1 rad/s.

{fmt_table(det, "(ω − ω_mode)/Γ", cols)}

## C. Nudge strength β

{fmt_table(beta, "β", (*EP, "EP limit (formula)"))}

## D. Steady-state experiments per gradient and sample

Measured in the sweeps above at P = {P}: {", ".join(f"{k} {v}" for k, v in measured.items())}
(the unit tests assert these counts exactly).

{exp_md}
"""
    old = out / "fidelity.md"
    if old.exists() and KEEP_MARK in old.read_text():  # sections of other benchmarks stay
        md += "\n" + KEEP_MARK + old.read_text().split(KEEP_MARK, 1)[1]
    old.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
