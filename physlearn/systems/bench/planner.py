"""The bench planner: every setting the controller will write, computed and checked without I/O.

α (trainable couplings and on-site stiffness, spec order) → DAC volts through the calibration's inverse maps, refused
(`LimitError`) outside the calibrated range or the DAC limits; one sample's total force F(t)
(M, d) → one arbitrary waveform per generator channel, volts = F/g_j pre-compensated harmonic by
harmonic for the actuator delay τ_j and the generator's zero-order hold (sample rate M_arb × f:
the arb spans exactly one drive period), every sample checked against the channel's limits; the
dry run (`Planner.plan_check`); the input drive forces of the network spec on the period grid.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.calibration.schema import CalibrationFile
from physlearn.drivers.rigol_ds1000z import V_DIVISIONS
from physlearn.errors import CalibrationError, ConfigError, LimitError
from physlearn.spec.bench import BenchConfig, EdgeWire, TunerWire
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import ForceWaveform
from physlearn.systems.bench.acquisition import scale_125_at_least
from physlearn.systems.bench.chains import resolve_chains
from physlearn.systems.bench.layout import ParamMap, ParamWire, check_layout
from physlearn.systems.bench.options import BenchOptions
from physlearn.systems.safety import check_finite

Array = NDArray[np.float64]

__all__ = ["Planner"]


def _what(e: ParamWire) -> str:
    if isinstance(e, EdgeWire):
        return "edge"
    return "node tuner" if isinstance(e, TunerWire) else "active element"


class Planner:
    """The calibration chains and the checked layout of one bench for one network spec, and the
    plans computed from them (module docstring). Construction raises on the first wiring,
    spec or calibration mismatch."""

    def __init__(
        self,
        config: BenchConfig,
        calibration: CalibrationFile,
        spec: NetworkSpec,
        options: BenchOptions,
        version: str,
    ) -> None:
        self.config = config
        self.cal = calibration
        self.spec = spec
        self.options = options
        self.chains = resolve_chains(calibration, config)
        self.layout = check_layout(config, calibration, spec, options.reference_node, version)
        self.alpha_lo, self.alpha_hi = self.parameter_range()
        m = options.points_per_period
        #: the controller's period grid t_m = m T / M (s), (M,)
        self.grid_t: Array = np.arange(m, dtype=np.float64) * (self.period_s / m)

    @property
    def period_s(self) -> float:
        return self.spec.period_s

    @property
    def n_nodes(self) -> int:
        return self.spec.nodes.count

    @property
    def n_params(self) -> int:
        return len(self.layout.param_edges)

    @property
    def alpha_unit(self) -> float:
        """m ω² (N/m): the scale in which a coupling change counts as a relative change."""
        return float(self.cal.mass_kg * (2 * math.pi / self.period_s) ** 2)

    def max_scale_v(self, i: int) -> float:
        """The coarsest V/div sense wire ``i``'s scope channel uses: 1-2-5 ≥ the interlock's
        response amplitude × 1.05 over the screen."""
        peak = abs(self.chains.sense_gain[i]) * self.options.safety.max_response
        return scale_125_at_least(peak * 1.05 / (V_DIVISIONS / 2))

    # ------------------------------------------------------------------ parameters → DAC volts
    def parameter_range(self) -> tuple[Array, Array]:
        """(lower, upper) α (P,) reachable within the calibration and the DAC limits."""
        lo, hi = [], []
        for e, m in zip(self.layout.param_edges, self.layout.maps, strict=True):
            a1, a2 = (float(m.alpha(v)) for v in self.volt_range(e, m))
            lo.append(min(a1, a2))
            hi.append(max(a1, a2))
        return np.array(lo), np.array(hi)

    def volt_range(self, e: ParamWire, m: ParamMap) -> tuple[float, float]:
        """The DAC volts both calibrated (the map's valid range) and allowed (output limits)."""
        lim = self.config.output_limits(e.instrument).limit_for(e.channel)
        v0, v1 = max(lim.min_v, m.v_min), min(lim.max_v, m.v_max)
        if not v0 < v1:
            raise CalibrationError(
                f"{_what(e)} {e.key}: the calibrated bias range [{m.v_min}, {m.v_max}] V and the "
                f"limits [{lim.min_v}, {lim.max_v}] V of {e.instrument} channel {e.channel} "
                "do not overlap"
            )
        return v0, v1

    def dac_plan(self, alpha: Array) -> dict[tuple[str, int], float]:
        """DAC volts per (instrument, channel) for α (P,), every value checked (calibrated
        range, finite, limits); no write."""
        a = check_finite("parameters", alpha)
        if a.shape != (self.n_params,):
            raise ConfigError(f"parameters: expected shape ({self.n_params},), got {a.shape}")
        out: dict[tuple[str, int], float] = {}
        lo, hi = self.alpha_lo, self.alpha_hi
        lay = self.layout
        for i, (e, ai) in enumerate(zip(lay.param_edges, a, strict=True)):
            if not lo[i] <= ai <= hi[i]:
                raise LimitError(
                    f"parameters[{i}] ({lay.names[i]}) = {ai} is outside the calibrated range "
                    f"[{lo[i]}, {hi[i]}] of {_what(e)} {e.key}; refused, nothing was "
                    "written"
                )
            v = float(lay.maps[i].volts(float(ai)))
            self.config.output_limits(e.instrument).check(e.channel, v)
            out[(e.instrument, e.channel)] = v
        return out

    # ------------------------------------------------------------------ forces → arb volts
    def drive_plan(self, force: Array) -> dict[tuple[str, int], Array]:
        """Arb volts (M_arb,) per generator (instrument, channel) for one sample's total force
        (M, d); every sample checked against the channel's limits; no write."""
        f = check_finite("force", force)
        m_arb = self.options.arb_points_per_period
        spec_f = np.fft.rfft(f, axis=0) / f.shape[0]  # (H+1, d) one-sided coefficients
        h = np.arange(spec_f.shape[0])
        zoh = np.sinc(h / m_arb) * np.exp(-1j * math.pi * h / m_arb)
        out: dict[tuple[str, int], Array] = {}
        k_max = min(spec_f.shape[0], m_arb // 2)
        for j, dw in enumerate(self.config.wiring.drives):
            # the calibration file's actuator: F/m = a_j V(t − τ_j), so V = F(t + τ_j)/(m a_j)
            act = self.chains.actuators[j]
            g = self.cal.mass_kg * act.gain_per_s2_per_v.value
            lag = np.exp(-2j * math.pi * h * act.delay_s.value / self.period_s)
            c = np.zeros(m_arb // 2 + 1, dtype=complex)
            c[:k_max] = spec_f[:k_max, dw.node] / (g * zoh[:k_max] * lag[:k_max])
            v = np.fft.irfft(c * m_arb, n=m_arb)
            v = np.where(np.abs(v) < 1e-15, 0.0, v)
            lim = self.config.output_limits(dw.instrument)
            lim.check(dw.channel, float(v.min()))
            lim.check(dw.channel, float(v.max()))
            out[(dw.instrument, dw.channel)] = v
        return out

    def plan_check(
        self, alphas: list[Array], inputs: Array, max_nudge_ratio: float = 0.0
    ) -> dict[str, Any]:
        """The dry run: check every planned setting — DAC volts for each α in ``alphas`` (e.g. the
        initial parameters and every corner of the bounds), and the drive of every input vector
        (with a nudge of up to ``max_nudge_ratio`` × the drive peak on the outputs) — against the
        calibration and the limits. Nothing is connected or written. Raises on the first refusal."""
        n_dac = 0
        for a in alphas:
            n_dac += len(self.dac_plan(a))
        u = check_finite("inputs", np.atleast_2d(inputs))
        drive = self.drive_force(u)
        n_arb = 0
        for b in range(drive.shape[0]):
            f = drive[b].copy()
            if max_nudge_ratio > 0 and self.spec.outputs.nodes:
                peak = float(np.max(np.abs(f))) * max_nudge_ratio
                for o in self.spec.outputs.nodes:
                    f[:, o] += peak
            n_arb += len(self.drive_plan(f))
        return {"dac_settings": n_dac, "arb_waveforms": n_arb, "inputs": int(u.shape[0])}

    # ------------------------------------------------------------------ forces from the spec
    def drive_force(self, u: Array) -> Array:
        """The input drive force (inputs and fixed tones) for inputs u (B, n_in) on the period
        grid, (B, M, d) in force units; ConfigError for a clamped input."""
        from physlearn.simulators.excitation import build_excitation

        exc = build_excitation(self.spec, inputs=u).on_grid(self.grid_t)
        if np.any(exc.clamp_weight != 0):
            raise ConfigError("network.inputs: a bench cannot clamp nodes; use force inputs")
        return np.ascontiguousarray(
            np.broadcast_to(exc.force, (u.shape[0], *exc.force.shape[1:])), dtype=float
        )

    def on_grid(self, forces: ForceWaveform, batch: int) -> Array:
        """Extra force waveforms (``batch`` or 1, M', d) resampled on the period grid and
        broadcast to (batch, M, d); ConfigError for another shape or period."""
        from physlearn.spec.waveform import SampledWaveform

        s = forces.samples
        B, m, d = batch, self.grid_t.size, self.n_nodes
        if s.ndim != 3 or s.shape[2] != d or s.shape[0] not in (1, B):
            raise ConfigError(f"forces: expected ({B} or 1, M, {d}), got {s.shape}")
        if not np.isclose(forces.period_s, self.period_s, rtol=1e-9, atol=0.0):
            raise ConfigError(
                f"forces: period {forces.period_s} s ≠ drive period {self.period_s} s"
            )
        f = s if s.shape[1] == m else SampledWaveform(s, self.period_s, "spectral")(self.grid_t)
        return np.ascontiguousarray(np.broadcast_to(f, (B, m, d)))
