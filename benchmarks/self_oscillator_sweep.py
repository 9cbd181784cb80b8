"""Must-show 5 of issue 18: the EP gradient through the emulated energy-regulated self-oscillator
against the exact fixed-energy gradient, as a function of the loop's gain and delay.

A lossy 4-node tanh network (Γ on every node) held at E₀ by the loop of
`physlearn.simulators.self_oscillator` (loss compensation, proportional + integral energy
feedback, delay τ) is measured by ``ep_fixed_energy`` (β = 0.05, integrated cost, two input
vectors); the reference is the adjoint gradient of the *conservative* network (Γ = 0) at the
same E₀ on the `AutonomousTwin`. Printed per (gain, τ/T): the cosine per sample, the relative
gradient error, the free orbit's period error against the conservative orbit's, and the wall
time; ``--figure`` writes the cosine against τ/T, one curve per gain.

    python benchmarks/self_oscillator_sweep.py                       # the table of docs/physics.md §8
    python benchmarks/self_oscillator_sweep.py --figure docs/self_oscillator.png
    python benchmarks/self_oscillator_sweep.py --gains 0.2 --delays 0 --damping 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np

from physlearn.estimators import make_estimator
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.simulators.self_oscillator import LoopSettings
from physlearn.spec.autonomous import AutonomousOptions, OrbitTask
from physlearn.spec.network import NetworkSpec
from physlearn.systems.autonomous import AutonomousTwin
from physlearn.systems.self_oscillator import SelfOscillatorSystem

U = np.array([[1.0, 0.0], [0.0, 1.0]])
TARGETS = np.array([[0.3], [0.0]])
E0 = 0.4


def network(damping: float, seed: int = 0) -> NetworkSpec:
    """4 nodes on a ring plus a chord, product tanh couplings and tanh biases, static input forces
    on nodes 0 and 1, the output node 3 with a static target (the tests' ``network(4, "tanh")``)."""
    rng = np.random.default_rng(seed)
    d = 4
    stiffness = [float(v) for v in rng.uniform(1.0, 2.0, d)]
    edges = [(0, 1), (0, 2), (0, 3), (1, 2), (2, 3)]
    return NetworkSpec.model_validate(
        {
            "nodes": {"count": d, "stiffness": stiffness, "damping": damping},
            "inputs": {"nodes": [0, 1], "waveform": "constant", "gain": 0.3},
            "outputs": {"nodes": [d - 1], "target": {"kind": "constant", "values": [0.3]}},
            "couplings": [{"nodes": list(e), "value": float(rng.normal(0, 0.3))} for e in edges],
            "biases": [{"node": j, "value": float(rng.normal(0, 0.2))} for j in range(d)],
        }
    )


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(
        np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    )


def reference(damping: float) -> tuple[np.ndarray, np.ndarray, OrbitTask, ModelKnowledge]:
    """(exact gradient (B,P), conservative periods (B,), task, knowledge)."""
    spec = network(0.0)
    twin = AutonomousTwin(spec, AutonomousOptions(constraint="energy", value=E0))
    task = OrbitTask.from_values(spec, TARGETS, "integrated")
    sens = twin.sensitivity(spec.initial_parameters(), U, task)
    return (
        sens.adjoint_gradient("integrated"),
        sens.sol.period_s,
        task,
        ModelKnowledge.from_spec(spec),
    )


def run(
    gain: float, delay_periods: float, damping: float, beta: float, ramp: float
) -> dict[str, Any]:
    exact, periods, task, kn = reference(damping)
    tau = delay_periods * float(np.mean(periods))
    loop = LoopSettings(gain_per_s=gain, delay_s=tau)
    system = SelfOscillatorSystem(
        network(damping),
        AutonomousOptions(constraint="energy", value=E0),
        loop,
        steps_per_period=64,
        ramp_periods=ramp,
        settle_periods=10,
    )
    # the energy loop's rate 2⟨K⟩g/E_ref (⟨K⟩ ≈ E₀/2 above the equilibrium) times the delay:
    # a delayed first-order loop rings, then diverges, as this approaches π/2
    rate_tau = E0 * gain / loop.energy_scale * tau
    t0 = time.perf_counter()
    alpha = network(damping).initial_parameters()
    try:
        est = asyncio.run(
            make_estimator("ep_fixed_energy", kn, beta=beta).estimate(system, alpha, U, task)
        )
    except Exception as exc:  # a diverging loop is a result of the sweep, not a crash
        err = f"{type(exc).__name__}: {exc}"
        return {"gain": gain, "delay": delay_periods, "rate_tau": rate_tau, "error": err}
    grad = est.grad
    period = np.asarray(est.info["period_s"])
    return {
        "gain": gain,
        "delay": delay_periods,
        "rate_tau": rate_tau,
        "cos": cosine(grad, exact),
        "rel": float(np.max(np.abs(grad - exact)) / np.max(np.abs(exact))),
        "period_err": float(np.max(np.abs(period - periods) / periods)),
        "wall": time.perf_counter() - t0,
    }


def table(rows: list[dict[str, Any]], damping: float) -> str:
    out = [
        f"Γ = {damping} 1/s on every node, E₀ = {E0} J, β = 0.05, cosines per input sample:",
        "",
        "| loop gain g (1/s) | delay τ/T | rate·τ | 1 − cosine to exact (per sample) | max rel. error "
        "| period error | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rate_tau = f"{r['rate_tau']:.2f}"
        if "error" in r:
            out.append(
                f"| {r['gain']} | {r['delay']} | {rate_tau} | diverged ({r['error'][:40]}…) "
                "| — | — | — |"
            )
            continue
        cos = ", ".join(f"{1 - c:.1e}" for c in r["cos"])
        out.append(
            f"| {r['gain']} | {r['delay']} | {rate_tau} | {cos} | {r['rel']:.2e} "
            f"| {r['period_err']:.1e} | {r['wall']:.0f} |"
        )
    return "\n".join(out)


def figure(rows: list[dict[str, Any]], path: Path) -> None:
    """1 − (smallest cosine over the samples) against τ/T, one curve per gain; a diverged loop
    is marked at the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    top = 1e-2
    for g in sorted({r["gain"] for r in rows}):
        mine = [r for r in rows if r["gain"] == g]
        pts = [(r["delay"], 1.0 - float(np.min(r["cos"]))) for r in mine if "cos" in r]
        (line,) = ax.plot(*zip(*pts, strict=True), "o-", label=f"g = {g} 1/s")
        bad = [r["delay"] for r in mine if "error" in r]
        if bad:
            ax.plot(bad, [top] * len(bad), "x", color=line.get_color(), ms=9)
    ax.set_yscale("log")
    ax.set_xlabel("loop delay τ / T")
    ax.set_ylabel("1 − cosine to the exact gradient")
    ax.set_title("ep_fixed_energy through the self-oscillator (× = loop diverged)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gains", default="0.05,0.2,1.0")
    ap.add_argument("--delays", default="0,0.02,0.05,0.1", help="loop delays in periods")
    ap.add_argument("--damping", type=float, default=0.01)
    ap.add_argument("--beta", type=float, default=0.05)
    ap.add_argument("--ramp", type=float, default=40.0, help="ramp length in periods")
    ap.add_argument("--figure", type=Path, default=None)
    args = ap.parse_args(argv)
    rows = []
    for g in (float(v) for v in args.gains.split(",")):
        for tau in (float(v) for v in args.delays.split(",")):
            rows.append(run(g, tau, args.damping, args.beta, args.ramp))
            print(rows[-1], flush=True)
    print(table(rows, args.damping))
    if args.figure is not None:
        figure(rows, args.figure)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
