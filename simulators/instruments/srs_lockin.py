"""Emulators of the Stanford Research Systems SR830 (RS-232) and SR860 (Ethernet) lock-ins.

Protocol (SR830 manual ch. 5, SR860 manual ch. 4; PyMeasure's `srs/sr830.py`/`sr860.py` and the
QCoDeS SR86x driver as peers). Both speak SRS's own command language, not SCPI:

    <MNEMONIC>[?][ ]<p1>[,<p2>...]   several commands per line separated by `;`
    case-insensitive; input ends with CR or LF; each query's reply carries its own terminator:
    CR on the SR830's RS-232 port, LF on the SR860's socket.

- SR830: 4-letter mnemonics; embedded spaces anywhere are ignored (`OUTP?1`, `outp? 1`,
  `SENS5`, `PHAS12.34` all work, as PyMeasure sends them). Enumerated settings are indices
  (`SENS 0..26` = 2 nV..1 V, `OFLT 0..19` = 10 µs..30 ks, `OFSL 0..3` = 6..24 dB/oct).
  Reals are sent with 6 significant digits (`-0.000500266`, `-1.01026`, `1000`).
  `OUTX 0|1` selects the interface that answers; on RS-232 nothing answers after `OUTX 1`.
- SR860: mnemonics of any length (`FREQEXT?`); parameters also as tokens in short/long form
  (`RSRC EXT`, `OUTP? THeta`, `SNAP? X,Y`). `SCAL 0..27` = 1 V..1 nV (descending!),
  `OFLT 0..21` = 1 µs..30 ks, `OUTP? 0..3` = X, Y, R, θ. Reals: 7 significant digits of the
  float32 the instrument computes in (an assumption: the manual gives no format).

Errors are not queued as text: as on the instruments, a bad command sets the CMD bit (32) and an
out-of-range parameter or impossible action the EXE bit (16) of the standard event status
register (`*ESR?`, cleared on reading); the command is ignored and a bad query sends nothing.
`LIAS? [i]` (bit 0 input overload, 1 filter overload, 2 output overload, 3 reference unlock)
and `ERRS? [i]` are latched status bytes, cleared by reading (or bit i alone) and by `*CLS`.
The SR860's LIA register is emulated with the SR830's bit layout (an assumption).
Overloads are detected at each update (each received message); bit 1 is never set (the
filters' internal dynamic range is not modelled).

Physics (the twin-facing side, never reachable through the protocol):

- `source(t_s) -> volts` at the signal input for an array of clock times (amperes in the
  current-input modes), set in the constructor or with `connect_input`;
- `reference() -> (frequency_hz, phase_rad)`: the generator sync that the external reference
  input locks to; its rising edges are where 2π·f·t + phase ≡ 0 (mod 2π). Sampled once per
  update (at each received message): frequency changes take effect without a PLL transient.
  In internal mode the emulator's own oscillator (FREQ) is the reference.

Demodulation: z(t) = i·√2·v(t)·exp(-i(h·θ_ref(t) + φ)), so an input A·sin(h·θ_ref + θs) gives
X + iY = (A/√2)·exp(i(θs − φ)) (rms, in phase with a sine reference). z passes through n = 1..4
cascaded first-order RC stages (6..24 dB/oct) advanced on the emulator clock whenever a message
arrives: a reading taken too early is unsettled exactly as the cascade dictates. Numerics:

- τ < 200 reference periods (and no synchronous filter): z sampled 32 times per reference period
  (finer if τ/16 is shorter); the whole cascade is advanced with its exact discrete-time
  solution for an input linear between samples (first-order hold) — the 2h·f ripple of short
  time constants is present;
- longer τ, or SYNC on below 200 Hz detection frequency: z averaged over whole reference periods
  (the synchronous-filter limit) on a grid of τ/16 — residual ripple (< 4e-4 of the signal at
  6 dB/oct, far less at steeper slopes) is not modelled;
- only the last 40 τ before a reading are integrated (older input is forgotten to < 1e-13).

Noise: white Gaussian input noise of density `input_noise_v_per_rthz` (seeded `rng`), added after
demodulation as the exact discrete solution of the RC cascade driven by white noise (an
Ornstein–Uhlenbeck cascade), so X and Y each have σ = e_n·√ENBW with the manual's ENBW
(1/4τ, 1/8τ, 3/32τ, 5/64τ for 6..24 dB/oct), independent of how often one reads.

Outputs: X, Y saturate at ± full scale (sensitivity) and set the output-overload bit; the input
overloads when |v| exceeds the input range (SR860: IRNG; SR830: √2·min(1 V, FS·10^(reserve/20))
with 80/40/20 dB for high-reserve/normal/low-noise, an approximation of the manual's tables).
Resolution: SR830 values are rounded to a 16-bit signed mantissa (its TRCL storage format),
SR860 values to float32. Not modelled: AC-coupling high-pass, line notches, auxiliary inputs
(read 0 V), data buffers, auto functions, expands/offsets, the SR860's dual/chop references.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError
from physlearn.simulators.clock import TimeSource
from physlearn.simulators.history import HistoryError, history_start
from physlearn.simulators.instruments.scpi import MessageSplitter, ScpiInstrument, match_keyword
from physlearn.simulators.instruments.srs_filter import OutputFilter

logger = logging.getLogger(__name__)

Array = NDArray[np.float64]
Source = Callable[[Array], Array]


#: of a bounded source's history, the part the filter may use (the rest: slack for the history
#: moving on while a reading is computed)
HISTORY_USE = 0.8


Reference = Callable[[], tuple[float, float]]

#: SR830 sensitivities (index 0..26 of `SENS`), volts rms full scale.
SR830_SENSITIVITIES_V: tuple[float, ...] = (
    2e-9, 5e-9, 1e-8, 2e-8, 5e-8, 1e-7, 2e-7, 5e-7, 1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5,
    1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0,
)  # fmt: skip
#: SR830 time constants (index 0..19 of `OFLT`), seconds.
SR830_TIME_CONSTANTS_S: tuple[float, ...] = (
    1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3,
    1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4,
)  # fmt: skip
#: SR860 sensitivities (index 0..27 of `SCAL`): 1 V down to 1 nV.
SR860_SENSITIVITIES_V: tuple[float, ...] = (*reversed(SR830_SENSITIVITIES_V), 1e-9)
#: SR860 time constants (index 0..21 of `OFLT`), seconds.
SR860_TIME_CONSTANTS_S: tuple[float, ...] = (1e-6, 3e-6, *SR830_TIME_CONSTANTS_S)
#: SR860 input ranges (index 0..4 of `IRNG`), volts peak.
SR860_INPUT_RANGES_V: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03, 0.01)
#: Filter slopes (index 0..3 of `OFSL`), dB/octave; n stages = slope / 6.
FILTER_SLOPES_DB_PER_OCT: tuple[int, ...] = (6, 12, 18, 24)

# Status bits.
ESR_EXE, ESR_CMD = 16, 32
LIA_INPUT_OVERLOAD, LIA_FILTER_OVERLOAD, LIA_OUTPUT_OVERLOAD, LIA_UNLOCK = 1, 2, 4, 8

FINE_LIMIT_PERIODS = 200.0
WINDOW_TAUS = 40.0
SYNC_FILTER_MAX_HZ = 200.0
_SQRT2 = math.sqrt(2.0)


def enbw_hz(time_constant_s: float, n_stages: int) -> float:
    """Equivalent noise bandwidth of n cascaded RC stages: 1/4τ, 1/8τ, 3/32τ, 5/64τ."""
    factor = 0.25
    for k in range(1, n_stages):
        factor *= (2 * k - 1) / (2 * k)
    return factor / time_constant_s


def quantise_mantissa(value: float, bits: int) -> float:
    """Round `value` to `bits` significant binary digits (0, inf and nan unchanged)."""
    if value == 0.0 or not math.isfinite(value):
        return value
    mantissa, exponent = math.frexp(value)
    return math.ldexp(round(mantissa * 2.0**bits), exponent - bits)


def wrap_degrees(phase_deg: float) -> float:
    """Wrap a phase to (-180, 180] degrees."""
    return 180.0 - ((180.0 - phase_deg) % 360.0)


class _CommandFailed(Exception):
    """A command failed; `bit` is the event status bit to set (EXE or CMD)."""

    def __init__(self, bit: int, detail: str) -> None:
        super().__init__(detail)
        self.bit = bit
        self.detail = detail


def _exe(detail: str) -> _CommandFailed:
    return _CommandFailed(ESR_EXE, detail)


def _cmd(detail: str) -> _CommandFailed:
    return _CommandFailed(ESR_CMD, detail)


class _LineSplitter(MessageSplitter):
    """Messages end at CR or LF (either, as both SRS instruments accept); blank lines skipped."""

    def __init__(self) -> None:
        super().__init__(b"\n")
        self._line = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for byte in data:
            if byte in (0x0A, 0x0D):
                if self._line.strip():
                    out.append(bytes(self._line))
                self._line.clear()
            else:
                self._line.append(byte)
        return out

    def reset(self) -> None:
        self._line.clear()

    @property
    def pending_bytes(self) -> int:
        return len(self._line)


@dataclass(frozen=True)
class IndexSetting:
    """An enumerated setting sent and reported as an index 0..count-1 (tokens: SR860)."""

    count: int
    default: int
    tokens: tuple[str, ...] = ()
    reset: bool = True  # False: kept by *RST (interface settings)
    allowed: tuple[int, ...] | None = None  # emulated subset (others → EXE)


H = TypeVar("H", bound=Callable[..., Any])


def srs(mnemonic: str, *, query: bool) -> Callable[[H], H]:
    """Declare a handler of `MNEMONIC` (set form, or query form with `query=True`)."""

    def mark(func: H) -> H:
        declared = list(getattr(func, "_srs_commands", []))
        declared.append((mnemonic.upper(), query))
        func._srs_commands = declared  # type: ignore[attr-defined]
        return func

    return mark


_UNIT = re.compile(r"\s*(\*?[A-Za-z]+)\s*(\?)?(.*)", re.DOTALL)


def _window_start(lockin: Any, t0: float, t1: float, tau: float) -> float:
    """Where a lock-in's filter input starts: its last update, or ``WINDOW_TAUS`` τ before t1
    (older input is forgotten), within the source's kept history (`history_start`; warned
    once per emulator when that cuts into the filter's memory)."""
    start, kept = history_start(max(t0, t1 - WINDOW_TAUS * tau), t1, lockin._source, HISTORY_USE)
    if kept is not None and kept / tau < 20.0 and not lockin._warned_history:  # e^-20: noise
        lockin._warned_history = True
        logger.warning(
            "%s: the twin keeps %.3g s of signal history, less than the filter's memory "
            "after an idle gap (%g τ): the first reading after such a gap is off by up to "
            "e^(−%.3g); raise [twin] history_s",
            lockin.model,
            kept,
            WINDOW_TAUS,
            kept / tau,
        )
    return start


def _sample_in_history(
    sample: Callable[[float, bool], tuple[Array, float, float]],
    start: float,
    fresh: bool,
    t1: float,
    lockin: Any,
) -> tuple[Array, float, float]:
    """``sample(start, fresh)``; when the twin's history moved on while the reading was being
    computed (a busy machine), the filter restarts at the earliest time still kept."""
    try:
        return sample(start, fresh)
    except HistoryError as exc:
        if not exc.earliest_s < t1:
            raise
        logger.warning(
            "%s: the signal history moved on: filtering from %.6g s", lockin.model, exc.earliest_s
        )
        lockin.output_filter.forget()
        return sample(exc.earliest_s, True)


class SrsLockinEmulator(ScpiInstrument):
    """Shared machinery of the SRS lock-in emulators: parser, status bytes, demodulator."""

    manufacturer = "Stanford_Research_Systems"
    #: Remove every blank inside a command before parsing (SR830 behaviour).
    strip_blanks: ClassVar[bool] = False
    #: Significant decimal digits of real-number replies.
    reply_digits: ClassVar[int] = 6
    sensitivities_v: ClassVar[tuple[float, ...]] = ()
    time_constants_s: ClassVar[tuple[float, ...]] = ()
    sensitivity_mnemonic: ClassVar[str] = "SENS"
    max_frequency_hz: ClassVar[float] = 102e3
    min_frequency_hz: ClassVar[float] = 1e-3
    max_harmonic: ClassVar[int] = 19999
    #: (setting, index) that selects the external reference input.
    external_reference_setting: ClassVar[tuple[str, int]] = ("FMOD", 0)
    #: Significant binary digits of the instrument's internal numbers.
    mantissa_bits: ClassVar[int] = 15
    #: SNAP?/OUTP? code → quantity: x, y, r, theta, frequency, frequency_internal,
    #: frequency_external, phase, sine_level, noise, zero (nothing connected).
    output_codes: ClassVar[dict[int, str]] = {}
    index_settings: ClassVar[dict[str, IndexSetting]] = {}
    _handlers: ClassVar[dict[tuple[str, bool], str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[tuple[str, bool], str] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                for key in getattr(value, "_srs_commands", ()):
                    handlers[key] = attr
        cls._handlers = handlers

    def __init__(
        self,
        clock: TimeSource | None = None,
        *,
        source: Source | None = None,
        reference: Reference | None = None,
        rng: np.random.Generator | None = None,
        input_noise_v_per_rthz: float = 0.0,
        serial: str = "00000",
    ) -> None:
        if not (math.isfinite(input_noise_v_per_rthz) and input_noise_v_per_rthz >= 0.0):
            raise ConfigError(
                f"{self.model}: input_noise_v_per_rthz must be finite and >= 0, "
                f"got {input_noise_v_per_rthz!r}"
            )
        if input_noise_v_per_rthz > 0.0 and rng is None:
            raise ConfigError(f"{self.model}: input noise needs a seeded numpy Generator (rng)")
        self._source: Source | None = source
        self._warned_history = False
        self._reference: Reference | None = reference
        self._rng = rng
        self.input_noise_v_per_rthz = float(input_noise_v_per_rthz)
        self.settings: dict[str, int] = {}
        self.lia_status = 0
        self.lia_enable = 0
        self.error_status = 0
        self.error_enable = 0
        self.power_on_clear = 1
        self.output_filter = OutputFilter()
        self._t_s = 0.0
        self._internal_frequency_hz = 1000.0
        self._internal_t0_s = 0.0
        self._internal_phase0_rad = 0.0
        self._phase_deg = 0.0
        self._harmonic = 1
        self._unlocked = False
        self._resample = True
        self._averaging = False
        self._invalid_readings = 0
        self._invalid_value = math.nan
        self._invalid_used = False
        super().__init__(clock, serial=serial)
        self._t_s = self.clock.now()
        self._internal_t0_s = self._t_s

    # -- twin-side API -------------------------------------------------------------------------

    def connect_input(self, source: Source | None) -> None:
        """Cable the signal input: `source(t_s)` → volts at the input (None: open input)."""
        with self._lock:
            self._advance(self.clock.now())
            self._source = source

    def connect_reference(self, reference: Reference | None) -> None:
        """Cable the external reference input: `reference()` → (frequency_hz, phase_rad)."""
        with self._lock:
            self._advance(self.clock.now())
            self._reference = reference

    def filter_output(self) -> complex:
        """X + iY at the filter output now (input units, unsaturated, unquantised)."""
        with self._lock:
            self._advance(self.clock.now())
            return self.output_filter.output()

    def inject_lia_status(self, bits: int) -> None:
        """Fault hook: latch extra LIA status bits (e.g. an overload the twin did not cause)."""
        with self._lock:
            self.lia_status |= int(bits) & 0xFF

    def inject_invalid_readings(self, count: int = 1, value: float = math.nan) -> None:
        """Fault hook: the next `count` messages that read X, Y, R or θ (OUTP?, SNAP?) report
        `value` for every one of them (default NaN, sent as `nan`) — a corrupted reading that a
        driver must refuse rather than pass on."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count!r}")
        with self._lock:
            self._invalid_readings = int(count)
            self._invalid_value = float(value)

    def inject_error_status(self, bits: int) -> None:
        """Fault hook: latch error status bits (backup, RAM, ROM, DSP, math errors)."""
        with self._lock:
            self.error_status |= int(bits) & 0xFF

    # -- settings ------------------------------------------------------------------------------

    def reset_state(self) -> None:
        """*RST: every setting to its default (interface settings are kept)."""
        for name, spec in self.index_settings.items():
            if spec.reset or name not in self.settings:
                self.settings[name] = spec.default
        self.output_filter.set_stages(FILTER_SLOPES_DB_PER_OCT[self.settings["OFSL"]] // 6)
        self._set_internal_frequency(1000.0)
        self._phase_deg = 0.0
        self._harmonic = 1
        self.sine_level_v = self.default_sine_level_v()

    def default_sine_level_v(self) -> float:
        """Sine-output amplitude after *RST."""
        return 1.0

    @property
    def time_constant_s(self) -> float:
        """Selected time constant in seconds."""
        return self.time_constants_s[self.settings["OFLT"]]

    @property
    def n_stages(self) -> int:
        """Number of RC stages (filter slope / 6 dB/oct)."""
        return self.output_filter.n_stages

    @property
    def full_scale(self) -> float:
        """Full-scale sensitivity in input units (volts, or amperes in current modes)."""
        index = self.settings[self.sensitivity_mnemonic]
        return self.sensitivities_v[index] * self.current_scale()

    def current_scale(self) -> float:
        """Input units per volt of sensitivity (1 for voltage input, 1/gain for current)."""
        return 1.0

    def input_range(self) -> float:
        """Peak input (input units) above which the input overloads."""
        return math.inf

    def external_reference(self) -> bool:
        """True if the reference source is the external reference input."""
        name, index = self.external_reference_setting
        return self.settings[name] == index

    def sync_filter_on(self) -> bool:
        """True if the synchronous filter is on."""
        return bool(self.settings.get("SYNC", 0))

    def _set_internal_frequency(self, frequency_hz: float) -> None:
        t = self._t_s
        self._internal_phase0_rad = self._internal_phase(t)
        self._internal_t0_s = t
        self._internal_frequency_hz = frequency_hz

    def _internal_phase(self, t: float) -> float:
        cycles = self._internal_frequency_hz * (t - self._internal_t0_s)
        return self._internal_phase0_rad + 2.0 * math.pi * (cycles % 1.0)

    def reference_frequency_hz(self) -> float:
        """The reference frequency in use (measured external, or internal), Hz; nan if none."""
        if not self.external_reference():
            return self._internal_frequency_hz
        if self._reference is None:
            return math.nan
        return float(self._reference()[0])

    # -- the demodulator -----------------------------------------------------------------------

    def _reference_now(self) -> tuple[float, float, float] | None:
        """(frequency_hz, phase at t0_s in rad, t0_s) of the reference, or None if unlocked."""
        if self.external_reference():
            if self._reference is None:
                return None
            f, phase = self._reference()
            f, phase, t0 = float(f), float(phase), 0.0
        else:
            f, phase, t0 = (
                self._internal_frequency_hz,
                self._internal_phase0_rad,
                self._internal_t0_s,
            )
        ok = math.isfinite(f) and math.isfinite(phase)
        ok = ok and self.min_frequency_hz <= f <= self.max_frequency_hz
        if not ok or self._harmonic * f > self.max_frequency_hz:
            return None
        return f, phase, t0

    def _demodulate(self, t: Array, ref: tuple[float, float, float]) -> tuple[NDArray[Any], float]:
        """z(t) and max |v| for the sample times t (any shape)."""
        f, phase0, t0 = ref
        v = np.zeros(t.shape) if self._source is None else np.asarray(self._source(t), float)
        if v.shape != t.shape:
            raise ConfigError(f"{self.model}: source returned shape {v.shape} for times {t.shape}")
        cycles = f * (t - t0)
        theta = 2.0 * np.pi * (cycles - np.floor(cycles)) + phase0
        angle = self._harmonic * theta + math.radians(self._phase_deg)
        peak = float(np.max(np.abs(v))) if v.size else 0.0
        return 1j * _SQRT2 * v * np.exp(-1j * angle), peak

    def _advance(self, t1: float) -> None:
        """Advance the demodulator and filters from the last update to `t1` (clock seconds)."""
        t0 = self._t_s
        if not t1 > t0:
            return
        tau = self.time_constant_s
        self._advance_noise((t1 - t0) / tau)
        ref = self._reference_now()
        was_unlocked = self._unlocked
        self._unlocked = ref is None
        if ref is None:
            self.lia_status |= LIA_UNLOCK
            self.output_filter.decay((t1 - t0) / tau)
        else:
            start = _window_start(self, t0, t1, tau)
            if start > t0:
                self.output_filter.forget()  # older input is forgotten (< 1e-13)
            period = 1.0 / ref[0]
            sync = self.sync_filter_on() and self._harmonic * ref[0] < SYNC_FILTER_MAX_HZ
            averaging = sync or tau > FINE_LIMIT_PERIODS * period
            # The filter input at `start` is sampled anew after a gap, an unlock, a change of
            # settings or of numerical mode; otherwise the last sample of the previous update
            # continues the first-order hold.
            fresh = start > t0 or was_unlocked or self._resample or averaging != self._averaging
            self._resample = False
            self._averaging = averaging

            def demodulate(t: Array) -> tuple[NDArray[Any], float]:
                return self._demodulate(t, ref)

            sample = (
                self.output_filter.period_averages if averaging else self.output_filter.fine_samples
            )
            x, dt_step, peak = _sample_in_history(
                lambda t_from, new: sample(demodulate, t_from, t1, tau, period, new),
                start,
                fresh,
                t1,
                self,
            )
            if peak > self.input_range():
                self.lia_status |= LIA_INPUT_OVERLOAD
            self.output_filter.run(x, dt_step / tau)
        self._t_s = t1
        out = self.output_filter.output()
        fs = self.full_scale
        if abs(out.real) > fs or abs(out.imag) > fs:
            self.lia_status |= LIA_OUTPUT_OVERLOAD

    def _advance_noise(self, r: float) -> None:
        """The filter's noise part over Δ = r·τ (nothing without input noise)."""
        if self.input_noise_v_per_rthz == 0.0 or self._rng is None:
            return
        scale = self.current_scale()
        psd = 0.5 * (self.input_noise_v_per_rthz * scale) ** 2  # two-sided, per X/Y component
        tau = self.time_constant_s
        self.output_filter.add_noise(r, psd / tau, self._rng)

    # -- reported values -----------------------------------------------------------------------

    def quantise(self, value: float) -> float:
        """`value` at the instrument's internal number resolution."""
        return quantise_mantissa(value, self.mantissa_bits)

    def format_real(self, value: float) -> str:
        """A real number as the instrument sends it."""
        return f"{value:.{self.reply_digits}g}"

    def outputs(self) -> tuple[float, float, float, float]:
        """(X, Y, R, θ in degrees) as reported now: saturated at full scale, quantised."""
        with self._lock:
            self._advance(self.clock.now())
            out = self.output_filter.output()
            fs = self.full_scale
        x = self.quantise(min(max(out.real, -fs), fs))
        y = self.quantise(min(max(out.imag, -fs), fs))
        r = self.quantise(math.hypot(x, y))
        theta = self.quantise(math.degrees(math.atan2(y, x)))
        with self._lock:
            if self._invalid_readings > 0:
                self._invalid_used = True
                bad = self._invalid_value
                return bad, bad, bad, bad
        return x, y, r, theta

    def noise_sigma(self) -> float:
        """Expected σ of X (and of Y) from the input noise, input units."""
        return (
            self.input_noise_v_per_rthz
            * self.current_scale()
            * math.sqrt(enbw_hz(self.time_constant_s, self.output_filter.n_stages))
        )

    # -- message processing --------------------------------------------------------------------

    def message_splitter(self) -> MessageSplitter:
        return _LineSplitter()

    def replies_enabled(self) -> bool:
        """False when the instrument sends its replies to another interface."""
        return True

    def process(self, message: bytes) -> bytes:
        """Execute one line of `;`-separated commands; each reply carries its terminator."""
        with self._lock:
            self.received.append(message)
            self._advance(self.clock.now())
            replies: list[str] = []
            for raw in message.split(b";"):
                try:
                    text = raw.decode("ascii")
                except UnicodeDecodeError:
                    self.esr |= ESR_CMD
                    logger.debug("%s: non-ASCII command %r", self.model, raw)
                    continue
                if self.strip_blanks:
                    text = "".join(text.split())
                if not text.strip():
                    continue
                try:
                    reply = self._execute(text)
                    self._resample = True
                except _CommandFailed as exc:
                    self.esr |= exc.bit
                    logger.debug("%s: %r refused: %s", self.model, text, exc.detail)
                    continue
                if reply is not None:
                    replies.append(reply)
            if self._invalid_used:
                self._invalid_used = False
                self._invalid_readings -= 1
            if not replies:
                return b""
            if not self.replies_enabled():
                logger.debug("%s: replies go to the other interface (OUTX)", self.model)
                return b""
            term = self.response_terminator
            return b"".join(r.encode("ascii") + term for r in replies)

    def _execute(self, text: str) -> str | None:
        m = _UNIT.fullmatch(text)
        if m is None:
            raise _cmd("not a command")
        mnemonic = m.group(1).upper()
        query = m.group(2) is not None
        rest = m.group(3).strip()
        params = [p.strip() for p in rest.split(",")] if rest else []
        if any(not p for p in params):
            raise _cmd("empty parameter")
        spec = self.index_settings.get(mnemonic)
        if spec is not None:
            return self._index_setting(mnemonic, spec, query, params)
        attr = self._handlers.get((mnemonic, query))
        if attr is None:
            raise _cmd(f"unknown command {mnemonic}{'?' if query else ''}")
        result: str | None = getattr(self, attr)(params)
        return result

    def _index_setting(
        self, name: str, spec: IndexSetting, query: bool, params: list[str]
    ) -> str | None:
        if query:
            if params:
                raise _cmd(f"{name}? takes no parameter")
            return str(self.settings[name])
        if len(params) != 1:
            raise _cmd(f"{name} takes one parameter")
        value = self._parse_index(params[0], spec.count, spec.tokens)
        if spec.allowed is not None and value not in spec.allowed:
            raise _exe(f"{name} {value} is not emulated")
        self.settings[name] = value
        if name == "OFSL":
            self.output_filter.set_stages(FILTER_SLOPES_DB_PER_OCT[value] // 6)
        return None

    def _parse_index(self, text: str, count: int, tokens: tuple[str, ...] = ()) -> int:
        for i, token in enumerate(tokens):
            if match_keyword(text, token):
                return i
        value = self._parse_real(text)
        index = round(value)
        if not 0 <= index < count:
            raise _exe(f"index {text} outside 0..{count - 1}")
        return index

    @staticmethod
    def _parse_real(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise _cmd(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise _cmd(f"{text!r} is not a finite number")
        return value

    def _bit_register(self, params: list[str], value: int, width: int) -> tuple[str, int]:
        """Reply to `REG? [i]` and the register value left after reading (bits cleared)."""
        if not params:
            return str(value), 0
        if len(params) != 1:
            raise _cmd("one bit number at most")
        bit = self._parse_index(params[0], width)
        return str((value >> bit) & 1), value & ~(1 << bit)

    def _enable_register(self, params: list[str], width: int) -> int:
        if len(params) != 1:
            raise _cmd("one value expected")
        return self._parse_index(params[0], 1 << width)

    # -- common commands -----------------------------------------------------------------------

    @srs("*IDN", query=True)
    def _idn_q(self, params: list[str]) -> str:
        return self.identity()

    @srs("*RST", query=False)
    def _rst(self, params: list[str]) -> None:
        self.reset_state()

    @srs("*CLS", query=False)
    def _cls(self, params: list[str]) -> None:
        self.esr = 0
        self.lia_status = 0
        self.error_status = 0

    @srs("*ESR", query=True)
    def _esr_q(self, params: list[str]) -> str:
        reply, self.esr = self._bit_register(params, self.esr, 8)
        return reply

    @srs("*ESE", query=False)
    def _ese(self, params: list[str]) -> None:
        self.ese = self._enable_register(params, 8)

    @srs("*ESE", query=True)
    def _ese_q(self, params: list[str]) -> str:
        return str(self.ese)

    @srs("*SRE", query=False)
    def _sre(self, params: list[str]) -> None:
        self.sre = self._enable_register(params, 8)

    @srs("*SRE", query=True)
    def _sre_q(self, params: list[str]) -> str:
        return str(self.sre)

    @srs("*STB", query=True)
    def _stb_q(self, params: list[str]) -> str:
        stb = 0b11  # no scan in progress, no command in progress
        stb |= 4 if self.error_status & self.error_enable else 0
        stb |= 8 if self.lia_status & self.lia_enable else 0
        stb |= 32 if self.esr & self.ese else 0
        stb |= 64 if stb & self.sre & ~64 else 0
        if params:
            return str((stb >> self._parse_index(params[0], 8)) & 1)
        return str(stb)

    @srs("*PSC", query=False)
    def _psc(self, params: list[str]) -> None:
        self.power_on_clear = self._enable_register(params, 1)

    @srs("*PSC", query=True)
    def _psc_q(self, params: list[str]) -> str:
        return str(self.power_on_clear)

    @srs("*OPC", query=False)
    def _opc(self, params: list[str]) -> None:
        self.esr |= 1

    @srs("*OPC", query=True)
    def _opc_q(self, params: list[str]) -> str:
        return "1"

    @srs("*WAI", query=False)
    def _wai(self, params: list[str]) -> None:
        """Every emulated command completes when processed."""

    @srs("LIAS", query=True)
    def _lias_q(self, params: list[str]) -> str:
        reply, self.lia_status = self._bit_register(params, self.lia_status, 8)
        return reply

    @srs("LIAE", query=False)
    def _liae(self, params: list[str]) -> None:
        self.lia_enable = self._enable_register(params, 8)

    @srs("LIAE", query=True)
    def _liae_q(self, params: list[str]) -> str:
        return str(self.lia_enable)

    @srs("ERRS", query=True)
    def _errs_q(self, params: list[str]) -> str:
        reply, self.error_status = self._bit_register(params, self.error_status, 8)
        return reply

    @srs("ERRE", query=False)
    def _erre(self, params: list[str]) -> None:
        self.error_enable = self._enable_register(params, 8)

    @srs("ERRE", query=True)
    def _erre_q(self, params: list[str]) -> str:
        return str(self.error_enable)

    # -- reference and phase -------------------------------------------------------------------

    def _check_harmonic(self, harmonic: int, frequency_hz: float) -> None:
        if not 1 <= harmonic <= self.max_harmonic:
            raise _exe(f"harmonic {harmonic} outside 1..{self.max_harmonic}")
        if math.isfinite(frequency_hz) and harmonic * frequency_hz > self.max_frequency_hz:
            raise _exe(f"harmonic {harmonic} × {frequency_hz} Hz exceeds the maximum")

    @srs("HARM", query=False)
    def _harm(self, params: list[str]) -> None:
        if len(params) != 1:
            raise _cmd("HARM takes one parameter")
        value = self._parse_real(params[0])
        harmonic = round(value)
        self._check_harmonic(harmonic, self.reference_frequency_hz())
        self._harmonic = harmonic

    @srs("HARM", query=True)
    def _harm_q(self, params: list[str]) -> str:
        return str(self._harmonic)

    def _one_real(self, name: str, params: list[str], lo: float, hi: float) -> float:
        if len(params) != 1:
            raise _cmd(f"{name} takes one parameter")
        value = self._parse_real(params[0])
        if not lo <= value <= hi:
            raise _exe(f"{name} {value} outside [{lo}, {hi}]")
        return value

    @srs("PHAS", query=True)
    def _phas_q(self, params: list[str]) -> str:
        return self.format_real(self._phase_deg)

    @srs("SLVL", query=True)
    def _slvl_q(self, params: list[str]) -> str:
        return self.format_real(self.sine_level_v)

    # -- outputs -------------------------------------------------------------------------------

    def output_value(self, code: int) -> float:
        """Value of SNAP?/OUTP? parameter `code` (numbering from `output_codes`)."""
        quantity = self.output_codes.get(code, "zero")
        if quantity in ("x", "y", "r", "theta"):
            return self.outputs()[("x", "y", "r", "theta").index(quantity)]
        if quantity == "frequency":
            f = self.reference_frequency_hz()
        elif quantity == "frequency_internal":
            f = self._internal_frequency_hz
        elif quantity == "frequency_external":
            f = float(self._reference()[0]) if self._reference is not None else 0.0
        elif quantity == "phase":
            f = self._phase_deg
        elif quantity == "sine_level":
            f = self.sine_level_v
        elif quantity == "noise":
            f = self.noise_sigma()
        else:
            f = 0.0
        return self.quantise(f) if math.isfinite(f) else 0.0

    def _snap(
        self, params: list[str], lo: int, hi: int, codes: int, tokens: tuple[str, ...]
    ) -> str:
        if not lo <= len(params) <= hi:
            raise _cmd(f"SNAP? takes {lo}..{hi} parameters")
        values = [self.output_value(self._parse_index(p, codes, tokens)) for p in params]
        return ",".join(self.format_real(v) for v in values)


class Sr830Emulator(SrsLockinEmulator):
    """Stanford Research Systems SR830 DSP lock-in amplifier on its RS-232 port."""

    model = "SR830"
    firmware = "ver1.07"
    input_terminator = b"\r"
    response_terminator = b"\r"
    strip_blanks = True
    reply_digits = 6
    sensitivities_v = SR830_SENSITIVITIES_V
    time_constants_s = SR830_TIME_CONSTANTS_S
    sensitivity_mnemonic = "SENS"
    max_frequency_hz = 102e3
    min_frequency_hz = 1e-3
    max_harmonic = 19999
    external_reference_setting = ("FMOD", 0)
    mantissa_bits = 15
    output_codes = {  # noqa: RUF012 - class-level protocol table
        1: "x", 2: "y", 3: "r", 4: "theta", 9: "frequency", 10: "x", 11: "y",
    }  # fmt: skip
    #: Dynamic reserve per RMOD index (high reserve, normal, low noise), dB (approximate).
    reserve_db: ClassVar[tuple[float, ...]] = (80.0, 40.0, 20.0)
    index_settings = {  # noqa: RUF012 - class-level protocol table
        "OUTX": IndexSetting(2, 0, reset=False),
        "FMOD": IndexSetting(2, 1),
        "RSLP": IndexSetting(3, 0),
        "ISRC": IndexSetting(4, 0),
        "IGND": IndexSetting(2, 0),
        "ICPL": IndexSetting(2, 0),
        "ILIN": IndexSetting(4, 0),
        "SENS": IndexSetting(27, 26),
        "RMOD": IndexSetting(3, 1),
        "OFLT": IndexSetting(20, 8),
        "OFSL": IndexSetting(4, 1),
        "SYNC": IndexSetting(2, 0),
    }

    def __init__(
        self,
        clock: TimeSource | None = None,
        *,
        source: Source | None = None,
        reference: Reference | None = None,
        rng: np.random.Generator | None = None,
        input_noise_v_per_rthz: float = 0.0,
        serial: str = "86021",
        interface: str = "rs232",
    ) -> None:
        if interface not in ("rs232", "gpib"):
            raise ConfigError(f"SR830: interface must be 'rs232' or 'gpib', not {interface!r}")
        self.interface = interface
        super().__init__(
            clock,
            source=source,
            reference=reference,
            rng=rng,
            input_noise_v_per_rthz=input_noise_v_per_rthz,
            serial=serial,
        )

    def identity(self) -> str:
        return f"{self.manufacturer},{self.model},s/n{self.serial},{self.firmware}"

    def replies_enabled(self) -> bool:
        return self.settings["OUTX"] == (0 if self.interface == "rs232" else 1)

    def current_scale(self) -> float:
        return {2: 1e-6, 3: 1e-8}.get(self.settings["ISRC"], 1.0)

    def input_range(self) -> float:
        reserve = self.reserve_db[self.settings["RMOD"]]
        fs_v = self.sensitivities_v[self.settings["SENS"]]
        return _SQRT2 * min(1.0, fs_v * 10.0 ** (reserve / 20.0)) * self.current_scale()

    @srs("FREQ", query=False)
    def _freq(self, params: list[str]) -> None:
        value = self._one_real("FREQ", params, self.min_frequency_hz, self.max_frequency_hz)
        if self.external_reference():
            raise _exe("FREQ can be set only with the internal reference")
        value = round(value, 4) if value < 10.0 else float(f"{value:.5g}")  # 5 digits or 0.1 mHz
        self._check_harmonic(self._harmonic, value)
        self._set_internal_frequency(value)

    @srs("FREQ", query=True)
    def _freq_q(self, params: list[str]) -> str:
        f = self.reference_frequency_hz()
        if not math.isfinite(f):
            return "0"
        if self.external_reference():
            f = float(f"{f:.5g}")  # the frequency counter's 5 digits
        return self.format_real(f)

    @srs("PHAS", query=False)
    def _phas(self, params: list[str]) -> None:
        value = self._one_real("PHAS", params, -360.0, 729.99)
        self._phase_deg = wrap_degrees(round(value, 2))

    @srs("SLVL", query=False)
    def _slvl(self, params: list[str]) -> None:
        value = self._one_real("SLVL", params, 0.004, 5.0)
        self.sine_level_v = round(value / 0.002) * 0.002

    @srs("OUTP", query=True)
    def _outp_q(self, params: list[str]) -> str:
        if len(params) != 1:
            raise _cmd("OUTP? takes one parameter")
        code = self._parse_index(params[0], 5)
        if code == 0:
            raise _exe("OUTP? 0")
        return self.format_real(self.output_value(code))

    @srs("SNAP", query=True)
    def _snap_q(self, params: list[str]) -> str:
        for p in params:
            if self._parse_real(p) == 0:
                raise _exe("SNAP? parameter 0")
        return self._snap(params, 2, 6, 12, ())

    @srs("OAUX", query=True)
    def _oaux_q(self, params: list[str]) -> str:
        if len(params) != 1 or not 1 <= self._parse_index(params[0], 5):
            raise _exe("OAUX? needs 1..4")
        return self.format_real(0.0)


_SR860_OUTPUTS = ("X", "Y", "R", "THeta")
_SR860_SNAP = (
    *_SR860_OUTPUTS, "IN1", "IN2", "IN3", "IN4", "XNOise", "YNOise", "OUT1", "OUT2",
    "PHAse", "SAMp", "LEVel", "FInt", "FExt",
)  # fmt: skip


class Sr860Emulator(SrsLockinEmulator):
    """Stanford Research Systems SR860 lock-in amplifier on its Ethernet socket."""

    model = "SR860"
    firmware = "V1.51"
    input_terminator = b"\n"
    response_terminator = b"\n"
    strip_blanks = False
    reply_digits = 7
    sensitivities_v = SR860_SENSITIVITIES_V
    time_constants_s = SR860_TIME_CONSTANTS_S
    sensitivity_mnemonic = "SCAL"
    max_frequency_hz = 500e3
    min_frequency_hz = 1e-3
    max_harmonic = 99
    external_reference_setting = ("RSRC", 1)
    mantissa_bits = 24  # float32
    output_codes = {  # noqa: RUF012 - class-level protocol table
        0: "x", 1: "y", 2: "r", 3: "theta", 8: "noise", 9: "noise", 12: "phase",
        13: "sine_level", 15: "frequency_internal", 16: "frequency_external",
    }  # fmt: skip
    index_settings = {  # noqa: RUF012 - class-level protocol table
        "RSRC": IndexSetting(4, 0, ("INTernal", "EXTernal", "DUAL", "CHOP"), allowed=(0, 1)),
        "RTRG": IndexSetting(3, 0, ("SINe", "POSttl", "NEGttl")),
        "IVMD": IndexSetting(2, 0, ("VOLTage", "CURRent")),
        "ISRC": IndexSetting(2, 0, ("A", "A-B")),
        "ICPL": IndexSetting(2, 0, ("AC", "DC")),
        "IGND": IndexSetting(2, 0, ("FLOat", "GROund")),
        "IRNG": IndexSetting(5, 0),
        "ICUR": IndexSetting(2, 0, ("1MEG", "100MEG")),
        "SCAL": IndexSetting(28, 0),
        "OFLT": IndexSetting(22, 10),
        "OFSL": IndexSetting(4, 1),
        "SYNC": IndexSetting(2, 0, ("OFF", "ON")),
    }

    def __init__(
        self,
        clock: TimeSource | None = None,
        *,
        source: Source | None = None,
        reference: Reference | None = None,
        rng: np.random.Generator | None = None,
        input_noise_v_per_rthz: float = 0.0,
        serial: str = "003693",
    ) -> None:
        super().__init__(
            clock,
            source=source,
            reference=reference,
            rng=rng,
            input_noise_v_per_rthz=input_noise_v_per_rthz,
            serial=serial,
        )

    def identity(self) -> str:
        return f"{self.manufacturer},{self.model},{self.serial},{self.firmware}"

    def current_scale(self) -> float:
        if self.settings["IVMD"] == 0:
            return 1.0
        return 1e-6 if self.settings["ICUR"] == 0 else 1e-8

    def input_range(self) -> float:
        if self.settings["IVMD"] == 1:
            return math.inf  # current input: its overload is not modelled
        return SR860_INPUT_RANGES_V[self.settings["IRNG"]]

    def format_real(self, value: float) -> str:
        return f"{float(np.float32(value)):.{self.reply_digits}g}"

    @srs("FREQ", query=False)
    def _freq(self, params: list[str]) -> None:
        value = self._one_real("FREQ", params, self.min_frequency_hz, self.max_frequency_hz)
        if self.external_reference():
            raise _exe("FREQ can be set only with the internal reference")
        self._check_harmonic(self._harmonic, value)
        self._set_internal_frequency(float(np.float32(value)))

    @srs("FREQ", query=True)
    def _freq_q(self, params: list[str]) -> str:
        f = self.reference_frequency_hz()
        return self.format_real(f if math.isfinite(f) else 0.0)

    @srs("FREQINT", query=False)
    def _freqint(self, params: list[str]) -> None:
        value = self._one_real("FREQINT", params, self.min_frequency_hz, self.max_frequency_hz)
        self._check_harmonic(self._harmonic, value)
        self._set_internal_frequency(float(np.float32(value)))

    @srs("FREQINT", query=True)
    def _freqint_q(self, params: list[str]) -> str:
        return self.format_real(self._internal_frequency_hz)

    @srs("FREQEXT", query=True)
    def _freqext_q(self, params: list[str]) -> str:
        f = float(self._reference()[0]) if self._reference is not None else 0.0
        return self.format_real(f if math.isfinite(f) else 0.0)

    @srs("FREQDET", query=True)
    def _freqdet_q(self, params: list[str]) -> str:
        f = self.reference_frequency_hz()
        return self.format_real(self._harmonic * f if math.isfinite(f) else 0.0)

    @srs("PHAS", query=False)
    def _phas(self, params: list[str]) -> None:
        value = self._one_real("PHAS", params, -360000.0, 360000.0)
        self._phase_deg = wrap_degrees(float(np.float32(value)))

    @srs("SLVL", query=False)
    def _slvl(self, params: list[str]) -> None:
        self.sine_level_v = float(np.float32(self._one_real("SLVL", params, 1e-9, 2.0)))

    @srs("ENBW", query=True)
    def _enbw_q(self, params: list[str]) -> str:
        return self.format_real(enbw_hz(self.time_constant_s, self.n_stages))

    @srs("OUTP", query=True)
    def _outp_q(self, params: list[str]) -> str:
        if len(params) != 1:
            raise _cmd("OUTP? takes one parameter")
        code = self._parse_index(params[0], 4, _SR860_OUTPUTS)
        return self.format_real(self.output_value(code))

    @srs("SNAP", query=True)
    def _snap_q(self, params: list[str]) -> str:
        return self._snap(params, 2, 3, len(_SR860_SNAP), _SR860_SNAP)

    @srs("OAUX", query=True)
    def _oaux_q(self, params: list[str]) -> str:
        if len(params) != 1:
            raise _cmd("OAUX? takes one parameter")
        self._parse_index(params[0], 4)
        return self.format_real(0.0)
