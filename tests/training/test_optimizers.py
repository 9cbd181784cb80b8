"""Optimizers: reference values, convergence, projection, state round trips, refusal."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from physlearn.errors import ConfigError, GradientError, PhyslearnError
from physlearn.training.optimizers import (
    SGD,
    Adam,
    ConstantLR,
    CosineLR,
    ExponentialLR,
    Momentum,
    Optimizer,
    StepLR,
    make_optimizer,
    make_schedule,
    project_to_bounds,
)


def _assert_state_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key == "buffers":
            assert a[key].keys() == b[key].keys()
            for name in a[key]:
                np.testing.assert_array_equal(a[key][name], b[key][name])
        else:
            assert a[key] == b[key], key


# -- reference values ------------------------------------------------------------------------


def test_adam_matches_hand_computed_two_steps() -> None:
    # p0 = (1, -2); g1 = (0.5, -1); g2 = (-0.2, 0.4); lr 0.1, β1 0.9, β2 0.999, eps 1e-8.
    # Step 1: m̂ = g1, v̂ = g1² → p1 = p0 − 0.1·g1/(|g1| + 1e-8).
    # Step 2 (param 0): m = 0.9·0.05 + 0.1·(−0.2) = 0.025, v = 0.999·0.00025 + 0.001·0.04
    #   = 0.00028975; m̂ = 0.025/0.19, v̂ = 0.00028975/0.001999 (computed in 40-digit decimal).
    opt = Adam(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    p1 = opt.step(np.array([1.0, -2.0]), np.array([0.5, -1.0]))
    np.testing.assert_allclose(p1, [0.90000000199999996, -1.90000000099999999], rtol=1e-15)
    p2 = opt.step(p1, np.array([-0.2, 0.4]))
    np.testing.assert_allclose(p2, [0.86543941811651059, -1.86543941666262571], rtol=1e-14)
    np.testing.assert_allclose(opt.buffers["m"], [0.025, -0.05], rtol=1e-15)
    np.testing.assert_allclose(opt.buffers["v"], [0.00028975, 0.001159], rtol=1e-14)
    assert opt.step_count == 2


def test_sgd_and_momentum_first_steps() -> None:
    g1, g2 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    p = SGD(lr=0.1).step(np.zeros(2), g1)
    np.testing.assert_array_equal(p, [-0.1, 0.2])
    mom = Momentum(lr=0.1, momentum=0.5)
    p1 = mom.step(np.zeros(2), g1)
    p2 = mom.step(p1, g2)  # v2 = 0.5·g1 + g2
    np.testing.assert_allclose(p2, p1 - 0.1 * (0.5 * g1 + g2), rtol=1e-15)
    nes = Momentum(lr=0.1, momentum=0.5, nesterov=True)
    q1 = nes.step(np.zeros(2), g1)  # v1 = g1; direction g1 + 0.5·g1
    np.testing.assert_allclose(q1, -0.1 * 1.5 * g1, rtol=1e-15)


def _steps_to_converge(opt: Optimizer, tol: float = 1e-6, max_steps: int = 5000) -> int:
    a = np.array([1.0, 25.0])  # quadratic ½ Σ a_i x_i², condition number 25
    x = np.array([1.0, 1.0])
    for k in range(max_steps):
        if np.linalg.norm(x) < tol:
            return k
        x = opt.step(x, a * x)
    return max_steps


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_converges_on_quadratic_faster_than_sgd(nesterov: bool) -> None:
    n_sgd = _steps_to_converge(SGD(lr=0.04))
    n_mom = _steps_to_converge(Momentum(lr=0.04, momentum=0.6, nesterov=nesterov))
    assert n_mom < 5000
    assert n_mom < n_sgd / 2


def test_adam_converges_on_quadratic() -> None:
    opt = Adam(lr=make_schedule("exponential", lr=0.1, gamma=0.99))
    assert _steps_to_converge(opt, tol=1e-3) < 2000


# -- schedules -------------------------------------------------------------------------------


def test_schedule_values() -> None:
    assert [ConstantLR(0.3).lr(k) for k in (0, 10)] == [0.3, 0.3]
    assert [StepLR(1.0, step_size=3, gamma=0.5).lr(k) for k in range(7)] == [
        1.0,
        1.0,
        1.0,
        0.5,
        0.5,
        0.5,
        0.25,
    ]
    assert [ExponentialLR(2.0, gamma=0.5).lr(k) for k in range(3)] == [2.0, 1.0, 0.5]
    cos = CosineLR(1.0, total_steps=4, lr_min=0.1)
    expected = [0.1 + 0.45 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]
    np.testing.assert_allclose([cos.lr(k) for k in range(5)], expected, rtol=1e-15)
    assert cos.lr(0) == 1.0 and cos.lr(2) == pytest.approx(0.55) and cos.lr(99) == 0.1


def test_optimizer_follows_its_schedule() -> None:
    opt = SGD(lr=StepLR(1.0, step_size=2, gamma=0.1))
    p = np.zeros(1)
    deltas = []
    for _ in range(4):
        new = opt.step(p, np.ones(1))
        deltas.append(float(p[0] - new[0]))
        p = new
    np.testing.assert_allclose(deltas, [1.0, 1.0, 0.1, 0.1], rtol=1e-12)


def test_schedule_validation() -> None:
    with pytest.raises(ConfigError, match="lr"):
        ConstantLR(-1.0)
    with pytest.raises(ConfigError, match="lr: must be a number"):
        make_optimizer("sgd", lr="fast")
    with pytest.raises(ConfigError, match="gamma"):
        ExponentialLR(1.0, gamma=1.5)
    with pytest.raises(ConfigError, match="lr_min"):
        CosineLR(1.0, total_steps=10, lr_min=2.0)
    with pytest.raises(ConfigError, match=r"'warm'.*constant, cosine, exponential, step"):
        make_schedule("warm", lr=1.0)


# -- projection ------------------------------------------------------------------------------


def test_projection_reports_clipped_indices() -> None:
    lower = np.array([-1.0, 0.0, -np.inf, 0.0])
    upper = np.array([1.0, 0.5, np.inf, 0.0])
    opt = SGD(lr=1.0, bounds=(lower, upper))
    p = opt.step(np.zeros(4), np.array([-5.0, -0.2, 100.0, 0.0]))
    np.testing.assert_array_equal(p, [1.0, 0.2, -100.0, 0.0])
    np.testing.assert_array_equal(opt.last_clipped, [0])
    p = opt.step(p, np.array([0.0, -1.0, 0.0, -3.0]))
    np.testing.assert_array_equal(p, [1.0, 0.5, -100.0, 0.0])
    np.testing.assert_array_equal(opt.last_clipped, [1, 3])
    assert opt.n_clipped_total == 3
    p = opt.step(p, np.zeros(4))
    assert opt.last_clipped.size == 0

    projected, clipped = project_to_bounds(np.array([2.0, -2.0, 0.3]), -1.0, 1.0)
    np.testing.assert_array_equal(projected, [1.0, -1.0, 0.3])
    np.testing.assert_array_equal(clipped, [0, 1])


def test_bounds_validation() -> None:
    with pytest.raises(ConfigError, match="lower > upper"):
        SGD(bounds=(np.array([0.0, 1.0]), np.array([1.0, 0.0])))
    with pytest.raises(ConfigError, match="shape"):
        SGD(bounds=(np.zeros(2), np.ones(3)))
    opt = SGD(bounds=(np.zeros(3), np.ones(3)))
    with pytest.raises(PhyslearnError, match="bounds"):
        opt.step(np.zeros(2), np.zeros(2))


# -- state round trip ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, cfg",
    [
        ("sgd", {"lr": 0.05}),
        ("momentum", {"lr": 0.05, "momentum": 0.8}),
        ("momentum", {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
        ("adam", {"lr": 0.05, "schedule": {"name": "cosine", "total_steps": 7}}),
    ],
)
def test_state_dict_round_trip_is_bit_identical(name: str, cfg: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((10, 5))
    bounds = (np.full(5, -0.3), np.full(5, 0.3))
    a = make_optimizer(name, bounds=bounds, **cfg)
    p = rng.standard_normal(5) * 0.1
    for g in grads[:5]:
        p = a.step(p, g)
    snapshot = a.state_dict()
    p_snapshot = p.copy()
    for g in grads[5:]:
        p = a.step(p, g)
    # The snapshot holds copies: continuing did not change it.
    assert snapshot["step_count"] == 5

    b = make_optimizer(**snapshot["config"], bounds=bounds)
    b.load_state_dict(snapshot)
    q = p_snapshot
    for g in grads[5:]:
        q = b.step(q, g)
    np.testing.assert_array_equal(q, p)
    _assert_state_equal(a.state_dict(), b.state_dict())


def test_load_state_dict_rejects_other_optimizer_or_config() -> None:
    adam = Adam(lr=0.1)
    adam.step(np.zeros(2), np.ones(2))
    with pytest.raises(ConfigError, match="'adam'"):
        Momentum(lr=0.1).load_state_dict(adam.state_dict())
    with pytest.raises(ConfigError, match="config"):
        Adam(lr=0.2).load_state_dict(adam.state_dict())
    bad = adam.state_dict()
    bad["buffers"]["m"] = np.zeros(3)
    with pytest.raises(ConfigError, match="shape"):
        Adam(lr=0.1).load_state_dict(bad)


# -- refusal ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_gradient_leaves_everything_untouched(name: str, bad: float) -> None:
    opt = make_optimizer(name, lr=0.1, bounds=(-1.0, 1.0))
    twin = make_optimizer(name, lr=0.1, bounds=(-1.0, 1.0))
    p = np.array([0.1, 0.2, 0.3])
    for g in (np.array([1.0, 2.0, 3.0]), np.array([-1.0, 0.5, 9.0])):
        p = opt.step(p, g)
        twin.step(p, g)
    before = opt.state_dict()
    p_before = p.copy()
    grad = np.array([0.1, bad, 0.2])
    with pytest.raises(GradientError, match="non-finite"):
        opt.step(p, grad)
    np.testing.assert_array_equal(p, p_before)
    _assert_state_equal(opt.state_dict(), before)
    # The next good step is the one an optimizer that never saw the bad gradient makes.
    g = np.array([0.3, -0.3, 0.1])
    np.testing.assert_array_equal(opt.step(p, g), twin.step(p, g))


def test_overflowing_update_is_refused() -> None:
    adam = Adam(lr=0.1)
    adam.step(np.zeros(2), np.ones(2))
    before = adam.state_dict()
    with pytest.raises(GradientError, match="overflow"):
        adam.step(np.zeros(2), np.array([1e200, 0.0]))  # g² overflows
    _assert_state_equal(adam.state_dict(), before)
    with pytest.raises(GradientError, match="overflow"):
        SGD(lr=1e10).step(np.zeros(1), np.array([1e300]))


def test_bad_shapes_and_params() -> None:
    opt = SGD(lr=0.1)
    with pytest.raises(GradientError, match="shape"):
        opt.step(np.zeros(3), np.zeros(2))
    with pytest.raises(PhyslearnError, match="not finite"):
        opt.step(np.array([np.nan]), np.zeros(1))
    assert opt.step_count == 0


def test_step_does_not_mutate_inputs() -> None:
    p = np.array([0.5, -0.5])
    g = np.array([1.0, 1.0])
    for opt in (SGD(lr=0.1), Momentum(lr=0.1), Adam(lr=0.1, bounds=(-0.45, 0.45))):
        new = opt.step(p, g)
        np.testing.assert_array_equal(p, [0.5, -0.5])
        np.testing.assert_array_equal(g, [1.0, 1.0])
        assert new is not p


# -- registry --------------------------------------------------------------------------------


def test_make_optimizer_registry_and_errors() -> None:
    opt = make_optimizer("momentum", lr=0.2, momentum=0.5, nesterov=True)
    assert isinstance(opt, Momentum) and opt.lr == 0.2 and opt.nesterov
    sched = make_optimizer("sgd", lr=1.0, schedule={"name": "step", "step_size": 2, "gamma": 0.5})
    assert isinstance(sched.schedule, StepLR)
    assert make_optimizer("adam").lr == 1e-3
    with pytest.raises(ConfigError, match=r"'lbfgs'.*adam, momentum, sgd"):
        make_optimizer("lbfgs")
    with pytest.raises(ConfigError, match="beta3"):
        make_optimizer("adam", beta3=0.5)
    with pytest.raises(ConfigError, match="unknown schedule"):
        make_optimizer("sgd", lr=0.1, schedule="triangle")
    with pytest.raises(ConfigError, match="momentum"):
        make_optimizer("momentum", momentum=1.0)


# -- property test ---------------------------------------------------------------------------

_wild = st.floats(min_value=-1e300, max_value=1e300, allow_nan=False, allow_infinity=False)


@st.composite
def _case(
    draw: st.DrawFn,
) -> tuple[str, float, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    n = draw(st.integers(1, 6))
    name = draw(st.sampled_from(["sgd", "momentum", "adam"]))
    lr = draw(st.floats(min_value=1e-8, max_value=1e8))
    a = np.array(draw(st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n)))
    b = np.array(draw(st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n)))
    lower, upper = np.minimum(a, b), np.maximum(a, b)
    if draw(st.booleans()):
        lower[0] = -np.inf
    p0 = np.array(draw(st.lists(_wild, min_size=n, max_size=n)))
    grads = [
        np.array(draw(st.lists(_wild, min_size=n, max_size=n)))
        for _ in range(draw(st.integers(1, 4)))
    ]
    return name, lr, lower, upper, p0, grads


@settings(max_examples=150, deadline=None)
@given(_case())
def test_projected_parameters_stay_in_bounds_and_finite(
    case: tuple[str, float, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]],
) -> None:
    name, lr, lower, upper, p, grads = case
    opt = make_optimizer(name, lr=lr, bounds=(lower, upper))
    for g in grads:
        before = p.copy()
        steps = opt.step_count
        try:
            p = opt.step(p, g)
        except GradientError:
            np.testing.assert_array_equal(p, before)
            assert opt.step_count == steps
            continue
        assert np.isfinite(p).all()
        assert np.all(p >= lower) and np.all(p <= upper)
