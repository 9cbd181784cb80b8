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
