"""GP lattices through `physlearn train`: the CLI on examples/gp-xor.toml, the GP estimators
against the twin's adjoint, the twin's interface, and config errors naming their field."""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from config_helpers import edited_config

from physlearn.cli import main
from physlearn.errors import ConfigError, GradientError
from physlearn.estimators import make_estimator
from physlearn.simulators.gp_lattice import solve_stationary
from physlearn.simulators.gp_lattice_adjoint import ep_limit_gradient
from physlearn.spec.gp_lattice import DensityCost
from physlearn.spec.gp_network import GPNetworkSpec
from physlearn.spec.gp_system import GPKnowledge, density_task
from physlearn.spec.system import ForceWaveform
from physlearn.systems.gp_lattice import GPLatticeTwin
from physlearn.training.config import TrainConfig, load_train_config
from physlearn.training.setup import prepare

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

U = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])


def _spec(**kw: Any) -> GPNetworkSpec:
    data: dict[str, Any] = {
        "lattice": "chain",
        "sites": 5,
        "hopping": 1.0,
        "kerr": 1.0,
        "loss": 0.2,
        "pump_energy": 0.3,
        "init_scale": 0.4,
        "seed": 3,
        "inputs": {"nodes": [0, 2], "gain": 0.3, "bias_nodes": [1], "bias_amplitude": 0.1},
        "outputs": {"nodes": [3, 4]},
    }
    data.update(kw)
    return GPNetworkSpec.model_validate(data)


def _gradients(
    spec: GPNetworkSpec, name: str, beta: float, n: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """(the estimator's gradient, the adjoint's) per sample on the first n XOR inputs, targets
    one-hot."""
    twin = GPLatticeTwin(spec)
    y = np.array([[0.4, 0.0], [0.0, 0.4], [0.0, 0.4], [0.4, 0.0]])[:n]
    task = density_task(spec.n_sites, spec.outputs.nodes, spec.outputs.weight, y)
    theta = spec.initial_parameters()
    est = make_estimator(name, GPKnowledge.from_spec(spec), beta=beta)
    got = asyncio.run(est.estimate(twin, theta, U[:n], task))
    assert got.experiments == 3 * n
    exact, cost = twin.exact_gradient(theta, U[:n], task)
    np.testing.assert_allclose(got.cost, cost, rtol=1e-10)
    return got.grad, exact


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("train_hopping", [False, True])
def test_phase_conjugate_is_exact(train_hopping: bool) -> None:
    spec = _spec(train_hopping=train_hopping)
    grad, exact = _gradients(spec, "gp_phase_conjugate", 1e-4)
    assert grad.shape == exact.shape == (4, spec.n_sites + (4 if train_hopping else 0))
    assert _rel(grad, exact) < 1e-6


def test_near_ep_reaches_its_biased_limit_and_is_exact_without_loss() -> None:
    spec = _spec(train_hopping=True)
    grad, exact = _gradients(spec, "gp_near_ep", 1e-4)
    # the β → 0 limit is −(∂R/∂θ)ᵀ 𝒥⁻¹ ∂C/∂z, not the adjoint's 𝒥⁻ᵀ
    lat, drive = spec.lattice_model(), spec.drive(U)
    y = np.array([[0.4, 0.0], [0.0, 0.4], [0.0, 0.4], [0.4, 0.0]])
    limit = np.stack(
        [
            ep_limit_gradient(
                lat,
                solve_stationary(lat, drive[i]).psi,
                DensityCost(np.array(spec.outputs.nodes), y[i]),
            ).theta
            for i in range(4)
        ]
    )
    assert _rel(grad, limit) < 1e-5
    assert _rel(grad, exact) > 1e-3  # the loss's bias, well above the β² error
    # (at γ = 0 the state of (1, 1) is parametrically unstable here: the other three)
    lossless, exact0 = _gradients(_spec(train_hopping=True, loss=0.0), "gp_near_ep", 1e-4, 3)
    assert _rel(lossless, exact0) < 1e-5


def test_twin_refuses_forces_and_an_unpumped_sample_has_a_zero_gradient() -> None:
    spec = _spec(inputs={"nodes": [0, 2], "gain": 0.3})  # no bias pump: u = (0, 0) is dark
    twin = GPLatticeTwin(spec)
    asyncio.run(twin.set_input(U))
    with pytest.raises(GradientError, match="potential shift"):
        asyncio.run(twin.set_forces(ForceWaveform(np.ones((4, 1, spec.n_sites)), 1.0)))
    grad, exact = _gradients(spec, "gp_phase_conjugate", 1e-4)
    assert np.all(grad[0] == 0.0) and np.all(exact[0] == 0.0)
    obs = asyncio.run(twin.measure())
    assert obs.x.shape == (4, 1, spec.n_sites) and obs.psi.shape == (4, spec.n_sites)
    assert np.all(obs.density[0] == 0.0)


def test_cli_gp_xor_reaches_100_percent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = EXAMPLES / "gp-xor.toml"
    args = ["train", "--config", str(cfg_path), "--run-dir", str(tmp_path), "--name", "gp"]
    assert main([*args, "--quiet", "--no-report"]) == 0
    run_dir = tmp_path / "gp"
    assert f"run directory: {run_dir}" in capsys.readouterr().out
    for f in ("config.toml", "metrics.jsonl", "summary.json", "gp_lattice.toml"):
        assert (run_dir / f).is_file(), f
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final"]["train_accuracy"] == 1.0
    assert summary["stability"]["stable"] is True
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert min(r["cosine_to_adjoint"] for r in rows) > 1 - 1e-6  # exact EP
    names = json.loads((run_dir / "parameters.json").read_text())["names"]
    assert names == ["V[0]", "V[1]", "V[2]", "V[3]"]
    stored = tomllib.loads((run_dir / "config.toml").read_text())
    assert TrainConfig.model_validate(stored) == load_train_config(cfg_path)


def _config(tmp_path: Path, edit: dict[str, Any]) -> Path:
    return edited_config(EXAMPLES / "gp-xor.toml", tmp_path / "c.toml", edit)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"network.gp_lattice.outputs.nodes": [7]}, r"outputs\.nodes: sites \[7\]"),
        ({"network.gp_lattice.inputs.nodes": [0, 3]}, r"sites \[3\] are also input sites"),
        ({"network.gp_lattice.lattice": "square"}, r"shape: lattice = 'square'"),
        ({"network.gp_lattice.loss": -0.1}, r"network\.gp_lattice\.loss"),
        ({"network.kind": "oscillator"}, r"kind: 'oscillator' needs"),
        ({"targets.kind": "inphase"}, r"targets\.kind: a GP lattice has density targets"),
        ({"targets.on": -0.5}, r"targets\.on / targets\.off"),
        ({"estimator.name": "ep_symmetric"}, r"'ep_symmetric': does not work on a GP lattice"),
        ({"system.kind": "autonomous", "system.autonomous": {"value": 0.2}}, r"system\.kind"),
        ({"training.min_mode_margin": 0.1}, r"training\.min_mode_margin"),
        ({"network.gp_lattice.inputs.phase_rad": [0.0]}, r"phase_rad: one phase per input"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, edit: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        prepare(load_train_config(_config(tmp_path, edit)))


def test_gp_estimator_refuses_an_oscillator_network(tmp_path: Path) -> None:
    data = tomllib.loads((EXAMPLES / "xor.toml").read_text())
    data["estimator"] = {"name": "gp_near_ep", "beta": 0.01}
    import tomli_w

    path = tmp_path / "x.toml"
    path.write_text(tomli_w.dumps(data))
    with pytest.raises(ConfigError, match="does not work on an oscillator network"):
        prepare(load_train_config(path))
    data["estimator"] = {"name": "ep_symmetric"}
    data["targets"] = {"kind": "density"}
    path.write_text(tomli_w.dumps(data))
    with pytest.raises(ConfigError, match=r"density.*need \[network\.gp_lattice\]"):
        prepare(load_train_config(path))


def test_bipartite_coupler_and_seeded_hoppings() -> None:
    spec = _spec(
        lattice="bipartite",
        hopping=0.0,
        hopping_init_scale=0.1,
        train_hopping=True,
        hopping_bounds=(-1.0, 1.0),
    )
    lat = spec.lattice_model()
    pairs = {(int(a), int(b)) for a, b in lat.edges}
    assert pairs == {(k, c) for k in (0, 2) for c in (3, 4)}
    theta = spec.initial_parameters()
    assert theta.shape == (5 + 4,) and np.all(np.abs(theta[5:]) <= 0.1) and np.any(theta[5:])
    np.testing.assert_array_equal(theta, _spec(**{**spec.model_dump()}).initial_parameters())
    other = _spec(**{**spec.model_dump(), "seed": 4}).initial_parameters()
    assert not np.array_equal(theta, other)
    with pytest.raises(ValueError, match="hopping_init_scale: only with train_hopping"):
        _spec(hopping_init_scale=0.1)
    with pytest.raises(ValueError, match="initial hoppings leave hopping_bounds"):
        _spec(lattice="bipartite", train_hopping=True, hopping=0.0, hopping_init_scale=0.5)
