"""`NetworkSpec`: the Lagrangian oscillator network, as a validated pydantic model (TOML-loadable).

Lagrangian (docs/physics.md), node coordinates x_j, drive force F_j(t):

    L = Σ ½ m_j ẋ_j² − V(x, t; α) + Σ F_j(t) x_j − Σ_in δ(t) ½ (x_j − u_j(t))² + β C
    V = Σ ½ k_j x_j² + μ(t) Σ_prod α_jk ρ(x_j) ρ(x_k) + Σ_diff ½ α_jk (x_j − x_k)²
        + ν(t) Σ_bias α'_j ρ(x_j) + Σ_quartic ¼ α''_j x_j⁴ + Σ_onsite ½ κ_j x_j²
    C = γ(t) ½ Σ_out (x_j − y_j(t))²          (cost density; the cost is ∫ C dt)

with viscous damping Γ_j per node: m_j ẍ_j + m_j Γ_j ẋ_j = −∂V/∂x_j − Q_j + F_j − δ(x_j − u_j) + β γ (x_j − y_j).

Q collects the *non-reciprocal* (directed, active) couplings, which derive from no potential:
a directed coupling i ← j with gain α pushes node i with the force −μ(t) α s(x_j) (s = identity
for ``linear``, ρ for ``rho``) and has no partner force on j, so Q_i = μ(t) Σ_{i←j} α s(x_j).
Two ``linear`` directed couplings i ← j and j ← i of equal gain are exactly one ``product``
coupling with ρ = identity. With directed couplings the dynamics have no Lagrangian: only the
estimators built for them (``ep_asymmetric``, ``ep_vector_field``, ``adjoint`` and the black-box
ones) accept such a network (docs/estimators.md).
Sign convention: with L = L0 + βC the nudge force is +β ∂C/∂x, so β > 0 pushes the outputs *away*
from their targets. SI units throughout (x in the node's own unit, forces in that unit × kg/s²).

An on-site term ½ κ_j x_j² adds κ_j to node j's fixed stiffness k_j: trained, it tunes the
node's natural frequency ω_j = √((k_j + κ_j)/m_j) (a DAC-tuned spring on a bench). Its EP
conjugate is −∫ ½ x_j² dt.

Trainable parameters are the terms marked ``trainable``, in the order: couplings (as listed),
biases, quartic terms, directed couplings, on-site stiffness terms; `parameter_names()` lists
them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

from physlearn.spec.modulation import Constant, Modulation
from physlearn.spec.nonlinearity import get_nonlinearity, known_nonlinearities
from physlearn.spec.tomlconfig import load_model

Array = NDArray[np.float64]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _per_node(value: float | list[float], count: int, name: str) -> list[float]:
    if isinstance(value, list):
        if len(value) != count:
            raise ValueError(f"nodes.{name}: {len(value)} values for {count} nodes")
        return [float(v) for v in value]
    return [float(value)] * count


class NodesSpec(_Model):
    """d nodes: mass m_j (kg), stiffness k_j (N/m), damping rate Γ_j (1/s); scalars or one per node."""

    count: int = Field(ge=1)
    mass: float | list[float] = 1.0
    stiffness: float | list[float] = 1.0
    damping: float | list[float] = 0.0

    @model_validator(mode="after")
    def _check(self) -> NodesSpec:
        m = _per_node(self.mass, self.count, "mass")
        k = _per_node(self.stiffness, self.count, "stiffness")
        g = _per_node(self.damping, self.count, "damping")
        for j, (mj, kj, gj) in enumerate(zip(m, k, g, strict=True)):
            if not (math.isfinite(mj) and mj > 0):
                raise ValueError(f"nodes.mass[{j}]: must be a positive finite mass, got {mj}")
            if not math.isfinite(kj):
                raise ValueError(f"nodes.stiffness[{j}]: must be finite, got {kj}")
            if not (math.isfinite(gj) and gj >= 0):
                raise ValueError(f"nodes.damping[{j}]: must be ≥ 0 and finite, got {gj}")
        return self

    def arrays(self) -> tuple[Array, Array, Array]:
        """(mass, stiffness, damping), each shape (d,)."""
        return (
            np.array(_per_node(self.mass, self.count, "mass")),
            np.array(_per_node(self.stiffness, self.count, "stiffness")),
            np.array(_per_node(self.damping, self.count, "damping")),
        )


class _Term(_Model):
    value: float = 0.0
    trainable: bool = True
    lower: float | None = None
    upper: float | None = None

    def _check_bounds(self, where: str) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"{where}.value: must be finite, got {self.value}")
        lo = -math.inf if self.lower is None else self.lower
        hi = math.inf if self.upper is None else self.upper
        if lo > hi:
            raise ValueError(f"{where}: lower bound {lo} exceeds upper bound {hi}")
        if not lo <= self.value <= hi:
            raise ValueError(f"{where}.value: {self.value} is outside its bounds [{lo}, {hi}]")


class Coupling(_Term):
    """A coupling between two nodes: ``product`` α ρ(x_j)ρ(x_k) (× μ(t)) or ``difference`` ½α(x_j−x_k)²."""

    kind: Literal["product", "difference"] = "product"
    nodes: tuple[int, int]


class Bias(_Term):
    """A bias α' ρ(x_j) (× ν(t)) on one node."""

    node: int


class Quartic(_Term):
    """An on-site Duffing term ¼ α'' x_j⁴; fixed unless marked trainable."""

    node: int
    trainable: bool = False


class Onsite(_Term):
    """A trainable on-site spring ½ κ_j x_j² (κ in N/m) added to node j's fixed stiffness
    ``nodes.stiffness[j]``: the node's natural frequency becomes √((k_j + κ_j)/m_j)."""

    node: int


class DirectedCoupling(_Term):
    """A non-reciprocal (active) coupling ``target`` ← ``source``: the force −μ(t) α s(x_source)
    on node ``target`` (N), with no partner force on ``source``; s = identity (``linear``: an
    amplifier of gain α fed by x_source) or ρ (``rho``: fed through the nonlinearity).
    α in N/m (like a product coupling's: ρ reads the node coordinate in m)."""

    kind: Literal["linear", "rho"] = "linear"
    target: int
    source: int


class Modulations(_Model):
    """μ(t) (product couplings), ν(t) (biases), δ(t) (clamp weight), γ(t) (cost weight)."""

    mu: Modulation = Field(default_factory=Constant)
    nu: Modulation = Field(default_factory=Constant)
    delta: Modulation = Field(default_factory=Constant)
    gamma: Modulation = Field(default_factory=Constant)


class DriveTone(_Model):
    """A fixed drive force on a node, independent of the input: amplitude_n cos(h ω t + phase_rad)."""

    node: int
    amplitude_n: float
    harmonic: int = Field(1, ge=0)
    phase_rad: float = 0.0


class DriveSpec(_Model):
    """The periodic drive: angular frequency ω (rad/s, period T = 2π/ω) and fixed tones."""

    omega_rad_s: PositiveFloat = 1.0
    tones: list[DriveTone] = Field(default_factory=list)

    @property
    def period_s(self) -> float:
        return 2.0 * math.pi / self.omega_rad_s


class InputSpec(_Model):
    """How an input vector u enters: per input node, ``force`` gain (u_j + offset) cos(ωt + φ_j)
    (``waveform = "constant"``: a static force), or ``clamp``: the potential δ(t) ½ (x_j − u_j(t))²
    with u_j(t) = gain (u_j + offset) × cos(ωt + φ_j) or constant."""

    nodes: list[int] = Field(default_factory=list)
    mode: Literal["force", "clamp"] = "force"
    waveform: Literal["cos", "constant"] = "cos"
    gain: float = 1.0
    offset: float = 0.0
    phase_rad: float | list[float] = 0.0
    values: list[float] | None = None

    def phases(self) -> list[float]:
        if isinstance(self.phase_rad, list):
            return list(self.phase_rad)
        return [self.phase_rad] * len(self.nodes)


class TargetSpec(_Model):
    """The target waveform y_j(t) of each output node: ``constant`` values_j, ``inphase`` values_j
    cos(ωt), or ``sine`` values_j sin(harmonic ω t + phase_rad)."""

    kind: Literal["constant", "inphase", "sine"] = "inphase"
    values: list[float] = Field(default_factory=list)
    harmonic: int = Field(1, ge=0)
    phase_rad: float = 0.0


class OutputSpec(_Model):
    nodes: list[int] = Field(default_factory=list)
    target: TargetSpec = Field(default_factory=TargetSpec)


class BoundarySpec(_Model):
    """``periodic`` (period T = 2π/ω) or a problem on [t_initial_s, t_final_s] on ``steps`` intervals:
    ``fixed_endpoints`` (x given at both ends), ``fixed_velocities`` (ẋ given at both ends),
    ``initial_value`` (x and ẋ given at t_i: the negative control of Massar §IV A).
    ``cost_weighting`` (damped non-periodic problems): ``weighted`` trains ∫ e^{Γ(t−t_i)} C dt,
    ``plain`` trains ∫ C dt (the nudge is then weighted by e^{−Γ(t−t_i)}, docs/physics.md)."""

    kind: Literal["periodic", "fixed_endpoints", "fixed_velocities", "initial_value"] = "periodic"
    t_initial_s: float = 0.0
    t_final_s: float | None = None
    steps: int = Field(400, ge=4)
    x_initial: list[float] | None = None
    x_final: list[float] | None = None
    v_initial: list[float] | None = None
    v_final: list[float] | None = None
    cost_weighting: Literal["weighted", "plain"] = "weighted"


class NetworkSpec(_Model):
    """A Lagrangian oscillator network; see the module docstring for the Lagrangian."""

    nodes: NodesSpec
    nonlinearity: str = "tanh"
    couplings: list[Coupling] = Field(default_factory=list)
    biases: list[Bias] = Field(default_factory=list)
    quartic: list[Quartic] = Field(default_factory=list)
    directed: list[DirectedCoupling] = Field(default_factory=list)
    onsite: list[Onsite] = Field(default_factory=list)
    modulations: Modulations = Field(default_factory=Modulations)
    drive: DriveSpec = Field(default_factory=DriveSpec)
    inputs: InputSpec = Field(default_factory=InputSpec)
    outputs: OutputSpec = Field(default_factory=OutputSpec)
    boundary: BoundarySpec = Field(default_factory=BoundarySpec)

    @classmethod
    def from_toml(cls, path: str | Path, section: str | None = None) -> NetworkSpec:
        """Load from a TOML file (or one table of it); errors name the file and field path."""
        return load_model(cls, path, section)

    # ----------------------------------------------------------------- validation
    @model_validator(mode="after")
    def _check(self) -> NetworkSpec:
        d = self.nodes.count

        def node_ok(n: int, where: str) -> None:
            if not 0 <= n < d:
                raise ValueError(f"{where}: node {n} does not exist (nodes.count = {d})")

        if self.nonlinearity not in known_nonlinearities():
            raise ValueError(
                f"nonlinearity: unknown {self.nonlinearity!r}; known: "
                + ", ".join(known_nonlinearities())
            )
        get_nonlinearity(self.nonlinearity)
        seen: dict[tuple[str, int, int], int] = {}
        for i, c in enumerate(self.couplings):
            where = f"couplings[{i}]"
            j, k = c.nodes
            node_ok(j, f"{where}.nodes")
            node_ok(k, f"{where}.nodes")
            if j == k:
                raise ValueError(
                    f"{where}.nodes: a coupling needs two different nodes, got ({j}, {k})"
                )
            key = (c.kind, min(j, k), max(j, k))
            if key in seen:
                raise ValueError(f"{where}: duplicates couplings[{seen[key]}] ({c.kind} {j}-{k})")
            seen[key] = i
            c._check_bounds(where)
        per_node: tuple[tuple[str, Sequence[Bias | Quartic | Onsite]], ...] = (
            ("biases", self.biases),
            ("quartic", self.quartic),
            ("onsite", self.onsite),
        )
        for name, terms in per_node:
            nodes_seen: dict[int, int] = {}
            for i, t in enumerate(terms):
                node_ok(t.node, f"{name}[{i}].node")
                if t.node in nodes_seen:
                    raise ValueError(f"{name}[{i}].node: duplicates {name}[{nodes_seen[t.node]}]")
                nodes_seen[t.node] = i
                t._check_bounds(f"{name}[{i}]")
        self._check_directed(node_ok)
        for i, tone in enumerate(self.drive.tones):
            node_ok(tone.node, f"drive.tones[{i}].node")
        self._check_io(node_ok)
        self._check_boundary()
        return self

    def _check_directed(self, node_ok: object) -> None:
        check = node_ok  # callable(n, where)
        assert callable(check)
        seen: dict[tuple[str, int, int], int] = {}
        for i, c in enumerate(self.directed):
            where = f"directed[{i}]"
            check(c.target, f"{where}.target")
            check(c.source, f"{where}.source")
            if c.target == c.source:
                raise ValueError(
                    f"{where}: a directed coupling needs two different nodes, got target = "
                    f"source = {c.target}"
                )
            key = (c.kind, c.target, c.source)
            if key in seen:
                raise ValueError(
                    f"{where}: duplicates directed[{seen[key]}] ({c.kind} {c.target}<-{c.source})"
                )
            seen[key] = i
            c._check_bounds(where)

    def _check_io(self, node_ok: object) -> None:
        check = node_ok  # callable(n, where)
        assert callable(check)
        inp, out = self.inputs, self.outputs
        for i, n in enumerate(inp.nodes):
            check(n, f"inputs.nodes[{i}]")
        if len(set(inp.nodes)) != len(inp.nodes):
            raise ValueError(f"inputs.nodes: repeated node in {inp.nodes}")
        if isinstance(inp.phase_rad, list) and len(inp.phase_rad) != len(inp.nodes):
            raise ValueError(
                f"inputs.phase_rad: {len(inp.phase_rad)} phases for {len(inp.nodes)} input nodes"
            )
        if inp.values is not None and len(inp.values) != len(inp.nodes):
            raise ValueError(
                f"inputs.values: {len(inp.values)} values for {len(inp.nodes)} input nodes"
            )
        for i, n in enumerate(out.nodes):
            check(n, f"outputs.nodes[{i}]")
            if inp.mode == "clamp" and n in inp.nodes:
                raise ValueError(f"outputs.nodes[{i}]: node {n} is also a clamped input node")
        if len(set(out.nodes)) != len(out.nodes):
            raise ValueError(f"outputs.nodes: repeated node in {out.nodes}")
        if out.target.values and len(out.target.values) != len(out.nodes):
            raise ValueError(
                f"outputs.target.values: {len(out.target.values)} values for "
                f"{len(out.nodes)} output nodes"
            )

    def _check_boundary(self) -> None:
        b, d = self.boundary, self.nodes.count
        if b.kind == "periodic":
            return
        if b.t_final_s is None or not b.t_final_s > b.t_initial_s:
            raise ValueError(
                f"boundary.t_final_s: must be given and exceed t_initial_s = {b.t_initial_s} "
                f"for a {b.kind} problem, got {b.t_final_s}"
            )
        for name in ("x_initial", "x_final", "v_initial", "v_final"):
            v = getattr(b, name)
            if v is not None and len(v) != d:
                raise ValueError(f"boundary.{name}: {len(v)} values for {d} nodes")
        damping = self.nodes.arrays()[2]
        if np.ptp(damping) > 0:
            raise ValueError(
                f"nodes.damping: a {b.kind} problem with damping needs one damping rate for all "
                "nodes (the e^{Γt} weighting is a single factor)"
            )

    # ----------------------------------------------------------------- parameters
    def terms(self) -> list[tuple[str, _Term]]:
        """All potential terms in parameter order, each with a readable name."""
        out: list[tuple[str, _Term]] = []
        for i, c in enumerate(self.couplings):
            out.append((f"couplings[{i}]:{c.kind}:{c.nodes[0]}-{c.nodes[1]}", c))
        for i, b in enumerate(self.biases):
            out.append((f"biases[{i}]:{b.node}", b))
        for i, q in enumerate(self.quartic):
            out.append((f"quartic[{i}]:{q.node}", q))
        for i, e in enumerate(self.directed):
            out.append((f"directed[{i}]:{e.kind}:{e.target}<-{e.source}", e))
        for i, o in enumerate(self.onsite):
            out.append((f"onsite[{i}]:{o.node}", o))
        return out

    def nonreciprocal_terms(self) -> list[str]:
        """Names of the directed (non-reciprocal) couplings, trainable or fixed."""
        return [name for name, t in self.terms() if isinstance(t, DirectedCoupling)]

    def parameter_names(self) -> list[str]:
        return [name for name, t in self.terms() if t.trainable]

    def parameter_units(self) -> list[str]:
        """SI unit of each trainable parameter, in parameter order: couplings α (product
        α ρ(x_j)ρ(x_k) and spring ½α(x_j − x_k)²) in N/m, biases α'ρ(x_j) in N, quartic
        ¼α''x_j⁴ in N/m³, directed couplings α s(x_source) in N/m (ρ reads the node coordinate
        in m), on-site springs ½κ_j x_j² in N/m."""
        unit = {
            Coupling: "N/m",
            Bias: "N",
            Quartic: "N/m^3",
            DirectedCoupling: "N/m",
            Onsite: "N/m",
        }
        return [unit[type(t)] for _, t in self.terms() if t.trainable]

    def initial_parameters(self) -> Array:
        """Values of the trainable terms, shape (P,)."""
        return np.array([t.value for _, t in self.terms() if t.trainable], dtype=float)

    def parameter_bounds(self) -> tuple[Array, Array]:
        """(lower, upper) of the trainable terms, shape (P,) each, ±inf where unbounded."""
        lo = [(-math.inf if t.lower is None else t.lower) for _, t in self.terms() if t.trainable]
        hi = [(math.inf if t.upper is None else t.upper) for _, t in self.terms() if t.trainable]
        return np.array(lo, dtype=float), np.array(hi, dtype=float)

    @property
    def period_s(self) -> float:
        return self.drive.period_s
