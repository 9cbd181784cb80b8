"""Drivers of the Stanford Research Systems SR830 (RS-232) and SR860 (Ethernet) lock-ins.

    config = Sr830Config(name="lockin1", transport=TransportSettings(
        resource="ASRL/dev/ttyUSB0::INSTR", baud_rate=9600,
        read_termination="\\r", write_termination="\\r"))
    async with Sr830(config) as lockin:              # OUTX 0, then *IDN? check
        await lockin.set_reference_external()
        await lockin.set_sensitivity(5e-3)           # smallest table entry >= 5 mV
        await lockin.set_time_constant(0.1, slope_db_per_oct=24)
        await asyncio.sleep(await lockin.auto_settle_time_s())
        z = await lockin.read_xy()                   # complex, volts rms

SI units throughout (phases in radians, θ outputs in radians). Settings are tables of indices
on the instruments (PyMeasure's instruments-as-data style: `sensitivities_v`, `time_constants_s`
below); every value is checked before anything is written — NaN, inf and values outside the
table raise `LimitError`. The SRS lock-ins have no SCPI error queue: after each write the
driver reads `*ESR?` (when `check_errors`) and raises `InstrumentCommandError` with the bit that
was set (32: command error, 16: execution error/out of range, 4: query error). This read also
guarantees that the write was executed before the method returns.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from scipy.special import gammainccinv

from physlearn.drivers.scpi_instrument import ScpiInstrument, ScpiInstrumentConfig
from physlearn.drivers.transport import Transport
from physlearn.errors import InstrumentError, InstrumentProtocolError, LimitError

logger = logging.getLogger(__name__)

SR830_SENSITIVITIES_V: tuple[float, ...] = (
    2e-9, 5e-9, 1e-8, 2e-8, 5e-8, 1e-7, 2e-7, 5e-7, 1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5,
    1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0,
)  # fmt: skip
SR830_TIME_CONSTANTS_S: tuple[float, ...] = (
    1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3,
    1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4,
)  # fmt: skip
SR860_SENSITIVITIES_V: tuple[float, ...] = (*reversed(SR830_SENSITIVITIES_V), 1e-9)
SR860_TIME_CONSTANTS_S: tuple[float, ...] = (1e-6, 3e-6, *SR830_TIME_CONSTANTS_S)
SR860_INPUT_RANGES_V: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03, 0.01)
FILTER_SLOPES_DB_PER_OCT: tuple[int, ...] = (6, 12, 18, 24)

_ESR_MESSAGES = (
    (32, "command error: illegal or unknown command"),
    (16, "execution error: parameter out of range or command not possible now"),
    (4, "query error: output queue overflow"),
    (1, "input queue overflow"),
)
_REL_TOL = 1e-9

Output = Literal["x", "y", "r", "theta", "frequency"]
Coupling = Literal["ac", "dc"]


def settle_multiple(n_stages: int, tolerance: float = 1e-4) -> float:
    """Time, in units of τ, after which the step response of n cascaded RC stages is within
    `tolerance` (relative) of its final value: Q(n, x) = e^-x Σ_{k<n} x^k/k! = tolerance.

    tolerance 1e-4 gives 9.21 τ (6 dB/oct), 11.76 τ (12), 13.93 τ (18), 15.91 τ (24).
    """
    if not 1 <= n_stages <= 4:
        raise LimitError(f"filter has 1..4 stages, not {n_stages}")
    if not (math.isfinite(tolerance) and 0.0 < tolerance < 1.0):
        raise LimitError(f"settling tolerance must be in (0, 1), got {tolerance!r}")
    return float(gammainccinv(n_stages, tolerance))


def smallest_at_least(value: float, table: tuple[float, ...], what: str) -> int:
    """Index of the smallest entry of `table` >= `value` (equal within 1e-9 relative)."""
    if not math.isfinite(value) or value <= 0.0:
        raise LimitError(f"{what}: {value!r} is not a finite positive number")
    candidates = [(v, i) for i, v in enumerate(table) if v >= value * (1.0 - _REL_TOL)]
    if not candidates:
        raise LimitError(f"{what}: {value!r} exceeds the largest table entry {max(table)!r}")
    return min(candidates)[1]


def exact_index(value: float, table: tuple[float, ...], what: str) -> int:
    """Index of the table entry equal to `value` within 1e-9 relative."""
    if not math.isfinite(value):
        raise LimitError(f"{what}: {value!r} is not finite")
    for i, v in enumerate(table):
        if abs(v - value) <= _REL_TOL * v:
            return i
    raise LimitError(f"{what}: {value!r} is not a table entry {table}")


@dataclass(frozen=True)
class LockinStatus:
    """The latched LIA status byte (reading it clears it on the instrument)."""

    raw: int
    input_overload: bool
    filter_overload: bool
    output_overload: bool
    reference_unlock: bool

    @classmethod
    def from_byte(cls, raw: int) -> LockinStatus:
        """Decode bits 0..3 of `LIAS?`."""
        return cls(raw, bool(raw & 1), bool(raw & 2), bool(raw & 4), bool(raw & 8))

    @property
    def any_overload(self) -> bool:
        """True if the input, the filters or the outputs overloaded."""
        return self.input_overload or self.filter_overload or self.output_overload


class SrsLockinConfig(ScpiInstrumentConfig):
    """Configuration of an SRS lock-in: transport, identity and the error check."""

    error_query: str = "*ESR?"


class Sr830Config(SrsLockinConfig):
    """SR830 on RS-232 (9600 baud, replies end with CR)."""

    idn_pattern: str = r"^Stanford_Research_Systems,SR830,"


class Sr860Config(SrsLockinConfig):
    """SR860 on Ethernet (raw socket, replies end with LF)."""

    idn_pattern: str = r"^Stanford_Research_Systems,SR860,"


class SrsLockin(ScpiInstrument):
    """Shared driver of the SRS lock-ins; subclasses hold the model's tables and codes."""

    config: SrsLockinConfig
    sensitivities_v: ClassVar[tuple[float, ...]] = SR830_SENSITIVITIES_V
    #: The sensitivity index of `sensitivities_v[i]` is i (ascending) or n-1-i (descending).
    sensitivity_descending: ClassVar[bool] = False
    sensitivity_command: ClassVar[str] = "SENS"
    time_constants_s: ClassVar[tuple[float, ...]] = SR830_TIME_CONSTANTS_S
    reference_command: ClassVar[str] = "FMOD"
    reference_external_index: ClassVar[int] = 0
    reference_internal_index: ClassVar[int] = 1
    max_harmonic: ClassVar[int] = 19999
    min_frequency_hz: ClassVar[float] = 1e-3
    max_frequency_hz: ClassVar[float] = 102e3
    output_codes: ClassVar[dict[str, int]] = {}
    max_snap: ClassVar[int] = 6
    phase_decimals: ClassVar[int] = 2
    input_configs: ClassVar[tuple[str, ...]] = ("a", "a-b")

    def __init__(self, config: SrsLockinConfig, transport: Transport | None = None) -> None:
        super().__init__(config, transport)

    # -- error reporting -----------------------------------------------------------------------

    async def read_errors(self) -> list[tuple[int, str]]:
        """Read (and clear) `*ESR?`; one (bit, message) entry per error bit that was set."""
        esr = await self.query_int("*ESR?")
        return [(bit, message) for bit, message in _ESR_MESSAGES if esr & bit]

    async def query_int(self, command: str) -> int:
        """Send a query, parse the reply as one integer."""
        reply = await self.query(command)
        try:
            return int(reply)
        except ValueError:
            raise InstrumentProtocolError(
                f"{self.name} ({self.resource}): reply {reply!r} to {command!r} is not an integer"
            ) from None

    # -- reference -----------------------------------------------------------------------------

    async def set_reference_external(self) -> None:
        """Lock to the external reference input (the generator's sync)."""
        await self.write(f"{self.reference_command} {self.reference_external_index}")

    async def set_reference_internal(self, frequency_hz: float) -> None:
        """Use the internal oscillator at `frequency_hz`."""
        if not (
            math.isfinite(frequency_hz)
            and self.min_frequency_hz <= frequency_hz <= self.max_frequency_hz
        ):
            raise LimitError(
                f"{self.name}: internal frequency {frequency_hz!r} Hz outside "
                f"[{self.min_frequency_hz}, {self.max_frequency_hz}] Hz"
            )
        await self.write(f"{self.reference_command} {self.reference_internal_index}")
        await self.write(f"FREQ {frequency_hz:.6g}")

    async def is_reference_external(self) -> bool:
        """True if the external reference input is selected."""
        index = await self.query_int(f"{self.reference_command}?")
        return index == self.reference_external_index

    async def get_reference_frequency_hz(self) -> float:
        """Reference frequency in Hz (measured, with an external reference)."""
        return await self.query_float("FREQ?")

    async def set_harmonic(self, harmonic: int) -> None:
        """Detect at `harmonic` × the reference frequency."""
        if isinstance(harmonic, bool) or not isinstance(harmonic, int):
            raise LimitError(f"{self.name}: harmonic must be an integer, got {harmonic!r}")
        if not 1 <= harmonic <= self.max_harmonic:
            raise LimitError(f"{self.name}: harmonic {harmonic} outside 1..{self.max_harmonic}")
        await self.write(f"HARM {harmonic}")

    async def get_harmonic(self) -> int:
        """Detection harmonic."""
        return await self.query_int("HARM?")

    async def set_phase(self, phase_rad: float) -> None:
        """Reference phase shift in radians (sent in degrees wrapped to (-180, 180])."""
        if not math.isfinite(phase_rad):
            raise LimitError(f"{self.name}: phase {phase_rad!r} rad is not finite")
        degrees = 180.0 - ((180.0 - math.degrees(phase_rad)) % 360.0)
        await self.write(f"PHAS {degrees:.{self.phase_decimals}f}")

    async def get_phase_rad(self) -> float:
        """Reference phase shift in radians."""
        return math.radians(await self.query_float("PHAS?"))

    # -- gain and filters ----------------------------------------------------------------------

    def _sensitivity_code(self, table_index: int) -> int:
        n = len(self.sensitivities_v)
        return n - 1 - table_index if self.sensitivity_descending else table_index

    async def set_sensitivity(self, sensitivity_v: float, *, exact: bool = False) -> float:
        """Full scale: the smallest table entry >= `sensitivity_v` (or exactly it); returns it."""
        what = f"{self.name}: sensitivity"
        if exact:
            index = exact_index(sensitivity_v, self.sensitivities_v, what)
        else:
            index = smallest_at_least(sensitivity_v, self.sensitivities_v, what)
        await self.write(f"{self.sensitivity_command} {self._sensitivity_code(index)}")
        return self.sensitivities_v[index]

    async def set_sensitivity_index(self, code: int) -> None:
        """Full scale by the instrument's own index (SR830: 0 = 2 nV; SR860: 0 = 1 V)."""
        if not 0 <= code < len(self.sensitivities_v):
            raise LimitError(f"{self.name}: sensitivity index {code} outside the table")
        await self.write(f"{self.sensitivity_command} {code}")

    async def get_sensitivity_index(self) -> int:
        """The instrument's sensitivity index."""
        return await self.query_int(f"{self.sensitivity_command}?")

    async def get_sensitivity_v(self) -> float:
        """Full-scale sensitivity in volts rms."""
        code = await self.get_sensitivity_index()
        if not 0 <= code < len(self.sensitivities_v):
            raise InstrumentProtocolError(f"{self.name}: sensitivity index {code} unknown")
        return self.sensitivities_v[self._sensitivity_code(code)]

    async def set_time_constant(
        self, time_constant_s: float, *, slope_db_per_oct: int | None = None, exact: bool = False
    ) -> float:
        """Time constant: the smallest table entry >= `time_constant_s` (or exactly it), and
        optionally the slope (6, 12, 18, 24 dB/oct). Both are checked first; returns τ."""
        what = f"{self.name}: time constant"
        if exact:
            index = exact_index(time_constant_s, self.time_constants_s, what)
        else:
            index = smallest_at_least(time_constant_s, self.time_constants_s, what)
        slope_index = None if slope_db_per_oct is None else self._slope_index(slope_db_per_oct)
        await self.write(f"OFLT {index}")
        if slope_index is not None:
            await self.write(f"OFSL {slope_index}")
        return self.time_constants_s[index]

    async def get_time_constant_s(self) -> float:
        """Time constant in seconds."""
        index = await self.query_int("OFLT?")
        if not 0 <= index < len(self.time_constants_s):
            raise InstrumentProtocolError(f"{self.name}: time-constant index {index} unknown")
        return self.time_constants_s[index]

    def _slope_index(self, slope_db_per_oct: int) -> int:
        if slope_db_per_oct not in FILTER_SLOPES_DB_PER_OCT:
            raise LimitError(
                f"{self.name}: filter slope {slope_db_per_oct!r} dB/oct not in "
                f"{FILTER_SLOPES_DB_PER_OCT}"
            )
        return FILTER_SLOPES_DB_PER_OCT.index(slope_db_per_oct)

    async def set_filter_slope(self, slope_db_per_oct: int) -> None:
        """Low-pass slope: 6, 12, 18 or 24 dB/oct (1..4 RC stages)."""
        await self.write(f"OFSL {self._slope_index(slope_db_per_oct)}")

    async def get_filter_slope_db_per_oct(self) -> int:
        """Low-pass slope in dB/oct."""
        index = await self.query_int("OFSL?")
        if not 0 <= index < 4:
            raise InstrumentProtocolError(f"{self.name}: filter-slope index {index} unknown")
        return FILTER_SLOPES_DB_PER_OCT[index]

    async def set_sync_filter(self, enabled: bool) -> None:
        """Synchronous filter (effective below 200 Hz detection frequency)."""
        await self.write(f"SYNC {1 if enabled else 0}")

    async def get_sync_filter(self) -> bool:
        """True if the synchronous filter is on."""
        return await self.query_int("SYNC?") == 1

    async def set_input_coupling(self, coupling: Coupling) -> None:
        """Input coupling 'ac' or 'dc'."""
        if coupling not in ("ac", "dc"):
            raise LimitError(f"{self.name}: coupling must be 'ac' or 'dc', not {coupling!r}")
        await self.write(f"ICPL {('ac', 'dc').index(coupling)}")

    async def get_input_coupling(self) -> str:
        """Input coupling: 'ac' or 'dc'."""
        return ("ac", "dc")[await self.query_int("ICPL?")]

    async def set_input_config(self, config: str) -> None:
        """Signal input configuration (see `input_configs`)."""
        if config not in self.input_configs:
            raise LimitError(f"{self.name}: input {config!r} not in {self.input_configs}")
        await self.write(f"ISRC {self.input_configs.index(config)}")

    async def get_input_config(self) -> str:
        """Signal input configuration."""
        index = await self.query_int("ISRC?")
        if not 0 <= index < len(self.input_configs):
            raise InstrumentProtocolError(f"{self.name}: input index {index} unknown")
        return self.input_configs[index]

    # -- readings ------------------------------------------------------------------------------

    def _code(self, name: str) -> int:
        if name not in self.output_codes:
            raise LimitError(f"{self.name}: output {name!r} not in {sorted(self.output_codes)}")
        return self.output_codes[name]

    async def read(self, name: Output) -> float:
        """One output now: x, y, r in volts; theta in radians; frequency in Hz (FREQ?: OUTP?
        reads X, Y, R and θ only)."""
        code = self._code(name)
        if name == "frequency":
            return await self.get_reference_frequency_hz()
        command = f"OUTP? {code}"
        reply = await self.query(command)
        value = self._reading(name, reply, command)
        return math.radians(value) if name == "theta" else value

    def _reading(self, name: str, text: str, command: str) -> float:
        """Parse one output value; NaN/inf is refused naming the instrument and output."""
        try:
            value = float(text)
        except ValueError:
            raise InstrumentProtocolError(
                f"{self.name} ({self.resource}): {name} reading {text!r} to {command!r} is not "
                "a number"
            ) from None
        if not math.isfinite(value):
            raise InstrumentProtocolError(
                f"{self.name} ({self.resource}): {name} reading {text!r} to {command!r} is not "
                "finite (invalid or overloaded output); the reading is refused"
            )
        return value

    async def snap(self, *names: Output) -> tuple[float, ...]:
        """Several outputs taken at one instant (SNAP?); theta in radians."""
        if not 2 <= len(names) <= self.max_snap:
            raise LimitError(f"{self.name}: SNAP? takes 2..{self.max_snap} outputs")
        codes = ",".join(str(self._code(n)) for n in names)
        command = f"SNAP? {codes}"
        reply = await self.query(command)
        texts = reply.split(",")
        if len(texts) != len(names):
            raise InstrumentProtocolError(
                f"{self.name} ({self.resource}): asked {len(names)} values, got {reply!r}"
            )
        values = [self._reading(n, t, command) for n, t in zip(names, texts, strict=True)]
        return tuple(
            math.radians(v) if n == "theta" else v for n, v in zip(names, values, strict=True)
        )

    async def read_xy(self, *, check_overload: bool = False) -> complex:
        """X + iY in volts rms, taken at one instant.

        `check_overload`: then read (and clear) the LIA status and raise `InstrumentError`
        naming the instrument and what overloaded (or a reference unlock) instead of returning
        a saturated or unlocked reading.
        """
        x, y = await self.snap("x", "y")
        if check_overload:
            st = await self.status()
            what = [
                label
                for flag, label in (
                    (st.input_overload, "input overload"),
                    (st.filter_overload, "filter overload"),
                    (st.output_overload, "X/Y output overload (beyond the sensitivity)"),
                    (st.reference_unlock, "reference unlock"),
                )
                if flag
            ]
            if what:
                raise InstrumentError(
                    f"{self.name} ({self.resource}): {', '.join(what)} (LIA status "
                    f"{st.raw}) during the X/Y reading; the reading is refused"
                )
        return complex(x, y)

    async def status(self) -> LockinStatus:
        """Read (and clear) the LIA status byte."""
        return LockinStatus.from_byte(await self.query_int("LIAS?"))

    async def overloaded(self) -> bool:
        """True if an input, filter or output overload was latched since the last read."""
        return (await self.status()).any_overload

    async def auto_settle_time_s(self, tolerance: float = 1e-4) -> float:
        """Wait needed after a step for the outputs to settle within `tolerance` (relative):
        `settle_multiple(n_stages, tolerance)` × τ for the present τ and slope."""
        tau = await self.get_time_constant_s()
        slope = await self.get_filter_slope_db_per_oct()
        return settle_multiple(slope // 6, tolerance) * tau

    async def reset(self) -> None:
        """*RST and *CLS: default settings, status bytes cleared."""
        await self.write("*RST")
        await self.write("*CLS")


class Sr830(SrsLockin):
    """Stanford Research Systems SR830 on RS-232."""

    config: Sr830Config
    #: RS-232 at 9600 baud; replies end with CR
    TRANSPORT_DEFAULTS: ClassVar[dict[str, Any]] = {
        "baud_rate": 9600,
        "read_termination": "\r",
        "write_termination": "\r",
    }
    output_codes: ClassVar[dict[str, int]] = {"x": 1, "y": 2, "r": 3, "theta": 4, "frequency": 9}
    reserves: ClassVar[tuple[str, ...]] = ("high", "normal", "low_noise")
    input_configs: ClassVar[tuple[str, ...]] = ("a", "a-b", "i_1mohm", "i_100mohm")

    async def connect(self) -> str:
        """Direct replies to RS-232 (`OUTX 0`, as the manual asks of every program), then
        check the identity."""
        await self.transport.open()
        await self.transport.write("OUTX 0")
        return await super().connect()

    async def set_reserve(self, reserve: str) -> None:
        """Dynamic reserve mode: 'high', 'normal' or 'low_noise'."""
        if reserve not in self.reserves:
            raise LimitError(f"{self.name}: reserve {reserve!r} not in {self.reserves}")
        await self.write(f"RMOD {self.reserves.index(reserve)}")

    async def get_reserve(self) -> str:
        """Dynamic reserve mode."""
        return self.reserves[await self.query_int("RMOD?")]


class Sr860(SrsLockin):
    """Stanford Research Systems SR860 on Ethernet."""

    config: Sr860Config
    sensitivities_v = SR860_SENSITIVITIES_V[::-1]  # ascending; instrument index descends
    sensitivity_descending = True
    sensitivity_command = "SCAL"
    time_constants_s = SR860_TIME_CONSTANTS_S
    reference_command = "RSRC"
    reference_external_index = 1
    reference_internal_index = 0
    max_harmonic = 99
    max_frequency_hz = 500e3
    output_codes: ClassVar[dict[str, int]] = {"x": 0, "y": 1, "r": 2, "theta": 3, "frequency": 16}
    max_snap = 3
    phase_decimals = 6

    async def set_input_range(self, range_v: float) -> float:
        """Voltage input range: the smallest of 10 mV..1 V peak >= `range_v`; returns it."""
        ascending = SR860_INPUT_RANGES_V[::-1]
        index = smallest_at_least(range_v, ascending, f"{self.name}: input range")
        await self.write(f"IRNG {len(ascending) - 1 - index}")
        return ascending[index]

    async def get_input_range_v(self) -> float:
        """Voltage input range in volts peak."""
        return SR860_INPUT_RANGES_V[await self.query_int("IRNG?")]

    async def get_noise_bandwidth_hz(self) -> float:
        """Equivalent noise bandwidth of the output filter (ENBW?), Hz."""
        return await self.query_float("ENBW?")
