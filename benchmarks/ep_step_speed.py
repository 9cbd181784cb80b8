"""EP step speed of the ideal twin (issue 16): this tree against a base commit, side by side.

Two measurements on examples/digits.toml (64 pixels, [64, 16, 10] + bias: d = 91 nodes,
17 points per period, ep_symmetric β = 0.001, floquet "none"), CPU and wall seconds:

1. *EP gradient vs free solve* at batch ``--batch`` (default 128): the twin first measures the
   free orbits at the initial parameters α₀ (warm-start cache filled), then the parameters take
   one optimizer step α₁ = Adam(α₀, EP gradient at α₀) — a training update. Timed at α₁, each
   from its own copy of that cache (`state_dict`/`load_state_dict`): (a) the free measurement
   alone (`set_parameters`, `set_input`, `measure`), (b) the whole estimator call
   (free + ±β nudged phases + conjugates). Target: (b)/(a) ≤ 1.5. Best of ``--repeats``
   in each of ``--rounds`` worker runs.
2. *Training steps*: ``--steps`` mini-batch steps of the training recipe (batch 32, the first
   mini-batches of a seeded shuffle of the training split, estimator call + Adam step; the
   warm-start cache first filled with those samples' free orbits at α₀, as the trainer's initial
   evaluation leaves it, then carried from step to step; evaluation excluded),
   seconds per step and the implied training time of one epoch (1 347/32 → 43 steps); the
   final parameters' distance between the two trees checks "equal accuracy" (same steps, same
   results to solver tolerance).

Three worker processes, BLAS pinned to one thread in each (``OMP_NUM_THREADS=1``, as
docs/results.md times epochs): the base commit, this tree with ``PHYSLEARN_SOLVER_THREADS=1``
(the algorithmic changes alone) and with 2 (the batch of every solve split over two threads),
``--rounds`` times interleaved, the least time of each kept. CPU seconds are process time
summed over threads; wall seconds depend on what else the cores run. The base commit runs from a throwaway worktree (``git worktree add``) imported through a
directory that mirrors its package-dir mapping (physlearn/ + drivers, simulators, calibration
linked under it), in a subprocess of the same interpreter.

    python benchmarks/ep_step_speed.py                      # this tree vs 73400ae, docs updated
    python benchmarks/ep_step_speed.py --quick              # small batch, 2 steps, no docs
    python benchmarks/ep_step_speed.py --worker             # this tree only, JSON on stdout
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
CONFIG = ROOT / "examples" / "digits.toml"
BASE = "73400ae"
NAME = "ep_step_speed"
HEADING = "## EP step speed (issue 16)"


# ----------------------------------------------------------------------------- the worker
def _imports() -> dict[str, Any]:
    """The few entry points, from either package layout (before/after the physlearn.* split)."""
    try:
        from physlearn.systems.ideal import IdealSystem
        from physlearn.training.config import load_train_config
        from physlearn.training.setup import prepare
    except ImportError:
        from physlearn.config import load_train_config  # type: ignore[no-redef]
        from physlearn.ideal import IdealSystem  # type: ignore[no-redef]
        from physlearn.training import prepare  # type: ignore[no-redef,attr-defined]
    import physlearn.simulators.periodic as periodic

    return {
        "IdealSystem": IdealSystem,
        "load_train_config": load_train_config,
        "prepare": prepare,
        "periodic_file": periodic.__file__,
    }


def _timed(fn: Any) -> tuple[Any, float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


async def _worker(batch: int, steps: int, repeats: int) -> dict[str, Any]:
    import numpy as np

    imp = _imports()
    cfg = imp["load_train_config"](CONFIG)
    setup = imp["prepare"](cfg)
    spec, ds, est = setup.spec, setup.dataset, setup.estimator

    def twin() -> Any:
        return imp["IdealSystem"](
            spec, cfg.system.points_per_period, floquet="none", tol=cfg.system.tol
        )

    rng = np.random.default_rng(0)
    order = rng.permutation(ds.x_train.shape[0])
    out: dict[str, Any] = {"periodic": imp["periodic_file"], "nodes": spec.nodes.count}

    # 1. EP gradient against the free solve alone, at α₁ after one update from α₀.
    idx = order[:batch]
    u, task = ds.x_train[idx], setup.targets.task(spec, ds.y_train[idx])
    a0 = spec.initial_parameters()
    sys0 = twin()
    g0 = await est.estimate(sys0, a0, u, task)
    a1 = copy.deepcopy(setup.optimizer).step(a0, g0.grad.mean(axis=0))
    state = sys0.state_dict()

    async def free_only() -> Any:
        s = twin()
        s.load_state_dict(state)
        c0, w0 = time.process_time(), time.perf_counter()
        await s.set_parameters(a1)
        await s.set_input(u)
        await s.set_forces(None)
        obs = await s.measure()
        return obs, time.process_time() - c0, time.perf_counter() - w0

    async def ep() -> Any:
        s = twin()
        s.load_state_dict(state)
        c0, w0 = time.process_time(), time.perf_counter()
        g = await est.estimate(s, a1, u, task)
        return g, time.process_time() - c0, time.perf_counter() - w0

    free_t, ep_t = [], []
    for _ in range(repeats):
        _, c, w = await free_only()
        free_t.append((c, w))
        g1, c, w = await ep()
        ep_t.append((c, w))
    out["free_cpu"], out["free_wall"] = min(t[0] for t in free_t), min(t[1] for t in free_t)
    out["ep_cpu"], out["ep_wall"] = min(t[0] for t in ep_t), min(t[1] for t in ep_t)
    out["grad_norm"] = float(np.linalg.norm(g1.grad.mean(axis=0)))
    out["grad_mean"] = g1.grad.mean(axis=0).tolist()

    # 2. training steps (batch of the config), warm-start cache carried over.
    bs = cfg.training.batch_size
    s = twin()
    params = spec.initial_parameters()
    opt = copy.deepcopy(setup.optimizer)
    # the trainer's initial evaluation leaves every training sample's free orbit at α₀ in the
    # warm-start cache: the same here for the samples of the timed steps (not timed)
    seen = order[: steps * bs]
    for i in range(0, seen.size, 128):
        await s.set_parameters(params)
        await s.set_input(ds.x_train[seen[i : i + 128]])
        await s.measure()
    c0, w0 = time.process_time(), time.perf_counter()
    for k in range(steps):
        idx = order[k * bs : (k + 1) * bs]
        u, task = ds.x_train[idx], setup.targets.task(spec, ds.y_train[idx])
        g = await est.estimate(s, params, u, task)
        params = opt.step(params, g.grad.mean(axis=0))
    out["steps"] = steps
    out["steps_cpu"], out["steps_wall"] = time.process_time() - c0, time.perf_counter() - w0
    out["steps_per_epoch"] = -(-ds.x_train.shape[0] // bs)
    out["params"] = np.asarray(params).tolist()
    return out


# ----------------------------------------------------------------------------- the driver
def _base_tree(commit: str) -> Path:
    """A worktree of ``commit`` and an import directory mirroring its package-dir mapping."""
    tree = Path(f"/tmp/base{commit}")
    if not tree.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT, check=True
        )
    site = Path(f"/tmp/base{commit}-site")
    pkg = site / "physlearn"
    if not pkg.exists():
        shutil.copytree(tree / "physlearn", pkg, symlinks=True)
        for sub in ("drivers", "simulators", "calibration"):
            if (tree / sub).is_dir() and not (pkg / sub).exists():
                (pkg / sub).symlink_to(tree / sub)
    return site


def _run_worker(pythonpath: Path | None, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    """One worker process: BLAS on one thread (as docs/results.md times), the solver's batch
    split over ``threads`` (PHYSLEARN_SOLVER_THREADS; the base commit has no such split)."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PHYSLEARN_SOLVER_THREADS=str(threads),
    )
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--repeats",
        str(args.repeats),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd="/tmp", check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _commit(path: Path) -> str:
    r = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=path, capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=path,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return r.stdout.strip() + ("+changes" if dirty else "")


def _table(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    import numpy as np

    base = runs["base"]
    names = list(runs)

    def row(name: str, key: str, fmt: str = "{:.3f}") -> str:
        cells = [fmt.format(runs[n][key]) for n in names]
        return f"| {name} | " + " | ".join(cells) + " |"

    for d in runs.values():
        d["ratio_cpu"] = d["ep_cpu"] / d["free_cpu"]
        d["ratio_wall"] = d["ep_wall"] / d["free_wall"]
        d["step_cpu"] = d["steps_cpu"] / d["steps"]
        d["step_wall"] = d["steps_wall"] / d["steps"]
        d["epoch_cpu"] = d["step_cpu"] * d["steps_per_epoch"]
        d["epoch_wall"] = d["step_wall"] * d["steps_per_epoch"]
        d["speedup_cpu"] = base["step_cpu"] / d["step_cpu"]
        d["speedup_wall"] = base["step_wall"] / d["step_wall"]
    head = " | ".join(names)
    lines = [
        f"| seconds (CPU = process time, all threads; wall) | {head} |",
        "|---|" + "---|" * len(names),
        row(f"free measure, batch {args.batch}, CPU", "free_cpu"),
        row(f"free measure, batch {args.batch}, wall", "free_wall"),
        row(f"ep_symmetric estimate (free + ±β), batch {args.batch}, CPU", "ep_cpu"),
        row(f"ep_symmetric estimate (free + ±β), batch {args.batch}, wall", "ep_wall"),
        row("EP / free, CPU (target ≤ 1.5)", "ratio_cpu", "{:.2f}"),
        row("EP / free, wall (target ≤ 1.5)", "ratio_wall", "{:.2f}"),
        row("training step (batch 32), CPU", "step_cpu"),
        row("training step (batch 32), wall", "step_wall"),
        row(f"≈ training per epoch ({base['steps_per_epoch']} steps), CPU", "epoch_cpu", "{:.1f}"),
        row(
            f"≈ training per epoch ({base['steps_per_epoch']} steps), wall", "epoch_wall", "{:.1f}"
        ),
        row("step speed-up against the base, CPU (target ≥ 4)", "speedup_cpu", "{:.2f}×"),
        row("step speed-up against the base, wall (target ≥ 4)", "speedup_wall", "{:.2f}×"),
    ]
    agree = []
    gb, pb = np.asarray(base["grad_mean"]), np.asarray(base["params"])
    for n in names[1:]:
        gh, ph = np.asarray(runs[n]["grad_mean"]), np.asarray(runs[n]["params"])
        agree.append(
            f"{n}: batch-mean EP gradient at α₁ {np.linalg.norm(gb - gh) / np.linalg.norm(gb):.1e}"
            f", parameters after the {args.steps} steps "
            f"{np.linalg.norm(pb - ph) / np.linalg.norm(pb):.1e}"
        )
    return (
        "\n".join(lines)
        + "\n\nSame results (relative differences from the base): "
        + "; ".join(agree)
        + "."
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help="measure this interpreter's physlearn")
    ap.add_argument("--quick", action="store_true", help="batch 16, 2 steps, 1 repeat, no docs")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved runs of each worker")
    ap.add_argument("--base", default=BASE, help="commit to compare against")
    ap.add_argument("--docs", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.batch, args.steps, args.repeats, args.rounds = 16, 2, 1, 1
    if args.worker:
        print(json.dumps(asyncio.run(_worker(args.batch, args.steps, args.repeats))))
        return 0
    workers: dict[str, tuple[Path | None, int]] = {
        "base": (_base_tree(args.base), 1),
        "this tree, 1 thread": (None, 1),
        "this tree, 2 threads": (None, 2),
    }
    # rounds interleaved (base, 1 thread, 2 threads, base, …) so that load from other jobs
    # drifts over all three alike; every time is the least over the rounds
    runs: dict[str, dict[str, Any]] = {}
    for _ in range(args.rounds):
        for name, (path, threads) in workers.items():
            out = _run_worker(path, args, threads)
            if name in runs:
                for k, v in out.items():
                    if k.endswith(("_cpu", "_wall")):
                        runs[name][k] = min(runs[name][k], v)
            else:
                runs[name] = out
    if not runs["base"]["periodic"].startswith(f"/tmp/base{args.base}"):
        raise RuntimeError(f"the base run imported {runs['base']['periodic']}, not the base tree")
    table = _table(runs, args).replace("| base |", f"| base {args.base} |", 1)
    head = runs["this tree, 2 threads"]
    cmd = "python benchmarks/ep_step_speed.py" + (" --quick" if args.quick else "")
    body = (
        f"`{cmd}` — this tree at {_commit(ROOT)} against {args.base}; examples/digits.toml "
        f"({head['nodes']} nodes, 17 points per period, floquet none), ep_symmetric β = 0.001; "
        f"BLAS on one thread; {platform.machine()}, {os.cpu_count()} cores shared with other "
        f"jobs (load average {os.getloadavg()[0]:.1f} at the end), "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}.\n\n" + table
    )
    print(body)
    target = args.docs if args.docs is not None else (None if args.quick else DOCS)
    if target is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import doc_sections

        doc_sections.write_section(target, NAME, HEADING, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
