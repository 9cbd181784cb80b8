"""The lock-in readout of linear-ρ networks: `LockinReadout`, and `LockinBenchSystem`, the
`BenchSystem` that reads through it (``[system.bench] readout = "lockin"``).

For a network with linear coupling function ρ (``nonlinearity = "identity"``), no on-site
quartic terms, constant coupling modulation μ and no bias forces, driven at the one frequency
ω = 2π/T by forces that are pure sinusoids at ω (inputs, nudges, echo drives), every steady
state is a pure sinusoid at ω: x_j(t) = Im(X_j e^{iωt}) (t = 0 at the generator sync's rising
edge, the bench's phase origin). A lock-in measures X_j with the noise of a ≈ 1 Hz bandwidth
instead of an 8-bit scope's per-sample noise. This readout of a `BenchSystem` replaces the scope
waveform of every node wired to a lock-in (``[[wiring.sense]]`` entry with an SR830/SR860) by
the waveform reconstructed from that lock-in's X, Y on the period grid; nodes without a lock-in
keep the scope reading. The scopes still read every node (the bench loop's settling judgement,
ranging, periodicity check and interlock run unchanged on them).

Signal chain (the emulator's, `physlearn.simulators.instruments.srs_lockin`, and the one the
calibration fits, `physlearn.calibration.routines.step_sensing` / the `couplings` joint fit):
the lock-in input is v(t) = G x(t − τ) + O; with an external reference on the sync (rising
edges at θ_ref ≡ 0), detection harmonic 1 and reference phase PHAS = 0 (as the calibration
sweep set it), an input A sin(θ_ref + θ_s) reads X + iY = (A/√2) e^{iθ_s} (volts **rms**,
in phase with a **sine** reference). The calibration's lock-in transfer is
H = √2 (X + iY)/drive = G e^{iφ} e^{−iωτ} H_network, φ the path's fitted reference phase
(`SensingCal.phase_rad`). Hence

    X_j = √2 (X + iY) e^{−iφ} e^{+iωτ} / G,      x_j(t_k) = Im(X_j e^{iω t_k}).

The input offset O (and its drift) is at DC: the lock-in rejects it (its ripple at ω is below
the accuracy by the choice of τ below); the calibration's offset is not used on this path.

Lock-in settings (at `arm`, again after a `reconnect`): external reference (the generator
sync), harmonic 1, PHAS 0, the configured slope (24 dB/oct: n = 4 RC stages), and the time
constant τ = the smallest table entry with the filter's attenuation at the fundamental
(1 + (ωτ)²)^(−n/2) ≤ accuracy (default ``settle.tol``). The worst ripple is then the one a DC
input offset as large as the signal leaves at ω (≤ accuracy); the demodulation's own 2ω ripple
is 2ⁿ times smaller still. At 25 Hz, 24 dB/oct and 1e-4: ωτ ≥ 9.95, τ = 0.1 s (0.03 s is
short). SR860: input range ≥ the largest input the interlock allows (|G| × max_response + |O|).

Per measurement: the bench loop uploads, waits the network's settling (decided on the scopes)
and acquires; the network has settled (remaining transient ≤ tol) from the first fitted sample
t_s on. The lock-in filter then needs n_τ = P⁻¹(n, accuracy) time constants (the step response
of n cascaded RC stages: e^{−u} Σ_{k<n} u^k/k! = accuracy; 15.9 τ at 24 dB/oct and 1e-4,
`physlearn.drivers.srs_lockin.settle_multiple`) for what it held before t_s to have decayed,
so X, Y are read at t_s + n_τ τ (1.59 s at 25 Hz, ≈ 40 periods, of which the scope record
already took K periods). Sensitivity: the smallest full scale ≥ ``headroom`` × the expected
|X + iY| = |G| |X_j,scope|/√2 (the fundamental of the same steady state just read by the
scope), changed only when the present one is too tight (< 1.25 ×) or too coarse (> 10 ×
``headroom`` ×); a change restarts the filter wait. The LIA status is cleared before the wait;
X, Y are read with one SNAP? per lock-in, all lock-ins concurrently (`asyncio.gather`), then
the status: an input/filter/output overload, a reference unlock or a non-finite value refuses
the reading (`InstrumentError` naming the instrument and the node).

Refusals (before anything is written): a non-linear network (ρ not ``identity``, quartic
terms, a time-modulated μ, bias forces) — `ConfigError`; a force waveform (input drive, nudge,
echo drive) whose power outside the fundamental exceeds ``max_harmonic_fraction`` (rms
fraction, DC included) on any node — `ConfigError` (inputs) or `GradientError` (nudge, echo)
naming the node, the sample and the fraction: the response would carry harmonics the lock-in
does not see. The generator's zero-order-hold images (harmonics M_arb ± 1) are not counted:
the network's response to them is down by ≈ (M_arb)² and the lock-in rejects them.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.calibration.schema import CalibrationFile
from physlearn.drivers.srs_lockin import SR830_TIME_CONSTANTS_S, Sr860, settle_multiple
from physlearn.errors import (
    CalibrationError,
    ConfigError,
    InstrumentError,
    PhyslearnError,
)
from physlearn.spec.bench import BenchConfig
from physlearn.spec.clock import Clock
from physlearn.spec.modulation import Constant
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import Level
from physlearn.systems.bench.instruments import DriverFactory
from physlearn.systems.bench.journal import LockinReading, LockinRecord
from physlearn.systems.bench.options import BenchOptions, LockinOptions
from physlearn.systems.bench.readout import ReadoutContext
from physlearn.systems.bench.settler import SettledSample
from physlearn.systems.bench.system import BenchSystem

Array = NDArray[np.float64]

__all__ = [
    "LockinBenchSystem",
    "LockinReadout",
    "choose_time_constant",
    "harmonic_fraction",
    "refuse_nonlinear",
]

#: keep the present sensitivity while it is ≥ this × the expected |X + iY| …
_TIGHT = 1.25
#: … and ≤ this × headroom × the expected |X + iY|
_COARSE = 10.0


def choose_time_constant(
    omega_rad_s: float, n_stages: int, accuracy: float, table: tuple[float, ...]
) -> float:
    """The smallest τ of `table` whose n-stage RC filter attenuates the fundamental to
    ≤ `accuracy`: (1 + (ωτ)²)^(−n/2) ≤ accuracy ⇔ ωτ ≥ √(accuracy^(−2/n) − 1)."""
    need = math.sqrt(accuracy ** (-2.0 / n_stages) - 1.0) / omega_rad_s
    ok = [t for t in table if t >= need * (1 - 1e-9)]
    if not ok:
        raise ConfigError(
            f"lock-in readout: τ ≥ {need:.3g} s is needed for accuracy {accuracy} at "
            f"{omega_rad_s / (2 * math.pi):.4g} Hz, beyond the lock-in's table"
        )
    return min(ok)


def harmonic_fraction(samples: Array) -> Array:
    """Per (sample, node) of a periodic waveform (B, M, d) sampled over one period: the rms
    fraction outside the fundamental, √(1 − P₁/P) (DC and harmonics ≥ 2 count); NaN where the
    waveform is identically zero."""
    s = np.asarray(samples, dtype=float)
    c = np.fft.rfft(s, axis=1) / s.shape[1]
    p = np.abs(c) ** 2
    p[:, 1:] *= 2.0
    if s.shape[1] % 2 == 0:
        p[:, -1] /= 2.0  # Nyquist bin counted once
    total = p.sum(axis=1)
    p1 = p[:, 1] if p.shape[1] > 1 else np.zeros_like(total)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.sqrt(np.clip(1.0 - p1 / total, 0.0, 1.0))
    scale = float(np.max(total)) if total.size else 0.0
    return np.where(total > 1e-24 * max(scale, 1e-300), frac, np.nan)


@dataclass
class _Lockin:
    """One lock-in of the readout: its sense wire, node, calibration of the path, settings."""

    name: str
    wire: int
    node: int
    gain: float
    delay_s: float
    phase_rad: float
    offset_v: float
    sensitivity_v: float = math.nan
    time_constant_s: float = math.nan


def LockinBenchSystem(  # a factory named like the class it replaced (callers build it so)
    config: BenchConfig,
    calibration: CalibrationFile,
    spec: NetworkSpec,
    clock: Clock,
    options: BenchOptions,
    *,
    lockin: LockinOptions | None = None,
    resources: dict[str, str] | None = None,
    driver_factory: DriverFactory | None = None,
    level: Level = Level.BENCH,
) -> BenchSystem:
    """A `BenchSystem` whose lock-in-wired nodes are read as phasors (module docstring): a
    non-linear network is refused first, then the bench is checked, then the lock-ins."""
    refuse_nonlinear(spec, calibration)
    return BenchSystem(
        config,
        calibration,
        spec,
        clock,
        options,
        resources=resources,
        driver_factory=driver_factory,
        level=level,
        readout=partial(LockinReadout, options=lockin),
    )


class LockinReadout:
    """Lock-in-wired nodes read as phasors (module docstring); ``time_constant_s``: the output
    filter's τ, ``settle_s``: the wait n_τ τ after the network settled, ``reads``: readings so
    far."""

    def __init__(self, context: ReadoutContext, options: LockinOptions | None = None) -> None:
        self.context = context
        self.time = context.time
        self.options = lo = options or LockinOptions()
        self.accuracy = lo.accuracy if lo.accuracy is not None else context.options.settle.tol
        self.lockins = _lockin_paths(context)
        n = lo.slope_db_per_oct // 6
        omega = 2 * math.pi / context.period_s
        tau = choose_time_constant(omega, n, self.accuracy, SR830_TIME_CONSTANTS_S)
        if lo.time_constant_s is not None and lo.time_constant_s > tau:
            longer = [t for t in SR830_TIME_CONSTANTS_S if t >= lo.time_constant_s * (1 - 1e-9)]
            if not longer:
                raise ConfigError(f"lockin.time_constant_s: {lo.time_constant_s} s > 30 ks")
            tau = min(longer)
        self.time_constant_s = tau
        self.settle_s = settle_multiple(n, self.accuracy) * tau
        self.reads = 0

    @property
    def instrument_names(self) -> list[str]:
        return sorted(self.lockins)

    async def configure(self) -> None:
        """Reference external, harmonic 1, PHAS 0, τ and slope, input range (SR860) and
        sensitivity for the interlock's largest response; the reference frequency checked."""
        slope = self.options.slope_db_per_oct
        f_hz = 1.0 / self.context.period_s
        max_response = self.context.options.safety.max_response

        async def configure(li: _Lockin) -> None:
            drv = self.context.instruments.lockin(li.name)
            await drv.set_reference_external()
            await drv.set_harmonic(1)
            await drv.set_phase(0.0)  # as in the calibration sweep: φ is applied in software
            li.time_constant_s = await drv.set_time_constant(
                self.time_constant_s, slope_db_per_oct=slope
            )
            top = abs(li.gain) * max_response
            if isinstance(drv, Sr860):  # the largest input the interlock allows
                await drv.set_input_range(min(top + abs(li.offset_v), 1.0))
            li.sensitivity_v = await drv.set_sensitivity(min(top / math.sqrt(2), 1.0))
            f_ref = await drv.get_reference_frequency_hz()
            if not math.isfinite(f_ref) or abs(f_ref - f_hz) > 1e-3 * f_hz:
                raise InstrumentError(
                    f"{li.name} (lock-in of node {li.node}): reference at {f_ref} Hz, the drive "
                    f"is at {f_hz:.6g} Hz; is the generator sync cabled to REF IN?"
                )
            await drv.status()  # clear what was latched while configuring

        await asyncio.gather(*(configure(li) for li in self.lockins.values()))

    def snapshot(self) -> dict[str, Any]:
        return {
            "readout": "lockin",
            "lockins": {
                li.name: {
                    "node": li.node,
                    "time_constant_s": li.time_constant_s,
                    "slope_db_per_oct": self.options.slope_db_per_oct,
                    "sensitivity_v": li.sensitivity_v,
                    "settle_s": self.settle_s,
                }
                for li in self.lockins.values()
            },
        }

    def check_forces(self, samples: Array, what: str, error: type[PhyslearnError]) -> None:
        frac = harmonic_fraction(samples)
        tol = self.options.max_harmonic_fraction
        bad = np.nan_to_num(frac, nan=0.0) > tol
        if np.any(bad):
            b, j = (
                int(v) for v in np.unravel_index(np.argmax(np.where(bad, frac, 0.0)), bad.shape)
            )
            raise error(
                f"lock-in readout: the {what} on node {j} (sample {b}) has {frac[b, j]:.3g} of "
                f"its rms outside the drive frequency (DC or harmonics; > {tol}); the response "
                "would have harmonics the lock-ins do not see. Use pure sinusoidal forces at ω, "
                'or readout = "scope"'
            )

    # ------------------------------------------------------------------ measurement
    async def read(self, sample: SettledSample) -> SettledSample:
        """The lock-ins' waveforms in place of the scopes' on their nodes, after the filter's
        wait from the first fitted sample on (the network has settled from there)."""
        t_settled = sample.record.t_window
        await self.time.now()  # (a clock read the command sequence has always had here)
        xl, info = await self._read_lockins(sample.x, t_settled)
        out = sample.x.copy()
        for li in self.lockins.values():
            out[:, li.node] = xl[li.name]
        self.context.interlock.check(out, "lock-in response")
        # the scope reading of the same steady state is kept in the record
        record = replace(sample.record, lockin=info, x_scope=sample.x)
        return replace(sample, x=out, record=record)

    async def sleep(self, dt_s: float) -> None:
        """The filter's wait (counted as wait time)."""
        if dt_s > 0:
            await self.time.wait(dt_s)

    async def _range(self, x_scope: Array) -> bool:
        """Sensitivity from the scope's fundamental, status cleared (all lock-ins
        concurrently); True if a sensitivity changed."""
        t = self.context.grid_t
        m = t.size
        e = np.exp(-1j * (2 * math.pi / self.context.period_s) * t)
        opts = self.context.options

        async def range_(li: _Lockin) -> bool:
            drv = self.context.instruments.lockin(li.name)
            c1 = 2.0 / m * complex(np.sum(x_scope[:, li.node] * e))  # x = Re(c1 e^{iωt})
            expect = abs(li.gain) * abs(c1) / math.sqrt(2)
            fs = li.sensitivity_v
            floor = abs(li.gain) * opts.beta_resolution * opts.safety.max_response / math.sqrt(2)
            want = self.options.headroom * max(expect, floor)
            changed = False
            if not (_TIGHT * max(expect, floor) <= fs <= _COARSE * want):
                new = await drv.set_sensitivity(min(want, 1.0))
                changed = new != fs
                li.sensitivity_v = new
            await drv.status()  # clear the latched bits: the reading's window starts here
            return changed

        with self.time.io():
            changed = await asyncio.gather(*(range_(li) for li in self.lockins.values()))
        return any(changed)

    async def _read_lockins(
        self, x_scope: Array, t_settled: float
    ) -> tuple[dict[str, Array], LockinRecord]:
        """Sensitivity from the scope's fundamental, status cleared, the filter's wait after
        `t_settled`, one SNAP? X,Y per lock-in (concurrently), status checked; the waveforms on
        the period grid."""
        t = self.context.grid_t
        omega = 2 * math.pi / self.context.period_s
        restart = t_settled
        changed = await self._range(x_scope)
        now = await self.time.now()
        if changed:  # a gain change steps the filter input: its wait starts again
            restart = max(restart, now)
        await self.sleep(restart + self.settle_s - now)

        async def read(li: _Lockin) -> complex:
            drv = self.context.instruments.lockin(li.name)
            try:
                z = await drv.read_xy(check_overload=True)
            except InstrumentError as exc:
                raise InstrumentError(f"lock-in readout of node {li.node}: {exc}") from exc
            if not (math.isfinite(z.real) and math.isfinite(z.imag)):
                raise InstrumentError(
                    f"{li.name} (lock-in of node {li.node}): non-finite X, Y {z}; refused"
                )
            return complex(z)

        with self.time.io():
            zs = await asyncio.gather(*(read(li) for li in self.lockins.values()))
        self.reads += 1
        out: dict[str, Array] = {}
        readings: dict[str, LockinReading] = {}
        t_read = await self.time.now()
        for li, z in zip(self.lockins.values(), zs, strict=True):
            # √2: rms → peak; e^{−iφ}: the path's reference phase; e^{+iωτ}: its delay
            phasor = math.sqrt(2) * z * np.exp(1j * (omega * li.delay_s - li.phase_rad)) / li.gain
            out[li.name] = np.imag(phasor * np.exp(1j * omega * t))
            readings[li.name] = LockinReading(li.node, z, complex(phasor), li.sensitivity_v)
        return out, LockinRecord(t_read, t_settled, readings)


def _lockin_paths(context: ReadoutContext) -> dict[str, _Lockin]:
    """Per lock-in (wiring order, one per node) its path's calibration; CalibrationError when
    a path has no reference phase, ConfigError when no node is wired to a lock-in."""
    config, cal = context.config, context.calibration
    lockins: dict[str, _Lockin] = {}
    taken: set[int] = set()
    for i, sw in enumerate(config.wiring.sense):
        if config.instruments[sw.instrument].role != "lockin" or sw.node in taken:
            continue
        s = cal.sense(sw.instrument, sw.channel)
        if s.phase_rad is None:
            raise CalibrationError(
                f"calibration {context.calibration_version}: the lock-in path {sw.instrument} → "
                f"node {sw.node} has no reference phase (phase_rad); run the sensing and "
                "couplings calibration steps"
            )
        lockins[sw.instrument] = _Lockin(
            sw.instrument,
            i,
            sw.node,
            float(s.gain_v_per_unit.value),
            float(s.delay_s.value),
            float(s.phase_rad.value),
            float(s.offset_v.value),
        )
        taken.add(sw.node)
    if not lockins:
        raise ConfigError(
            'readout = "lockin": no [[wiring.sense]] entry goes to a lock-in (sr830, sr860)'
        )
    return lockins


def refuse_nonlinear(spec: NetworkSpec, cal: CalibrationFile) -> None:
    """A lock-in sees the fundamental only: refuse anything that makes the response non-sinusoidal."""
    if spec.nonlinearity != "identity":
        raise ConfigError(
            f'readout = "lockin" needs a linear ρ (network.nonlinearity = "identity"); this '
            f"network's ρ is {spec.nonlinearity!r}: its response has harmonics the lock-ins do "
            'not see (use readout = "scope")'
        )
    if cal.nonlinearity != "identity":
        raise ConfigError(
            f'readout = "lockin": the calibration file says the bench\'s ρ is {cal.nonlinearity!r}'
            ', not "identity"'
        )
    quartic = [q.node for q in spec.quartic if q.value != 0 or q.trainable]
    if quartic:
        raise ConfigError(f'readout = "lockin": quartic (Duffing) terms on nodes {quartic}')
    if spec.couplings and not isinstance(spec.modulations.mu, Constant):
        raise ConfigError(
            'readout = "lockin": a time-modulated μ(t) mixes frequencies (parametric response)'
        )
    biased = [b.node for b in spec.biases if b.value != 0 or b.trainable]
    if biased:
        raise ConfigError(
            f'readout = "lockin": bias forces on nodes {biased} (with linear ρ a static force: '
            "a DC response the lock-ins do not see)"
        )
