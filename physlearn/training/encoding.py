"""Input encoding (features → drive forces) and output decoding (steady state → class).

**Input encoding.** A feature vector u (dimensionless, one entry per input node) becomes the
drive force on input node j, as the network spec's ``inputs`` table says:

    F_j(t) = gain · (u_j + offset) · cos(ω t + φ_j)        (newtons)

the *amplitude* carries the feature; the phase φ_j is fixed per input node (optional, e.g. to
give an output access to both quadratures in the sine task). `drive_amplitudes` gives F's
amplitude per sample and node; `check_inputs` refuses a wrong feature count or non-finite values.

**Targets and decoding**, one class per sample:

* `InphaseTargets` — the output nodes must oscillate as y_j cos(ωt) with y = ``on`` on the
  class's output node and ``off`` elsewhere (one-hot, ``n_out = n_classes``); with a single output
  node and two classes, y = ``on`` for class 1 and ``off`` for class 0. Decoding: project each
  output waveform on cos ωt, a_j = (2/T) ∫ x_j cos ωt dt (the *in-phase amplitude*, what a lock-in
  reads); the class is the argmax of a (argmin if on < off), or for one output the level nearest
  to a.
* `SineTargets` — the time task (Massar §II B, `physlearn.training.datasets.sine_target`): one output
  node must follow amplitude·sin(ωt + 2πc/K) (``phase`` encoding) or amplitude·sin((c+1)ωt)
  (``frequency``). Decoding: the *nearest target waveform* in L² over one period.

Both build the `Task` whose cost C = ∫ γ ½ Σ_out (x − y)² dt is the loss reported by training.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError
from physlearn.spec.gp_field_network import GPFieldNetworkSpec
from physlearn.spec.gp_network import GPNetworkSpec
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import Observation
from physlearn.spec.task import Task
from physlearn.training.datasets import SineEncoding, sine_target

Array = NDArray[np.float64]
IntArray = NDArray[np.int64]
#: what ``physlearn train`` trains: an oscillator network, a GP lattice or a GP field
TrainNetwork = NetworkSpec | GPNetworkSpec | GPFieldNetworkSpec

__all__ = [
    "ClassTargets",
    "InphaseTargets",
    "SineTargets",
    "TrainNetwork",
    "check_inputs",
    "drive_amplitudes",
    "inphase_amplitudes",
    "input_count",
    "make_targets",
    "oscillator_network",
]


def oscillator_network(spec: TrainNetwork, what: str = "these targets") -> NetworkSpec:
    """``spec`` as an oscillator network; ConfigError naming ``what`` for a GP lattice."""
    if not isinstance(spec, NetworkSpec):
        raise ConfigError(f"network: {what} need an oscillator network, not a GP lattice or field")
    return spec


# ---------------------------------------------------------------------------------- inputs


def input_count(spec: TrainNetwork) -> int:
    """The features a network takes: one per input node (a field: per input spot)."""
    if isinstance(spec, GPFieldNetworkSpec):
        return spec.n_inputs
    return len(spec.inputs.nodes)


def check_inputs(spec: TrainNetwork, features: Array) -> Array:
    """Features (B, n_in) as a float64 array; ConfigError on a wrong count or non-finite values."""
    u = np.asarray(features, dtype=np.float64)
    n_in = input_count(spec)
    if u.ndim != 2 or u.shape[1] != n_in:
        where = (
            f"input spots at {spec.inputs.centers_um} μm"
            if isinstance(spec, GPFieldNetworkSpec)
            else f"input nodes {spec.inputs.nodes}"
        )
        raise ConfigError(
            f"inputs: expected features of shape (batch, {n_in}) for {where}, got {u.shape}"
        )
    if not np.all(np.isfinite(u)):
        raise ConfigError("inputs: features contain NaN or inf")
    return u


def drive_amplitudes(spec: NetworkSpec, features: Array) -> Array:
    """Drive force amplitude gain·(u + offset) per sample and input node, (B, n_in), newtons.

    For ``mode = "clamp"`` inputs this is the clamp target's amplitude (node units) instead.
    """
    u = check_inputs(spec, features)
    return np.asarray(spec.inputs.gain * (u + spec.inputs.offset), dtype=np.float64)


# ---------------------------------------------------------------------------------- outputs


def inphase_amplitudes(obs: Observation, nodes: list[int], omega_rad_s: float) -> Array:
    """In-phase amplitude a_j = (2/T_obs) ∫ x_j cos ωt dt of each listed node, (B, len(nodes)).

    The observation's grid is uniform over whole periods, so the rectangle rule is exact for
    band-limited waveforms.
    """
    c = np.cos(omega_rad_s * obs.t_s)
    x = obs.x[:, :, nodes]
    return np.asarray(2.0 * np.mean(x * c[None, :, None], axis=1), dtype=np.float64)


class ClassTargets(abc.ABC):
    """Targets of a classification task and the decoding of an output into a class."""

    n_classes: int

    @abc.abstractmethod
    def task(self, spec: TrainNetwork, labels: IntArray) -> Task:
        """The cost of a batch with these labels (B,)."""

    @abc.abstractmethod
    def predict(self, obs: Observation, spec: TrainNetwork) -> IntArray:
        """Decoded classes (B,) of free steady states."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Plain facts for the run summary."""

    def _labels(self, labels: IntArray) -> IntArray:
        lab = np.asarray(labels, dtype=np.int64)
        if lab.ndim != 1 or (lab.size and (lab.min() < 0 or lab.max() >= self.n_classes)):
            raise ConfigError(f"labels: need a 1-D array of classes in 0..{self.n_classes - 1}")
        return lab


@dataclass(frozen=True)
class OneHotTargets(ClassTargets):
    """One-hot targets: the class's output node at ``on``, the others at ``off`` (node units);
    one output and two classes: ``on`` for class 1. What ``on``/``off`` mean (in-phase
    amplitudes, static levels) is the subclass's."""

    n_classes: int
    n_outputs: int
    on: float = 0.2
    off: float = 0.0

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ConfigError(f"n_classes: need ≥ 2 classes, got {self.n_classes}")
        if not (self.n_outputs == self.n_classes or (self.n_outputs == 1 and self.n_classes == 2)):
            raise ConfigError(
                f"outputs: {self.n_outputs} output node(s) for {self.n_classes} classes; use one "
                "output per class (or a single output for two classes)"
            )
        if not (np.isfinite(self.on) and np.isfinite(self.off)) or self.on == self.off:
            raise ConfigError(
                f"targets: on and off levels must be finite and differ, got {self.on}, {self.off}"
            )

    def values(self, labels: IntArray) -> Array:
        """Target values (B, n_out) in node units."""
        lab = self._labels(labels)
        if self.n_outputs == 1:
            return np.where(lab == 1, self.on, self.off).astype(np.float64)[:, None]
        v = np.full((lab.size, self.n_outputs), self.off, dtype=np.float64)
        v[np.arange(lab.size), lab] = self.on
        return v


@dataclass(frozen=True)
class InphaseTargets(OneHotTargets):
    """One-hot in-phase amplitudes ``on``/``off`` (node units, e.g. m); see the module docstring."""

    def task(self, net: TrainNetwork, labels: IntArray) -> Task:
        spec = oscillator_network(net, "in-phase targets")
        if spec.outputs.target.kind != "inphase":
            raise ConfigError(
                f"outputs.target.kind: in-phase targets need kind 'inphase', got "
                f"{spec.outputs.target.kind!r}"
            )
        if len(spec.outputs.nodes) != self.n_outputs:
            raise ConfigError(
                f"outputs.nodes: {len(spec.outputs.nodes)} output nodes, targets for {self.n_outputs}"
            )
        return Task.from_spec(spec, values=self.values(labels))

    def predict(self, obs: Observation, net: TrainNetwork) -> IntArray:
        spec = oscillator_network(net, "in-phase targets")
        a = inphase_amplitudes(obs, list(spec.outputs.nodes), spec.drive.omega_rad_s)
        if self.n_outputs == 1:
            mid = 0.5 * (self.on + self.off)
            hi_is_on = self.on > self.off
            return np.where((a[:, 0] > mid) == hi_is_on, 1, 0).astype(np.int64)
        pick = np.argmax(a, axis=1) if self.on > self.off else np.argmin(a, axis=1)
        return pick.astype(np.int64)

    def describe(self) -> dict[str, Any]:
        return {
            "targets": "inphase",
            "decode": "largest in-phase amplitude" if self.n_outputs > 1 else "nearest level",
            "on": self.on,
            "off": self.off,
        }


@dataclass(frozen=True)
class SineTargets(ClassTargets):
    """Sine-task targets on one output node; decoding by the nearest target waveform."""

    n_classes: int
    encoding: SineEncoding = "phase"
    amplitude: float = 0.2

    def __post_init__(self) -> None:
        if self.n_classes < 2:
            raise ConfigError(f"n_classes: need ≥ 2 classes, got {self.n_classes}")
        if self.encoding not in ("phase", "frequency"):
            raise ConfigError(f"encoding: must be 'phase' or 'frequency', got {self.encoding!r}")
        if not (np.isfinite(self.amplitude) and self.amplitude > 0):
            raise ConfigError(f"amplitude: must be positive and finite, got {self.amplitude}")

    def waveforms(self, labels: IntArray, t_s: Array, period_s: float) -> Array:
        """Targets (B, N) at times t_s."""
        return sine_target(
            self._labels(labels), t_s, period_s, self.n_classes, self.encoding, self.amplitude
        )

    def task(self, net: TrainNetwork, labels: IntArray) -> Task:
        spec = oscillator_network(net, "sine targets")
        if len(spec.outputs.nodes) != 1:
            raise ConfigError(
                f"outputs.nodes: the sine task needs exactly one output node, got "
                f"{len(spec.outputs.nodes)}"
            )
        lab = self._labels(labels).copy()
        period = spec.period_s

        def wave(t: Array) -> Array:
            return self.waveforms(lab, np.asarray(t, dtype=float), period)[:, :, None]

        return Task.from_spec(spec, waveforms=wave)

    def predict(self, obs: Observation, spec: TrainNetwork) -> IntArray:
        one = obs.one_period()
        x = one.x[:, :, oscillator_network(spec, "sine targets").outputs.nodes[0]]  # (B, N)
        classes = np.arange(self.n_classes, dtype=np.int64)
        protos = self.waveforms(classes, one.t_s, one.period_s)  # (K, N)
        dist = np.sum((x[:, None, :] - protos[None, :, :]) ** 2, axis=2)
        return np.argmin(dist, axis=1).astype(np.int64)

    def describe(self) -> dict[str, Any]:
        return {
            "targets": f"sine/{self.encoding}",
            "decode": "nearest target waveform",
            "amplitude": self.amplitude,
        }


def make_targets(
    kind: Literal["inphase", "sine"],
    n_classes: int,
    n_outputs: int,
    *,
    on: float = 0.2,
    off: float = 0.0,
    amplitude: float = 0.2,
    encoding: SineEncoding = "phase",
) -> ClassTargets:
    """The targets called ``kind`` (``inphase`` or ``sine``)."""
    if kind == "inphase":
        return InphaseTargets(n_classes, n_outputs, on, off)
    if kind == "sine":
        return SineTargets(n_classes, encoding, amplitude)
    raise ConfigError(f"targets: unknown kind {kind!r}; known: inphase, sine")
