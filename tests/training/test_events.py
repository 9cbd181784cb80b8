"""The trainer's event stream (physlearn.training.events): typed events in run order, sync and
async listeners called in subscription order, the level named in events, metrics rows and
summary; the stability check reached through the `StabilityCheck` protocol."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from physlearn.errors import SteadyStateError
from physlearn.estimators import Estimator, GradientEstimate
from physlearn.spec.system import PhysicalSystem, StabilityCheck
from physlearn.spec.task import Task
from physlearn.systems.factory import make_system, make_twin
from physlearn.systems.safety import RetryingSystem
from physlearn.training.config import TrainConfig, load_train_config
from physlearn.training.events import (
    EpochDone,
    EventStream,
    Fault,
    RunEvent,
    RunFinished,
    RunPaused,
    RunResumed,
    RunStarted,
    StepDone,
)
from physlearn.training.loop import Trainer
from physlearn.training.session import train
from physlearn.training.setup import prepare

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _cfg(**overrides: Any) -> TrainConfig:
    base = {
        "system.floquet": "none",
        "training.log_cosine_to_adjoint": False,
        "training.epochs": 3,
        "training.batch_size": 2,
        "training.target_accuracy": None,
        "training.target_loss": None,
    }
    return load_train_config(EXAMPLES / "xor.toml", {**base, **overrides})


def test_events_come_in_run_order_and_name_the_level(tmp_path: Path) -> None:
    seen: list[RunEvent] = []
    order: list[str] = []

    def first(ev: RunEvent) -> None:
        seen.append(ev)
        order.append("sync")

    async def second(ev: RunEvent) -> None:
        await asyncio.sleep(0)
        order.append("async")

    res = train(_cfg(), root=tmp_path, name="run", listeners=[first, second])
    assert order == ["sync", "async"] * len(seen)
    kinds = [type(ev) for ev in seen]
    assert kinds == [RunStarted, *([StepDone, StepDone, EpochDone] * 3), RunFinished]
    start = seen[0]
    assert isinstance(start, RunStarted)
    assert start.level == "ideal" and start.total_steps == 6
    assert start.initial == res.summary["initial"]
    steps = [ev for ev in seen if isinstance(ev, StepDone)]
    assert [(s.epoch, s.batch, s.step) for s in steps] == [
        (e, b, 2 * e + b + 1) for e in range(3) for b in range(2)
    ]
    for a, b in itertools.pairwise(steps):
        assert np.array_equal(a.new_params, b.params)  # the next step is measured there
    assert all(s.cosine is None and s.wall_time_s > 0 and s.experiments > 0 for s in steps)
    assert all(s.gradient.shape == s.params.shape and np.isfinite(s.loss) for s in steps)
    epochs = [ev for ev in seen if isinstance(ev, EpochDone)]
    assert [ev.metrics for ev in epochs] == res.metrics
    assert np.array_equal(epochs[-1].params, res.params)
    end = seen[-1]
    assert isinstance(end, RunFinished) and end.summary == res.summary
    # the level in every metrics row and the summary, as written
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["level"] for r in rows] == ["ideal"] * 3
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["level"] == "ideal"


def test_a_resumed_run_says_so(tmp_path: Path) -> None:
    cfg = _cfg()
    train(cfg, root=tmp_path, name="run")
    seen: list[RunEvent] = []
    train(cfg, root=tmp_path, name="run", resume=True, listeners=[seen.append])
    assert [type(ev) for ev in seen] == [RunResumed, RunFinished]
    ev = seen[0]
    assert isinstance(ev, RunResumed)
    assert (ev.level, ev.epoch, ev.batch, ev.step) == ("ideal", 3, 0, 6)


class _FailsOn(Estimator):
    """No steady state on the calls in ``bad``."""

    name = "fails_on"

    def __init__(self, inner: Estimator, bad: set[int]):
        super().__init__(inner.knowledge)
        self.inner, self.bad, self.calls = inner, bad, 0

    async def estimate(
        self, system: PhysicalSystem, alpha: np.ndarray, u: np.ndarray, task: Task
    ) -> GradientEstimate:
        self.calls += 1
        if self.calls - 1 in self.bad:
            raise SteadyStateError("synthetic: no steady state", sample=0, residual=1.0)
        return await self.inner.estimate(system, alpha, u, task)


def test_a_failed_step_is_a_fault_event_not_a_step() -> None:
    setup = prepare(_cfg())
    setup.estimator = _FailsOn(setup.estimator, {1})
    seen: list[RunEvent] = []
    res = asyncio.run(Trainer(setup, events=EventStream([seen.append])).run(None))
    faults = [ev for ev in seen if isinstance(ev, Fault)]
    assert len(faults) == 1
    f = faults[0]
    assert (f.fault, f.epoch, f.batch, f.step, f.consecutive) == ("solver_failures", 0, 1, 1, 1)
    assert f.step_scale == 0.5 and "no steady state" in f.message
    assert sum(isinstance(ev, StepDone) for ev in seen) == res.summary["steps"] == 5


def test_cancellation_pauses_the_run() -> None:
    setup = prepare(_cfg())
    seen: list[RunEvent] = []

    def cancel_at_step_2(ev: RunEvent) -> None:
        seen.append(ev)
        if isinstance(ev, StepDone) and ev.step == 2:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(Trainer(setup, events=EventStream([cancel_at_step_2])).run(None))
    assert isinstance(seen[-1], RunPaused) and seen[-1].reason == "interrupted"


def test_only_the_twin_checks_stability_itself() -> None:
    cfg = _cfg()
    twin = make_twin(cfg)
    assert isinstance(twin, StabilityCheck)
    assert not isinstance(RetryingSystem(twin), StabilityCheck)

    async def level() -> str:
        async with make_system(cfg) as system:
            assert isinstance(system, StabilityCheck)
            return str(system.level)

    assert asyncio.run(level()) == "ideal"
