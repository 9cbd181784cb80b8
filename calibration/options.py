"""What the experimenter declares for a calibration (not identifiable on the bench) and the
sweep plan of every step: one flat `CalibrationOptions` (the `[calibration]` table of an options
file), read by every step."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from physlearn.calibration.acquire import STITCH_TOLERANCE, MultisinePlan


class CalibrationOptions(BaseModel):
    """What the experimenter declares (not identifiable on the bench) and the sweep plan."""

    model_config = ConfigDict(extra="forbid")

    mass_kg: float = Field(3.2e-5, gt=0.0)
    #: V per node unit of each node's reference sensor (the node's first scope path in wiring
    #: order, whichever scope): it defines the node coordinate x (one value for all nodes, or
    #: one per node)
    reference_gain_v_per_unit: float | list[float] = 0.5
    reference_delay_s: float = 0.0  # delay of sense path 0 (fixes the delay gauge)
    nonlinearity: str = "tanh"
    #: default: every scope of the bench, armed for the same sync edge and merged; a name
    #: restricts the calibration to that scope (every node must then be sensed on it)
    scope: str | None = None
    #: relative rms residual above which a node sensed by two scopes disagrees across them
    stitch_tolerance: float = Field(STITCH_TOLERANCE, gt=0.0)
    multisine_period_s: float = 1.2
    multisine_sample_rate_hz: float = 1600.0
    band_hz: tuple[float, float] = (12.0, 60.0)
    drive_peak_v: float = Field(0.05, gt=0.0)
    settle_s: float = Field(1.0, ge=0.0)
    averages: int = Field(8, ge=1, le=1024)  # scope averages of the resonance multisine
    coupling_averages: int = Field(4, ge=1, le=1024)
    base_bias_v: float = 0.0
    bias_points: int = Field(9, ge=5)
    bias_margin_v: float = Field(0.0, ge=0.0)
    #: the active elements' gain-channel sweep (V) and its number of points (`active` step)
    active_bias_v: tuple[float, float] = (-1.0, 1.0)
    active_points: int = Field(5, ge=3)
    #: the node tuners' channel sweep (V), its number of points (≥ 4: a quadratic map is
    #: fitted) and the reference volts (κ = 0: where the other steps leave the tuners)
    tuner_bias_v: tuple[float, float] = (-1.0, 1.0)
    tuner_points: int = Field(5, ge=4)
    tuner_ref_v: float = 0.0
    lockin_frequencies_hz: list[float] = Field(
        default_factory=lambda: [18.0, 22.0, 26.0, 29.0, 31.0, 33.0, 36.0, 42.0]
    )
    lockin_amplitude_v: float = 0.01
    lockin_settle_s: float = 1.2
    ringdown_s: float = 0.6
    #: optional loopback cabling for the `dac` step, "<dac>:<channel>" → "<scope>:<channel>":
    #: that DAC output is cabled to that scope input while the step runs (the bench file has
    #: no such wiring); the delivered volts are then read through the scope instead of the
    #: DAC's own output monitor. TOML: `[dac_loopback]` with `"qdac:1" = "scope:4"`.
    dac_loopback: dict[str, str] = Field(default_factory=dict)
    seed: int = 0

    def plan(self) -> MultisinePlan:
        return MultisinePlan(
            self.multisine_period_s,
            self.multisine_sample_rate_hz,
            self.band_hz[0],
            self.band_hz[1],
            self.drive_peak_v,
            self.seed + 1,
        )
