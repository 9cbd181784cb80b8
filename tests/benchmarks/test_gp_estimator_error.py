"""benchmarks/gp_estimator_error.py: the exact GP estimator's error falls as β², near-EP's does
not (on the gp-xor example, 4 samples, at the initial parameters and at a run's last ones)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script():  # type: ignore[no-untyped-def]
    path = ROOT / "benchmarks" / "gp_estimator_error.py"
    spec = importlib.util.spec_from_file_location("bench_gp_estimator_error", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_exact_error_scales_as_beta_squared_near_ep_does_not(tmp_path: Path) -> None:
    bench = _script()
    config = ROOT / "examples" / "gp-xor.toml"
    run = tmp_path / "run"
    (run / "params").mkdir(parents=True)
    from physlearn.training.config import load_train_config
    from physlearn.training.setup import prepare

    theta = prepare(load_train_config(config), config.parent).spec.initial_parameters()
    np.save(run / "params" / "epoch_0003.npy", theta + 0.05)  # a run's later parameters
    exact = bench.rows(config, 1, run, 4, [1e-2, 1e-3], "gp_phase_conjugate")
    assert [r["parameters"] for r in exact] == ["initial"] * 2 + ["run/epoch_0003.npy"] * 2
    for coarse, fine in zip(exact[::2], exact[1::2], strict=True):
        assert coarse["rel"] < 1e-4 and fine["rel"] == pytest.approx(coarse["rel"] / 100, rel=0.05)
        assert fine["signs"] == 0.0
    near = bench.rows(config, 1, None, 4, [1e-2, 1e-3], "gp_near_ep")
    assert near[1]["rel"] > 0.5 * near[0]["rel"] > 1e-3  # a bias that β does not remove
    assert "| initial | 0.01 |" in bench.table(exact)


def test_near_ep_is_close_to_the_adjoint_only_far_below_the_band() -> None:
    """The claim of examples/gp-digits-detuned.toml: pumped 1 E below the band (detuned ≈ 10 γ),
    near-EP's batch gradient is within a few % of the adjoint's; in the band (gp-digits.toml, the
    same lattice and seed) it points away from it. 8 training samples, seed 0, β = 0.01."""
    bench = _script()
    far = bench.rows(ROOT / "examples" / "gp-digits-detuned.toml", 0, None, 8, [1e-2], "gp_near_ep")
    assert far[0]["cos"] > 0.999 and far[0]["rel"] < 0.05, far
    near = bench.rows(ROOT / "examples" / "gp-digits.toml", 0, None, 8, [1e-2], "gp_near_ep")
    assert near[0]["cos"] < 0.5, near


@pytest.mark.parametrize(
    ("name", "n"),
    [("sweep-gp-digits-detuned.toml", 15), ("sweep-gp-digits-detuned-screen.toml", 4)],
)
def test_detuned_digits_sweeps_are_valid(name: str, n: int) -> None:
    """The committed sweeps of the detuned-digits results load, and every point is a valid train
    config (load_sweep validates each one)."""
    from physlearn.sweeps import load_sweep

    plan = load_sweep(ROOT / "examples" / name)
    assert len(plan.points) == n
    assert len({p.name for p in plan.points}) == n
