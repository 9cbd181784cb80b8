"""``physlearn train --resume`` and transient faults on the ideal twin: a run SIGKILLed (or
stopped at any write of its run directory) and resumed, and a run whose measurements hit
transient instrument faults (retried by `RetryingSystem`), end with bit-identical parameters,
the same metrics rows (no step lost or duplicated) and the same summary as the uninterrupted,
fault-free run. The emulated-bench half of the acceptance is tests/training/test_resume_bench.py.

The config is examples/xor.toml cut short: 4 epochs of mini-batches of 1 (XOR has 4 points:
4 shuffled batches, so 4 checkpoints, per epoch), no early stop, the adjoint cosine logged (a
third twin whose warm starts the checkpoint must carry too).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from physlearn.errors import ConnectionLostError, InstrumentProtocolError, InstrumentTimeoutError
from physlearn.spec.delegating import DelegatingSystem
from physlearn.spec.system import Observation
from physlearn.systems.factory import make_twin
from physlearn.systems.ideal import IdealSystem
from physlearn.systems.safety import RetryingSystem, RetryPolicy
from physlearn.training.config import TrainConfig, load_train_config
from physlearn.training.loop import Trainer
from physlearn.training.runstore import RunStore, load_checkpoint
from physlearn.training.session import train
from physlearn.training.setup import prepare

ROOT = Path(__file__).resolve().parents[2]
XOR = ROOT / "examples" / "xor.toml"
EPOCHS = 4
BATCHES = 4  # per epoch: XOR's 4 points in mini-batches of 1
TIMING = ("wall_time_s", "train_time_s", "eval_time_s")

pytestmark = pytest.mark.timeout(240)


def small_config(tmp: Path, epochs: int = EPOCHS, name: str = "xor-small.toml") -> Path:
    text = XOR.read_text()
    for old, new in (
        ("epochs = 300", f"epochs = {epochs}"),
        ("batch_size = 4", "batch_size = 1"),
        ("target_accuracy = 1.0", ""),
        ("target_loss = 0.0004", ""),
    ):
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp / name
    path.write_text(text)
    return path


def _untimed(row: Any) -> Any:
    """A metrics row or summary without its wall-clock fields (nested rows too)."""
    if isinstance(row, dict):
        return {k: _untimed(v) for k, v in row.items() if k not in TIMING}
    return row


def assert_same_run(a: Path, b: Path, *, experiments: bool = True) -> None:
    """Two finished run directories agree bit for bit, wall-clock times aside: every epoch's
    parameters, the checkpoint (parameters, optimizer state, step), every metrics row and the
    summary (``experiments`` counts retried measurements too: compared only on request)."""
    sa, sb = RunStore.open(a), RunStore.open(b)
    assert sa.param_epochs() == sb.param_epochs() == list(range(len(sa.param_epochs())))
    for e in sa.param_epochs():
        pa, pb = sa.load_params(e), sb.load_params(e)
        assert np.array_equal(pa, pb), (e, np.max(np.abs(pa - pb)))
    ca, cb = sa.load_checkpoint(), sb.load_checkpoint()
    assert np.array_equal(ca.params, cb.params)
    assert (ca.epoch, ca.step) == (cb.epoch, cb.step)
    assert json.dumps(ca.optimizer_state, default=repr) == json.dumps(
        cb.optimizer_state, default=repr
    )

    def strip(x: Any) -> Any:
        x = _untimed(x)
        if not experiments and isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "experiments"}
        return x

    ma, mb = sa.read_metrics(), sb.read_metrics()
    assert [m["epoch"] for m in ma] == [m["epoch"] for m in mb] == list(range(len(ma)))
    assert [m["steps"] for m in ma] == [m["steps"] for m in mb]
    assert [strip(m) for m in ma] == [strip(m) for m in mb]
    assert strip(sa.read_summary()) == strip(sb.read_summary())
    assert np.array_equal(
        np.asarray(sa.read_summary()["final_params"]), np.asarray(sb.read_summary()["final_params"])
    )


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "physlearn.cli", "train", *args],
        capture_output=True,
        text=True,
        timeout=200,
        cwd=cwd,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(config, run directory) of the uninterrupted, fault-free run, through the CLI."""
    tmp = tmp_path_factory.mktemp("reference")
    cfg = small_config(tmp)
    cli("--config", str(cfg), "--run-dir", str(tmp / "runs"), "--name", "ref", "--quiet", cwd=tmp)
    run = tmp / "runs" / "ref"
    summary = RunStore.open(run).read_summary()
    assert summary["steps"] == EPOCHS * BATCHES and summary["epochs_run"] == EPOCHS
    assert not summary["stopped_early"]
    yield cfg, run


# --------------------------------------------------------------------------------------------
# SIGKILL and --resume (subprocesses)
# --------------------------------------------------------------------------------------------


def _checkpoint_or_none(run: Path) -> Any:
    try:
        return load_checkpoint(run)
    except Exception:  # not written yet
        return None


@pytest.mark.slow
@pytest.mark.parametrize("kill_at_step", [6, 9])
def test_sigkill_mid_epoch_and_resume_is_bit_identical(
    reference: tuple[Path, Path], tmp_path: Path, kill_at_step: int
) -> None:
    cfg, ref = reference
    root = tmp_path / "runs"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "physlearn.cli", "train", "--config", str(cfg)),
            *("--run-dir", str(root), "--name", "run", "--quiet"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    run = root / "run"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint at the kill step"
            ck = _checkpoint_or_none(run)
            if ck is not None and ck.step >= kill_at_step and 0 < ck.extra["next_batch"] < BATCHES:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "summary.json").exists()
    ck = load_checkpoint(run)  # what the killed run left: a mid-epoch, mid-run checkpoint
    assert kill_at_step <= ck.step < EPOCHS * BATCHES
    done = RunStore.open(run).read_metrics()
    assert [m["epoch"] for m in done] == list(range(len(done)))
    r = cli("--resume", str(run), "--quiet", cwd=tmp_path)
    assert str(run) in r.stdout
    assert_same_run(ref, run)


def test_resume_refuses_a_different_config(reference: tuple[Path, Path], tmp_path: Path) -> None:
    """Only more epochs (and a bench's addresses) may change on --resume; another learning
    rate is another run."""
    _, ref = reference
    other = small_config(tmp_path)
    other.write_text(other.read_text().replace("lr = 0.05", "lr = 0.06", 1))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "physlearn.cli",
            "train",
            "--resume",
            str(ref),
            "--config",
            str(other),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "differs in optimizer.lr" in r.stderr


# --------------------------------------------------------------------------------------------
# a crash at every kind of write (in process): the run directory is always resumable
# --------------------------------------------------------------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL: nothing catches it, nothing after it runs."""


def crash_at(monkeypatch: pytest.MonkeyPatch, method: str, n: int, after: bool) -> None:
    """Make the n-th call (1-based) of ``RunStore.<method>`` die just before or after it wrote."""
    original = getattr(RunStore, method)
    calls = [0]

    def dying(self: RunStore, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == n and not after:
            raise Killed(f"{method} #{n}")
        out = original(self, *args, **kwargs)
        if calls[0] == n:
            raise Killed(f"after {method} #{n}")
        return out

    monkeypatch.setattr(RunStore, method, dying)


# (method, n-th call, after the write): the first checkpoint, mid-epoch, the last batch of an
# epoch, between an epoch's parameters and its metrics row, between the metrics row and the
# epoch-end checkpoint, the last checkpoint before the summary, the summary itself
CRASHES = [
    ("write_checkpoint", 1, True),
    ("write_checkpoint", 3, False),
    ("write_checkpoint", 5, True),
    ("save_params", 2, True),
    ("append_metrics", 2, True),
    ("write_checkpoint", 1 + EPOCHS * (BATCHES + 1), True),
    ("write_summary", 1, False),
]


@pytest.mark.parametrize(("method", "n", "after"), CRASHES)
def test_crash_at_any_write_then_resume_is_bit_identical(
    reference: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    n: int,
    after: bool,
) -> None:
    cfg_path, ref = reference
    cfg = load_train_config(cfg_path)
    with monkeypatch.context() as m:
        crash_at(m, method, n, after)
        with pytest.raises(Killed):
            train(cfg, root=tmp_path, name="run")
    assert not (tmp_path / "run" / "summary.json").exists()
    train(cfg, root=tmp_path, name="run", resume=True)
    assert_same_run(ref, tmp_path / "run")


def test_crash_twice_and_resume_twice(
    reference: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg_path, ref = reference
    cfg = load_train_config(cfg_path)
    with monkeypatch.context() as m:
        crash_at(m, "write_checkpoint", 4, True)
        with pytest.raises(Killed):
            train(cfg, root=tmp_path, name="run")
    with monkeypatch.context() as m:
        crash_at(m, "append_metrics", 2, True)  # the resumed session's second epoch row
        with pytest.raises(Killed):
            train(cfg, root=tmp_path, name="run", resume=True)
    train(cfg, root=tmp_path, name="run", resume=True)
    assert_same_run(ref, tmp_path / "run")
    # resuming a finished run changes nothing
    before = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    result = train(cfg, root=tmp_path, name="run", resume=True)
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == before
    assert result.summary["steps"] == EPOCHS * BATCHES
    assert np.array_equal(result.params, RunStore.open(ref).load_params(EPOCHS - 1))


# --------------------------------------------------------------------------------------------
# transient faults on the twin (in process)
# --------------------------------------------------------------------------------------------


class FlakyTwin(DelegatingSystem):
    """The twin behind a flaky link: measurement ``k`` (1-based) in ``before`` fails before
    anything is measured (timeout, dropped connection); in ``after`` it is measured and then its
    reply is lost (garbled) — the twin has moved on, as a bench would have. Settings calls in
    ``settings`` fail before reaching the twin."""

    def __init__(
        self,
        inner: IdealSystem,
        before: set[int] = frozenset(),  # type: ignore[assignment]
        after: set[int] = frozenset(),  # type: ignore[assignment]
        settings: set[int] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        super().__init__(inner)
        self.before, self.after, self.settings = before, after, settings
        self.measures = self.sets = 0
        self.faults = 0

    async def set_parameters(self, alpha: np.ndarray) -> None:
        self.sets += 1
        if self.sets in self.settings:
            self.faults += 1
            raise ConnectionLostError("qdac: connection lost")
        await self.inner.set_parameters(alpha)

    async def measure(self) -> Observation:
        self.measures += 1
        k = self.measures
        if k in self.before:
            self.faults += 1
            raise (InstrumentTimeoutError if k % 2 else ConnectionLostError)(
                f"scope1: no reply within 2.0 s (measurement {k})"
            )
        obs = await self.inner.measure()
        if k in self.after:
            self.faults += 1
            raise InstrumentProtocolError(f"scope1: garbled reply (measurement {k})")
        return obs


def _flaky_trainer(cfg: TrainConfig, **faults: set[int]) -> tuple[Trainer, FlakyTwin]:
    setup = prepare(cfg)
    twin = make_twin(cfg, setup.spec)
    assert isinstance(twin, IdealSystem)
    flaky = FlakyTwin(twin, **faults)
    system = RetryingSystem(flaky, RetryPolicy(attempts=4, backoff_s=0.0))
    return Trainer(setup, system=system), flaky


FAULTS = {
    "before": {5, 17, 40, 41},  # 41: twice in a row (the retry fails too)
    "settings": {9},
}


def test_transient_faults_before_the_measurement_are_bit_identical(
    reference: tuple[Path, Path], tmp_path: Path
) -> None:
    cfg_path, ref = reference
    cfg = load_train_config(cfg_path)
    trainer, flaky = _flaky_trainer(cfg, **FAULTS)
    store = RunStore.create(tmp_path, "run", cfg.resolved())
    asyncio.run(trainer.run(store))
    assert flaky.faults == 5
    assert_same_run(ref, tmp_path / "run")


def test_transient_faults_and_a_crash_then_resume_are_bit_identical(
    reference: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A faulted run crashes mid-epoch; the resumed session (its own retrying twin, whose
    warm starts come from the checkpoint through the wrappers) has faults too."""
    cfg_path, ref = reference
    cfg = load_train_config(cfg_path)
    trainer, _ = _flaky_trainer(cfg, **FAULTS)
    store = RunStore.create(tmp_path, "run", cfg.resolved())
    with monkeypatch.context() as m:
        crash_at(m, "write_checkpoint", 8, True)
        with pytest.raises(Killed):
            asyncio.run(trainer.run(store))
    trainer, flaky = _flaky_trainer(cfg, before={2, 9, 10}, settings={4})
    asyncio.run(trainer.run(RunStore.create(tmp_path, "run", cfg.resolved(), resume=True)))
    assert flaky.faults == 4
    assert_same_run(ref, tmp_path / "run")


def test_lost_replies_after_the_measurement(reference: tuple[Path, Path], tmp_path: Path) -> None:
    """A reply lost *after* the twin measured: the twin moved on (its warm-start cache holds
    the orbit just found), and the retried measurement starts Newton from that orbit instead
    of the one the fault-free run started from — the twin's analogue of a bench that kept
    ringing. Same steps, no step lost or duplicated; parameters agree to the solver's
    tolerance, not bit for bit."""
    cfg_path, ref = reference
    cfg = load_train_config(cfg_path)
    trainer, flaky = _flaky_trainer(cfg, after={5, 17, 40})
    store = RunStore.create(tmp_path, "run", cfg.resolved())
    asyncio.run(trainer.run(store))
    assert flaky.faults == 3
    sa, sb = RunStore.open(ref), store
    ma, mb = sa.read_metrics(), sb.read_metrics()
    assert [m["steps"] for m in ma] == [m["steps"] for m in mb]
    for e in sa.param_epochs():
        pa, pb = sa.load_params(e), sb.load_params(e)
        assert np.max(np.abs(pa - pb)) <= 1e-6 * max(1.0, float(np.max(np.abs(pa)))), e
    assert math.isclose(ma[-1]["train_loss"], mb[-1]["train_loss"], rel_tol=1e-4)


@pytest.mark.parametrize("after", [True, False])
def test_every_committed_step_was_reported_before_its_checkpoint(
    reference: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: bool
) -> None:
    """The "step" event — from which a bench session writes the step's per-step record
    (physlearn.training.bench_records.BenchStepRecords) — comes *before* the checkpoint that
    commits the step. Killed right after a checkpoint, every committed step has been reported (it used
    to come after: that step's record was lost for good, the resumed run never redoes it);
    killed between the report and the checkpoint, the resumed run does and reports the step
    again (`physlearn.training.records.read_run_records` keeps the later, applied one)."""
    cfg_path, _ = reference
    cfg = load_train_config(cfg_path)
    seen: list[tuple[int, int, int]] = []

    def progress(ev: Any) -> None:
        if ev.kind == "step":
            seen.append((ev.step, ev.epoch, ev.batch))

    with monkeypatch.context() as m:
        crash_at(m, "write_checkpoint", 3, after)  # #1: the start; #3 commits step 2
        with pytest.raises(Killed):
            train(cfg, root=tmp_path, name="run", listeners=[progress])
    assert load_checkpoint(tmp_path / "run").step == (2 if after else 1)
    assert [s for s, _, _ in seen] == [1, 2]
    train(cfg, root=tmp_path, name="run", listeners=[progress], resume=True)
    steps = [s for s, _, _ in seen]
    assert steps == [1, 2, *range(3 if after else 2, EPOCHS * BATCHES + 1)]
    merged = {s: (e, b) for s, e, b in seen}
    assert sorted(merged) == list(range(1, EPOCHS * BATCHES + 1))
    assert [merged[s] for s in sorted(merged)] == [
        (e, b) for e in range(EPOCHS) for b in range(BATCHES)
    ]


def test_throttled_checkpoints_resume_bit_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``training.checkpoint_interval_s``: ordinary steps are committed at most that often (here
    never), so a kill mid-epoch loses the epoch's steps so far; the resumed run redoes them from
    the last epoch-end checkpoint and ends bit-identical to the uninterrupted throttled run,
    which wrote only the first, the epoch-end and no per-step checkpoints."""
    path = small_config(tmp_path)
    path.write_text(
        path.read_text().replace("[training]\n", "[training]\ncheckpoint_interval_s = 1e6\n", 1)
    )
    cfg = load_train_config(path)
    assert cfg.training.checkpoint_interval_s == 1e6
    writes = [0]
    original = RunStore.write_checkpoint

    def counting(self: RunStore, *args: Any, **kwargs: Any) -> Any:
        writes[0] += 1
        return original(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(RunStore, "write_checkpoint", counting)
        train(cfg, root=tmp_path, name="ref")
    assert writes[0] == 1 + EPOCHS  # the start and every epoch end; none of the 16 steps

    def dies_at_step_7(ev: Any) -> None:
        if ev.kind == "step" and ev.step == 7:  # epoch 1, batch 2
            raise Killed("after step 7")

    with pytest.raises(Killed):
        train(cfg, root=tmp_path, name="run", listeners=[dies_at_step_7])
    ck = load_checkpoint(tmp_path / "run")
    assert (ck.epoch, ck.step, ck.extra["next_batch"]) == (1, BATCHES, 0)  # steps 5-7 lost
    train(cfg, root=tmp_path, name="run", resume=True)
    assert_same_run(tmp_path / "ref", tmp_path / "run")


# --------------------------------------------------------------------------------------------
# a GP lattice (examples/gp-xor.toml): stopped mid-run, `physlearn train --resume RUN`
# --------------------------------------------------------------------------------------------

GP_XOR = ROOT / "examples" / "gp-xor.toml"
GP_FIELD_XOR = ROOT / "examples" / "gp-field-xor.toml"


def gp_small_config(tmp: Path, example: Path = GP_XOR) -> Path:
    """A GP example cut like `small_config`: 4 epochs of mini-batches of 1, no early stop (the
    adjoint cosine is logged: a third GP twin)."""
    text = example.read_text()
    for old, new in (
        ("epochs = 100", f"epochs = {EPOCHS}"),
        ("batch_size = 4", "batch_size = 1"),
        ("target_accuracy = 1.0", ""),
        ("target_loss = ", "# target_loss = "),
    ):
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp / f"{example.stem}-small.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("example", "method", "n"),
    [
        (GP_XOR, "write_checkpoint", 7),
        (GP_XOR, "append_metrics", 2),
        (GP_FIELD_XOR, "write_checkpoint", 7),
    ],
    ids=["lattice-checkpoint", "lattice-metrics", "field-checkpoint"],
)
def test_gp_stopped_and_resumed_through_the_cli_is_bit_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, example: Path, method: str, n: int
) -> None:
    """The GP twin keeps no warm starts between steps (every free state starts from the linear
    response), so the checkpoint's parameters, optimizer state and shuffle order are all a
    resumed GP run (lattice or field) needs: the same parameters at every epoch as the
    uninterrupted run."""
    from threadpoolctl import threadpool_limits

    from physlearn.cli import main

    with threadpool_limits(1):  # small dense solves: one BLAS thread, steady on a loaded machine
        _gp_stop_and_resume(tmp_path, monkeypatch, example, method, n, main)


def _gp_stop_and_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, example: Path, method: str, n: int, main: Any
) -> None:
    cfg_path = gp_small_config(tmp_path, example)
    root = tmp_path / "runs"
    common = ["--quiet", "--no-report"]
    args = ["train", "--config", str(cfg_path), "--run-dir", str(root), "--name", "ref", *common]
    assert main(args) == 0
    cfg = load_train_config(cfg_path)
    with monkeypatch.context() as m:
        crash_at(m, method, n, True)
        with pytest.raises(Killed):
            train(cfg, root=root, name="run")
    run = root / "run"
    assert not (run / "summary.json").exists()
    assert 0 < load_checkpoint(run).step < EPOCHS * BATCHES
    assert main(["train", "--resume", str(run), *common]) == 0
    assert_same_run(root / "ref", run)
    assert RunStore.open(run).read_summary()["steps"] == EPOCHS * BATCHES
