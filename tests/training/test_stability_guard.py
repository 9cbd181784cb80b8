"""Issue 16: stability as part of training (``training.stability_check``). A large learning rate
carries XOR's network across a bifurcation — the unguarded run ends on free orbits that do not
attract — and the guarded run shortens or refuses those steps and ends on attracting ones; with
the option off (or when it never intervenes) the run is bit-identical."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from physlearn.errors import ConfigError
from physlearn.training.config import TrainConfig, load_train_config
from physlearn.training.events import RunEvent, StabilityGuarded
from physlearn.training.loop import Trainer
from physlearn.training.session import train
from physlearn.training.setup import prepare

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _cfg(**overrides: Any) -> TrainConfig:
    base = {
        "system.floquet": "none",  # the twin itself does not refuse unstable orbits
        "training.log_cosine_to_adjoint": False,
        "training.epochs": 3,
        "training.target_accuracy": None,
        "training.target_loss": None,
        "training.stability_check": "none",  # examples/xor.toml turns the guard on
        "training.max_loss_increase": None,
    }
    return load_train_config(EXAMPLES / "xor.toml", {**base, **overrides})


def test_guard_keeps_the_free_orbits_attracting() -> None:
    # lr = 1: the third step crosses a bifurcation (final |μ| = 1.109 unguarded, measured)
    free = train(_cfg(**{"optimizer.lr": 1.0}), write=False)
    assert not free.summary["stability"]["stable"]
    assert "stability_refusals" not in free.summary

    cfg = _cfg(**{"optimizer.lr": 1.0, "training.stability_check": "full"})
    trainer = Trainer(prepare(cfg))
    seen: list[RunEvent] = []
    trainer.events.subscribe(seen.append)
    res = asyncio.run(trainer.run(None))
    s = res.summary
    assert s["stability"]["stable"], s["stability"]
    assert s["stability"]["max_floquet_multiplier"] <= 1.0
    guarded = [e for e in seen if isinstance(e, StabilityGuarded)]
    assert s["stability_shortened"] + s["stability_refusals"] == len(guarded) > 0
    assert all(e.max_multiplier > e.threshold for e in guarded)
    assert {e.outcome for e in guarded} <= {"shortened", "refused"}


def test_guard_off_or_idle_is_bit_identical() -> None:
    off = train(_cfg(), write=False)
    idle = train(_cfg(**{"training.stability_check": "full"}), write=False)
    assert idle.summary["stability_shortened"] == idle.summary["stability_refusals"] == 0
    assert off.params.tobytes() == idle.params.tobytes()
    assert [m["train_loss"] for m in off.metrics] == [m["train_loss"] for m in idle.metrics]
    assert "stability_shortened" not in off.summary


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_margin_sets_the_threshold(margin: float) -> None:
    cfg = _cfg(**{"training.stability_check": "full", "training.stability_margin": margin})
    trainer = Trainer(prepare(cfg))
    assert trainer.stability is not None
    assert trainer.stability.threshold == (1.0 - margin if margin else 1.0 + 1e-6)


def test_not_for_autonomous_systems() -> None:
    cfg = load_train_config(
        EXAMPLES / "autonomous-xor-energy.toml", {"training.stability_check": "full"}
    )
    with pytest.raises(ConfigError, match="stability_check"):
        Trainer(prepare(cfg))


def test_twin_floquet_check_collocation_matches_full() -> None:
    from physlearn.systems.factory import make_twin

    cfg = _cfg()
    setup = prepare(cfg)
    twin = make_twin(cfg, setup.spec, "none")
    u = setup.dataset.x_train[:4]
    task = setup.targets.task(setup.spec, setup.dataset.y_train[:4])
    params = setup.spec.initial_parameters()
    full = asyncio.run(twin.floquet_check(params, u, task))
    dom = asyncio.run(twin.floquet_check(params, u, task, method="collocation"))
    assert full.shape == dom.shape == (4,)
    assert abs(dom - full).max() <= 1e-8 * full.max()
    with pytest.raises(ConfigError):
        asyncio.run(twin.floquet_check(params, u, task, method="arnoldi"))


def test_the_guard_refuses_a_gp_lattice() -> None:
    from physlearn.errors import ConfigError
    from physlearn.training.config import load_train_config
    from physlearn.training.stability_guard import make_stability_guard

    cfg = load_train_config(EXAMPLES / "gp-xor.toml", {"training.stability_check": "full"})
    with pytest.raises(ConfigError, match=r"training\.stability_check: not for a GP lattice"):
        make_stability_guard(cfg, None)


def test_a_guard_that_refuses_every_step_stops_the_run(tmp_path: Path) -> None:
    # margin 0.999: no orbit of this lightly damped network has |μ| ≤ 0.001, so every step is
    # refused; the run stops after `stability_stall_steps` of them (XOR: one step per epoch)
    # instead of idling to its epoch budget, on its initial parameters
    stall = {
        "training.stability_check": "full",
        "training.stability_margin": 0.999,
        "training.stability_stall_steps": 3,
    }
    res = train(_cfg(**stall, **{"training.epochs": 10}), write=False)
    s = res.summary
    assert s["stopped_early"] and s["epochs_run"] == 3, s
    assert "stability guard refused the last 3 steps" in s["stop_reason"]
    assert s["stability_refusals"] == 3 and s["stability_shortened"] == 0
    assert [m["epoch_stability_refusals"] for m in res.metrics] == [1, 1, 1]
    initial = train(_cfg(**{"training.epochs": 0}), write=False)
    assert res.params.tobytes() == initial.params.tobytes()

    # the streak is part of the checkpoint: 2 epochs, then extended to 10, stops where the
    # uninterrupted run did
    two = _cfg(**stall, **{"training.epochs": 2})
    first = train(two, root=tmp_path, name="run")
    assert not first.summary["stopped_early"] and first.summary["epochs_run"] == 2
    more = _cfg(**stall, **{"training.epochs": 10})
    resumed = train(more, root=tmp_path, name="run", resume=True)
    assert resumed.summary["epochs_run"] == 3
    assert resumed.summary["stop_reason"] == s["stop_reason"]

    # None: never stops for it
    never = _cfg(**{**stall, "training.stability_stall_steps": None, "training.epochs": 5})
    assert train(never, write=False).summary["epochs_run"] == 5


def test_max_loss_increase_makes_every_step_a_descent_step() -> None:
    """``training.max_loss_increase = 0`` (the cost test alone): with a learning rate so large
    that the unguarded run's loss jumps up, every step the guard lets through lowers the cost of
    the mini-batch (here all four XOR points, one step per epoch), and every step it changed
    had raised the cost at full length (measured: ×26 … ×1.08, or no steady state at all)."""
    overrides = {"optimizer.lr": 1.0, "training.epochs": 6}
    free = train(_cfg(**overrides), write=False)
    losses = [m["train_loss"] for m in free.metrics]
    assert any(b > a for a, b in itertools.pairwise(losses))  # it jumps up

    cfg = _cfg(
        **overrides, **{"training.max_loss_increase": 0.0, "training.stability_backtracks": 10}
    )
    trainer = Trainer(prepare(cfg))
    assert trainer.stability is not None and trainer.stability.method == "none"
    seen: list[RunEvent] = []
    trainer.events.subscribe(seen.append)
    res = asyncio.run(trainer.run(None))
    guarded = [e for e in seen if isinstance(e, StabilityGuarded)]
    assert len(guarded) == res.summary["stability_shortened"] + res.summary["stability_refusals"]
    assert res.summary["stability_shortened"] > 0
    assert all(e.cost_ratio is None or e.cost_ratio > 1.0 for e in guarded)
    initial = res.summary["initial"]["train_loss"]
    losses = [initial] + [m["train_loss"] for m in res.metrics]
    assert all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < initial


def test_max_loss_increase_is_checked() -> None:
    with pytest.raises(ConfigError, match="max_loss_increase"):
        _cfg(**{"training.max_loss_increase": -0.1})
    cfg = load_train_config(
        EXAMPLES / "autonomous-xor-energy.toml", {"training.max_loss_increase": 0.5}
    )
    with pytest.raises(ConfigError, match="max_loss_increase"):
        Trainer(prepare(cfg))


def test_a_refused_trial_leaves_no_trace_in_the_guards_warm_starts() -> None:
    """Each trial starts from the orbits the guard's twin had before the step: after a refused
    step its warm starts for the mini-batch are the ones before it, bit for bit (a refused
    trial's orbit would otherwise seed the next check, possibly on another branch)."""
    import numpy as np

    from physlearn.systems.ideal import IdealSystem, warm_starts
    from physlearn.training.events import EventStream
    from physlearn.training.state import TrainerState

    cfg = _cfg(**{"training.stability_check": "full", "training.stability_margin": 0.999})
    setup = prepare(cfg)
    trainer = Trainer(setup)
    guard = trainer.stability
    assert guard is not None
    twin = guard.twin
    assert isinstance(twin, IdealSystem)
    u = setup.dataset.x_train
    task = setup.targets.task(setup.spec, setup.dataset.y_train)
    p0 = setup.spec.initial_parameters()
    asyncio.run(guard.worst(p0, u, task))  # the twin now holds the orbits at p0
    before = warm_starts(twin, u)
    st = TrainerState.fresh(p0, 0)
    out = asyncio.run(guard.apply(st, EventStream(), (0, 0), p0 + 0.2, u, task))
    assert out.tobytes() == p0.tobytes() and st.counters["stability_refusals"] == 1
    after = warm_starts(twin, u)
    assert before.keys() == after.keys()
    for key, entry in before.items():
        now = after[key]
        assert entry is not None and now is not None
        assert np.array_equal(now[0], entry[0]) and np.array_equal(now[1], entry[1])
    # ... whereas the trials themselves solved elsewhere
    asyncio.run(guard.worst(p0 + 0.025, u, task))
    moved = warm_starts(twin, u)
    assert not all(np.array_equal(moved[k][1], before[k][1]) for k in before)  # type: ignore[index]
