"""The emulated bench's hidden truth: what a real bench does that the controller cannot read.

Generated from a seed and nominal values (`TruthNominals`, the `[twin.truth]` table):

- per wired edge e, a smooth nonlinear map from its DAC voltage to the coupling,
      α_e(V) = a_e + b_e tanh((V − c_e) / w_e)
  with a_e the network spec's coupling value plus spread, and device-to-device spread on the
  span b_e, the centre c_e and the width w_e (a varactor-like saturating tuning curve);
- per drive wire j (generator channel → force actuator on a node), a gain g_j (N/V) and a delay
  τ_j (s): F_j(t) = g_j V_gen(t − τ_j). At the drive frequency the delay is a phase lag ω τ_j;
- per sense wire s (node → scope channel or lock-in input), a gain G_s (V per node unit), an
  offset O_s (V), a delay τ_s (s) and a slow sinusoidal offset drift:
      v_s(t) = G_s x_node(t − τ_s) + O_s + D_s sin(2π t / P_s + φ_s);
- per active coupling element a (`[[wiring.active]]`: an amplifier target ← source, gain set by a
  DAC channel, a reversing switch on another), a gain map linear in the control voltage with
  its own spread (the *gain calibration* error of a nominal map), an input offset o_a (node
  units) and a bandwidth τ_a (s; a single pole, to first order in ωτ the input x(t − τ)):
      F_out(t) = −k_a (V − z_a) · (x_in(t) − τ_a ẋ_in(t) + o_a),
  (out, in) = (target, source) forward, (source, target) with the switch reversed;
- per node tuner t (`[[wiring.tuners]]`: a DAC-tuned on-site spring, e.g. a varactor or an
  electrostatic spring), a stiffness curve with a quadratic nonideality and device spread,
      κ_t(V) = κ0_t + s_t (V − z_t) + q_t (V − z_t)²   (N/m),
  κ0_t the network spec's ``[[onsite]]`` value of the node plus spread; the node's stiffness is
  its fixed k plus κ_t(V) (natural frequency √((k + κ_t)/m));
- the noise of each instrument kind (scope ADC input noise σ, lock-in input noise density), added by
  the instruments themselves from their own seeded generators.

The truth lives only inside `BenchTwin` and the emulators: it is never in a config the drivers
read, never sent over an instrument protocol or the twin-control endpoint. Tests read it through
`BenchTwin.truth`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

Array = NDArray[np.float64]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CouplingMapNominals(_Model):
    """α_e(V) = a_e + b_e tanh((V − c_e)/w_e); a_e nominal is the spec's coupling value."""

    span: float = 0.3
    span_spread_rel: float = Field(0.05, ge=0.0)
    center_v: float = 0.0
    center_spread_v: float = Field(0.05, ge=0.0)
    width_v: float = Field(1.0, gt=0.0)
    width_spread_rel: float = Field(0.05, ge=0.0, lt=0.5)
    offset_spread: float = Field(0.01, ge=0.0)


class ActuatorNominals(_Model):
    """Force per generator volt and the actuator's delay (its phase lag at ω is ω·delay)."""

    gain_n_per_v: float = 1.0
    gain_spread_rel: float = Field(0.05, ge=0.0)
    delay_s: float = Field(0.0, ge=0.0)
    delay_spread_s: float = Field(0.0, ge=0.0)


class SensingNominals(_Model):
    """Sensor volts per node unit, offset, delay, and slow sinusoidal offset drift."""

    gain_v_per_unit: float = 1.0
    gain_spread_rel: float = Field(0.05, ge=0.0)
    offset_v: float = 0.0
    offset_spread_v: float = Field(0.01, ge=0.0)
    delay_s: float = Field(0.0, ge=0.0)
    delay_spread_s: float = Field(0.0, ge=0.0)
    drift_v: float = Field(0.0, ge=0.0)
    drift_period_s: float = Field(600.0, gt=0.0)


class ActiveNominals(_Model):
    """Active coupling elements: gain k (V − z) (N/m) with k = ``gain_per_v`` (N/m per V) and
    z = ``zero_v`` with their spreads, an input offset (node units) and a bandwidth delay τ (s)."""

    gain_per_v: float = 0.2
    gain_spread_rel: float = Field(0.1, ge=0.0)
    zero_v: float = 0.0
    zero_spread_v: float = Field(0.05, ge=0.0)
    offset: float = 0.0
    offset_spread: float = Field(1e-3, ge=0.0)
    delay_s: float = Field(0.0, ge=0.0)
    delay_spread_s: float = Field(0.0, ge=0.0)


class TunerNominals(_Model):
    """Node tuners: κ(V) = κ0 + s (V − z) + q (V − z)² (N/m), s = ``slope_per_v`` (N/m per V),
    q = ``curvature_per_v2`` (N/m per V²), z = ``zero_v``, each with its spread; κ0 the spec's
    on-site value with ``offset_spread`` (N/m)."""

    slope_per_v: float = 0.05
    slope_spread_rel: float = Field(0.1, ge=0.0)
    curvature_per_v2: float = 0.01
    curvature_spread_rel: float = Field(0.3, ge=0.0)
    zero_v: float = 0.0
    zero_spread_v: float = Field(0.05, ge=0.0)
    offset_spread: float = Field(0.0, ge=0.0)


class NoiseNominals(_Model):
    """Input-referred white noise: the scope's σ per sample (V rms) and the lock-in's input
    noise density (V/√Hz)."""

    scope_sigma_v: float = Field(2e-3, ge=0.0)
    lockin_noise_v_per_rthz: float = Field(1e-6, ge=0.0)


class TruthNominals(_Model):
    """Nominal truth; each bench seed draws its own devices around these values."""

    coupling: CouplingMapNominals = Field(default_factory=CouplingMapNominals)
    actuator: ActuatorNominals = Field(default_factory=ActuatorNominals)
    sensing: SensingNominals = Field(default_factory=SensingNominals)
    active: ActiveNominals = Field(default_factory=ActiveNominals)
    tuner: TunerNominals = Field(default_factory=TunerNominals)
    noise: NoiseNominals = Field(default_factory=NoiseNominals)


@dataclass(frozen=True)
class BenchTruth:
    """One bench's hidden truth; arrays are ordered as the wiring lists (edges, drives, sense)."""

    # coupling maps, shape (E,)
    map_offset: Array
    map_span: Array
    map_center_v: Array
    map_width_v: Array
    # actuators, shape (J,)
    actuator_gain_n_per_v: Array
    actuator_delay_s: Array
    # sensing paths, shape (S,)
    sensing_gain_v_per_unit: Array
    sensing_offset_v: Array
    sensing_delay_s: Array
    drift_v: Array
    drift_period_s: Array
    drift_phase_rad: Array
    # noise
    scope_sigma_v: float
    lockin_noise_v_per_rthz: float
    # active coupling elements, shape (A,)
    active_gain_per_v: Array = field(default_factory=lambda: np.zeros(0))
    active_zero_v: Array = field(default_factory=lambda: np.zeros(0))
    active_offset: Array = field(default_factory=lambda: np.zeros(0))
    active_delay_s: Array = field(default_factory=lambda: np.zeros(0))
    # node tuners, shape (T,)
    tuner_offset: Array = field(default_factory=lambda: np.zeros(0))
    tuner_slope_per_v: Array = field(default_factory=lambda: np.zeros(0))
    tuner_curvature_per_v2: Array = field(default_factory=lambda: np.zeros(0))
    tuner_zero_v: Array = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def generate(
        cls,
        nominals: TruthNominals,
        coupling_values: Array,
        n_drives: int,
        n_sense: int,
        rng: np.random.Generator,
        n_active: int = 0,
        tuner_values: Array | None = None,
    ) -> BenchTruth:
        """Draw a bench around `nominals`; `coupling_values` (E,) are the wired couplings' spec
        values (the map's nominal offset), `tuner_values` (T,) the tuned nodes' on-site values
        (the tuners' nominal κ0). Spreads are Gaussian (relative ones multiplicative,
        delays folded to stay ≥ 0); the draw order is fixed so a seed always gives one bench."""
        cv = np.asarray(coupling_values, dtype=np.float64)
        e = cv.size
        c, a, s = nominals.coupling, nominals.actuator, nominals.sensing
        map_offset = cv + c.offset_spread * rng.standard_normal(e)
        map_span = c.span * (1.0 + c.span_spread_rel * rng.standard_normal(e))
        map_center = c.center_v + c.center_spread_v * rng.standard_normal(e)
        map_width = c.width_v * np.exp(c.width_spread_rel * rng.standard_normal(e))
        act_gain = a.gain_n_per_v * (1.0 + a.gain_spread_rel * rng.standard_normal(n_drives))
        act_delay = np.abs(a.delay_s + a.delay_spread_s * rng.standard_normal(n_drives))
        sen_gain = s.gain_v_per_unit * (1.0 + s.gain_spread_rel * rng.standard_normal(n_sense))
        sen_offset = s.offset_v + s.offset_spread_v * rng.standard_normal(n_sense)
        sen_delay = np.abs(s.delay_s + s.delay_spread_s * rng.standard_normal(n_sense))
        drift_v = s.drift_v * rng.uniform(0.5, 1.5, n_sense)
        drift_period = s.drift_period_s * rng.uniform(0.7, 1.3, n_sense)
        drift_phase = rng.uniform(0.0, 2.0 * np.pi, n_sense)
        # drawn last: a bench without active elements keeps its earlier draws
        ac = nominals.active
        act_k = ac.gain_per_v * (1.0 + ac.gain_spread_rel * rng.standard_normal(n_active))
        act_z = ac.zero_v + ac.zero_spread_v * rng.standard_normal(n_active)
        act_o = ac.offset + ac.offset_spread * rng.standard_normal(n_active)
        act_tau = np.abs(ac.delay_s + ac.delay_spread_s * rng.standard_normal(n_active))
        # drawn after the active elements: a bench without tuners keeps every earlier draw
        tn = nominals.tuner
        tv = np.zeros(0) if tuner_values is None else np.asarray(tuner_values, dtype=np.float64)
        nt = tv.size
        tun_o = tv + tn.offset_spread * rng.standard_normal(nt)
        tun_s = tn.slope_per_v * (1.0 + tn.slope_spread_rel * rng.standard_normal(nt))
        tun_q = tn.curvature_per_v2 * (1.0 + tn.curvature_spread_rel * rng.standard_normal(nt))
        tun_z = tn.zero_v + tn.zero_spread_v * rng.standard_normal(nt)
        return cls(
            map_offset=map_offset,
            map_span=map_span,
            map_center_v=map_center,
            map_width_v=map_width,
            actuator_gain_n_per_v=act_gain,
            actuator_delay_s=act_delay,
            sensing_gain_v_per_unit=sen_gain,
            sensing_offset_v=sen_offset,
            sensing_delay_s=sen_delay,
            drift_v=drift_v,
            drift_period_s=drift_period,
            drift_phase_rad=drift_phase,
            scope_sigma_v=float(nominals.noise.scope_sigma_v),
            lockin_noise_v_per_rthz=float(nominals.noise.lockin_noise_v_per_rthz),
            active_gain_per_v=act_k,
            active_zero_v=act_z,
            active_offset=act_o,
            active_delay_s=act_tau,
            tuner_offset=tun_o,
            tuner_slope_per_v=tun_s,
            tuner_curvature_per_v2=tun_q,
            tuner_zero_v=tun_z,
        )

    def active_gain(self, dac_v: Array) -> Array:
        """Active elements' gains k_a (V − z_a) (N/m) for control volts of shape (..., A)."""
        return self.active_gain_per_v * (np.asarray(dac_v, dtype=np.float64) - self.active_zero_v)

    def tuner_stiffness(self, dac_v: Array) -> Array:
        """κ_t(V) (N/m) for the tuners' DAC volts of shape (..., T)."""
        u = np.asarray(dac_v, dtype=np.float64) - self.tuner_zero_v
        out: Array = self.tuner_offset + u * (
            self.tuner_slope_per_v + self.tuner_curvature_per_v2 * u
        )
        return out

    def coupling(self, dac_v: Array) -> Array:
        """α_e(V) for DAC voltages of shape (..., E) → couplings of the same shape."""
        v = np.asarray(dac_v, dtype=np.float64)
        return self.map_offset + self.map_span * np.tanh((v - self.map_center_v) / self.map_width_v)

    def sensing_offset(self, path: int, t_s: Array) -> Array:
        """Offset of sense path `path` including its slow drift at times `t_s` (volts)."""
        t = np.asarray(t_s, dtype=np.float64)
        return self.sensing_offset_v[path] + self.drift_v[path] * np.sin(
            2.0 * np.pi * t / self.drift_period_s[path] + self.drift_phase_rad[path]
        )
