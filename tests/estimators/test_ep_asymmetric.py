"""Non-reciprocal couplings: `ep_asymmetric` exact against the adjoint (stationary states and
damped periodic orbits through the echo), β → 0 scaling, Vector-Field EP's bias beside it, and
the refusals (reciprocal-only estimators, missing feedback elements, unstable networks)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import numpy as np
import pytest

from physlearn.errors import ConfigError, GradientError, UnstableOrbitError
from physlearn.estimators import make_estimator
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.simulators.ensemble import random_nonreciprocal_network
from physlearn.spec.delegating import DelegatingSystem
from physlearn.spec.model import rest_growth_rate
from physlearn.spec.network import NetworkSpec
from physlearn.spec.task import Task
from physlearn.spec.topology import layered
from physlearn.systems.ideal import IdealSystem


def rel(g: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(g - ref) / np.linalg.norm(ref))


def feedforward(d: int, static: bool, damping: float) -> NetworkSpec:
    """A fully feedforward layered network of d nodes (directed couplings through tanh)."""
    layers = {6: [2, 3, 1], 12: [2, 5, 4, 1]}[d]
    spec = layered(
        layers,
        kind="directed",
        bias_node=False,
        damping=damping,
        init_scale=1.0,
        target_kind="constant" if static else "inphase",
        seed=d,
    )
    data = spec.model_dump()
    data["biases"] = [{**b, "value": 0.1 * (-1) ** b["node"]} for b in data["biases"]]
    if static:
        data["inputs"]["waveform"] = "constant"
    return NetworkSpec.model_validate(data)


def network(kind: str, d: int, static: bool, seed: int = 0) -> NetworkSpec:
    damping = 2.0 if static else 0.2
    if kind == "feedforward":
        return feedforward(d, static, damping)
    rng = np.random.default_rng(seed + d)
    return random_nonreciprocal_network(
        d, rng, family=kind, damping=damping, static=static, asymmetry=0.8
    )


def run(
    spec: NetworkSpec, names: dict[str, dict[str, Any]], seed: int = 0, system: Any = None
) -> dict[str, np.ndarray]:
    static = spec.inputs.waveform == "constant"
    sys_ = system or IdealSystem(spec, 5 if static else 33, echo_settle="newton")
    rng = np.random.default_rng(seed)
    u = rng.uniform(0.5, 1.0, (2, len(spec.inputs.nodes)))
    y = rng.uniform(-0.5, 0.5, (2, len(spec.outputs.nodes)))
    task = Task.from_spec(spec, y)
    kn = ModelKnowledge.from_spec(spec)
    alpha = spec.initial_parameters()

    async def go() -> dict[str, np.ndarray]:
        out = {}
        for key, cfg in names.items():
            cfg = dict(cfg)
            name = cfg.pop("name", key)
            est = make_estimator(name, kn, **cfg)
            out[key] = (await est.estimate(sys_, alpha, u, task)).grad
        return out

    return asyncio.run(go())


FAST = {("linear", 6, True), ("tanh_active", 6, False), ("feedforward", 6, False)}
CASES = [
    pytest.param(kind, d, static, marks=[] if (kind, d, static) in FAST else [pytest.mark.slow])
    for kind in ("linear", "tanh_active", "feedforward")
    for static in (True, False)
    for d in (6, 12)
]


@pytest.mark.parametrize(("kind", "d", "static"), CASES)
def test_ep_asymmetric_exact(kind: str, d: int, static: bool) -> None:
    """Must-show 1: relative error ≤ 1e-6 at β = 1e-3, falling as β² (β = 1e-2 → 1e-3);
    Vector-Field EP biased beside it."""
    spec = network(kind, d, static)
    echo = not static
    g = run(
        spec,
        {
            "adjoint": {},
            "big": {"name": "ep_asymmetric", "beta": 1e-2, "echo": echo},
            "small": {"name": "ep_asymmetric", "beta": 1e-3, "echo": echo},
            "vf": {"name": "ep_vector_field", "beta": 1e-3},
        },
    )
    ref = g["adjoint"]
    e_big, e_small, e_vf = rel(g["big"], ref), rel(g["small"], ref), rel(g["vf"], ref)
    print(
        f"{kind} d={d} static={static}: AEP {e_big:.2e} (1e-2) {e_small:.2e} (1e-3); VF {e_vf:.2e}"
    )
    assert e_small <= 1e-6
    assert e_small < e_big / 30 or e_big < 1e-9  # O(β²) above the solver floor
    assert e_vf > 1e-2  # the baseline is biased
    if kind == "feedforward":
        # VF-EP: every coupling into a hidden node gets exactly zero (no backward response)
        hidden = set(range(2, d - 1))
        names = spec.parameter_names()
        idx = [
            i
            for i, n in enumerate(names)
            if n.startswith("directed") and int(n.split(":")[2].split("<-")[0]) in hidden
        ]
        assert np.abs(g["vf"][:, idx]).max() < 1e-12 * np.abs(ref).max()
        assert np.abs(ref[:, idx]).max() > 1e-6


@pytest.mark.slow
def test_vector_field_error_grows_with_asymmetry() -> None:
    """VF-EP's error grows with the antisymmetric fraction f; ep_asymmetric stays exact. At f = 0
    (stationary: J symmetric) both are exact."""
    errors = []
    for f in (0.0, 0.3, 0.6, 0.9):
        spec = random_nonreciprocal_network(
            6, np.random.default_rng(5), family="linear", static=True, damping=2.0, asymmetry=f
        )
        g = run(spec, {"adjoint": {}, "ep_asymmetric": {"echo": False}, "ep_vector_field": {}})
        errors.append(rel(g["ep_vector_field"], g["adjoint"]))
        assert rel(g["ep_asymmetric"], g["adjoint"]) < 1e-6
    assert errors[0] < 1e-6
    assert all(b > a for a, b in itertools.pairwise(errors))


def test_reciprocal_pair_is_a_product_coupling() -> None:
    """Two linear directed couplings i <- j, j <- i of equal gain are one product coupling
    (ρ = identity): same orbit, same adjoint gradient."""
    base = {
        "nodes": {"count": 3, "stiffness": [2.0, 2.5, 2.2], "damping": 0.1},
        "nonlinearity": "identity",
        "inputs": {"nodes": [0]},
        "outputs": {"nodes": [2], "target": {"values": [0.1]}},
        "couplings": [{"nodes": [1, 2], "value": 0.2}],
    }
    a = NetworkSpec.model_validate(
        {**base, "couplings": [*base["couplings"], {"nodes": [0, 1], "value": 0.3}]}
    )
    b = NetworkSpec.model_validate(
        {
            **base,
            "directed": [
                {"target": 0, "source": 1, "value": 0.3},
                {"target": 1, "source": 0, "value": 0.3},
            ],
        }
    )
    ga, gb = run(a, {"adjoint": {}})["adjoint"], run(b, {"adjoint": {}})["adjoint"]
    # a: [coupling 1-2, coupling 0-1]; b: [coupling 1-2, 0<-1, 1<-0]: d/dα of the pair = sum
    np.testing.assert_allclose(ga[:, 0], gb[:, 0], rtol=1e-9)
    np.testing.assert_allclose(ga[:, 1], gb[:, 1] + gb[:, 2], rtol=1e-9)


@pytest.mark.slow
def test_adjoint_matches_finite_differences() -> None:
    spec = network("tanh_active", 6, static=False)
    g = run(spec, {"adjoint": {}, "fd": {"name": "finite_difference", "step": 1e-5}})
    assert rel(g["fd"], g["adjoint"]) < 1e-6


@pytest.mark.parametrize("name", ["ep_symmetric", "ep_one_sided", "ep_time_reversed", "ep_echo"])
def test_reciprocal_estimators_refuse_directed_terms(name: str) -> None:
    """Must-show 4: an estimator that assumes reciprocity refuses by name."""
    spec = network("linear", 6, static=True)
    with pytest.raises(ConfigError, match=rf"'{name}' assumes reciprocal.*directed\[0\]"):
        make_estimator(name, ModelKnowledge.from_spec(spec))


class NoFeedback(DelegatingSystem):
    """A system with no learning-phase feedback elements (as a bench without active ones)."""

    @property
    def feedback_pairs(self) -> frozenset[tuple[int, int]]:
        return frozenset({(2, 0)})


def test_missing_feedback_elements_refused_before_any_experiment() -> None:
    spec = network("feedforward", 6, static=True)
    inner = IdealSystem(spec, 5)
    with pytest.raises(GradientError, match=r"directed\[0\] 2<-0.*directed\[1\]"):
        run(spec, {"ep_asymmetric": {"echo": False}}, system=NoFeedback(inner))
    assert inner.experiments == 0


def test_unstable_nonreciprocal_network_named() -> None:
    """Must-show 4: a strongly non-reciprocal, lightly damped pair flutters: the rest-state
    eigenvalue check and the Floquet check both name the instability."""
    spec = NetworkSpec.model_validate(
        {
            "nodes": {"count": 2, "stiffness": 1.0, "damping": 0.01},
            "nonlinearity": "identity",
            "directed": [
                {"target": 0, "source": 1, "value": 0.5},
                {"target": 1, "source": 0, "value": -0.5},
            ],
            "inputs": {"nodes": [0]},
            "outputs": {"nodes": [1], "target": {"values": [0.1]}},
        }
    )
    assert rest_growth_rate(spec) > 0
    with pytest.raises(UnstableOrbitError, match="non-reciprocal"):
        run(spec, {"adjoint": {}})


@pytest.mark.parametrize("kind", ["fixed_endpoints", "fixed_velocities", "initial_value"])
def test_bvp_adjoint_with_directed_couplings(kind: str) -> None:
    """The other boundary kinds: the discrete adjoint (true Jᵀ) against central differences."""
    from physlearn.simulators.bvp import BoundaryValueProblem
    from physlearn.simulators.excitation import build_excitation
    from physlearn.spec.model import NetworkModel

    base = random_nonreciprocal_network(
        4, np.random.default_rng(3), family="tanh_active", damping=0.1, asymmetry=0.8, amplitude=0.3
    )
    data = base.model_dump()
    d = base.nodes.count
    data["boundary"] = {
        "kind": kind,
        "t_final_s": 3.0,
        "steps": 200,
        "x_initial": [0.1] * d,
        "x_final": [0.0] * d,
        "v_initial": [0.0] * d,
        "v_final": [0.0] * d,
    }
    spec = NetworkSpec.model_validate(data)
    model = NetworkModel.from_spec(spec)
    prob = BoundaryValueProblem(spec, model, build_excitation(spec))
    theta = model.full_theta(spec.initial_parameters())
    grad = prob.adjoint_gradient(prob.solve(theta), theta)[0]
    h = 1e-6
    fd = np.zeros_like(grad)
    for p, idx in enumerate(model.trainable):
        tp, tm = theta.copy(), theta.copy()
        tp[:, idx] += h
        tm[:, idx] -= h
        fd[p] = (prob.cost(prob.solve(tp).x)[0] - prob.cost(prob.solve(tm).x)[0]) / (2 * h)
    assert rel(fd, grad) < 1e-6
