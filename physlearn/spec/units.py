"""Physical-units front ends: LC and mechanical oscillator networks mapped onto `NetworkSpec`.

Both map onto the model m ẍ + mΓ ẋ + k x + Σ α (x_j − x_k) + α'' x³ = F (difference couplings,
quartic on-site terms) with an explicit, documented scaling to dimensionless units, so that the
nonlinearity ρ and the solvers see numbers of order one:

    time        t̃ = ω_ref t,           ω_ref = √(k_ref / m_ref)
    coordinate  x̃ = x / x_ref
    mass        m̃ = m / m_ref           stiffness / coupling  k̃ = k / k_ref
    damping     Γ̃ = Γ / ω_ref            (Γ = c/m, or R/L)
    quartic     α̃'' = α'' x_ref² / k_ref
    force       F̃ = F / (k_ref x_ref)   drive frequency  ω̃ = ω / ω_ref

Mechanical network: node j is a mass m_j (kg) on a spring k_j (N/m) with viscous damping c_j
(N·s/m), optionally a cubic stiffness k3_j (N/m³); springs k_jk (N/m) between masses; x in metres.
LC network: node j is a series R_j L_j C_j loop with charge q_j (C) as its coordinate (L ↔ mass,
1/C ↔ stiffness, R ↔ viscous damping), coupled by capacitors C_jk carrying q_j − q_k
(stiffness 1/C_jk ↔ a difference coupling), optionally a nonlinear capacitor q³ coefficient
(V/C³); the drive is a voltage (V ↔ force). References default to node 0 (m_ref = m_0,
k_ref = k_0) and x_ref = 1 unit unless given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

from physlearn.spec.network import NetworkSpec
from physlearn.spec.tomlconfig import validate


@dataclass(frozen=True)
class Scaling:
    """Reference scales of a physical network (SI) and conversions to the model's units."""

    m_ref: float
    k_ref: float
    x_ref: float

    @property
    def omega_ref(self) -> float:
        """Reference angular frequency √(k_ref/m_ref), rad/s."""
        return math.sqrt(self.k_ref / self.m_ref)

    def time_to_model(self, t_s: float) -> float:
        return t_s * self.omega_ref

    def time_to_si(self, t: float) -> float:
        return t / self.omega_ref

    def coordinate_to_si(self, x: float) -> float:
        return x * self.x_ref

    def force_to_model(self, f_si: float) -> float:
        return f_si / (self.k_ref * self.x_ref)

    def force_to_si(self, f: float) -> float:
        return f * self.k_ref * self.x_ref


class _Phys(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MechanicalNode(_Phys):
    mass_kg: PositiveFloat
    stiffness_n_per_m: float
    damping_n_s_per_m: float = Field(0.0, ge=0.0)
    cubic_n_per_m3: float = 0.0


class Spring(_Phys):
    nodes: tuple[int, int]
    stiffness_n_per_m: float = Field(ge=0.0)
    trainable: bool = True
    lower_n_per_m: float | None = 0.0
    upper_n_per_m: float | None = None


class LCNode(_Phys):
    inductance_h: PositiveFloat
    capacitance_f: PositiveFloat
    resistance_ohm: float = Field(0.0, ge=0.0)
    cubic_v_per_c3: float = 0.0


class CouplingCapacitor(_Phys):
    nodes: tuple[int, int]
    capacitance_f: PositiveFloat
    trainable: bool = True
    min_capacitance_f: PositiveFloat | None = None
    max_capacitance_f: PositiveFloat | None = None


class _Front(_Phys):
    drive_frequency_hz: PositiveFloat
    input_nodes: list[int] = Field(default_factory=list)
    output_nodes: list[int] = Field(default_factory=list)
    drive_amplitude: float = 1.0
    input_values: list[float] | None = None
    target_values: list[float] = Field(default_factory=list)
    x_ref: PositiveFloat = 1.0
    nonlinearity: str = "identity"


def _spec(
    front: _Front,
    m: list[float],
    k: list[float],
    gamma: list[float],
    cubic: list[float],
    edges: list[tuple[tuple[int, int], float, bool, float | None, float | None]],
    scaling: Scaling,
) -> NetworkSpec:
    data: dict[str, Any] = {
        "nodes": {
            "count": len(m),
            "mass": [mi / scaling.m_ref for mi in m],
            "stiffness": [ki / scaling.k_ref for ki in k],
            "damping": [g / scaling.omega_ref for g in gamma],
        },
        "nonlinearity": front.nonlinearity,
        "couplings": [
            {
                "kind": "difference",
                "nodes": list(nodes),
                "value": val / scaling.k_ref,
                "trainable": tr,
                "lower": None if lo is None else lo / scaling.k_ref,
                "upper": None if hi is None else hi / scaling.k_ref,
            }
            for nodes, val, tr, lo, hi in edges
        ],
        "quartic": [
            {"node": j, "value": c * scaling.x_ref**2 / scaling.k_ref}
            for j, c in enumerate(cubic)
            if c != 0.0
        ],
        "drive": {"omega_rad_s": 2 * math.pi * front.drive_frequency_hz / scaling.omega_ref},
        "inputs": {
            "nodes": front.input_nodes,
            "gain": scaling.force_to_model(front.drive_amplitude),
            "values": front.input_values,
        },
        "outputs": {
            "nodes": front.output_nodes,
            "target": {
                "kind": "inphase",
                "values": [v / scaling.x_ref for v in front.target_values],
            },
        },
    }
    return validate(NetworkSpec, data, "physical front end")


class MechanicalNetwork(_Front):
    """Masses on springs coupled by springs; drive amplitude in newtons, targets in metres."""

    nodes: list[MechanicalNode]
    springs: list[Spring] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> MechanicalNetwork:
        for i, s in enumerate(self.springs):
            for n in s.nodes:
                if not 0 <= n < len(self.nodes):
                    raise ValueError(f"springs[{i}].nodes: node {n} does not exist")
        return self

    def scaling(self) -> Scaling:
        n0 = self.nodes[0]
        return Scaling(n0.mass_kg, abs(n0.stiffness_n_per_m) or 1.0, self.x_ref)

    def to_spec(self) -> tuple[NetworkSpec, Scaling]:
        sc = self.scaling()
        spec = _spec(
            self,
            [n.mass_kg for n in self.nodes],
            [n.stiffness_n_per_m for n in self.nodes],
            [n.damping_n_s_per_m / n.mass_kg for n in self.nodes],
            [n.cubic_n_per_m3 for n in self.nodes],
            [
                (s.nodes, s.stiffness_n_per_m, s.trainable, s.lower_n_per_m, s.upper_n_per_m)
                for s in self.springs
            ],
            sc,
        )
        return spec, sc


class LCNetwork(_Front):
    """Series RLC loops (charge coordinates) coupled by capacitors; drive in volts, targets in C."""

    nodes: list[LCNode]
    capacitors: list[CouplingCapacitor] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> LCNetwork:
        for i, c in enumerate(self.capacitors):
            for n in c.nodes:
                if not 0 <= n < len(self.nodes):
                    raise ValueError(f"capacitors[{i}].nodes: node {n} does not exist")
        return self

    def scaling(self) -> Scaling:
        n0 = self.nodes[0]
        return Scaling(n0.inductance_h, 1.0 / n0.capacitance_f, self.x_ref)

    def to_spec(self) -> tuple[NetworkSpec, Scaling]:
        sc = self.scaling()
        edges = []
        for c in self.capacitors:
            # Stiffness 1/C: a larger capacitance is a weaker coupling, so bounds swap.
            lo = None if c.max_capacitance_f is None else 1.0 / c.max_capacitance_f
            hi = None if c.min_capacitance_f is None else 1.0 / c.min_capacitance_f
            edges.append((c.nodes, 1.0 / c.capacitance_f, c.trainable, lo, hi))
        spec = _spec(
            self,
            [n.inductance_h for n in self.nodes],
            [1.0 / n.capacitance_f for n in self.nodes],
            [n.resistance_ohm / n.inductance_h for n in self.nodes],
            [n.cubic_v_per_c3 for n in self.nodes],
            edges,
            sc,
        )
        return spec, sc
