"""Input encoding and output decoding: in-phase amplitudes, one-hot levels, sine waveforms."""

from __future__ import annotations

import numpy as np
import pytest

from physlearn.errors import ConfigError
from physlearn.spec.system import Observation
from physlearn.spec.topology import layered
from physlearn.training.datasets import sine_target
from physlearn.training.encoding import (
    InphaseTargets,
    SineTargets,
    check_inputs,
    drive_amplitudes,
    inphase_amplitudes,
)


def _obs(x: np.ndarray, period: float = 2 * np.pi) -> Observation:
    n = x.shape[1]
    return Observation(np.arange(n) * period / n, x, period)


def test_inphase_amplitude_is_the_cosine_projection() -> None:
    t = np.arange(33) * 2 * np.pi / 33
    x = np.zeros((2, 33, 3))
    x[0, :, 1] = 0.3 * np.cos(t) + 0.7 * np.sin(t) + 0.2 * np.cos(2 * t) + 0.1
    x[1, :, 2] = -0.25 * np.cos(t)
    a = inphase_amplitudes(_obs(x), [1, 2], 1.0)
    np.testing.assert_allclose(a, [[0.3, 0.0], [0.0, -0.25]], atol=1e-14)


def test_one_hot_targets_and_argmax_decoding() -> None:
    spec = layered([4, 3, 3], seed=0)
    tg = InphaseTargets(3, 3, on=0.2, off=0.0)
    np.testing.assert_array_equal(tg.values(np.array([2, 0])), [[0, 0, 0.2], [0.2, 0, 0]])
    t = np.arange(33) * 2 * np.pi / 33
    x = np.zeros((2, 33, spec.nodes.count))
    out = spec.outputs.nodes
    x[0, :, out[1]] = 0.15 * np.cos(t)
    x[1, :, out[2]] = 0.05 * np.cos(t)
    x[1, :, out[0]] = -0.3 * np.cos(t)
    np.testing.assert_array_equal(tg.predict(_obs(x), spec), [1, 2])
    task = tg.task(spec, np.array([1, 2]))
    # cost is zero exactly on target
    y = np.zeros_like(x)
    y[0, :, out[1]] = 0.2 * np.cos(t)
    y[1, :, out[2]] = 0.2 * np.cos(t)
    np.testing.assert_allclose(task.cost(y, t, 2 * np.pi / 33), 0.0, atol=1e-15)


def test_single_output_two_classes_uses_nearest_level() -> None:
    spec = layered([2, 4, 1], seed=0)
    tg = InphaseTargets(2, 1, on=0.2, off=0.0)
    t = np.arange(33) * 2 * np.pi / 33
    x = np.zeros((3, 33, spec.nodes.count))
    for i, a in enumerate((0.04, 0.16, 0.11)):
        x[i, :, spec.outputs.nodes[0]] = a * np.cos(t)
    np.testing.assert_array_equal(tg.predict(_obs(x), spec), [0, 1, 1])
    inverted = InphaseTargets(2, 1, on=-0.2, off=0.0)
    np.testing.assert_array_equal(inverted.predict(_obs(x), spec), [0, 0, 0])


def test_inphase_targets_refuse_mismatched_outputs() -> None:
    with pytest.raises(ConfigError, match="output"):
        InphaseTargets(3, 2)
    with pytest.raises(ConfigError):
        InphaseTargets(2, 2, on=0.1, off=0.1)


def test_sine_targets_decode_nearest_waveform() -> None:
    spec = layered([4, 4, 1], seed=0, target_kind="sine")
    tg = SineTargets(3, "phase", amplitude=0.2)
    n = 33
    t = np.arange(n) * spec.period_s / n
    labels = np.array([2, 0, 1])
    y = sine_target(labels, t, spec.period_s, 3, "phase", 0.2)
    x = np.zeros((3, n, spec.nodes.count))
    x[:, :, spec.outputs.nodes[0]] = 0.7 * y + 0.01  # scaled and offset: still nearest
    np.testing.assert_array_equal(tg.predict(_obs(x, spec.period_s), spec), labels)
    task = tg.task(spec, labels)
    np.testing.assert_allclose(task.targets(t)[:, :, 0], y)


def test_input_checks() -> None:
    spec = layered([2, 3, 1], seed=0)
    with pytest.raises(ConfigError, match="shape"):
        check_inputs(spec, np.zeros((4, 3)))
    with pytest.raises(ConfigError, match="NaN"):
        check_inputs(spec, np.array([[np.nan, 0.0]]))
    amp = drive_amplitudes(spec, np.array([[0.0, 1.0]]))
    np.testing.assert_allclose(amp, [[0.0, spec.inputs.gain]])
