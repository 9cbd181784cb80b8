"""The calibration file: a versioned, pydantic-validated JSON document, its loader and the
conversions a controller needs (docs/calibration.md).

Every fitted number is a `Value` (value, standard error σ, unit). The loader refuses a file
whose instrument serials do not match the connected bench (naming the instrument) or whose bench
config hash differs, and warns when it is older than `max_age_s`.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from physlearn.errors import CalibrationError
from physlearn.spec.files import atomic_write_text

logger = logging.getLogger(__name__)

Array = NDArray[np.float64]
SCHEMA_VERSION = 1


class StaleCalibrationWarning(UserWarning):
    """The calibration file is older than the configured maximum age."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Value(_Model):
    """A fitted value with its standard error (σ; 0 for declared, exact inputs) and unit."""

    value: float
    sigma: float = Field(ge=0.0)
    unit: str = ""


def val(value: float, sigma: float, unit: str) -> Value:
    return Value(value=float(value), sigma=float(abs(sigma)), unit=unit)


class Identity(_Model):
    """*IDN? of one instrument, split."""

    idn: str
    manufacturer: str
    model: str
    serial: str
    firmware: str

    @classmethod
    def parse(cls, idn: str) -> Identity:
        parts = [p.strip() for p in idn.split(",")]
        parts += [""] * (4 - len(parts))
        return cls(
            idn=idn, manufacturer=parts[0], model=parts[1], serial=parts[2], firmware=parts[3]
        )


class DacChannelCal(_Model):
    """Setpoint → delivered volts of one DAC channel: delivered = offset + gain·setpoint."""

    instrument: str
    channel: int
    offset_v: Value
    gain: Value
    max_nonlinearity_v: float
    method: str


class NodeCal(_Model):
    """One node: its own resonance (other nodes held still) and damping."""

    node: int
    f0_hz: Value
    q: Value
    damping_per_s: Value
    omega2_per_s2: Value


class ActuatorCal(_Model):
    """Generator channel → force on a node: F/m = gain·V(t − delay); phase(f) = −2π f delay."""

    node: int
    instrument: str
    channel: int
    gain_per_s2_per_v: Value  # node units · s⁻² per volt: force per volt relative to the mass
    delay_s: Value


class SensingCal(_Model):
    """Node → instrument input: v = gain·x(t − delay) + offset (+ phase_rad for lock-ins)."""

    node: int
    instrument: str
    channel: int | None
    gain_v_per_unit: Value
    offset_v: Value
    delay_s: Value
    phase_rad: Value | None = None
    reference: bool = False  # the path that defines the node coordinate (declared gain)


class CouplingMap(_Model):
    """α(V)/m = a + b·tanh((V − c)/w) (1/s²) over [v_min, v_max]; `cov` the 4×4 covariance of
    (a, b, c, w); α in N/m is m·α/m with the declared mass."""

    nodes: tuple[int, int]
    instrument: str
    channel: int
    a: float
    b: float
    c_v: float
    w_v: float
    cov: list[list[float]]
    v_min: float
    v_max: float
    mass_kg: float
    chi2_per_dof: float
    linear_kappa_per_s2: Value  # the coupling's linear stiffness/m at the base bias

    def alpha_over_m(self, volts: Array | float) -> Array:
        v = np.asarray(volts, dtype=np.float64)
        out: Array = self.a + self.b * np.tanh((v - self.c_v) / self.w_v)
        return out

    def alpha(self, volts: Array | float) -> Array:
        """α (N/m) at DAC volts; refuses volts outside the valid range."""
        v = np.asarray(volts, dtype=np.float64)
        self._check_range_v(v)
        out: Array = self.mass_kg * self.alpha_over_m(v)
        return out

    def alpha_sigma(self, volts: Array | float) -> Array:
        """Standard error of α (N/m) at DAC volts, from the map's covariance."""
        v = np.atleast_1d(np.asarray(volts, dtype=np.float64))
        u = (v - self.c_v) / self.w_v
        sech2 = 1.0 / np.cosh(u) ** 2
        jac = np.stack(
            [
                np.ones_like(v),
                np.tanh(u),
                -self.b * sech2 / self.w_v,
                -self.b * sech2 * u / self.w_v,
            ],
            axis=1,
        )
        cov = np.asarray(self.cov)
        out: Array = self.mass_kg * np.sqrt(np.einsum("ni,ij,nj->n", jac, cov, jac))
        return out

    def alpha_range(self) -> tuple[float, float]:
        lo, hi = self.alpha(np.array([self.v_min, self.v_max]))
        return float(min(lo, hi)), float(max(lo, hi))

    def volts(self, alpha: Array | float) -> Array:
        """DAC volts giving α (N/m): the inverse map; refuses α outside the valid range."""
        a = np.asarray(alpha, dtype=np.float64) / self.mass_kg
        lo, hi = self.alpha_range()
        aa = a * self.mass_kg
        if np.any(aa < lo - 1e-12) or np.any(aa > hi + 1e-12) or not np.all(np.isfinite(aa)):
            raise CalibrationError(
                f"edge {self.nodes} ({self.instrument} channel {self.channel}): α {alpha} N/m "
                f"outside the calibrated range [{lo:.6g}, {hi:.6g}] N/m"
            )
        z = np.clip((a - self.a) / self.b, -1 + 1e-15, 1 - 1e-15)
        out: Array = np.clip(self.c_v + self.w_v * np.arctanh(z), self.v_min, self.v_max)
        return out

    def _check_range_v(self, v: Array) -> None:
        if np.any(v < self.v_min - 1e-9) or np.any(v > self.v_max + 1e-9):
            raise CalibrationError(
                f"edge {self.nodes} ({self.instrument} channel {self.channel}): {v} V outside "
                f"the calibrated bias range [{self.v_min}, {self.v_max}] V"
            )


class ActiveMap(_Model):
    """An active coupling element target ← source (`[[wiring.active]]`): gain α(V) = k (V − z)
    (N/m) over [v_min, v_max] with `cov` the 2×2 covariance of (k, z), its bandwidth delay τ
    (the element's input x(t − τ)), and the reversed element's gain relative to the forward one
    at one bias (`reverse_rel_diff`: (α_rev − α)/|α|), all measured by the `active` step."""

    target: int
    source: int
    instrument: str
    channel: int
    switch_channel: int
    k_per_v: float
    z_v: float
    cov: list[list[float]]
    v_min: float
    v_max: float
    delay_s: Value
    chi2_per_dof: float
    reverse_rel_diff: float

    @property
    def key(self) -> tuple[int, int]:
        return (self.target, self.source)

    def alpha(self, volts: Array | float) -> Array:
        """α (N/m) at DAC volts; refuses volts outside the valid range."""
        v = np.asarray(volts, dtype=np.float64)
        if np.any(v < self.v_min - 1e-9) or np.any(v > self.v_max + 1e-9):
            raise CalibrationError(
                f"active element {self.target}<-{self.source} ({self.instrument} channel "
                f"{self.channel}): {v} V outside the calibrated range [{self.v_min}, "
                f"{self.v_max}] V"
            )
        out: Array = self.k_per_v * (v - self.z_v)
        return out

    def alpha_range(self) -> tuple[float, float]:
        lo, hi = self.alpha(np.array([self.v_min, self.v_max]))
        return float(min(lo, hi)), float(max(lo, hi))

    def volts(self, alpha: Array | float) -> Array:
        """DAC volts giving α (N/m); refuses α outside the calibrated range."""
        a = np.asarray(alpha, dtype=np.float64)
        lo, hi = self.alpha_range()
        if np.any(a < lo - 1e-12) or np.any(a > hi + 1e-12) or not np.all(np.isfinite(a)):
            raise CalibrationError(
                f"active element {self.target}<-{self.source}: α {alpha} N/m outside the "
                f"calibrated range [{lo:.6g}, {hi:.6g}] N/m"
            )
        out: Array = np.clip(self.z_v + a / self.k_per_v, self.v_min, self.v_max)
        return out


class TunerMap(_Model):
    """A node tuner (`[[wiring.tuners]]`, a DAC-tuned on-site spring): its stiffness relative
    to the node at the reference volts ``ref_v``, κ(V) = s (V − ref_v) + q (V − ref_v)² (N/m),
    over [v_min, v_max] where it is monotone; `cov` the 2×2 covariance of (s, q); measured by
    the `tuners` step from the shift of the node's diagonal dynamic stiffness (its resonance
    ω_j² = (k_j + κ)/m). The network's ``nodes.stiffness[j]`` is the node with the tuner at
    ``ref_v``; its ``[[onsite]]`` κ_j is this map's κ."""

    node: int
    instrument: str
    channel: int
    ref_v: float
    slope_per_v: float
    curvature_per_v2: float
    cov: list[list[float]]
    v_min: float
    v_max: float
    chi2_per_dof: float

    @property
    def key(self) -> int:
        return self.node

    def alpha(self, volts: Array | float) -> Array:
        """κ (N/m) at DAC volts; refuses volts outside the calibrated range."""
        v = np.asarray(volts, dtype=np.float64)
        if np.any(v < self.v_min - 1e-9) or np.any(v > self.v_max + 1e-9):
            raise CalibrationError(
                f"tuner of node {self.node} ({self.instrument} channel {self.channel}): {v} V "
                f"outside the calibrated range [{self.v_min}, {self.v_max}] V"
            )
        u = v - self.ref_v
        out: Array = u * (self.slope_per_v + self.curvature_per_v2 * u)
        return out

    def alpha_range(self) -> tuple[float, float]:
        lo, hi = self.alpha(np.array([self.v_min, self.v_max]))
        return float(min(lo, hi)), float(max(lo, hi))

    def volts(self, alpha: Array | float) -> Array:
        """DAC volts giving κ (N/m): the root of the quadratic on the monotone branch;
        refuses κ outside the calibrated range."""
        a = np.asarray(alpha, dtype=np.float64)
        lo, hi = self.alpha_range()
        if np.any(a < lo - 1e-12) or np.any(a > hi + 1e-12) or not np.all(np.isfinite(a)):
            raise CalibrationError(
                f"tuner of node {self.node}: κ {alpha} N/m outside the calibrated range "
                f"[{lo:.6g}, {hi:.6g}] N/m"
            )
        s, q = self.slope_per_v, self.curvature_per_v2
        # q u² + s u − κ = 0, the root continuous in q → 0 (no cancellation)
        root = np.sqrt(np.maximum(s * s + 4.0 * q * a, 0.0))
        u = 2.0 * a / (s + np.copysign(root, s))
        out: Array = np.clip(self.ref_v + u, self.v_min, self.v_max)
        return out


class CalibrationFile(_Model):
    """The whole calibration of one bench (docs/calibration.md)."""

    schema_version: Literal[1] = 1
    created_utc: str
    bench_name: str
    bench_config_sha256: str
    instruments: dict[str, Identity]
    drive_frequency_hz: float | None = None
    mass_kg: float = Field(gt=0.0)
    nonlinearity: str = "tanh"
    steps: dict[str, str] = Field(default_factory=dict)  # step → UTC time it completed
    dac: list[DacChannelCal] = Field(default_factory=list)
    nodes: list[NodeCal] = Field(default_factory=list)
    actuators: list[ActuatorCal] = Field(default_factory=list)
    sensing: list[SensingCal] = Field(default_factory=list)
    couplings: list[CouplingMap] = Field(default_factory=list)
    active: list[ActiveMap] = Field(default_factory=list)
    tuners: list[TunerMap] = Field(default_factory=list)
    fixed_couplings_per_s2: dict[str, Value] = Field(default_factory=dict)  # unwired pairs "a-b"
    notes: list[str] = Field(default_factory=list)

    # ------------------------------------------------------------------ io
    def save(self, path: str | Path) -> None:
        """Write atomically (temporary file + rename); a bench without active elements or node
        tuners writes the file it wrote before they existed (no `active`, `tuners` keys)."""
        exclude = {k for k in ("active", "tuners") if not getattr(self, k)}
        write_atomic(Path(path), self.model_dump_json(indent=2, exclude=exclude or None))

    @classmethod
    def read(cls, path: str | Path) -> CalibrationFile:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise CalibrationError(f"{path}: cannot read the calibration file ({exc})") from exc
        try:
            return cls.model_validate_json(text)
        except Exception as exc:
            raise CalibrationError(f"{path}: not a valid calibration file: {exc}") from exc

    # ------------------------------------------------------------------ checks
    def check_bench(
        self,
        identities: dict[str, str],
        config_sha256: str | None = None,
        *,
        max_age_s: float | None = None,
        now: _dt.datetime | None = None,
    ) -> None:
        """Refuse a file made on other instruments (serial mismatch names the instrument) or
        another bench config; warn (StaleCalibrationWarning) if older than `max_age_s`."""
        for name, ident in self.instruments.items():
            if name not in identities:
                raise CalibrationError(
                    f"calibration instrument {name!r} ({ident.model} serial {ident.serial}) is "
                    "not on this bench"
                )
            got = Identity.parse(identities[name])
            if got.serial != ident.serial or got.model != ident.model:
                raise CalibrationError(
                    f"instrument {name!r}: the calibration was made with {ident.model} serial "
                    f"{ident.serial}, but the bench has {got.model} serial {got.serial}; "
                    "recalibrate (physlearn calibrate all)"
                )
        if config_sha256 is not None and config_sha256 != self.bench_config_sha256:
            raise CalibrationError(
                "the bench config (instruments or wiring) changed since this calibration "
                f"(hash {self.bench_config_sha256[:12]}… ≠ {config_sha256[:12]}…); recalibrate"
            )
        if max_age_s is not None:
            age = self.age_s(now)
            if age > max_age_s:
                msg = (
                    f"calibration of {self.created_utc} is {age / 3600:.1f} h old "
                    f"(more than {max_age_s / 3600:.1f} h): recalibrate"
                )
                logger.warning(msg)
                warnings.warn(msg, StaleCalibrationWarning, stacklevel=2)

    def age_s(self, now: _dt.datetime | None = None) -> float:
        t = _dt.datetime.fromisoformat(self.created_utc)
        n = now or _dt.datetime.now(_dt.UTC)
        return (n - t).total_seconds()

    # ------------------------------------------------------------------ conversions
    def coupling(self, nodes: tuple[int, int]) -> CouplingMap:
        key = (min(nodes), max(nodes))
        for c in self.couplings:
            if (min(c.nodes), max(c.nodes)) == key:
                return c
        raise CalibrationError(f"no coupling map for edge {key} in the calibration file")

    def active_map(self, target: int, source: int) -> ActiveMap:
        for a in self.active:
            if a.key == (target, source):
                return a
        raise CalibrationError(
            f"no calibration of the active element {target}<-{source} in the calibration file "
            "(physlearn calibrate active)"
        )

    def tuner_map(self, node: int) -> TunerMap:
        for t in self.tuners:
            if t.node == node:
                return t
        raise CalibrationError(
            f"no calibration of the tuner of node {node} in the calibration file "
            "(physlearn calibrate tuners)"
        )

    def alpha_to_volts(self, alpha: Array) -> Array:
        """α (N/m) per calibrated edge (file order) → DAC volts (inverse maps, range-checked)."""
        a = np.asarray(alpha, dtype=np.float64)
        if a.shape != (len(self.couplings),):
            raise CalibrationError(f"expected {len(self.couplings)} couplings, got {a.shape}")
        return np.array([float(c.volts(x)) for c, x in zip(self.couplings, a, strict=True)])

    def volts_to_alpha(self, volts: Array) -> Array:
        v = np.asarray(volts, dtype=np.float64)
        return np.array([float(c.alpha(x)) for c, x in zip(self.couplings, v, strict=True)])

    def sense(self, instrument: str, channel: int | None = None) -> SensingCal:
        for s in self.sensing:
            if s.instrument == instrument and (s.channel == channel or s.channel is None):
                return s
        raise CalibrationError(f"no sensing calibration for {instrument} channel {channel}")

    def volts_to_x(
        self, instrument: str, channel: int | None, t_s: Array, volts: Array, period_s: float
    ) -> Array:
        """Node coordinate x(t) on the times `t_s` from a periodic record of `volts` at `t_s`:
        x(t) = (v(t + delay) − offset)/gain, the delay undone by a Fourier shift (the record
        must span whole periods of `period_s`)."""
        s = self.sense(instrument, channel)
        v = np.asarray(volts, dtype=np.float64) - s.offset_v.value
        out: Array = (
            fourier_shift(v, s.delay_s.value, float(t_s[1] - t_s[0])) / s.gain_v_per_unit.value
        )
        return out

    def actuator(self, node: int) -> ActuatorCal:
        for a in self.actuators:
            if a.node == node:
                return a
        raise CalibrationError(f"node {node} has no calibrated actuator")

    def knowledge_arrays(self, n_nodes: int) -> tuple[Array, Array]:
        """(masses kg, damping 1/s) per node for `ModelKnowledge` (declared mass, fitted Γ)."""
        mass = np.full(n_nodes, self.mass_kg)
        damping = np.full(n_nodes, np.nan)
        for n in self.nodes:
            damping[n.node] = n.damping_per_s.value
        if not np.all(np.isfinite(damping)):
            raise CalibrationError("the calibration lacks the damping of some nodes (resonance)")
        return mass, damping


def fourier_shift(x: Array, delay_s: float, dt_s: float) -> Array:
    """y(t) = x(t + delay) for a periodic sampled signal (last axis 0 is time)."""
    n = x.shape[0]
    f = np.fft.rfftfreq(n, dt_s)
    spec = np.fft.rfft(x, axis=0)
    phase = np.exp(2j * np.pi * f * delay_s)
    shape = (n // 2 + 1,) + (1,) * (x.ndim - 1)
    out: Array = np.fft.irfft(spec * phase.reshape(shape), n=n, axis=0)
    return out


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` atomically with the umask's permissions (folder created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


def load_calibration(
    path: str | Path,
    identities: dict[str, str],
    config_sha256: str | None = None,
    *,
    max_age_s: float | None = 7 * 24 * 3600.0,
) -> CalibrationFile:
    """Read a calibration file and check it against the connected bench (see `check_bench`)."""
    cal = CalibrationFile.read(path)
    cal.check_bench(identities, config_sha256, max_age_s=max_age_s)
    return cal


def finite_or_raise(x: float, what: str) -> float:
    if not math.isfinite(x):
        raise CalibrationError(f"{what}: non-finite result {x}")
    return x
