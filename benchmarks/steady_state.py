"""Benchmark: periodic steady states by Newton–Krylov collocation vs brute-force time integration.

For every (d, Q) case one network of the documented test ensemble (`random_network`, ω = 1, so
Γ = 1/Q) is drawn — the same draw for every Q at a given d — and driven with ``batch`` different
random input vectors (U[0.5, 1] per input node, the ensemble's cos ωt force drive).

1. **Reference**: the collocation solver on a fine grid (``n_ref`` points per period).
2. **Newton**: `PeriodicProblem.solve(floquet="none")` on the smallest odd N of a ladder whose
   orbit is within ``target`` of the reference (max norm over the grid, relative to max|x| of
   each sample; worst sample). That measured error ε_N is the Newton solver's achieved error.
   Timed: median of ``repeats`` solves from the default start. An untimed extra solve counts
   the Newton and GMRES iterations.
3. **Brute force**: `scipy.integrate.DOP853` (the engine of ``solve_ivp(method="DOP853")``, driven
   step by step so that the error can be checked while integrating without storing the
   trajectory) on one ODE system holding the whole batch, right-hand side from
   `NetworkModel.grad_potential` and the same `Excitation`, from rest, rtol = atol/max|x| =
   the decade ≤ ε_N/100 (so that the integrator's own error floor does not stall the run). The
   error (same norm as Newton's, against the same reference) is monitored at every period start
   and, once it is below ε_N there, over whole periods (N samples from the dense output); the run
   stops after the first period whose sampled error is ≤ ε_N. If it has not got there after
   1.5·(Q/π)·ln(10/ε_N) + 20 periods (transients decay as e^{−Γt/2}) rtol is tightened ×0.1 and
   the run repeated (counted in the table). Timed: that one run, monitoring included.
   Cells whose predicted time exceeds ``brute_budget_s`` are **extrapolated**, never run in full:
   time per period measured on a short run of the same case (same rtol), times the number of
   periods P = c·Q·ln(1/ε_N) with c fitted on the largest measured Q at the same d.
4. **Floquet multipliers** (the stability check that ``floquet="full"`` adds) timed separately on
   a sub-batch.

BLAS is pinned to one thread for both solvers (``--threads``), so that the ratio does not depend
on how many other processes share the machine. Writes its section of docs/benchmarks.md between
the markers ``<!-- steady_state:begin -->`` / ``<!-- steady_state:end -->`` (other sections of the
file are left alone).

    python benchmarks/steady_state.py            # full run (~10 min on 2 cores)
    python benchmarks/steady_state.py --quick    # small d, batch and Q: a few seconds
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy
from numpy.typing import NDArray
from scipy.integrate import DOP853
from threadpoolctl import threadpool_limits

from physlearn.simulators import periodic as periodic_module
from physlearn.simulators.ensemble import random_network
from physlearn.simulators.excitation import Excitation, GridExcitation
from physlearn.simulators.floquet import floquet_multipliers
from physlearn.simulators.krylov import GmresResult
from physlearn.simulators.problem import PeriodicProblem
from physlearn.spec.model import NetworkModel
from physlearn.spec.network import NetworkSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling helper below
import doc_sections

Array = NDArray[np.float64]

BEGIN = "<!-- steady_state:begin -->"
END = "<!-- steady_state:end -->"
HEADING = "## Steady-state solver"
DEFAULT_DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


@dataclass(frozen=True)
class Config:
    name: str
    dims: tuple[int, ...]
    qs: tuple[float, ...]
    batch: int
    target: float  # collocation error level that chooses N
    n_ladder: tuple[int, ...]
    n_ref: int
    repeats: int
    brute_budget_s: float
    floquet_samples: int
    seed: int = 2024


FULL = Config(
    name="full",
    dims=(8, 32, 128),
    qs=(10.0, 100.0, 1000.0),
    batch=64,
    target=1e-8,
    n_ladder=(11, 15, 19, 23, 27, 31, 35, 41, 47, 55, 63),
    n_ref=81,
    repeats=3,
    brute_budget_s=200.0,
    floquet_samples=8,
)
QUICK = Config(
    name="quick",
    dims=(4, 8),
    qs=(5.0, 20.0),
    batch=8,
    target=1e-8,
    n_ladder=FULL.n_ladder,
    n_ref=65,
    repeats=1,
    brute_budget_s=30.0,
    floquet_samples=4,
)


# ---------------------------------------------------------------------------------------------
# Error measure
# ---------------------------------------------------------------------------------------------
def relative_error(x: Array, ref: Array) -> float:
    """Worst sample of max|x − ref| / max|ref| over time and nodes; x, ref (B,N,d)."""
    num = np.max(np.abs(x - ref), axis=(1, 2))
    return float(np.max(num / np.max(np.abs(ref), axis=(1, 2))))


# ---------------------------------------------------------------------------------------------
# Newton–Krylov collocation
# ---------------------------------------------------------------------------------------------
@contextmanager
def counting_gmres() -> Iterator[list[GmresResult]]:
    """Record every GMRES result of the periodic solver while the context is active."""
    calls: list[GmresResult] = []
    original = periodic_module.gmres

    def wrapped(*args: Any, **kwargs: Any) -> GmresResult:
        res = original(*args, **kwargs)
        calls.append(res)
        return res

    setattr(periodic_module, "gmres", wrapped)  # noqa: B010 (module attribute, restored below)
    try:
        yield calls
    finally:
        setattr(periodic_module, "gmres", original)  # noqa: B010


@dataclass(frozen=True)
class NewtonResult:
    n: int
    seconds: float  # whole batch, median of the repeats
    error: float  # achieved error against the reference
    newton_iters: float  # mean over the batch
    gmres_iters: float  # total Krylov iterations per sample, mean over the batch
    x: Array  # orbit on the case grid (B,N,d)
    x_ref: Array  # reference orbit interpolated on the case grid


def solve_newton(
    spec: NetworkSpec, inputs: Array, cfg: Config
) -> tuple[NewtonResult, PeriodicProblem]:
    ref_prob = PeriodicProblem.from_spec(spec, cfg.n_ref, inputs=inputs)
    ref = ref_prob.solve(floquet="none")
    prob: PeriodicProblem | None = None
    err = math.inf
    x_ref = ref.x
    for n in cfg.n_ladder:
        prob = PeriodicProblem.from_spec(spec, n, inputs=inputs)
        x_ref = ref_prob.grid.interpolate(ref.x, prob.grid.t)
        err = relative_error(prob.solve(floquet="none").x, x_ref)
        if err <= cfg.target:
            break
    assert prob is not None
    if err > cfg.target:
        raise RuntimeError(f"no N in {cfg.n_ladder} reaches the collocation target {cfg.target}")
    times = []
    sol = None
    for _ in range(cfg.repeats):
        t0 = time.perf_counter()
        sol = prob.solve(floquet="none")
        times.append(time.perf_counter() - t0)
    assert sol is not None
    with counting_gmres() as calls:
        counted = prob.solve(floquet="none")
    krylov = np.sum([c.iterations for c in calls], axis=0) if calls else np.zeros(1)
    return (
        NewtonResult(
            n=prob.grid.n,
            seconds=statistics.median(times),
            error=relative_error(sol.x, x_ref),
            newton_iters=float(np.mean(counted.iterations)),
            gmres_iters=float(np.mean(krylov)),
            x=sol.x,
            x_ref=x_ref,
        ),
        prob,
    )


# ---------------------------------------------------------------------------------------------
# Brute force: DOP853 on the whole batch
# ---------------------------------------------------------------------------------------------
def batched_rhs(
    model: NetworkModel, theta: Array, excitation: Excitation
) -> tuple[Callable[[float, Array], Array], list[int]]:
    """ẏ = f(t, y) for y = (x, v) of the whole batch, flattened; and an evaluation counter.

    All samples share one network, so the batch is laid out along the time axis of
    `grad_potential` (one (B×d)·(d×d) product per evaluation instead of B matrix–vector ones).
    """
    coef = model.coefficients(np.atleast_2d(theta[:1]))
    B, d = excitation.batch, model.d
    m, g = model.mass, model.damping
    t_rep = np.zeros(B)
    count = [0]

    def f(t: float, y: Array) -> Array:
        count[0] += 1
        x = y[: B * d].reshape(B, d)
        v = y[B * d :].reshape(B, d)
        ta = np.array([t])
        t_rep.fill(t)
        force = excitation.force(ta)[:, 0, :] - excitation.clamp_weight(ta)[:, 0, :] * (
            x - excitation.clamp_target(ta)[:, 0, :]
        )
        grad = model.grad_potential(x[None], t_rep, coef)[0]
        acc = (force - grad) / m - g * v
        return np.concatenate([v.ravel(), acc.ravel()])

    return f, count


@dataclass(frozen=True)
class BruteRun:
    reached: bool
    seconds: float
    periods: int  # periods integrated (up to the end of the period whose error was measured)
    error: float  # against the reference
    error_vs_newton: float
    evaluations: int
    steps: int


def run_brute(
    rhs_factory: Callable[[], tuple[Callable[[float, Array], Array], list[int]]],
    x_ref: Array,
    x_newton: Array,
    period_s: float,
    target: float,
    rtol: float,
    max_periods: int,
    stop_after_periods: int | None = None,
) -> BruteRun:
    """Integrate from rest until a sampled period is within ``target`` of ``x_ref``.

    With ``stop_after_periods`` the run ends there regardless (a probe for time per period).
    """
    B, N, d = x_ref.shape
    f, count = rhs_factory()
    atol = rtol * float(np.max(np.abs(x_ref)))
    t_end = (stop_after_periods or max_periods) * period_s
    solver = DOP853(f, 0.0, np.zeros(2 * B * d), t_end, rtol=rtol, atol=atol)
    dt_sample = period_s / N
    next_k = 1  # next sample index k (time k·T/N) not yet passed
    full_from: int | None = None  # first period whose samples are being collected
    buf = np.empty((B, N, d))
    err = math.inf
    err_newton = math.inf
    periods = 0
    reached = False
    steps = 0
    t0 = time.perf_counter()
    while solver.status == "running":
        solver.step()
        steps += 1
        k_last = math.floor(solver.t / dt_sample + 1e-9)
        if k_last < next_k:
            continue
        dense = None
        for k in range(next_k, k_last + 1):
            p, n = divmod(k, N)
            if full_from is None and n != 0:
                continue
            if dense is None:
                dense = solver.dense_output()
            x = dense(k * dt_sample)[: B * d].reshape(B, d)
            if full_from is None:
                # Monitor: the state at the start of period p against the orbit at phase 0.
                e0 = float(
                    np.max(np.max(np.abs(x - x_ref[:, 0]), axis=1) / np.max(np.abs(x_ref), (1, 2)))
                )
                if e0 <= target:
                    full_from = p
                    buf[:, 0] = x
                continue
            buf[:, n] = x
            if n == N - 1:
                err = relative_error(buf, x_ref)
                err_newton = relative_error(buf, x_newton)
                periods = p + 1
                if err <= target:
                    reached = True
                    break
        next_k = k_last + 1
        if reached:
            break
    seconds = time.perf_counter() - t0
    if not reached:
        periods = math.ceil(solver.t / period_s)
    return BruteRun(reached, seconds, periods, err, err_newton, count[0], steps)


@dataclass(frozen=True)
class BruteResult:
    seconds: float
    periods: float
    error: float
    error_vs_newton: float
    rtol: float
    retries: int
    evals_per_period: float
    seconds_per_period: float
    extrapolated: bool
    note: str = ""


def brute_periods_bound(q: float, target: float) -> int:
    return math.ceil(1.5 * q / math.pi * math.log(10.0 / target)) + 20


def brute_rtol(target: float) -> float:
    return float(10.0 ** math.floor(math.log10(target / 100.0)))


def solve_brute(
    model: NetworkModel,
    theta: Array,
    excitation: Excitation,
    newton: NewtonResult,
    q: float,
    period_s: float,
    predicted_s: float,
    budget_s: float,
    c_fit: float | None,
) -> BruteResult:
    target = newton.error

    def factory() -> tuple[Callable[[float, Array], Array], list[int]]:
        return batched_rhs(model, theta, excitation)

    rtol = brute_rtol(target)
    if predicted_s > budget_s:
        c = c_fit if c_fit is not None else 1.0 / math.pi
        probe_periods = max(10, min(40, int(q // 10)))
        probe = run_brute(
            factory,
            newton.x_ref,
            newton.x,
            period_s,
            target,
            rtol,
            probe_periods,
            stop_after_periods=probe_periods,
        )
        per_period = probe.seconds / probe.periods
        periods = c * q * math.log(1.0 / target)
        return BruteResult(
            seconds=per_period * periods,
            periods=periods,
            error=math.nan,
            error_vs_newton=math.nan,
            rtol=rtol,
            retries=0,
            evals_per_period=probe.evaluations / probe.periods,
            seconds_per_period=per_period,
            extrapolated=True,
            note=(
                f"t = {per_period:.3g} s/period (measured over {probe.periods} periods) × "
                f"P = c·Q·ln(1/ε) = {c:.4f}·{q:g}·ln(1/{target:.2g}) = {periods:.0f} periods"
            ),
        )
    retries = 0
    while True:
        run = run_brute(
            factory, newton.x_ref, newton.x, period_s, target, rtol, brute_periods_bound(q, target)
        )
        if run.reached or retries >= 2:
            break
        retries += 1
        rtol *= 0.1
    if not run.reached:
        raise RuntimeError(f"brute force did not reach ε = {target:.2e} (Q = {q:g})")
    return BruteResult(
        seconds=run.seconds,
        periods=run.periods,
        error=run.error,
        error_vs_newton=run.error_vs_newton,
        rtol=rtol,
        retries=retries,
        evals_per_period=run.evaluations / run.periods,
        seconds_per_period=run.seconds / run.periods,
        extrapolated=False,
    )


# ---------------------------------------------------------------------------------------------
# Floquet multipliers
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FloquetResult:
    d: int
    n: int
    samples: int
    steps: int
    seconds_per_state: float
    newton_per_state: float
    max_modulus: float


def time_floquet(prob: PeriodicProblem, newton: NewtonResult, samples: int) -> FloquetResult:
    k = min(samples, prob.batch)
    e = prob.exc
    sub = GridExcitation(
        e.force[:k], e.clamp_weight[:k], e.clamp_target[:k], e.cost_weight[:k], e.target[:k]
    )
    theta = prob.theta()[:k]
    t0 = time.perf_counter()
    mult = floquet_multipliers(prob.model, theta, sub, prob.grid, newton.x[:k])
    seconds = time.perf_counter() - t0
    return FloquetResult(
        d=prob.model.d,
        n=prob.grid.n,
        samples=k,
        steps=max(16 * prob.grid.n, 512),
        seconds_per_state=seconds / k,
        newton_per_state=newton.seconds / prob.batch,
        max_modulus=float(np.max(np.abs(mult[:, 0]))),
    )


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaseResult:
    d: int
    q: float
    batch: int
    newton: NewtonResult
    brute: BruteResult

    @property
    def ratio(self) -> float:
        return self.brute.seconds / self.newton.seconds


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cfg: Config) -> tuple[list[CaseResult], list[FloquetResult], float]:
    start = time.perf_counter()
    cases: list[CaseResult] = []
    floquet: list[FloquetResult] = []
    for d in cfg.dims:
        inputs_rng = np.random.default_rng([cfg.seed, d, 1])
        inputs: Array | None = None
        for q in cfg.qs:
            spec = random_network(d, np.random.default_rng([cfg.seed, d]), damping=1.0 / q)
            if inputs is None:
                inputs = inputs_rng.uniform(0.5, 1.0, (cfg.batch, len(spec.inputs.nodes)))
            newton, prob = solve_newton(spec, inputs, cfg)
            log(
                f"d={d} Q={q:g}: N={newton.n} Newton {newton.seconds:.3f} s/batch, "
                f"ε={newton.error:.2e}"
            )
            done = [c for c in cases if c.d == d]
            c_fit: float | None = None
            predicted = 0.0
            if done:
                last = done[-1]
                c_fit = last.brute.periods / (last.q * math.log(1 / last.newton.error))
                predicted = last.brute.seconds_per_period * c_fit * q * math.log(1.0 / newton.error)
            brute = solve_brute(
                prob.model,
                prob.theta(),
                prob.excitation,
                newton,
                q,
                prob.grid.period_s,
                predicted,
                cfg.brute_budget_s,
                c_fit,
            )
            case = CaseResult(d, q, cfg.batch, newton, brute)
            cases.append(case)
            log(
                f"    brute {'≈' if brute.extrapolated else ''}{brute.seconds:.1f} s "
                f"({brute.periods:.0f} periods, rtol {brute.rtol:g}), ratio {case.ratio:.0f}×"
            )
            if q == cfg.qs[len(cfg.qs) // 2]:
                floquet.append(time_floquet(prob, newton, cfg.floquet_samples))
    return cases, floquet, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares exponent a of y ∝ x^a."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.3g}"


def render(
    cfg: Config, cases: list[CaseResult], floquet: list[FloquetResult], wall: float, threads: int
) -> str:
    lines: list[str] = []
    cpu = _cpu_name()
    lines.append(
        f"Generated by `benchmarks/steady_state.py{' --quick' if cfg.name == 'quick' else ''}` "
        f"({cfg.name} mode, {wall / 60:.1f} min wall). Machine: {cpu}, {os.cpu_count()} cores, "
        f"BLAS pinned to {threads} thread(s) for both solvers; Python {platform.python_version()}, "
        f"NumPy {np.__version__}, SciPy {scipy.__version__}."
    )
    lines.append("")
    lines.append(
        f"Each case: one network of the test ensemble (`random_network(d, damping=1/Q)`, ω = 1, "
        f"product couplings, tanh, max|x| ≈ 1; the same draw for every Q at a given d), a batch "
        f"of {cfg.batch} random input vectors (U[0.5, 1] per input node) solved together. "
        f"Errors are the worst sample's max-norm error over one period relative to its max|x|, "
        f"against a reference (the collocation solver on {cfg.n_ref} points per period). "
        f"N is the smallest odd number of points per period in {list(cfg.n_ladder)} whose "
        f"collocation error is ≤ {cfg.target:.0e}; the Newton solver's achieved error ε is then "
        f'the target the brute force must reach. Newton: `solve(floquet="none")`, default tol, '
        f"from the default start, median of {cfg.repeats} runs. Brute force: SciPy's DOP853 "
        f"(the `solve_ivp` engine, stepped) on one ODE system holding the whole batch, same "
        f"`NetworkModel.grad_potential` and excitation, from rest, rtol = atol/max|x| = the decade "
        f"≤ ε/100, stopped after the first period whose sampled error is ≤ ε (monitoring "
        f"included in its time). Times are per steady state (batch time / {cfg.batch})."
    )
    lines.append("")
    lines.append(
        "| d | Q | N | Newton ms/state | Newton its | GMRES its (total) | ε Newton "
        "| DOP853 rtol | periods | evals/period | brute ms/state | ε brute (vs ref / vs Newton) "
        "| brute/Newton |"
    )
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for c in cases:
        nw, br = c.newton, c.brute
        per_state_n = nw.seconds / c.batch
        per_state_b = br.seconds / c.batch
        if br.extrapolated:
            brute_cell = f"≈{_ms(per_state_b)} (extrapolated†)"
            err_cell = "— (not run)"
            periods = f"≈{br.periods:.0f}†"
            ratio = f"≈{c.ratio:.0f}× (extrapolated†)"
        else:
            brute_cell = _ms(per_state_b)
            err_cell = f"{br.error:.2e} / {br.error_vs_newton:.2e}"
            periods = f"{br.periods:.0f}" + (f" ({br.retries} rtol retries)" if br.retries else "")
            ratio = f"**{c.ratio:.0f}×**"
        lines.append(
            f"| {c.d} | {c.q:g} | {nw.n} | {_ms(per_state_n)} | {nw.newton_iters:.1f} "
            f"| {nw.gmres_iters:.1f} | {nw.error:.2e} | {br.rtol:.0e} | {periods} "
            f"| {br.evals_per_period:.0f} | {brute_cell} | {err_cell} | {ratio} |"
        )
    notes = [c for c in cases if c.brute.extrapolated]
    if notes:
        lines.append("")
        for c in notes:
            lines.append(f"† d = {c.d}, Q = {c.q:g}: {c.brute.note}; brute time / {c.batch}.")
        lines.append(
            "c is fitted on the largest measured Q at the same d (periods needed / (Q·ln(1/ε))); "
            "theory for a uniformly damped network: c = 1/π (transients decay as e^{−Γt/2}). "
            "Extrapolated cells are estimates, not measurements, and lower bounds for the brute "
            "force: they assume the rtol rule's error floor stays below ε at that Q (a tighter "
            "rtol would cost more per period)."
        )
    lines.append("")
    lines.extend(_goals(cfg, cases))
    lines.append("")
    lines.extend(_scaling(cfg, cases))
    if floquet:
        lines.append("")
        lines.extend(_floquet(floquet))
    return "\n".join(lines) + "\n"


def _goals(cfg: Config, cases: list[CaseResult]) -> list[str]:
    out = ["**Goals** (issue 2: ≥ 100× at Q = 100 for d ≤ 32, ≥ 10× at d = 128):"]
    for c in cases:
        if c.q != 100.0:
            continue
        goal = 100.0 if c.d <= 32 else 10.0
        status = "met" if c.ratio >= goal else "**missed**"
        kind = " (extrapolated)" if c.brute.extrapolated else ""
        out.append(f"- d = {c.d}, Q = 100: {c.ratio:.0f}×{kind} — goal {goal:g}×: {status}.")
    if len(out) == 1:
        out.append(f"- no Q = 100 case in {cfg.name} mode.")
    return out


def _scaling(cfg: Config, cases: list[CaseResult]) -> list[str]:
    out = ["**How the cost grows.**"]
    qs, dims = cfg.qs, cfg.dims
    by = {(c.d, c.q): c for c in cases}
    # Newton vs Q
    parts = []
    growth = []
    for d in dims:
        t = [by[d, q].newton.seconds for q in qs]
        growth.append(t[-1] / t[0])
        its = [by[d, q].newton.newton_iters for q in qs]
        kry = [by[d, q].newton.gmres_iters for q in qs]
        ns = [by[d, q].newton.n for q in qs]
        parts.append(
            f"d = {d}: time ×{t[-1] / t[0]:.2f} from Q = {qs[0]:g} to {qs[-1]:g} "
            f"(N {ns[0]}→{ns[-1]}, Newton iterations {its[0]:.1f}→{its[-1]:.1f}, "
            f"GMRES iterations {kry[0]:.1f}→{kry[-1]:.1f})"
        )
    flat = max(growth) < 1.5 and min(growth) > 1 / 1.5
    verdict = (
        "flat in Q (within ×1.5) — the harmonic-balance preconditioner inverts the damped "
        "time-averaged Jacobian exactly, so weak damping does not slow GMRES"
        if flat
        else "not flat in Q"
    )
    out.append(f"- Newton–Krylov vs Q: {verdict}; " + "; ".join(parts) + ".")
    if len(dims) > 1:
        q_mid = qs[len(qs) // 2]
        t = [by[d, q_mid].newton.seconds / by[d, q_mid].newton.n for d in dims]
        out.append(
            f"- Newton–Krylov vs d (Q = {q_mid:g}, time per grid point): ∝ d^{_slope(dims, t):.2f} "
            f"over d = {dims[0]}…{dims[-1]} — per Newton step O(N·d²) for the Jacobian products "
            f"(dense couplings), O(d³) per sample for the preconditioner's eigendecomposition "
            f"(once per Newton step), O(N d log N) for the FFTs; the measured exponent mixes them."
        )
    parts = []
    for d in dims:
        measured = [by[d, q] for q in qs if not by[d, q].brute.extrapolated]
        per_q = ", ".join(
            f"{c.brute.periods / (c.q * math.log(1 / c.newton.error)):.3f}" for c in measured
        )
        parts.append(f"d = {d}: {per_q}")
    out.append(
        "- Brute force vs Q: periods needed ∝ Q·ln(1/ε) — measured P/(Q·ln(1/ε)) per Q: "
        + "; ".join(parts)
        + f" (theory 1/π = {1 / math.pi:.3f}); the cost per period does not depend on Q "
        "(same steps per period), so brute-force time ∝ Q and the ratio grows ∝ Q."
    )
    if len(dims) > 1:
        spp = [
            statistics.median(by[d, q].brute.seconds_per_period for q in qs) / cfg.batch
            for d in dims
        ]
        out.append(
            f"- Brute force vs d: time per simulated period per sample ∝ d^{_slope(dims, spp):.2f} "
            f"over d = {dims[0]}…{dims[-1]} ("
            + ", ".join(f"{_ms(s)} ms at d = {d}" for d, s in zip(dims, spp, strict=True))
            + "): one O(d²) coupling product per right-hand-side evaluation, plus a per-step "
            "overhead of the Python-level stepper that dominates at small d."
        )
    return out


def _floquet(results: list[FloquetResult]) -> list[str]:
    out = [
        '**Floquet multipliers** (`floquet="full"`: RK4 on the variational equations for all '
        "2d columns at once, O(d³) per step; timed separately on a sub-batch at the middle Q):",
        "",
        "| d | N | RK4 steps | samples timed | Floquet ms/state | Newton ms/state | Floquet/Newton "
        "| max modulus |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in results:
        out.append(
            f"| {f.d} | {f.n} | {f.steps} | {f.samples} | {_ms(f.seconds_per_state)} "
            f"| {_ms(f.newton_per_state)} | {f.seconds_per_state / f.newton_per_state:.0f}× "
            f"| {f.max_modulus:.6f} |"
        )
    cheap = [f.d for f in results if f.seconds_per_state <= 10 * f.newton_per_state]
    occasional = [f.d for f in results if f.seconds_per_state <= 1.0]
    sentence = (
        "As a per-solve check (≤ 10× the Newton solve) it is practical for "
        + (f"d ≤ {max(cheap)}" if cheap else "none of the d measured")
        + "; as an occasional check (≤ 1 s per steady state) for "
        + (f"d ≤ {max(occasional)}" if occasional else "none of the d measured")
        + "."
    )
    if len(results) > 1:
        exponent = _slope([f.d for f in results], [f.seconds_per_state for f in results])
        sentence += f" Measured growth: ∝ d^{exponent:.2f} over the d above."
    out.append("")
    out.append(sentence)
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_section(path: Path, body: str) -> None:
    """Replace (or append) this benchmark's section of ``path``, leaving the rest untouched."""
    doc_sections.write_section(path, "steady_state", HEADING, body)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small d, batch and Q (seconds)")
    parser.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="markdown file to update (default: docs/, not with --quick)",
    )
    parser.add_argument("--no-docs", action="store_true", help="print only")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (both solvers)")
    parser.add_argument(
        "--brute-budget-s",
        type=float,
        default=None,
        help="extrapolate brute-force cells predicted to take longer than this",
    )
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.brute_budget_s is not None:
        cfg = replace(cfg, brute_budget_s=args.brute_budget_s)
    with threadpool_limits(args.threads):
        cases, floquet, wall = run(cfg)
    body = render(cfg, cases, floquet, wall, args.threads)
    print(body)
    target = None if args.no_docs else doc_sections.docs_target(args.docs, DEFAULT_DOCS, args.quick)
    if target is not None:
        write_section(target, body)
        log(f"wrote the steady-state section of {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
