"""Data sets for training oscillator networks, as plain float64 numpy arrays.

Every data set is a :class:`Dataset`: features ``x`` of shape ``(n_samples, n_features)``
(float64, dimensionless, meant to be mapped onto drive amplitudes by the input encoding) and
labels ``y`` of shape ``(n_samples,)`` (int64 class indices ``0 .. n_classes-1``). Splits are
fixed and documented; everything random takes a ``seed`` and is bit-reproducible.

Documented splits and scalings:

* ``xor``: the 4 points of {0,1}², label = x₀ XOR x₁. Train = test = the 4 points (there is
  nothing to hold out; XOR is a capacity test, not a generalisation test).
* ``iris``: scikit-learn's bundled Iris (150 samples, 4 features, 3 classes). Stratified 80/20
  split (120/30) with ``sklearn.model_selection.train_test_split(random_state=seed)``. Scaling
  uses train statistics only: ``"minmax"`` (default) maps each feature's train [min, max] onto
  [0, 1] and clips the test split into [0, 1] — this equals standardising with the train mean and
  std and then min–max scaling, since both are affine; ``"standard"`` leaves the standardised
  values (zero mean, unit std on train; signed). :func:`iris_cv_folds` gives repeated stratified
  K-fold splits (``RepeatedStratifiedKFold(random_state=seed)``), each fold scaled with its own
  train statistics: Iris' test split is only 30 points, so results use cross-validation.
  ``iris_cv`` is one of those folds as a data set of its own (``fold`` k of the repeated CV, the
  same Dataset as ``list(iris_cv_folds(...))[k]``), so that a train config — a sweep point —
  can name it.
* ``digits``: scikit-learn's bundled 8×8 digits (1797 samples, 10 classes). Pixels (0..16) are
  divided by 16 into [0, 1] — a fixed, data-independent scaling, so nothing leaks from test to
  train. ``pool=2`` averages 2×2 blocks into 4×4 = 16 features (still in [0, 1]). Stratified
  split, ``test_fraction=0.25`` rounded up (1347/450, scikit-learn's default 75/25) with
  ``random_state=seed``; ``classes`` keeps a subset of digits, relabelled 0..k-1.
* ``sine``: the time-dependent task of Massar §II B, generated (never downloaded). Each class c
  has a prototype feature vector in [0.1, 0.9]^n_features (greedy farthest-point choice among
  seeded uniform candidates, so prototypes are well separated); samples are the prototype plus
  Gaussian noise of std ``noise``, clipped into [0, 1]. The network's output must follow
  ``amplitude·sin(ω t + class_phase_rad(c))`` (``encoding="phase"``) or
  ``amplitude·sin(class_harmonic(c)·ω t)`` (``encoding="frequency"``); see
  :func:`sine_target`. Train and test are drawn independently from the same prototypes.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

ScalingName = Literal["minmax", "standard"]
SineEncoding = Literal["phase", "frequency"]

__all__ = [
    "DATASETS",
    "Dataset",
    "check_feature_count",
    "class_harmonic",
    "class_phase_rad",
    "digits",
    "get_dataset",
    "iris",
    "iris_cv",
    "iris_cv_folds",
    "iterate_minibatches",
    "one_hot",
    "sine_target",
    "sine_task",
    "xor",
]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification data set with a fixed train/test split.

    Attributes:
        name: registry name plus split details (e.g. ``"iris"``, ``"iris/cv-r0-f3"``).
        x_train: features, shape (n_train, n_features), float64, dimensionless.
        y_train: class indices, shape (n_train,), int64 in [0, n_classes).
        x_test: features, shape (n_test, n_features), float64.
        y_test: class indices, shape (n_test,), int64.
        n_classes: number of classes.
        feature_names: one name per feature column.
        description: how the data was split and scaled.
        metadata: task-specific facts (e.g. ``{"task": "waveform", "encoding": "phase"}``).
    """

    name: str
    x_train: FloatArray
    y_train: IntArray
    x_test: FloatArray
    y_test: IntArray
    n_classes: int
    feature_names: tuple[str, ...]
    description: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if x.dtype != np.float64 or x.ndim != 2:
                raise ConfigError(
                    f"{self.name}: x_{split} must be 2-D float64, got {x.dtype} {x.shape}"
                )
            if y.dtype != np.int64 or y.shape != (x.shape[0],):
                raise ConfigError(
                    f"{self.name}: y_{split} must be int64 of shape ({x.shape[0]},), "
                    f"got {y.dtype} {y.shape}"
                )
            if y.size and (y.min() < 0 or y.max() >= self.n_classes):
                raise ConfigError(
                    f"{self.name}: y_{split} has labels outside [0, {self.n_classes})"
                )
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise ConfigError(
                f"{self.name}: train has {self.x_train.shape[1]} features, "
                f"test has {self.x_test.shape[1]}"
            )
        if len(self.feature_names) != self.x_train.shape[1]:
            raise ConfigError(
                f"{self.name}: {len(self.feature_names)} feature names for "
                f"{self.x_train.shape[1]} features"
            )

    @property
    def n_features(self) -> int:
        """Number of feature columns (= input nodes the data set needs)."""
        return int(self.x_train.shape[1])

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test samples."""
        return int(self.x_test.shape[0])


# --------------------------------------------------------------------------------------------
# XOR


def xor() -> Dataset:
    """The 4 points of {0,1}² labelled x₀ XOR x₁; train = test = the same 4 points."""
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=np.float64)
    y = np.array([0, 1, 1, 0], dtype=np.int64)
    return Dataset(
        name="xor",
        x_train=x,
        y_train=y,
        x_test=x.copy(),
        y_test=y.copy(),
        n_classes=2,
        feature_names=("x0", "x1"),
        description="XOR on {0,1}^2; train = test = the 4 points; features in {0, 1}.",
    )


# --------------------------------------------------------------------------------------------
# Iris


def _scale_features(
    x_train: FloatArray, x_test: FloatArray, scaling: str
) -> tuple[FloatArray, FloatArray]:
    """Scale with train statistics only; see the module docstring for the two scalings."""
    if scaling == "standard":
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std = np.where(std > 0.0, std, 1.0)
        return (x_train - mean) / std, (x_test - mean) / std
    if scaling == "minmax":
        lo = x_train.min(axis=0)
        span = x_train.max(axis=0) - lo
        span = np.where(span > 0.0, span, 1.0)
        return (
            np.clip((x_train - lo) / span, 0.0, 1.0),
            np.clip((x_test - lo) / span, 0.0, 1.0),
        )
    raise ConfigError(f"scaling: unknown scaling {scaling!r}; known: 'minmax', 'standard'")


def _load_iris() -> tuple[FloatArray, IntArray, tuple[str, ...]]:
    from sklearn.datasets import load_iris

    bunch = load_iris()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    names = tuple(str(n).replace(" (cm)", "_cm").replace(" ", "_") for n in bunch.feature_names)
    return x, y, names


def iris(seed: int = 0, scaling: ScalingName = "minmax") -> Dataset:
    """Iris, stratified 80/20 split (120 train / 30 test) by ``seed``.

    Features: 4 (sepal/petal length/width). ``scaling="minmax"``: train range → [0, 1], test
    clipped into [0, 1]; ``"standard"``: train mean 0, std 1. Train statistics only.
    """
    from sklearn.model_selection import train_test_split

    if scaling not in ("minmax", "standard"):
        raise ConfigError(f"scaling: unknown scaling {scaling!r}; known: 'minmax', 'standard'")
    x, y, names = _load_iris()
    idx = np.arange(y.size)
    tr, te = train_test_split(idx, test_size=0.2, stratify=y, random_state=seed)
    x_tr, x_te = _scale_features(x[tr], x[te], scaling)
    return Dataset(
        name="iris",
        x_train=np.ascontiguousarray(x_tr, dtype=np.float64),
        y_train=y[tr].astype(np.int64),
        x_test=np.ascontiguousarray(x_te, dtype=np.float64),
        y_test=y[te].astype(np.int64),
        n_classes=3,
        feature_names=names,
        description=(
            f"Iris (scikit-learn bundled), stratified 80/20 split (120/30), seed={seed}; "
            f"{scaling} scaling with train statistics only"
            + (" (train range -> [0, 1], test clipped)." if scaling == "minmax" else ".")
        ),
        metadata={"seed": seed, "scaling": scaling},
    )


def iris_cv_folds(
    n_splits: int = 5, n_repeats: int = 2, seed: int = 0, scaling: ScalingName = "minmax"
) -> Iterator[Dataset]:
    """Repeated stratified K-fold splits of the whole Iris set, as Datasets.

    Yields ``n_splits * n_repeats`` Datasets named ``"iris/cv-r{repeat}-f{fold}"``; every fold
    is scaled with its own train statistics. With ``n_splits=5`` each test fold has 30 samples.
    """
    from sklearn.model_selection import RepeatedStratifiedKFold

    if n_splits < 2 or n_repeats < 1:
        raise ConfigError(
            f"iris_cv_folds: need n_splits >= 2, n_repeats >= 1; got {n_splits}, {n_repeats}"
        )
    if scaling not in ("minmax", "standard"):
        raise ConfigError(f"scaling: unknown scaling {scaling!r}; known: 'minmax', 'standard'")
    x, y, names = _load_iris()
    cv = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    for k, (tr, te) in enumerate(cv.split(x, y)):
        repeat, fold = divmod(k, n_splits)
        x_tr, x_te = _scale_features(x[tr], x[te], scaling)
        yield Dataset(
            name=f"iris/cv-r{repeat}-f{fold}",
            x_train=np.ascontiguousarray(x_tr, dtype=np.float64),
            y_train=y[tr].astype(np.int64),
            x_test=np.ascontiguousarray(x_te, dtype=np.float64),
            y_test=y[te].astype(np.int64),
            n_classes=3,
            feature_names=names,
            description=(
                f"Iris repeated stratified {n_splits}-fold CV (x{n_repeats}, seed={seed}), "
                f"repeat {repeat} fold {fold}; {scaling} scaling with this fold's train statistics."
            ),
            metadata={
                "seed": seed,
                "scaling": scaling,
                "repeat": repeat,
                "fold": fold,
                "n_splits": n_splits,
                "n_repeats": n_repeats,
            },
        )


def iris_cv(
    fold: int = 0, n_splits: int = 5, seed: int = 0, scaling: ScalingName = "minmax"
) -> Dataset:
    """Fold ``fold`` (0-based, counted over the repeats: repeat ``fold // n_splits``) of
    `iris_cv_folds` — bit-identical to ``list(iris_cv_folds(n_splits, n_repeats, seed,
    scaling))[fold]`` for any ``n_repeats`` that reaches it (each repeat's shuffle depends only
    on the earlier repeats)."""
    if fold < 0:
        raise ConfigError(f"iris_cv: fold must be >= 0, got {fold}")
    folds = iris_cv_folds(n_splits, fold // n_splits + 1, seed, scaling)
    for k, ds in enumerate(folds):
        if k == fold:
            return ds
    raise AssertionError("unreachable: the folds reach `fold`")


# --------------------------------------------------------------------------------------------
# Digits


def digits(
    seed: int = 0,
    pool: int = 1,
    test_fraction: float = 0.25,
    classes: Sequence[int] | None = None,
) -> Dataset:
    """The 8×8 handwritten digits, pixels scaled to [0, 1], stratified split by ``seed``.

    Args:
        seed: ``random_state`` of the stratified split.
        pool: 1 keeps 64 pixel features; 2 averages 2×2 blocks into 4×4 = 16 features.
        test_fraction: fraction held out, rounded up (default 0.25: the 1347/450 split).
        classes: optional subset of digits to keep (e.g. ``(0, 1)``); labels are renumbered
            ``0 .. len(classes)-1`` in the given order.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if pool not in (1, 2):
        raise ConfigError(f"pool: must be 1 (8x8 pixels) or 2 (4x4 averages), got {pool!r}")
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) / 16.0  # (n, 8, 8), in [0, 1]
    y = np.asarray(bunch.target, dtype=np.int64)
    if classes is not None:
        keep_classes = [int(c) for c in classes]
        if (
            len(keep_classes) < 2
            or len(set(keep_classes)) != len(keep_classes)
            or any(c < 0 or c > 9 for c in keep_classes)
        ):
            raise ConfigError(f"classes: need >= 2 distinct digits in 0..9, got {list(classes)!r}")
        mask = np.isin(y, keep_classes)
        images = images[mask]
        remap = np.full(10, -1, dtype=np.int64)
        remap[keep_classes] = np.arange(len(keep_classes))
        y = remap[y[mask]]
        n_classes = len(keep_classes)
    else:
        keep_classes = list(range(10))
        n_classes = 10
    n = y.size
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction: must be in (0, 1), got {test_fraction}")
    test_size = int(np.ceil(test_fraction * n))
    if pool == 2:
        images = images.reshape(n, 4, 2, 4, 2).mean(axis=(2, 4))
    side = images.shape[1]
    x = images.reshape(n, side * side)
    names = tuple(f"px_r{r}c{c}" for r in range(side) for c in range(side))
    tr, te = train_test_split(np.arange(n), test_size=test_size, stratify=y, random_state=seed)
    return Dataset(
        name="digits" if pool == 1 else "digits/pool2",
        x_train=np.ascontiguousarray(x[tr]),
        y_train=y[tr],
        x_test=np.ascontiguousarray(x[te]),
        y_test=y[te],
        n_classes=n_classes,
        feature_names=names,
        description=(
            "8x8 digits (scikit-learn bundled), pixels/16 in [0, 1]"
            + (", 2x2 average pooling to 4x4" if pool == 2 else "")
            + f"; stratified split {n - test_size}/{test_size}, seed={seed}"
            + (f"; digits {keep_classes} relabelled 0..{n_classes - 1}" if classes else "")
            + "."
        ),
        metadata={"seed": seed, "pool": pool, "classes": tuple(keep_classes)},
    )


# --------------------------------------------------------------------------------------------
# Time-dependent sine task (Massar §II B)


def class_phase_rad(c: int, n_classes: int) -> float:
    """Target phase of class ``c`` for the phase encoding: 2π c / n_classes (rad)."""
    if not 0 <= c < n_classes:
        raise ConfigError(f"class {c} outside 0..{n_classes - 1}")
    return 2.0 * np.pi * c / n_classes


def class_harmonic(c: int) -> int:
    """Target harmonic of class ``c`` for the frequency encoding: c + 1 (class 0 = fundamental)."""
    if c < 0:
        raise ConfigError(f"class {c} must be >= 0")
    return c + 1


def sine_target(
    labels: NDArray[np.integer[Any]],
    t_s: FloatArray,
    period_s: float,
    n_classes: int,
    encoding: SineEncoding = "phase",
    amplitude: float = 1.0,
) -> FloatArray:
    """Target waveforms of the sine task.

    Args:
        labels: class indices, shape (batch,).
        t_s: sample times in seconds, shape (time,).
        period_s: drive period T in seconds (ω = 2π / T).
        n_classes: number of classes (sets the phase spacing).
        encoding: ``"phase"``: amplitude·sin(ω t + 2π c / n_classes);
            ``"frequency"``: amplitude·sin((c + 1) ω t).
        amplitude: target amplitude (units of the output node's position).

    Returns:
        float64 array of shape (batch, time).
    """
    if not period_s > 0.0:
        raise ConfigError(f"period_s: must be > 0, got {period_s}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ConfigError(f"labels outside 0..{n_classes - 1}")
    omega_t = (2.0 * np.pi / period_s) * np.asarray(t_s, dtype=np.float64)[None, :]
    if encoding == "phase":
        phase = 2.0 * np.pi * labels.astype(np.float64) / n_classes
        return amplitude * np.sin(omega_t + phase[:, None])
    if encoding == "frequency":
        harmonic = (labels + 1).astype(np.float64)
        return amplitude * np.sin(harmonic[:, None] * omega_t)
    raise ConfigError(f"encoding: unknown encoding {encoding!r}; known: 'phase', 'frequency'")


def _prototypes(n_classes: int, n_features: int, rng: np.random.Generator) -> FloatArray:
    """Well-separated class prototypes in [0.1, 0.9]^n_features, shape (n_classes, n_features)."""
    candidates = rng.uniform(0.1, 0.9, size=(max(256, 8 * n_classes), n_features))
    chosen = [0]
    dist = np.linalg.norm(candidates - candidates[0], axis=1)
    for _ in range(n_classes - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(candidates - candidates[nxt], axis=1))
    return candidates[chosen]


def sine_task(
    n_per_class: int = 20,
    n_classes: int = 3,
    encoding: SineEncoding = "phase",
    noise: float = 0.05,
    seed: int = 0,
    n_features: int = 4,
    n_test_per_class: int | None = None,
) -> Dataset:
    """Time-dependent task: the output must follow a sine whose phase or harmonic is the class.

    Features: class prototype (in [0.1, 0.9]^n_features) + N(0, noise²) per feature, clipped to
    [0, 1]. ``n_per_class`` train and ``n_test_per_class`` (default ``n_per_class``) test
    samples per class, drawn independently. Targets: :func:`sine_target` with
    ``metadata["encoding"]``.
    """
    if encoding not in ("phase", "frequency"):
        raise ConfigError(f"encoding: unknown encoding {encoding!r}; known: 'phase', 'frequency'")
    if n_classes < 2:
        raise ConfigError(f"n_classes: must be >= 2, got {n_classes}")
    if n_per_class < 1:
        raise ConfigError(f"n_per_class: must be >= 1, got {n_per_class}")
    if n_features < 1:
        raise ConfigError(f"n_features: must be >= 1, got {n_features}")
    if not (np.isfinite(noise) and noise >= 0.0):
        raise ConfigError(f"noise: must be finite and >= 0, got {noise}")
    n_test = n_per_class if n_test_per_class is None else n_test_per_class
    if n_test < 1:
        raise ConfigError(f"n_test_per_class: must be >= 1, got {n_test}")
    rng = np.random.default_rng(seed)
    protos = _prototypes(n_classes, n_features, rng)

    def draw(n_each: int) -> tuple[FloatArray, IntArray]:
        y = np.repeat(np.arange(n_classes, dtype=np.int64), n_each)
        x = protos[y] + noise * rng.standard_normal((y.size, n_features))
        perm = rng.permutation(y.size)
        return np.clip(x[perm], 0.0, 1.0), y[perm]

    x_tr, y_tr = draw(n_per_class)
    x_te, y_te = draw(n_test)
    return Dataset(
        name=f"sine/{encoding}",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        n_classes=n_classes,
        feature_names=tuple(f"u{j}" for j in range(n_features)),
        description=(
            f"Sine task (Massar §II B), {encoding} encoding, {n_classes} classes, "
            f"{n_per_class}/{n_test} train/test per class, prototypes in [0.1, 0.9]^{n_features} "
            f"+ N(0, {noise}^2) clipped to [0, 1], seed={seed}."
        ),
        metadata={"task": "waveform", "encoding": encoding, "prototypes": protos, "seed": seed},
    )


# --------------------------------------------------------------------------------------------
# Registry, checks, batching


DATASETS: dict[str, Callable[..., Dataset]] = {
    "xor": xor,
    "iris": iris,
    "iris_cv": iris_cv,
    "digits": digits,
    "sine": sine_task,
}


def get_dataset(name: str, **kwargs: Any) -> Dataset:
    """Build the data set registered as ``name`` with keyword arguments ``kwargs``.

    Raises:
        ConfigError: unknown name (the message lists the known ones) or an argument the data
            set does not take (the message lists the ones it takes).
    """
    try:
        factory = DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"dataset: unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}"
        ) from None
    sig = inspect.signature(factory)
    unknown = sorted(set(kwargs) - set(sig.parameters))
    if unknown:
        raise ConfigError(
            f"dataset {name!r}: unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sig.parameters) or '(none)'}"
        )
    ds = factory(**kwargs)
    logger.debug(
        "loaded %s: %d train, %d test, %d features", ds.name, ds.n_train, ds.n_test, ds.n_features
    )
    return ds


def check_feature_count(dataset: Dataset, n_input_nodes: int) -> None:
    """Raise ConfigError unless the data set has exactly one feature per input node."""
    if dataset.n_features != n_input_nodes:
        raise ConfigError(
            f"data set {dataset.name!r} has {dataset.n_features} features but the network has "
            f"{n_input_nodes} input nodes; they must match"
        )


def one_hot(labels: NDArray[np.integer[Any]], n_classes: int) -> FloatArray:
    """One-hot float64 matrix of shape (batch, n_classes) from class indices (batch,)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ConfigError(f"labels outside 0..{n_classes - 1}")
    out = np.zeros((labels.size, n_classes), dtype=np.float64)
    out[np.arange(labels.size), labels] = 1.0
    return out


def iterate_minibatches(
    n: int,
    batch_size: int,
    rng: np.random.Generator,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[IntArray]:
    """Yield index arrays (int64) that cover ``range(n)`` once, ``batch_size`` at a time.

    With ``shuffle`` the order is one ``rng.permutation(n)`` (deterministic given the rng
    state); the last batch is shorter unless ``drop_last``.
    """
    if n < 0:
        raise ConfigError(f"n: must be >= 0, got {n}")
    if batch_size < 1:
        raise ConfigError(f"batch_size: must be >= 1, got {batch_size}")
    order = rng.permutation(n).astype(np.int64) if shuffle else np.arange(n, dtype=np.int64)
    stop = n - (n % batch_size) if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : min(start + batch_size, stop)]
