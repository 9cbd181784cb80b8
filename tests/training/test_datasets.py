"""Data sets: split sizes, stratification, no leakage, determinism, scaling, errors."""

from __future__ import annotations

import numpy as np
import pytest

from physlearn.errors import ConfigError
from physlearn.training.datasets import (
    Dataset,
    check_feature_count,
    class_harmonic,
    class_phase_rad,
    digits,
    get_dataset,
    iris,
    iris_cv_folds,
    iterate_minibatches,
    one_hot,
    sine_target,
    sine_task,
    xor,
)


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


def _assert_dtypes(ds: Dataset) -> None:
    assert ds.x_train.dtype == np.float64 and ds.x_test.dtype == np.float64
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64


def test_xor_points_and_labels() -> None:
    ds = xor()
    _assert_dtypes(ds)
    assert ds.n_classes == 2 and ds.n_features == 2
    expected = (ds.x_train[:, 0].astype(int) ^ ds.x_train[:, 1].astype(int)).astype(np.int64)
    np.testing.assert_array_equal(ds.y_train, expected)
    assert _rows(ds.x_train) == _rows(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float))
    np.testing.assert_array_equal(ds.x_test, ds.x_train)  # documented: train = test


def test_iris_split_sizes_stratified_and_disjoint() -> None:
    ds = iris(seed=0)
    _assert_dtypes(ds)
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_classes) == (120, 30, 4, 3)
    np.testing.assert_array_equal(np.bincount(ds.y_train), [40, 40, 40])
    np.testing.assert_array_equal(np.bincount(ds.y_test), [10, 10, 10])
    # Iris has 1 duplicated raw row; scaled rows may coincide only for those duplicates.
    assert len(_rows(ds.x_train) & _rows(ds.x_test)) <= 1


def test_iris_minmax_uses_train_statistics_only() -> None:
    ds = iris(seed=3)
    np.testing.assert_array_equal(ds.x_train.min(axis=0), 0.0)
    np.testing.assert_array_equal(ds.x_train.max(axis=0), 1.0)
    assert ds.x_test.min() >= 0.0 and ds.x_test.max() <= 1.0
    std = iris(seed=3, scaling="standard")
    np.testing.assert_allclose(std.x_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(std.x_train.std(axis=0), 1.0, atol=1e-12)
    # The test split is not standardised on its own statistics.
    assert np.abs(std.x_test.mean(axis=0)).max() > 1e-3


def test_iris_determinism_and_seed_dependence() -> None:
    a, b, c = iris(seed=7), iris(seed=7), iris(seed=8)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_test, c.x_test)


def test_iris_cv_folds_partition_every_sample_once_per_repeat() -> None:
    folds = list(iris_cv_folds(n_splits=5, n_repeats=2, seed=1))
    assert len(folds) == 10
    assert folds[0].name == "iris/cv-r0-f0" and folds[-1].name == "iris/cv-r1-f4"
    for fold in folds:
        assert (fold.n_train, fold.n_test) == (120, 30)
        np.testing.assert_array_equal(np.bincount(fold.y_test), [10, 10, 10])
        np.testing.assert_array_equal(fold.x_train.min(axis=0), 0.0)
    # Within a repeat, test folds cover all 150 samples: label counts add to 50 per class.
    for r in range(2):
        ys = np.concatenate([f.y_test for f in folds[5 * r : 5 * r + 5]])
        np.testing.assert_array_equal(np.bincount(ys), [50, 50, 50])
    again = list(iris_cv_folds(n_splits=5, n_repeats=2, seed=1))
    np.testing.assert_array_equal(again[3].x_test, folds[3].x_test)


def test_digits_split_scaling_and_pooling() -> None:
    ds = digits(seed=0)
    _assert_dtypes(ds)
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_classes) == (1347, 450, 64, 10)
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    counts_all = np.bincount(np.concatenate([ds.y_train, ds.y_test]))
    test_share = np.bincount(ds.y_test) / counts_all
    assert np.all(np.abs(test_share - 0.25) < 0.02)  # stratified
    assert len(_rows(ds.x_train) & _rows(ds.x_test)) < 5  # only exact duplicate images

    pooled = digits(seed=0, pool=2)
    assert pooled.n_features == 16
    assert 0.0 <= pooled.x_train.min() and pooled.x_train.max() <= 1.0
    # 2×2 average pooling of the same samples (the split does not depend on pool).
    img = ds.x_train[0].reshape(8, 8)
    np.testing.assert_allclose(pooled.x_train[0], img.reshape(4, 2, 4, 2).mean(axis=(1, 3)).ravel())


def test_digits_class_subset_relabelled() -> None:
    ds = digits(seed=0, pool=2, classes=(3, 5))
    assert ds.n_classes == 2
    assert set(np.unique(ds.y_train)) == {0, 1}
    with pytest.raises(ConfigError, match="pool"):
        digits(pool=3)
    with pytest.raises(ConfigError, match="classes"):
        digits(classes=(1, 1))


def test_sine_task_determinism_shapes_and_range() -> None:
    a = sine_task(n_per_class=10, n_classes=3, noise=0.05, seed=4)
    b = sine_task(n_per_class=10, n_classes=3, noise=0.05, seed=4)
    c = sine_task(n_per_class=10, n_classes=3, noise=0.05, seed=5)
    _assert_dtypes(a)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert (a.n_train, a.n_test) == (30, 30)
    np.testing.assert_array_equal(np.bincount(a.y_train), [10, 10, 10])
    assert a.x_train.min() >= 0.0 and a.x_train.max() <= 1.0
    assert a.metadata["encoding"] == "phase"
    assert not np.array_equal(a.x_train, a.x_test)
    # Noise-free samples are exactly the prototypes; prototypes are distinct.
    clean = sine_task(n_per_class=2, n_classes=4, noise=0.0, seed=0)
    protos = clean.metadata["prototypes"]
    np.testing.assert_array_equal(clean.x_train, protos[clean.y_train])
    d = np.linalg.norm(protos[:, None] - protos[None], axis=-1)
    assert d[~np.eye(4, dtype=bool)].min() > 0.3


def test_sine_targets_encode_the_class() -> None:
    assert class_phase_rad(0, 4) == 0.0
    assert class_phase_rad(1, 4) == pytest.approx(np.pi / 2)
    assert class_harmonic(0) == 1 and class_harmonic(2) == 3
    t = np.linspace(0.0, 2.0, 200, endpoint=False)  # one period of T = 2 s
    y = sine_target(np.array([0, 1]), t, period_s=2.0, n_classes=4, encoding="phase")
    assert y.shape == (2, 200)
    np.testing.assert_allclose(y[1], np.cos(np.pi * t), atol=1e-12)  # sin(x + π/2)
    yf = sine_target(np.array([2]), t, period_s=2.0, n_classes=4, encoding="frequency")
    np.testing.assert_allclose(yf[0], np.sin(3 * np.pi * t), atol=1e-12)
    with pytest.raises(ConfigError, match="encoding"):
        sine_target(np.array([0]), t, 2.0, 4, encoding="chirp")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        class_phase_rad(4, 4)


def test_registry_and_errors() -> None:
    assert get_dataset("iris", seed=2).n_test == 30
    assert get_dataset("sine", encoding="frequency").metadata["encoding"] == "frequency"
    with pytest.raises(ConfigError, match=r"'mnist'.*digits, iris, iris_cv, sine, xor"):
        get_dataset("mnist")
    with pytest.raises(ConfigError, match="colour"):
        get_dataset("digits", colour=True)
    with pytest.raises(ConfigError, match="encoding"):
        get_dataset("sine", encoding="amplitude")


def test_check_feature_count_names_both_numbers() -> None:
    check_feature_count(xor(), 2)
    with pytest.raises(ConfigError, match=r"4 features.*3 input nodes"):
        check_feature_count(iris(), 3)


def test_one_hot() -> None:
    np.testing.assert_array_equal(one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ConfigError):
        one_hot(np.array([3]), 3)


def test_minibatches_cover_once_and_are_deterministic() -> None:
    batches = list(iterate_minibatches(10, 3, np.random.default_rng(0)))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(10))
    again = list(iterate_minibatches(10, 3, np.random.default_rng(0)))
    for a, b in zip(batches, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = np.concatenate(list(iterate_minibatches(10, 3, np.random.default_rng(1))))
    assert not np.array_equal(other, np.concatenate(batches))
    ordered = list(iterate_minibatches(5, 2, np.random.default_rng(0), shuffle=False))
    np.testing.assert_array_equal(np.concatenate(ordered), np.arange(5))
    dropped = list(iterate_minibatches(10, 3, np.random.default_rng(0), drop_last=True))
    assert [len(b) for b in dropped] == [3, 3, 3]
    with pytest.raises(ConfigError, match="batch_size"):
        list(iterate_minibatches(10, 0, np.random.default_rng(0)))
