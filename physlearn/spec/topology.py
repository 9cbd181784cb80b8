"""Documented network topologies: builders that return a validated `NetworkSpec`.

``layered(layers=[n_in, n_hidden..., n_out])`` — the input–hidden–output network of the
classification examples:

* nodes are numbered layer by layer: inputs ``0 .. n_in−1``, then each hidden layer, then the
  outputs; with ``bias_node`` one extra node (the last) is driven by a fixed tone
  ``gain·bias_amplitude·cos(ωt)`` whatever the input, and coupled to every node of every
  non-input layer (the oscillator analogue of a bias unit: without it, the in-phase response to
  u = 0 is exactly zero and the map u ↦ in-phase amplitude is odd);
* trainable couplings between every node of consecutive layers, of one ``kind``: ``product``
  α ρ(x_j) ρ(x_k) (the nonlinear coupling of docs/physics.md) or ``difference`` ½ α (x_j − x_k)²
  (linear springs, α ≥ 0; the nonlinearity then comes from the biases only); or non-reciprocal
  (directed, through ρ: node k pushed by −α ρ(x_j)): ``directed`` from each node j of a layer to
  each node k of the next (a fully feedforward network), ``bidirected`` (both directions, with
  independent gains: every coupling non-reciprocal), ``mixed`` (a product coupling plus a
  forward directed one per pair: half the couplings non-reciprocal);
* trainable biases α' ρ(x_j) on every hidden and output node (``node_biases = False`` leaves them
  out: a bench tunes couplings by DAC and has no actuator for a trainable static force ρ-term, so
  a network a bench can realise has none — examples/bench-iris.toml); with ``onsite_bound`` also a
  trainable on-site spring ½ κ_j x_j² (κ_j ∈ [−b, b] N/m, starting at 0) on each of them: the
  node's natural frequency √((k + κ_j)/m) is learned alongside the couplings;
* inputs: the first layer, force encoding F_j = gain (u_j + offset) cos(ωt + φ_j);
  outputs: the last layer, in-phase targets (``y_j cos ωt``) unless told otherwise;
* initial couplings ~ N(0, (init_scale/√fan_in)²) from a seeded Generator, clipped into their
  bounds; biases start at 0.

Two documented regimes (``REGIMES``; m = 1 kg, ω = 1 rad/s unless overridden):

``conservative`` — conservative-like, drive off resonance: Γ = 1e-3 s⁻¹ (Γ·T = 6.3e-3 ≤ 0.01),
uniform stiffness k = 2.4 N/m (bare mode 1.55 rad/s, between ω and 2ω), input gain 1.5 N so that
the driven input nodes swing to |x| ≈ 1.2–1.4 (well into the tanh nonlinearity) while the
linearised modes at rest stay ≥ 0.1 ω away from ω and 2ω (checked with
``linear_mode_frequencies``; a draw that violates it is a ConfigError, never silently used).
With the product couplings at rest the spectrum is k ± σ(W): a bound |α| ≤ 1 keeps the network
statically stable (every k + eig(A) > 0) but does not by itself keep the modes off ω during
training — ``mode_report`` measures the margin after training.

``lossy_resonant`` — lossy near resonance: Γ = 0.05 s⁻¹ (Q = ω/Γ = 20), stiffness shifted
uniformly so that the linearised mode nearest ω sits ``detuning_linewidths`` · Γ from ω
(default 0.5: within one linewidth), smaller input gain (0.4 N) because the drive is amplified
≈ Q-fold at resonance. The regime where plain EP is biased and the time-reversed nudge matters.

All quantities SI: mass kg, stiffness N/m, damping 1/s, ω rad/s, forces N.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError
from physlearn.spec.model import NetworkModel, linear_mode_frequencies, mode_frequencies
from physlearn.spec.network import NetworkSpec

Array = NDArray[np.float64]
CouplingKind = Literal["product", "difference", "directed", "bidirected", "mixed"]
#: kinds made of directed (non-reciprocal) couplings, fed through ρ
DIRECTED_KINDS = ("directed", "bidirected", "mixed")
RegimeName = Literal["conservative", "lossy_resonant"]

__all__ = [
    "REGIMES",
    "ModeGuard",
    "ModeReport",
    "layer_nodes",
    "layered",
    "mode_report",
    "spec_with_parameters",
]

#: Physical defaults of the two documented regimes (see the module docstring).
REGIMES: dict[str, dict[str, float]] = {
    "conservative": {
        "stiffness": 2.4,
        "damping": 1e-3,
        "input_gain": 1.5,
        "coupling_bound": 1.0,
        "bias_bound": 1.0,
    },
    "lossy_resonant": {
        "stiffness": 2.4,  # starting point; shifted so that a mode sits near ω
        "damping": 0.05,
        "input_gain": 0.4,
        "coupling_bound": 1.0,
        "bias_bound": 1.0,
    },
}


@dataclass(frozen=True)
class ModeReport:
    """Linearised modes at rest (rad/s, ascending) and their distance to the drive.

    ``margin_1w`` / ``margin_2w``: min |ω_mode − h ω| / ω for h = 1, 2 (dimensionless).
    ``detuning_linewidths``: min |ω_mode − ω| / Γ̄ (Γ̄ the mean damping rate; inf if Γ̄ = 0).
    """

    modes_rad_s: Array
    omega_rad_s: float
    margin_1w: float
    margin_2w: float
    detuning_linewidths: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "modes_rad_s": [float(m) for m in self.modes_rad_s],
            "omega_rad_s": self.omega_rad_s,
            "margin_1w": self.margin_1w,
            "margin_2w": self.margin_2w,
            "detuning_linewidths": self.detuning_linewidths,
        }


def mode_report(spec: NetworkSpec, params: Array | None = None) -> ModeReport:
    """Modes of the network linearised at rest, with trainable terms set to ``params``."""
    s = spec if params is None else spec_with_parameters(spec, params)
    modes = np.asarray(linear_mode_frequencies(s), dtype=float)
    w = spec.drive.omega_rad_s
    gamma = float(np.mean(spec.nodes.arrays()[2]))
    d1 = float(np.min(np.abs(modes - w)))
    d2 = float(np.min(np.abs(modes - 2.0 * w)))
    return ModeReport(modes, w, d1 / w, d2 / w, d1 / gamma if gamma > 0 else math.inf)


class ModeGuard:
    """Fast linear-mode margins at rest for many parameter vectors of one spec.

    Same quantities as `mode_report` (margins to ω and 2ω in units of ω) without rebuilding the
    spec: the model is built once, each call is one d×d symmetric eigenvalue problem.
    """

    def __init__(self, spec: NetworkSpec):
        self.model = NetworkModel.from_spec(spec)
        self.omega = spec.drive.omega_rad_s
        self._minv = 1.0 / np.sqrt(np.asarray(self.model.mass, dtype=float))

    def modes(self, params: Array) -> Array:
        """Linear mode angular frequencies at rest (rad/s, ascending) for ``params`` (P,)."""
        m = self.model
        theta = m.full_theta(np.asarray(params, dtype=float))
        hess = m.mean_hessian(np.zeros((1, 1, m.d)), np.zeros(1), m.coefficients(theta))[0]
        sym = not m.nonreciprocal
        return np.asarray(mode_frequencies(hess, m.mass, symmetric=sym), dtype=float)

    def margin(self, params: Array) -> float:
        """min over modes and h ∈ {1, 2} of |ω_mode − h ω| / ω (dimensionless)."""
        modes = self.modes(params)
        w = self.omega
        return float(min(np.min(np.abs(modes - w)), np.min(np.abs(modes - 2.0 * w))) / w)


def spec_with_parameters(spec: NetworkSpec, params: Array) -> NetworkSpec:
    """A copy of ``spec`` whose trainable terms hold ``params`` (P,), in parameter order."""
    p = np.asarray(params, dtype=float)
    names = spec.parameter_names()
    if p.shape != (len(names),):
        raise ConfigError(f"params: expected shape ({len(names)},), got {p.shape}")
    data = spec.model_dump()
    i = 0
    for section in ("couplings", "biases", "quartic", "directed", "onsite"):
        for term in data[section]:
            if term["trainable"]:
                term["value"] = float(p[i])
                i += 1
    return NetworkSpec.model_validate(data)


def layer_nodes(layers: Sequence[int]) -> list[list[int]]:
    """Node indices of each layer, numbered layer by layer."""
    out, start = [], 0
    for n in layers:
        out.append(list(range(start, start + n)))
        start += n
    return out


def _check_layers(layers: Sequence[int]) -> list[int]:
    ls = [int(n) for n in layers]
    if len(ls) < 2 or any(n < 1 for n in ls) or any(int(n) != n for n in layers):
        raise ConfigError(
            f"layers: need at least an input and an output layer of ≥ 1 node each, got {list(layers)}"
        )
    return ls


def layered(
    layers: Sequence[int],
    *,
    kind: CouplingKind = "product",
    regime: RegimeName = "conservative",
    init_scale: float = 0.5,
    seed: int = 0,
    mass: float = 1.0,
    stiffness: float | None = None,
    damping: float | None = None,
    omega_rad_s: float = 1.0,
    nonlinearity: str = "tanh",
    coupling_bound: float | None = None,
    bias_bound: float | None = None,
    bias_node: bool = True,
    bias_amplitude: float = 1.0,
    node_biases: bool = True,
    input_gain: float | None = None,
    input_offset: float = 0.0,
    input_phase_rad: float | list[float] = 0.0,
    input_waveform: Literal["cos", "constant"] = "cos",
    target_kind: Literal["inphase", "constant", "sine"] = "inphase",
    target_harmonic: int = 1,
    target_phase_rad: float = 0.0,
    detuning_linewidths: float = 0.5,
    check_modes: bool = True,
    onsite_bound: float | None = None,
    output_stiffness: float | None = None,
) -> NetworkSpec:
    """A layered input–hidden–output network (see the module docstring).

    Args:
        layers: nodes per layer, ``[n_in, n_hidden..., n_out]``.
        kind: coupling kind between consecutive layers (``product`` or ``difference``).
        regime: ``conservative`` or ``lossy_resonant``: defaults of k, Γ, input gain and bounds.
        init_scale: std of the initial couplings × √fan_in (N for a product coupling).
        seed: seeds the Generator drawing the initial couplings.
        mass, stiffness, damping: per-node m (kg), k (N/m), Γ (1/s), the same for every node.
        omega_rad_s: drive angular frequency ω (period T = 2π/ω).
        coupling_bound, bias_bound: every coupling in [−b, b] ([0, b] for difference
            couplings), every bias in [−b, b] (N).
        bias_node, bias_amplitude: an always-driven bias oscillator coupled to every non-input
            layer, its drive in ``input_gain`` units; node_biases=False: no node biases.
        input_gain, input_offset, input_phase_rad: force encoding gain (N per unit feature),
            offset (feature units) and drive phase(s) of the input nodes.
        input_waveform: ``cos`` (the drive F = gain (u + offset) cos(ωt + φ)) or ``constant``
            (a static force gain (u + offset): the inputs of an autonomous network).
        target_kind, target_harmonic, target_phase_rad: the output target shape (`TargetSpec`).
        detuning_linewidths: ``lossy_resonant`` only: the nearest mode at ω + detuning·Γ.
        check_modes: ``conservative`` only: refuse a draw with a mode at rest within 0.1 ω of ω, 2ω.
        onsite_bound: None, or b (N/m): a trainable on-site stiffness κ_j ∈ [−b, b] from 0 on
            every hidden and output node; b < k (every node keeps a positive spring k + κ_j).
        output_stiffness: None, or k_out (N/m) on the output nodes only (needs ``stiffness``): a
            stiff readout stays out of the lowest modes of an autonomous orbit (physics.md §8).

    Raises:
        ConfigError: bad layers or values, a conservative draw near resonance, a lossy network
            whose modes cannot be tuned onto the drive.
    """
    ls = _check_layers(layers)
    k, gamma, gain, cb, bb = _regime_values(
        regime, kind, init_scale, stiffness, damping, input_gain, coupling_bound, bias_bound
    )
    groups = layer_nodes(ls)
    d = sum(ls) + (1 if bias_node else 0)
    k_nodes = _node_stiffness(k, output_stiffness, stiffness is not None, groups[-1], d)
    data: dict[str, Any] = {
        "nodes": {"count": d, "mass": mass, "stiffness": k_nodes, "damping": gamma},
        "nonlinearity": nonlinearity,
        **_draw_terms(ls, kind, cb, init_scale, np.random.default_rng(seed), bias_node, d - 1),
        "biases": _hidden_biases(groups, bb, node_biases, bias_bound),
        "onsite": _hidden_onsite(groups, onsite_bound, k),
        "drive": _drive(omega_rad_s, d - 1, gain * bias_amplitude, bias_node),
        "inputs": {
            **_inputs(groups[0], gain, input_offset, input_phase_rad),
            "waveform": input_waveform,
        },
        "outputs": _outputs(groups[-1], target_kind, target_harmonic, target_phase_rad),
    }
    return _regime_modes(data, regime, check_modes, stiffness is not None, detuning_linewidths)


def _node_stiffness(
    k: float, output_stiffness: float | None, explicit: bool, outputs: list[int], d: int
) -> float | list[float]:
    """Every node's stiffness (N/m): k, or k_out on the ``outputs`` (needs an ``explicit`` k)."""
    if output_stiffness is None:
        return k
    if not (math.isfinite(output_stiffness) and output_stiffness > 0):
        raise ConfigError(
            f"output_stiffness: must be positive and finite, got {output_stiffness!r}"
        )
    if not explicit:
        raise ConfigError("output_stiffness: needs an explicit stiffness for the other nodes")
    return [float(output_stiffness) if j in outputs else k for j in range(d)]


def _regime_values(
    regime: RegimeName,
    kind: CouplingKind,
    init_scale: float,
    stiffness: float | None,
    damping: float | None,
    input_gain: float | None,
    coupling_bound: float | None,
    bias_bound: float | None,
) -> tuple[float, float, float, float, float]:
    """Stiffness k (N/m), damping Γ (1/s), input gain (N), coupling and bias bounds (N): the
    given values, else the regime's defaults; checks the regime, kind and bounds."""
    if regime not in REGIMES:
        raise ConfigError(f"regime: unknown {regime!r}; known: {', '.join(REGIMES)}")
    if kind not in ("product", "difference", *DIRECTED_KINDS):
        raise ConfigError(
            "kind: must be 'product', 'difference', 'directed', 'bidirected' or 'mixed', "
            f"got {kind!r}"
        )
    defaults = REGIMES[regime]
    k = float(defaults["stiffness"] if stiffness is None else stiffness)
    gamma = float(defaults["damping"] if damping is None else damping)
    gain = float(defaults["input_gain"] if input_gain is None else input_gain)
    cb = float(defaults["coupling_bound"] if coupling_bound is None else coupling_bound)
    bb = float(defaults["bias_bound"] if bias_bound is None else bias_bound)
    for name, v in (("init_scale", init_scale), ("coupling_bound", cb), ("bias_bound", bb)):
        if not (math.isfinite(v) and v > 0):
            raise ConfigError(f"{name}: must be a positive finite number, got {v!r}")
    return k, gamma, gain, cb, bb


def _draw_couplings(
    ls: list[int],
    kind: CouplingKind,
    cb: float,
    init_scale: float,
    rng: np.random.Generator,
    bias_node: bool,
    bias_id: int,
) -> list[dict[str, Any]]:
    """Couplings between every node of consecutive layers (then the bias node's to the next
    layer), each drawn ~ N(0, (init_scale/√fan_in)²) in that order and clipped into its bounds
    ([−cb, cb], or [0, cb] for difference couplings after taking |·|)."""
    groups = layer_nodes(ls)
    lower = 0.0 if kind == "difference" else -cb

    def draw(fan_in: int) -> float:
        v = float(rng.normal(0.0, init_scale / math.sqrt(fan_in)))
        if kind == "difference":
            v = abs(v)
        return float(np.clip(v, lower, cb))

    couplings: list[dict[str, Any]] = []
    for li in range(len(ls) - 1):
        fan_in = ls[li] + (1 if bias_node else 0)
        for a in groups[li]:
            for b in groups[li + 1]:
                couplings.append(
                    {
                        "kind": kind,
                        "nodes": [a, b],
                        "value": draw(fan_in),
                        "lower": lower,
                        "upper": cb,
                    }
                )
        if bias_node:
            for b in groups[li + 1]:
                couplings.append(
                    {
                        "kind": kind,
                        "nodes": [bias_id, b],
                        "value": draw(fan_in),
                        "lower": lower,
                        "upper": cb,
                    }
                )
    return couplings


def _draw_terms(
    ls: list[int],
    kind: CouplingKind,
    cb: float,
    init_scale: float,
    rng: np.random.Generator,
    bias_node: bool,
    bias_id: int,
) -> dict[str, list[dict[str, Any]]]:
    """``couplings`` (and ``directed``) of a layered network: `_draw_couplings` for the
    reciprocal kinds; for the directed kinds the same pairs and draws, each pair (j in layer l,
    k in layer l+1, the bias node counting as a source) giving a directed coupling k ← j through
    ρ, plus j ← k (``bidirected``, drawn next) or a product coupling j–k (``mixed``, drawn
    first)."""
    if kind not in DIRECTED_KINDS:
        return {"couplings": _draw_couplings(ls, kind, cb, init_scale, rng, bias_node, bias_id)}
    groups = layer_nodes(ls)
    couplings: list[dict[str, Any]] = []
    directed: list[dict[str, Any]] = []

    def draw(fan_in: int) -> float:
        return float(np.clip(rng.normal(0.0, init_scale / math.sqrt(fan_in)), -cb, cb))

    for li in range(len(ls) - 1):
        fan_in = ls[li] + (1 if bias_node else 0)
        sources = list(groups[li]) + ([bias_id] if bias_node else [])
        for a in sources:
            for b in groups[li + 1]:
                bounds = {"lower": -cb, "upper": cb}
                if kind == "mixed":
                    couplings.append({"kind": "product", "nodes": [a, b], "value": draw(fan_in)})
                    couplings[-1].update(bounds)
                edge = {"kind": "rho", "target": b, "source": a, "value": draw(fan_in)}
                directed.append({**edge, **bounds})
                if kind == "bidirected" and a != bias_id:
                    back = {"kind": "rho", "target": a, "source": b, "value": draw(ls[li + 1])}
                    directed.append({**back, **bounds})
    return {"couplings": couplings, "directed": directed}


def _hidden_biases(
    groups: list[list[int]], bb: float, node_biases: bool = True, bias_bound: float | None = None
) -> list[dict[str, Any]]:
    """A trainable bias in [−bb, bb] (N), starting at 0, on every node of every non-input layer;
    none without ``node_biases`` (then an explicit ``bias_bound`` is refused as contradictory)."""
    if not node_biases:
        if bias_bound is not None:
            raise ConfigError(
                "bias_bound: bounds the node biases, which node_biases = false leaves out; drop one"
            )
        return []
    return [
        {"node": j, "value": 0.0, "lower": -bb, "upper": bb} for group in groups[1:] for j in group
    ]


def _hidden_onsite(groups: list[list[int]], bound: float | None, k: float) -> list[dict[str, Any]]:
    """With a ``bound`` b (N/m): a trainable on-site stiffness κ ∈ [−b, b], starting at 0, on
    every node of every non-input layer; refused unless 0 < b < k (N/m)."""
    if bound is None:
        return []
    if not (math.isfinite(bound) and 0 < bound < k):
        raise ConfigError(
            f"onsite_bound: must be in (0, k) = (0, {k}) N/m so that every node keeps a positive "
            f"spring k + κ, got {bound!r}"
        )
    return [
        {"node": j, "value": 0.0, "lower": -bound, "upper": bound}
        for group in groups[1:]
        for j in group
    ]


def _drive(
    omega_rad_s: float, bias_id: int, bias_amplitude_n: float, bias_node: bool
) -> dict[str, Any]:
    """The drive table: ω and, with a bias node, its fixed tone (N)."""
    tones = [{"node": bias_id, "amplitude_n": bias_amplitude_n, "harmonic": 1}] if bias_node else []
    return {"omega_rad_s": omega_rad_s, "tones": tones}


def _inputs(
    nodes: list[int], gain: float, offset: float, phase_rad: float | list[float]
) -> dict[str, Any]:
    """The inputs table: the first layer, force encoding F = gain (u + offset) cos(ωt + φ)."""
    return {
        "nodes": nodes,
        "mode": "force",
        "gain": gain,
        "offset": offset,
        "phase_rad": phase_rad,
    }


def _outputs(nodes: list[int], kind: str, harmonic: int, phase_rad: float) -> dict[str, Any]:
    """The outputs table: the last layer and its target shape."""
    return {
        "nodes": nodes,
        "target": {
            "kind": kind,
            "harmonic": harmonic,
            "phase_rad": phase_rad,
        },
    }


def _regime_modes(
    data: dict[str, Any],
    regime: RegimeName,
    check_modes: bool,
    stiffness_given: bool,
    detuning: float,
) -> NetworkSpec:
    """The validated spec of `data`, tuned onto the drive (``lossy_resonant``) or checked to keep
    its linear modes at rest ≥ 0.1 ω from ω and 2ω (``conservative`` with `check_modes`)."""
    try:
        spec = NetworkSpec.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"layered topology: {exc}") from None
    if regime == "lossy_resonant":
        spec = _tune_to_resonance(spec, data, stiffness_given=stiffness_given, detuning=detuning)
    elif check_modes:
        rep = mode_report(spec)
        if rep.margin_1w < 0.1 or rep.margin_2w < 0.1:
            raise ConfigError(
                f"layered topology (conservative): a linear mode at rest is within 0.1 ω of ω or "
                f"2ω (margins {rep.margin_1w:.3f}, {rep.margin_2w:.3f}; modes "
                f"{np.round(rep.modes_rad_s, 3).tolist()} rad/s); lower init_scale or change the "
                "stiffness"
            )
    return spec


def _tune_to_resonance(
    spec: NetworkSpec, data: dict[str, Any], *, stiffness_given: bool, detuning: float
) -> NetworkSpec:
    """Shift the uniform stiffness so the mode nearest ω lands at ω + detuning·Γ (m uniform)."""
    if stiffness_given:
        return spec  # the user chose the stiffness; keep it (mode_report tells the detuning)
    rep = mode_report(spec)
    w = spec.drive.omega_rad_s
    gamma = float(data["nodes"]["damping"])
    mass = float(data["nodes"]["mass"])
    target = w + detuning * gamma
    near = float(rep.modes_rad_s[np.argmin(np.abs(rep.modes_rad_s - w))])
    # A uniform stiffness shift Δk moves every ω_i² by Δk/m.
    k_new = float(data["nodes"]["stiffness"]) + mass * (target**2 - near**2)
    if not k_new > 0:
        raise ConfigError(
            f"layered topology (lossy_resonant): cannot put a mode at {target:.3f} rad/s with a "
            f"positive stiffness (would need k = {k_new:.3f} N/m)"
        )
    data = {**data, "nodes": {**data["nodes"], "stiffness": k_new}}
    tuned = NetworkSpec.model_validate(data)
    if float(np.min(mode_report(tuned).modes_rad_s)) <= 0.0:
        raise ConfigError(
            "layered topology (lossy_resonant): tuning a mode onto the drive makes the network "
            "statically unstable at rest (a mode at 0 rad/s); lower init_scale"
        )
    return tuned
