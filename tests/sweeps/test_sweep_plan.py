"""The sweep file: expansion into points, names, overrides, and the inputs it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sweep_helpers import XOR, xor_sweep

from physlearn.errors import ConfigError
from physlearn.sweeps.plan import apply_overrides, load_sweep
from physlearn.training.datasets import get_dataset, iris_cv_folds


def test_grid_crossed_with_the_list_gives_named_validated_points(tmp_path: Path) -> None:
    plan = load_sweep(xor_sweep(tmp_path, seeds=(0, 1, 2)))
    assert [p.name for p in plan.points] == [
        "ep_symmetric-s0",
        "ep_symmetric-s1",
        "ep_symmetric-s2",
        "adjoint-s0",
        "adjoint-s1",
        "adjoint-s2",
    ]
    assert plan.root == tmp_path / "runs"
    p = plan.points[4]
    cfg = p.config()
    assert cfg.estimator.name == "adjoint" and cfg.estimator.beta is None  # the table replaced
    assert cfg.training.seed == 1 and cfg.training.epochs == 4
    assert p.labels == {"estimator": {"name": "adjoint"}, "training.seed": 1}
    assert p.base == XOR


def test_default_names_unset_keys_and_tags(tmp_path: Path) -> None:
    f = tmp_path / "s.toml"
    f.write_text(
        f'[sweep]\nbase = "{XOR}"\n'
        '[grid]\n"training.seed" = [0, 1]\n"network.topology.seed" = [3]\n'
        '[[points]]\nset = { "optimizer.lr" = 0.01 }\nunset = ["training.target_loss"]\n'
        'tags = { recipe = "slow" }\n'
    )
    plan = load_sweep(f)
    # two keys end in "seed": they are spelled out in full
    assert [p.name for p in plan.points] == [
        "lr-0.01_training.seed-0_network.topology.seed-3_recipe-slow",
        "lr-0.01_training.seed-1_network.topology.seed-3_recipe-slow",
    ]
    cfg = plan.points[1].config()
    assert cfg.training.target_loss is None and cfg.optimizer.lr == 0.01
    assert plan.points[0].labels["recipe"] == "slow"
    assert plan.root == Path("runs") / "s"


def test_apply_overrides_sets_unsets_and_never_touches_its_input() -> None:
    data = {"a": {"b": 1, "c": {"d": 2}}}
    out = apply_overrides(data, [("a.c.e", 3), ("x.y", [1])], unset=["a.b", "no.such"])
    assert out == {"a": {"c": {"d": 2, "e": 3}}, "x": {"y": [1]}}
    assert data == {"a": {"b": 1, "c": {"d": 2}}}
    with pytest.raises(ConfigError, match=r"a\.b is a value"):
        apply_overrides(data, [("a.b.c", 1)])


def test_unknown_override_key_is_refused_naming_the_point(tmp_path: Path) -> None:
    f = xor_sweep(tmp_path, extra='[[points]]\nname = "typo"\nset = { "training.epoch" = 5 }\n')
    with pytest.raises(ConfigError) as err:
        load_sweep(f)
    msg = str(err.value)
    assert (
        "point 'typo_ep_symmetric-s0'" in msg and "training.epoch" in msg and "Extra inputs" in msg
    )


def test_bad_override_value_is_refused_naming_the_point_and_field(tmp_path: Path) -> None:
    f = xor_sweep(tmp_path, extra='[[points]]\nname = "neg"\nset = { "optimizer.lr" = -1 }\n')
    with pytest.raises(ConfigError, match=r"point 'neg_ep_symmetric-s0'.*optimizer\.lr"):
        load_sweep(f)


def test_two_points_writing_one_run_directory_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "dup.toml"
    f.write_text(
        f'[sweep]\nbase = "{XOR}"\nname = "run-s{{training.seed}}"\n'
        '[grid]\n"training.seed" = [0]\n"optimizer.lr" = [0.01, 0.02]\n'
    )
    with pytest.raises(ConfigError, match=r"points 0 and 1 both write run directory 'run-s0'"):
        load_sweep(f)
    f.write_text(f'[sweep]\nbase = "{XOR}"\n[[points]]\nname = "a"\n[[points]]\nname = "a"\n')
    with pytest.raises(ConfigError, match="both write run directory 'a'"):
        load_sweep(f)


def test_name_template_must_name_config_keys_and_make_run_names(tmp_path: Path) -> None:
    f = tmp_path / "t.toml"
    f.write_text(f'[sweep]\nbase = "{XOR}"\nname = "{{training.nope}}"\n')
    with pytest.raises(ConfigError, match=r"no config key 'training\.nope'"):
        load_sweep(f)
    f.write_text(f'[sweep]\nbase = "{XOR}"\n[[points]]\nname = "../escape"\n')
    with pytest.raises(ConfigError, match="not a run directory name"):
        load_sweep(f)


BENCH = Path(__file__).resolve().parents[2] / "examples" / "bench-xor.toml"


def test_bench_points_need_a_bench_named_per_worker(tmp_path: Path) -> None:
    f = tmp_path / "b.toml"
    f.write_text(f'[sweep]\nbase = "{BENCH}"\n[grid]\n"training.seed" = [0]\n')
    with pytest.raises(ConfigError, match="one bench, one process"):
        load_sweep(f)
    f.write_text(
        f'[sweep]\nbase = "{BENCH}"\nbench = "rig-a"\n[grid]\n"training.seed" = [0, 1]\n'
        '[benches.rig-a]\nworker = "w-a"\n'
    )
    plan = load_sweep(f)
    assert [plan.worker_of(p) for p in plan.points] == ["w-a", "w-a"]
    assert all(p.bench == "rig-a" for p in plan.points)
    f.write_text(f'[sweep]\nbase = "{BENCH}"\nbench = "rig-c"\n[benches.rig-a]\nworker = "w"\n')
    with pytest.raises(ConfigError, match="bench 'rig-c' is not declared"):
        load_sweep(f)
    f.write_text(
        f'[sweep]\nbase = "{BENCH}"\nbench = "rig-a"\n'
        '[benches.rig-a]\nworker = "w"\n[benches.rig-b]\nworker = "w"\n'
    )
    with pytest.raises(ConfigError, match="both name worker 'w': one bench, one process"):
        load_sweep(f)


def test_iris_cv_is_the_fold_of_the_repeated_cv() -> None:
    folds = list(iris_cv_folds(n_splits=5, n_repeats=2, seed=0, scaling="standard"))
    for k in (0, 4, 7):
        ds = get_dataset("iris_cv", fold=k, scaling="standard")
        ref = folds[k]
        assert ds.name == ref.name
        for a in ("x_train", "y_train", "x_test", "y_test"):
            np.testing.assert_array_equal(getattr(ds, a), getattr(ref, a))
    with pytest.raises(ConfigError, match="fold must be >= 0"):
        get_dataset("iris_cv", fold=-1)


def test_the_shipped_example_sweep_expands_to_its_twelve_points() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "sweep-xor.toml"
    plan = load_sweep(example)
    assert len(plan.points) == 12 and len({p.name for p in plan.points}) == 12
    assert plan.root == example.parents[1] / "runs" / "sweep-xor"  # normalised, no '..'
    adj = [p.config() for p in plan.points if p.name.startswith("adjoint-")]
    assert len(adj) == 6 and all(c.estimator.beta is None for c in adj)
    assert {c.optimizer.lr for c in adj} == {0.02, 0.05}
    assert not any(c.training.log_cosine_to_adjoint for c in adj)
