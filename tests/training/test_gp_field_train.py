"""GP fields through `physlearn train` ([network.gp_field], examples/gp-field-xor.toml): the CLI
writes a run and moves the landscape, the exact estimator matches the twin's adjoint (and the
adjoint matches finite differences of the integrated-density cost, through the bump basis),
near-EP and the adjoint are selectable, a 2-D field trains the same way, and config errors name
their key and file."""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from config_helpers import edited_config
from threadpoolctl import threadpool_limits

from physlearn.cli import main
from physlearn.errors import ConfigError
from physlearn.estimators import make_estimator
from physlearn.spec.gp_field_network import GPFieldNetworkSpec
from physlearn.spec.gp_system import GPKnowledge, density_task
from physlearn.systems.gp_lattice import GPLatticeTwin
from physlearn.training.config import load_train_config
from physlearn.training.setup import prepare

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gp-field-xor.toml"
U = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
Y = np.array([[0.0], [0.05], [0.05], [0.0]])


@pytest.fixture(autouse=True)
def _one_blas_thread() -> Any:
    """Dense 128 × 128 solves: one BLAS thread is fastest (and steady on a loaded machine)."""
    with threadpool_limits(1):
        yield


def _example_spec(**edit: Any) -> GPFieldNetworkSpec:
    data = tomllib.loads(EXAMPLE.read_text())["network"]["gp_field"]
    data.update(edit)
    return GPFieldNetworkSpec.model_validate(data)


def _estimate(spec: GPFieldNetworkSpec, name: str, y: np.ndarray = Y) -> tuple[Any, np.ndarray]:
    """(the estimate of ``name`` at the initial parameters on the 4 XOR points, the adjoint's)."""
    twin = GPLatticeTwin(spec)
    task = density_task(spec.n_channels, spec.output_channels, spec.outputs.weight, y)
    theta = spec.initial_parameters()
    kw = {} if name == "adjoint" else {"beta": 1e-4}
    est = make_estimator(name, GPKnowledge.from_spec(spec), **kw)
    got = asyncio.run(est.estimate(twin, theta, U, task))
    exact, cost = twin.exact_gradient(theta, U, task)
    np.testing.assert_allclose(got.cost, cost, rtol=1e-10)
    return got, exact


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1), b.reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_cli_trains_the_example_and_moves_the_landscape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--config", str(EXAMPLE), "--run-dir", str(tmp_path), "--name", "f"]
    assert main([*args, "--epochs", "3", "--quiet", "--no-report"]) == 0
    run = tmp_path / "f"
    assert f"run directory: {run}" in capsys.readouterr().out
    for f in ("config.toml", "metrics.jsonl", "summary.json", "gp_field.toml", "parameters.json"):
        assert (run / f).is_file(), f
    params = json.loads((run / "parameters.json").read_text())
    assert params["names"] == [f"a[{m}]" for m in range(8)]
    assert params["units"] == ["E"] * 8 and params["upper"] == [2.0] * 8
    initial = np.array(params["initial"])
    np.testing.assert_array_equal(initial, _example_spec().initial_parameters())
    final = np.array(json.loads((run / "summary.json").read_text())["final_params"])
    assert np.max(np.abs(final - initial)) > 1e-3  # the landscape moved
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] or rows[0]["train_accuracy"] == 1.0
    assert min(r["cosine_to_adjoint"] for r in rows) > 1 - 1e-6  # exact EP, step by step
    stored = tomllib.loads((run / "gp_field.toml").read_text())["gp_field"]
    assert GPFieldNetworkSpec.model_validate(stored) == _example_spec()


def test_phase_conjugate_matches_the_adjoint_and_the_adjoint_finite_differences() -> None:
    spec = _example_spec()
    got, exact = _estimate(spec, "gp_phase_conjugate")
    assert got.grad.shape == exact.shape == (4, 8) and got.experiments == 12
    assert np.all(got.grad[0] == 0.0)  # (0, 0) is unpumped: ψ = 0 whatever the landscape
    assert _rel(got.grad, exact) < 1e-6 and _cos(got.grad, exact) > 0.999
    # the adjoint through the readout and the bump basis against central differences of C
    twin = GPLatticeTwin(spec)
    task = density_task(spec.n_channels, spec.output_channels, spec.outputs.weight, Y)
    theta, h = spec.initial_parameters(), 1e-5

    def cost(t: np.ndarray) -> np.ndarray:
        return twin.exact_gradient(t, U, task)[1]

    for m in (0, 3, 6):
        e = np.zeros_like(theta)
        e[m] = h
        fd = (cost(theta + e) - cost(theta - e)) / (2 * h)
        np.testing.assert_allclose(exact[1:, m], fd[1:], rtol=1e-6, atol=1e-12)


def test_near_ep_and_the_adjoint_are_selectable(tmp_path: Path) -> None:
    near, exact = _estimate(_example_spec(), "gp_near_ep")
    assert near.grad.shape == exact.shape and np.all(np.isfinite(near.grad))
    assert 1e-6 < _rel(near.grad, exact)  # the loss's bias: near-EP is not exact at γ = 0.2
    adj, _ = _estimate(_example_spec(), "adjoint")
    np.testing.assert_allclose(adj.grad, exact, rtol=1e-12, atol=0)
    text = EXAMPLE.read_text().replace('name = "gp_phase_conjugate"', 'name = "gp_near_ep"')
    path = tmp_path / "near.toml"
    path.write_text(text)
    assert prepare(load_train_config(path)).estimator.name == "gp_near_ep"


def test_a_2d_field_on_grid_parameters_is_exact_too() -> None:
    """A 12 × 12 torus with V trainable at every grid point: the same twin and estimator."""
    spec = _example_spec(
        grid=[12, 12],
        length_um=12.0,
        landscape="grid",
        bumps=None,
        bump_width_um=None,
        inputs={"centers_um": [[2.0, 6.0], [6.0, 2.0]], "width_um": 1.5, "gain": 0.2},
        outputs={"centers_um": [[8.0, 8.0]], "radius_um": 1.5},
    )
    assert spec.n_params == spec.n_sites == 144 and spec.n_channels == 145
    assert spec.readout_matrix().sum() == pytest.approx(np.sum(spec.readout_matrix() > 0) * 1.0)
    got, exact = _estimate(spec, "gp_phase_conjugate", np.array([[0.0], [0.1], [0.1], [0.0]]))
    assert got.grad.shape == (4, 144)
    assert _rel(got.grad, exact) < 1e-6


def _config(tmp_path: Path, edit: dict[str, Any]) -> Path:
    return edited_config(EXAMPLE, tmp_path / "bad-field.toml", edit)


F = "network.gp_field"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({f"{F}.grid": [3]}, rf"{F}: grid: at least 4 points"),
        ({f"{F}.grid": [8, 8, 8]}, rf"{F}\.grid"),
        ({f"{F}.loss": -0.1}, rf"{F}\.loss"),
        ({f"{F}.kinetic": 0.0}, rf"{F}\.kinetic"),
        ({f"{F}.bumps": [2, 2]}, r"bumps: one count ≥ 1 per grid axis \(1\)"),
        ({f"{F}.bumps": None}, r"bumps / bump_width_um: landscape = 'bumps' needs"),
        ({f"{F}.landscape": "grid"}, r"bumps / bump_width_um: only with landscape = 'bumps'"),
        ({f"{F}.init_scale": 3.0}, r"potential / init_scale: initial values exceed"),
        ({f"{F}.inputs.centers_um": [8.0, 40.0]}, r"inputs\.centers_um: position 1 = 40\.0"),
        ({f"{F}.inputs.centers_um": [[8.0, 1.0], 16.0]}, r"inputs\.centers_um: position 0 must"),
        ({f"{F}.inputs.centers_um": [8.0, 23.0]}, r"inputs\.centers_um: input spots \[1\] lie"),
        ({f"{F}.inputs.phase_rad": [0.0]}, r"phase_rad: one phase per input spot"),
        ({f"{F}.outputs": {"centers_um": [24.2], "radius_um": 0.1}}, r"regions \[0\] hold no"),
        ({f"{F}.outputs.radius_um": 20.0}, r"outputs\.radius_um: a region must be smaller"),
        ({f"{F}.outputs.centers_um": [24.0, 26.0]}, r"outputs\.centers_um: output regions overlap"),
        ({"network.kind": "gp_lattice"}, r"kind: 'gp_lattice' needs \[network\.gp_lattice\]"),
    ],
)
def test_config_errors_name_the_key_and_file(
    tmp_path: Path, edit: dict[str, Any], message: str
) -> None:
    """Errors of the file's own validation name the file and the key's full path."""
    path = _config(tmp_path, edit)
    with pytest.raises(ConfigError, match=message) as info:
        load_train_config(path)
    assert str(info.value).startswith(f"{path}: network")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            {f"{F}.outputs.centers_um": [24.0, 30.0, 4.0]},
            r"targets: outputs: 3 output node\(s\) for 2 classes",
        ),
        ({"targets.kind": "inphase"}, r"targets\.kind: a GP lattice has density targets"),
        ({"estimator.name": "ep_symmetric"}, r"'ep_symmetric': does not work on a GP"),
        ({"training.stability_check": "full"}, r"training\.stability_check: not for a GP"),
        ({"data.name": "iris"}, r"data\.name / network inputs: .* 4 features"),
    ],
)
def test_inconsistent_configs_name_the_key(
    tmp_path: Path, edit: dict[str, Any], message: str
) -> None:
    from physlearn.training.loop import Trainer

    with pytest.raises(ConfigError, match=message):
        Trainer(prepare(load_train_config(_config(tmp_path, edit))))


def test_a_field_too_large_for_the_dense_bogoliubov_check_is_refused_by_name() -> None:
    """A 48 × 48 field (2304 points) with the Bogoliubov check on would spend minutes per state:
    refused with the setting to change; with floquet = "none" it is built, and the final check
    of the run's summary says it was skipped (not that the states are unstable)."""
    from physlearn.systems.gp_lattice import BOGOLIUBOV_MAX_SITES
    from physlearn.training.stability import stability_report

    spec = _example_spec(
        grid=[48, 48],
        length_um=48.0,
        landscape="bumps",
        bumps=[2, 2],
        bump_width_um=8.0,
        inputs={"centers_um": [[8.0, 24.0], [24.0, 8.0]], "width_um": 3.0, "gain": 0.2},
        outputs={"centers_um": [[36.0, 36.0]], "radius_um": 3.0},
    )
    assert spec.n_sites == 2304 > BOGOLIUBOV_MAX_SITES
    with pytest.raises(ConfigError, match='set \\[system\\] floquet = "none"'):
        GPLatticeTwin(spec)
    twin = GPLatticeTwin(spec, stability="none")
    setup = prepare(load_train_config(EXAMPLE), EXAMPLE.parent)
    report = asyncio.run(
        stability_report(twin, spec, setup.dataset, setup.targets, spec.initial_parameters())
    )
    assert report["stable"] is None and "2304 sites" in report["skipped"]
