"""ep_fixed_energy, ep_fixed_action and the control ep_fixed_period on the autonomous twin, against
the twin's adjoint gradient (must-show 2): relative error ≤ 1e-5 at β = 1e-3, falling as β²; the
control's error ≥ 100× larger; crossed pairings through the chain-rule term; the interface's
refusals."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from autonomous_helpers import network

from physlearn.errors import ConfigError, GradientError
from physlearn.estimators import make_estimator
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.autonomous import AutonomousOptions, OrbitTask
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import ForceWaveform
from physlearn.systems.autonomous import AutonomousTwin
from physlearn.systems.ideal import IdealSystem

U = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
SETPOINT = {"energy": 0.4, "action": 2.0}
NATURAL = {"energy": "integrated", "action": "averaged"}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _run(coro):
    return asyncio.run(coro)


def _case(kind: str, constraint: str, norm: str):
    spec = network(4, kind)  # type: ignore[arg-type]
    twin = AutonomousTwin(
        spec, AutonomousOptions(constraint=constraint, value=SETPOINT[constraint])
    )
    task = OrbitTask.from_values(spec, np.array([[0.3], [0.0], [0.1]]), norm)  # type: ignore[arg-type]
    grad, cost = twin.exact_gradient(spec.initial_parameters(), U, task)
    return spec, twin, task, grad, cost


@pytest.mark.parametrize("kind", ["tanh", "quartic"])
@pytest.mark.parametrize("constraint", ["energy", "action"])
def test_ep_matches_adjoint_with_beta_squared(kind: str, constraint: str) -> None:
    name = f"ep_fixed_{constraint}"
    spec, twin, task, grad, cost = _case(kind, constraint, NATURAL[constraint])
    kn = ModelKnowledge.from_spec(spec)
    errs = {}
    for beta in (1e-2, 1e-3):
        est = _run(
            make_estimator(name, kn, beta=beta).estimate(twin, spec.initial_parameters(), U, task)
        )
        errs[beta] = _rel(est.grad, grad)
        assert np.allclose(est.cost, cost, rtol=1e-10)
        assert est.experiments == 3 * U.shape[0]
    assert errs[1e-3] <= 1e-5
    assert 70 < errs[1e-2] / errs[1e-3] < 130  # O(β²)
    control = _run(
        make_estimator("ep_fixed_period", kn, beta=1e-3).estimate(
            twin, spec.initial_parameters(), U, task
        )
    )
    assert _rel(control.grad, grad) >= 100 * errs[1e-3]


@pytest.mark.parametrize("constraint", ["energy", "action"])
def test_crossed_pairing_uses_the_chain_rule(constraint: str) -> None:
    crossed = "averaged" if constraint == "energy" else "integrated"
    spec, twin, task, grad, _ = _case("tanh", constraint, crossed)
    kn = ModelKnowledge.from_spec(spec)
    est = _run(
        make_estimator(f"ep_fixed_{constraint}", kn, beta=1e-3).estimate(
            twin, spec.initial_parameters(), U, task
        )
    )
    assert est.experiments == 5 * U.shape[0] and est.info["chain_rule"]
    assert _rel(est.grad, grad) <= 1e-5


def test_the_system_is_left_clean_and_refusals() -> None:
    spec, twin, task, _, _ = _case("tanh", "energy", "integrated")
    kn = ModelKnowledge.from_spec(spec)
    _run(make_estimator("ep_fixed_energy", kn).estimate(twin, spec.initial_parameters(), U, task))
    assert twin._nudge is None and twin._constraint is None
    with pytest.raises(GradientError, match="no phase reference"):
        _run(twin.set_forces(ForceWaveform(np.zeros((1, 5, 4)), 1.0)))
    _run(twin.set_forces(None))
    with pytest.raises(ConfigError, match="unknown option"):
        make_estimator("ep_fixed_period", kn, constraint_step=1e-3)
    data = network(4, "tanh").model_dump()
    data["inputs"]["waveform"] = "cos"
    data["outputs"]["target"]["kind"] = "inphase"
    driven = NetworkSpec.model_validate(data)
    with pytest.raises(ConfigError, match="waveform"):
        AutonomousTwin(driven, AutonomousOptions(constraint="energy", value=0.4))
    ideal = IdealSystem(driven)
    with pytest.raises(GradientError, match="needs an autonomous system"):
        _run(
            make_estimator("ep_fixed_energy", ModelKnowledge.from_spec(driven)).estimate(
                ideal, driven.initial_parameters(), U, task
            )
        )
