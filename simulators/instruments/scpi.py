"""A reusable SCPI engine for instrument emulators.

An emulator subclasses `ScpiInstrument` and declares its commands as header patterns:

    class MyDac(ScpiInstrument):
        @scpi("SOURce<ch>[:DC]:VOLTage[:LEVel]")            # setter, one parameter
        def _set_volt(self, ctx: CommandContext) -> None:
            ch = ctx.suffix("ch", maximum=24)
            v = ctx.number(0, minimum=-10.0, maximum=10.0)
        @scpi("SOURce<ch>[:DC]:VOLTage[:LEVel]?")           # query, returns the response text
        def _get_volt(self, ctx: CommandContext) -> str: ...

Pattern syntax: upper-case letters are the short form (`SOURce` matches SOUR and SOURCE, any
case), `[...]` marks optional nodes, `<name>` a numeric suffix (omitted in the input → None),
a trailing `?` a query. Input may start with `:`; `;` separates program message units and a
unit without leading `:` is relative to the previous unit's path (SCPI-99 §6.2.4). Parameters
(NRf numbers with optional unit suffix, `#H/#Q/#B` numbers, character data such as MIN/MAX/DEF
and ON/OFF, quoted strings, channel lists `(@1,3:5)`, IEEE 488.2 definite-length blocks
`#<n><len><bytes>` and indefinite `#0` blocks) are tokenised and read through `CommandContext`
helpers, which raise `ScpiCommandError` with the SCPI code; the engine queues it in the error
queue (read by `SYSTem:ERRor?`). The IEEE 488.2 common commands are built in.

Input framing: `MessageSplitter` cuts a byte stream into program messages at the terminator,
skipping over definite-length blocks (which may contain terminator bytes).
"""

from __future__ import annotations

import collections
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from physlearn.errors import PhyslearnError
from physlearn.simulators.clock import TimeSource, VirtualClock
from physlearn.simulators.instruments.faults import FaultPlan

logger = logging.getLogger(__name__)

#: SCPI-99 / IEEE 488.2 standard error messages; instruments may override or extend them.
STANDARD_ERRORS: dict[int, str] = {
    0: "No error",
    -100: "Command error",
    -101: "Invalid character",
    -102: "Syntax error",
    -103: "Invalid separator",
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -110: "Command header error",
    -112: "Program mnemonic too long",
    -113: "Undefined header",
    -114: "Header suffix out of range",
    -120: "Numeric data error",
    -121: "Invalid character in number",
    -131: "Invalid suffix",
    -138: "Suffix not allowed",
    -141: "Invalid character data",
    -151: "Invalid string data",
    -160: "Block data error",
    -161: "Invalid block data",
    -170: "Expression error",
    -200: "Execution error",
    -220: "Parameter error",
    -221: "Settings conflict",
    -222: "Data out of range",
    -223: "Too much data",
    -224: "Illegal parameter value",
    -300: "Device-specific error",
    -350: "Queue overflow",
    -400: "Query error",
}

# Standard event status register bits (IEEE 488.2 §11.5.1).
ESR_OPC, ESR_QYE, ESR_DDE, ESR_EXE, ESR_CME = 1, 4, 8, 16, 32
# Status byte bits (SCPI-99: bit 2 error/event queue, bit 5 ESB).
STB_EAV, STB_ESB = 4, 32


class ScpiCommandError(PhyslearnError):
    """Raised inside an emulator's command handling; queued as `<code>,"<message>"`.

    Attributes:
        code: SCPI error code (negative: standard; positive: device-specific).
        detail: optional text appended to the message after `;` (SCPI-99 §21.8.3).
    """

    def __init__(self, code: int, detail: str | None = None) -> None:
        super().__init__(f"SCPI error {code}" + (f": {detail}" if detail else ""))
        self.code = code
        self.detail = detail


# --------------------------------------------------------------------------------------------
# Response formatting helpers
# --------------------------------------------------------------------------------------------


def format_nr1(value: int) -> str:
    """IEEE 488.2 NR1 (integer), e.g. `42`, `-3`."""
    return str(int(value))


def format_nr2(value: float, decimals: int) -> str:
    """NR2 fixed point with `decimals` digits after the point, e.g. `1.2500`."""
    return f"{value:.{decimals}f}"


def format_nr3(
    value: float, mantissa_decimals: int, *, exponent_digits: int = 2, plus: bool = True
) -> str:
    """NR3 exponent form, e.g. `+1.00000000E+03` (Keysight style with `plus=True`)."""
    if not math.isfinite(value):
        return "+9.9E+37" if value > 0 or math.isnan(value) else "-9.9E+37"
    text = f"{value:.{mantissa_decimals}E}"
    mantissa, exponent = text.split("E")
    exp = int(exponent)
    sign = "-" if exp < 0 else "+"
    out = f"{mantissa}E{sign}{abs(exp):0{exponent_digits}d}"
    if plus and not out.startswith("-"):
        out = "+" + out
    return out


def format_significant(value: float, digits: int, *, upper_exponent: bool = False) -> str:
    """Shortest `%g` form with at most `digits` significant digits, e.g. `0.1`, `-2`, `1e-07`."""
    if value == 0.0:
        return "0"
    text = f"{value:.{digits}g}"
    return text.upper() if upper_exponent else text


def format_block(payload: bytes, n_digits: int | None = None) -> bytes:
    """IEEE 488.2 definite-length block `#<n><len><payload>`; `n_digits` fixes n (Rigol: 9)."""
    length = str(len(payload))
    if n_digits is not None:
        if len(length) > n_digits or not 1 <= n_digits <= 9:
            raise ValueError(f"block of {len(payload)} bytes does not fit #{n_digits}")
        length = length.zfill(n_digits)
    if len(length) > 9:
        raise ValueError(f"block of {len(payload)} bytes exceeds the #9 header")
    return b"#" + str(len(length)).encode() + length.encode() + payload


def format_bool(value: bool) -> str:
    """SCPI boolean response: `1` or `0`."""
    return "1" if value else "0"


# --------------------------------------------------------------------------------------------
# Byte-level scanning: blocks, quotes, parentheses
# --------------------------------------------------------------------------------------------

_DIGITS = frozenset(b"0123456789")


def _block_end(data: bytes | bytearray, i: int) -> int | None:
    """If `data[i:]` starts a definite-length block, index just past it.

    Returns -1 if `data[i]` does not start a definite block (so `#` is ordinary), None if more
    bytes are needed to decide or to complete the block.
    """
    if i + 1 >= len(data):
        return None
    d = data[i + 1]
    if d not in _DIGITS or d == ord("0"):
        return -1
    n = d - ord("0")
    if i + 2 + n > len(data):
        return None
    digits = bytes(data[i + 2 : i + 2 + n])
    if not all(c in _DIGITS for c in digits):
        return -1
    end = i + 2 + n + int(digits)
    return end if end <= len(data) else None


def split_top_level(data: bytes, separator: int) -> list[bytes]:
    """Split at `separator` bytes outside quotes, parentheses and definite-length blocks."""
    parts: list[bytes] = []
    start = 0
    depth = 0
    quote: int | None = None
    i = 0
    n = len(data)
    while i < n:
        c = data[i]
        if quote is not None:
            if c == quote:
                if i + 1 < n and data[i + 1] == quote:
                    i += 2
                    continue
                quote = None
            i += 1
            continue
        if c == ord("#"):
            end = _block_end(data, i)
            if end is not None and end >= 0:
                i = end
                continue
            if end is None and i + 1 < n and data[i + 1] in _DIGITS:
                # Definite block whose length runs past the message: the rest is the block.
                i = n
                continue
            if i + 1 < n and data[i + 1] == ord("0"):
                i = n  # indefinite-length block runs to the end of the message
                continue
        elif c in (ord('"'), ord("'")):
            quote = c
        elif c == ord("("):
            depth += 1
        elif c == ord(")"):
            depth = max(0, depth - 1)
        elif c == separator and depth == 0:
            parts.append(data[start:i])
            start = i + 1
        i += 1
    parts.append(data[start:])
    return parts


class MessageSplitter:
    """Cut a byte stream into program messages at a terminator byte, block-aware.

    Messages are returned without the terminator and without a trailing `\\r`. Bytes inside a
    definite-length block (`#<n><len>...`) never terminate a message.
    """

    def __init__(self, terminator: bytes = b"\n") -> None:
        if len(terminator) != 1:
            raise ValueError("terminator must be one byte (a trailing \\r is stripped anyway)")
        self._term = terminator[0]
        self._buf = bytearray()
        self._pos = 0
        self._block_stop = 0  # index just past the last block of the current message

    def feed(self, data: bytes) -> list[bytes]:
        """Append received bytes; return the complete messages found so far."""
        self._buf.extend(data)
        out: list[bytes] = []
        buf = self._buf
        i = self._pos
        while i < len(buf):
            c = buf[i]
            if c == ord("#"):
                end = _block_end(buf, i)
                if end is None:
                    break  # wait for more bytes
                if end >= 0:
                    i = self._block_stop = end
                    continue
            elif c == self._term:
                msg = bytes(buf[:i])
                if msg.endswith(b"\r") and i - 1 >= self._block_stop:
                    msg = msg[:-1]  # a CR inside a block is data, not part of CR LF
                out.append(msg)
                del buf[: i + 1]
                i = self._block_stop = 0
                continue
            i += 1
        self._pos = i
        return out

    def reset(self) -> None:
        """Discard partial input (device clear)."""
        self._buf.clear()
        self._pos = self._block_stop = 0

    @property
    def pending_bytes(self) -> int:
        """Number of buffered bytes not yet part of a complete message."""
        return len(self._buf)


# --------------------------------------------------------------------------------------------
# Header patterns
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    short: str
    long: str
    suffix: str | None
    optional: bool


_PATTERN_NODE = re.compile(r"(\*?[A-Za-z][A-Za-z0-9_]*)(?:<(\w+)>)?")


def _compile_pattern(pattern: str) -> tuple[tuple[_Node, ...], bool]:
    """Compile a header pattern such as `SOURce<ch>[:DC]:VOLTage[:LEVel]?`."""
    text = pattern.strip()
    is_query = text.endswith("?")
    if is_query:
        text = text[:-1]
    nodes: list[_Node] = []
    i = 0
    optional = False
    while i < len(text):
        c = text[i]
        if c == "[":
            optional = True
            i += 1
        elif c == "]":
            optional = False
            i += 1
        elif c == ":":
            i += 1
        else:
            m = _PATTERN_NODE.match(text, i)
            if m is None:
                raise ValueError(f"bad SCPI pattern {pattern!r} at {i}")
            name = m.group(1)
            short = "".join(ch for ch in name if ch.isupper() or ch.isdigit() or ch == "*")
            nodes.append(_Node(short.upper(), name.upper(), m.group(2), optional))
            i = m.end()
    return tuple(nodes), is_query


_INPUT_MNEMONIC = re.compile(r"([A-Za-z](?:[A-Za-z0-9_]*[A-Za-z_])?)(\d*)")


def _parse_header(header: str) -> tuple[list[tuple[str, int | None]], bool, bool]:
    """Split an input header into (mnemonics with suffixes, absolute?, query?)."""
    is_query = header.endswith("?")
    if is_query:
        header = header[:-1]
    absolute = header.startswith(":")
    if absolute:
        header = header[1:]
    if header.startswith("*"):
        name = header[1:]
        if not name.isalpha():
            raise ScpiCommandError(-113)
        return [("*" + name.upper(), None)], True, is_query
    out: list[tuple[str, int | None]] = []
    for part in header.split(":"):
        m = _INPUT_MNEMONIC.fullmatch(part)
        if m is None:
            raise ScpiCommandError(-102 if part == "" else -113)
        if len(m.group(1)) > 12:
            raise ScpiCommandError(-112)
        out.append((m.group(1).upper(), int(m.group(2)) if m.group(2) else None))
    return out, absolute, is_query


def _match(
    nodes: Sequence[_Node], mnemonics: Sequence[tuple[str, int | None]]
) -> dict[str, int | None] | None:
    """Match input mnemonics against pattern nodes; return the captured suffixes or None."""

    def rec(i: int, j: int, caps: dict[str, int | None]) -> dict[str, int | None] | None:
        if i == len(nodes):
            return caps if j == len(mnemonics) else None
        node = nodes[i]
        if j < len(mnemonics):
            name, suffix = mnemonics[j]
            if name in (node.short, node.long) and (suffix is None or node.suffix is not None):
                new = dict(caps)
                if node.suffix is not None:
                    new[node.suffix] = suffix
                found = rec(i + 1, j + 1, new)
                if found is not None:
                    return found
        if node.optional:
            skipped = dict(caps)
            if node.suffix is not None:
                skipped.setdefault(node.suffix, None)
            return rec(i + 1, j, skipped)
        return None

    return rec(0, 0, {})


def match_keyword(word: str, keyword: str) -> bool:
    """True if `word` is the short or long form of `keyword` (e.g. MED / MEDIUM for MEDium)."""
    short = "".join(ch for ch in keyword if ch.isupper() or ch.isdigit())
    return word.upper() in (short.upper(), keyword.upper())


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z/%]*)")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_NONDECIMAL = {"H": 16, "Q": 8, "B": 2}


@dataclass(frozen=True)
class Token:
    """One parsed parameter. `kind` is number, word, string, block, channels or expression."""

    kind: str
    text: str
    number: float = math.nan
    unit: str = ""
    data: bytes = b""
    channels: tuple[int, ...] = ()


def _parse_channel_list(text: str) -> tuple[int, ...]:
    body = text.strip()[2:-1]  # strip "(@" and ")"
    out: list[int] = []
    for item in body.split(","):
        item = item.strip()
        if ":" in item:
            lo_s, hi_s = item.split(":", 1)
            if not (lo_s.strip().isdigit() and hi_s.strip().isdigit()):
                raise ScpiCommandError(-170)
            lo, hi = int(lo_s), int(hi_s)
            step = 1 if hi >= lo else -1
            out.extend(range(lo, hi + step, step))
        elif item.isdigit():
            out.append(int(item))
        else:
            raise ScpiCommandError(-170)
    return tuple(out)


def parse_parameter(raw: bytes) -> Token:
    """Tokenise one parameter (already split at top-level commas; surrounding blanks allowed)."""
    raw = raw.lstrip(b" \t\r\n")
    if raw.startswith(b"#") and len(raw) > 1 and raw[1] in _DIGITS:
        n = raw[1] - ord("0")
        if n == 0:
            return Token("block", "#0", data=raw[2:])
        digits = raw[2 : 2 + n]
        if len(digits) < n or not all(c in _DIGITS for c in digits):
            raise ScpiCommandError(-161)
        length = int(digits)
        payload = raw[2 + n : 2 + n + length]
        if len(payload) != length or raw[2 + n + length :].strip(b" \t\r\n"):
            got = len(raw) - 2 - n
            raise ScpiCommandError(-161, f"block header says {length} bytes, got {got}")
        return Token("block", f"#{n}{digits.decode()}", data=payload)
    try:
        text = raw.decode("ascii").rstrip(" \t\r\n")
    except UnicodeDecodeError:
        raise ScpiCommandError(-101) from None
    if text[:1] in ('"', "'"):
        q = text[0]
        if len(text) < 2 or not text.endswith(q):
            raise ScpiCommandError(-151)
        inner = text[1:-1]
        if re.search(f"(?<!{q}){q}(?!{q})", inner.replace(q * 2, "")):
            raise ScpiCommandError(-151)
        return Token("string", text, data=inner.replace(q * 2, q).encode("ascii"))
    if text.startswith("(@") and text.endswith(")"):
        return Token("channels", text, channels=_parse_channel_list(text))
    if text.startswith("("):
        return Token("expression", text)
    if text.startswith("#") and len(text) > 2 and text[1].upper() in _NONDECIMAL:
        try:
            integer = int(text[2:], _NONDECIMAL[text[1].upper()])
        except ValueError:
            raise ScpiCommandError(-121) from None
        return Token("number", text, number=float(integer))
    m = _NUMBER.fullmatch(text)
    if m is not None:
        value = float(m.group(1))
        if not math.isfinite(value):
            raise ScpiCommandError(-120)
        return Token("number", text, number=value, unit=m.group(2).upper())
    if _WORD.fullmatch(text):
        return Token("word", text.upper())
    raise ScpiCommandError(-102)


# --------------------------------------------------------------------------------------------
# Commands and their context
# --------------------------------------------------------------------------------------------

_SPECIAL_WORDS = {"MIN": "MINimum", "MAX": "MAXimum", "DEF": "DEFault"}


@dataclass
class CommandContext:
    """What a handler sees: the header as received, captured suffixes and parameters."""

    instrument: ScpiInstrument
    header: str
    suffixes: dict[str, int | None]
    params: list[Token]

    def suffix(
        self, name: str, *, default: int = 1, minimum: int = 1, maximum: int | None = None
    ) -> int:
        """Numeric header suffix `name` (SCPI: omitted means 1); out of range → -114."""
        value = self.suffixes.get(name)
        n = default if value is None else value
        if n < minimum or (maximum is not None and n > maximum):
            raise ScpiCommandError(-114)
        return n

    def has(self, index: int) -> bool:
        """True if parameter `index` was given."""
        return index < len(self.params)

    def token(self, index: int) -> Token:
        """Raw parameter `index`; missing → -109."""
        if index >= len(self.params):
            raise ScpiCommandError(-109)
        return self.params[index]

    def number(
        self,
        index: int,
        *,
        minimum: float = -math.inf,
        maximum: float = math.inf,
        default: float | None = None,
        units: dict[str, float] | None = None,
        check_range: bool = True,
    ) -> float:
        """NRf parameter; MIN/MAX/DEF map to the limits; outside [minimum, maximum] → -222."""
        tok = self.token(index)
        if tok.kind == "word":
            for short, long in _SPECIAL_WORDS.items():
                if match_keyword(tok.text, long):
                    if short == "MIN" and math.isfinite(minimum):
                        return minimum
                    if short == "MAX" and math.isfinite(maximum):
                        return maximum
                    if short == "DEF" and default is not None:
                        return default
                    raise ScpiCommandError(-224)
            raise ScpiCommandError(-104)
        if tok.kind != "number":
            raise ScpiCommandError(-104)
        value = tok.number
        if tok.unit:
            if units is None:
                raise ScpiCommandError(-138)
            if tok.unit not in units:
                raise ScpiCommandError(-131)
            value *= units[tok.unit]
        if check_range and not minimum <= value <= maximum:
            raise ScpiCommandError(-222)
        return value

    def integer(self, index: int, *, minimum: int, maximum: int) -> int:
        """NR1 parameter (a decimal is rounded, as IEEE 488.2 allows); MIN/MAX accepted."""
        return round(self.number(index, minimum=minimum, maximum=maximum))

    def boolean(self, index: int) -> bool:
        """ON/OFF or a number (non-zero after rounding is ON)."""
        tok = self.token(index)
        if tok.kind == "word":
            if tok.text == "ON":
                return True
            if tok.text == "OFF":
                return False
            raise ScpiCommandError(-224)
        if tok.kind == "number" and not tok.unit:
            return round(tok.number) != 0
        raise ScpiCommandError(-104)

    def choice(self, index: int, options: Sequence[str]) -> str:
        """Character data matching one of `options` (short/long form); returns the option."""
        tok = self.token(index)
        if tok.kind != "word":
            raise ScpiCommandError(-104)
        for option in options:
            if match_keyword(tok.text, option):
                return option
        raise ScpiCommandError(-224)

    def string(self, index: int) -> str:
        """Quoted string parameter (quotes removed, doubled quotes collapsed)."""
        tok = self.token(index)
        if tok.kind != "string":
            raise ScpiCommandError(-104)
        return tok.data.decode("ascii")

    def block(self, index: int) -> bytes:
        """Arbitrary block parameter payload (definite or indefinite length)."""
        tok = self.token(index)
        if tok.kind != "block":
            raise ScpiCommandError(-104)
        return tok.data

    def channel_list(self, index: int, *, minimum: int = 1, maximum: int) -> tuple[int, ...]:
        """Channel list `(@1,3:5)`; any channel outside [minimum, maximum] → -222."""
        tok = self.token(index)
        if tok.kind != "channels":
            raise ScpiCommandError(-104)
        if not tok.channels or any(not minimum <= c <= maximum for c in tok.channels):
            raise ScpiCommandError(-222)
        return tok.channels


F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Command:
    """A compiled header pattern bound to a handler attribute name."""

    pattern: str
    nodes: tuple[_Node, ...]
    is_query: bool
    attribute: str
    min_params: int
    max_params: int


def scpi(*patterns: str, params: tuple[int, int] | None = None) -> Callable[[F], F]:
    """Declare a method as the handler of one or more SCPI header patterns.

    `params` is the (min, max) parameter count, checked before the handler runs (-109 missing,
    -108 too many). Default: queries (0, 0), setters (1, 1).
    """

    def mark(func: F) -> F:
        declared: list[tuple[str, tuple[int, int] | None]] = list(
            getattr(func, "_scpi_patterns", [])
        )
        declared.extend((p, params) for p in patterns)
        func._scpi_patterns = declared  # type: ignore[attr-defined]
        return func

    return mark


# --------------------------------------------------------------------------------------------
# Error queue
# --------------------------------------------------------------------------------------------


class ErrorQueue:
    """Bounded FIFO of (code, message); on overflow the newest entry becomes -350 (SCPI-99)."""

    def __init__(self, capacity: int, messages: dict[int, str]) -> None:
        if capacity < 2:
            raise ValueError("error queue capacity must be >= 2")
        self.capacity = capacity
        self.messages = messages
        self._q: collections.deque[tuple[int, str]] = collections.deque()

    def push(self, code: int, detail: str | None = None) -> None:
        """Queue an error; the message comes from the instrument's table."""
        message = self.messages.get(code, STANDARD_ERRORS.get(code, "Unknown error"))
        if detail:
            message = f"{message};{detail}"
        if len(self._q) >= self.capacity:
            self._q[-1] = (-350, self.messages.get(-350, STANDARD_ERRORS[-350]))
            return
        self._q.append((code, message))

    def pop(self) -> tuple[int, str]:
        """Oldest error, or (0, "No error") when empty."""
        if self._q:
            return self._q.popleft()
        return 0, self.messages.get(0, STANDARD_ERRORS[0])

    def clear(self) -> None:
        """Empty the queue (*CLS)."""
        self._q.clear()

    def __len__(self) -> int:
        return len(self._q)


# --------------------------------------------------------------------------------------------
# The instrument base class
# --------------------------------------------------------------------------------------------


class ScpiInstrument:
    """Base of every SCPI emulator: parsing, dispatch, error queue, status, common commands.

    Subclasses set the identity and formats as class attributes, declare commands with `@scpi`,
    and override `reset_state()` for *RST. `process(message)` handles one program message
    (no terminator) and returns the response bytes (terminator included) or b"" if no query.
    All public methods are thread-safe: several transports may serve one emulator.
    """

    manufacturer: ClassVar[str] = "physlearn"
    model: ClassVar[str] = "SCPI emulator"
    firmware: ClassVar[str] = "0"
    idn_separator: ClassVar[str] = ","
    #: Format of an error-queue entry; `{code}` and `{message}` are substituted.
    error_format: ClassVar[str] = '{code},"{message}"'
    error_messages: ClassVar[dict[int, str]] = {}
    error_queue_capacity: ClassVar[int] = 20
    #: Byte that ends every program message the instrument receives.
    input_terminator: ClassVar[bytes] = b"\n"
    #: Bytes appended to every response.
    response_terminator: ClassVar[bytes] = b"\n"
    #: Separator between responses of several queries in one message.
    response_separator: ClassVar[bytes] = b";"
    #: How many received program messages `received` keeps.
    received_log_length: ClassVar[int] = 100_000

    _commands: ClassVar[tuple[Command, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        by_attribute: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                if hasattr(value, "_scpi_patterns"):
                    by_attribute[attr] = value
        commands: list[Command] = []
        for attr, func in by_attribute.items():
            for pattern, params in func._scpi_patterns:
                nodes, is_query = _compile_pattern(pattern)
                lo, hi = params if params is not None else ((0, 0) if is_query else (1, 1))
                commands.append(Command(pattern, nodes, is_query, attr, lo, hi))
        # Longer patterns first, so that a specific header wins over a shorter optional one.
        commands.sort(key=lambda c: -len(c.nodes))
        cls._commands = tuple(commands)

    def __init__(self, clock: TimeSource | None = None, *, serial: str = "00000") -> None:
        self.clock: TimeSource = clock if clock is not None else VirtualClock()
        self.serial = serial
        self.faults = FaultPlan()
        messages = dict(STANDARD_ERRORS)
        messages.update(self.error_messages)
        self.errors = ErrorQueue(self.error_queue_capacity, messages)
        self.esr = 0
        self.ese = 0
        self.sre = 0
        self.received: collections.deque[bytes] = collections.deque(maxlen=self.received_log_length)
        self._lock = threading.RLock()
        self._cache: dict[
            tuple[tuple[tuple[str, int | None], ...], bool], tuple[Command, dict[str, int | None]]
        ] = {}
        self.reset_state()

    # -- hooks for subclasses ------------------------------------------------------------------

    def reset_state(self) -> None:
        """Put the instrument in its *RST state (subclasses extend; the base has no state)."""

    def identity(self) -> str:
        """The *IDN? response (without terminator)."""
        sep = self.idn_separator
        return sep.join((self.manufacturer, self.model, self.serial, self.firmware))

    def message_splitter(self) -> MessageSplitter:
        """A fresh input framer for one connection."""
        return MessageSplitter(self.input_terminator)

    # -- fault and test hooks ------------------------------------------------------------------

    def push_error(self, code: int, detail: str | None = None) -> None:
        """Queue an error and set the matching event status bit (also a fault-injection hook)."""
        with self._lock:
            self.errors.push(code, detail)
            if -199 <= code <= -100:
                self.esr |= ESR_CME
            elif -299 <= code <= -200:
                self.esr |= ESR_EXE
            elif -499 <= code <= -400:
                self.esr |= ESR_QYE
            elif code != 0:
                self.esr |= ESR_DDE
            logger.debug("%s queued error %d %s", self.model, code, detail or "")

    def format_error(self, code: int, message: str) -> str:
        """One error-queue entry as the instrument sends it."""
        return self.error_format.format(code=code, message=message)

    # -- processing ----------------------------------------------------------------------------

    def process(self, message: bytes) -> bytes:
        """Execute one program message; return the response (with terminator) or b""."""
        with self._lock:
            self.received.append(message)
            responses: list[bytes] = []
            path: list[tuple[str, int | None]] = []
            for raw_unit in split_top_level(message, ord(";")):
                unit = raw_unit.lstrip(b" \t\r\n")  # trailing bytes may belong to a block
                if not unit.rstrip(b" \t\r\n"):
                    continue
                try:
                    new_path, response = self._execute_unit(unit, path)
                except ScpiCommandError as exc:
                    self.push_error(exc.code, exc.detail)
                    if -199 <= exc.code <= -100:
                        break  # a command error discards the rest of the message
                    continue
                if new_path is not None:
                    path = new_path
                if response is not None:
                    responses.append(response)
            if not responses:
                return b""
            return self.response_separator.join(responses) + self.response_terminator

    def _execute_unit(
        self, unit: bytes, path: list[tuple[str, int | None]]
    ) -> tuple[list[tuple[str, int | None]] | None, bytes | None]:
        m = re.match(rb"[^\s]*", unit)
        assert m is not None
        header_bytes = m.group(0)
        rest = unit[m.end() :].lstrip(b" \t")
        try:
            header = header_bytes.decode("ascii")
        except UnicodeDecodeError:
            raise ScpiCommandError(-101) from None
        if not header or header in (":", "?"):
            raise ScpiCommandError(-102)
        mnemonics, absolute, is_query = _parse_header(header)
        common = mnemonics[0][0].startswith("*")
        full = mnemonics if (absolute or common) else path + mnemonics
        command, suffixes = self._lookup(tuple(full), is_query)
        params: list[Token] = []
        if rest:
            params = [parse_parameter(p) for p in split_top_level(rest, ord(","))]
            if any(not p.text and p.kind != "block" for p in params):
                raise ScpiCommandError(-109)
        if len(params) < command.min_params:
            raise ScpiCommandError(-109)
        if len(params) > command.max_params:
            raise ScpiCommandError(-108)
        ctx = CommandContext(self, header, suffixes, params)
        result = getattr(self, command.attribute)(ctx)
        response: bytes | None = None
        if command.is_query:
            if result is None:
                raise RuntimeError(f"query handler {command.attribute} returned None")
            response = result if isinstance(result, bytes) else str(result).encode("ascii")
        new_path = None if common else full[:-1]
        return new_path, response

    def _lookup(
        self, mnemonics: tuple[tuple[str, int | None], ...], is_query: bool
    ) -> tuple[Command, dict[str, int | None]]:
        key = (mnemonics, is_query)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        for command in self._commands:
            if command.is_query != is_query:
                continue
            caps = _match(command.nodes, mnemonics)
            if caps is not None:
                if len(self._cache) < 4096:
                    self._cache[key] = (command, caps)
                return command, caps
        raise ScpiCommandError(-113)

    # -- IEEE 488.2 common commands and SCPI system commands -----------------------------------

    @scpi("*IDN?")
    def _idn(self, ctx: CommandContext) -> str:
        return self.identity()

    @scpi("*RST", params=(0, 0))
    def _rst(self, ctx: CommandContext) -> None:
        self.reset_state()

    @scpi("*CLS", params=(0, 0))
    def _cls(self, ctx: CommandContext) -> None:
        self.errors.clear()
        self.esr = 0

    @scpi("*OPC", params=(0, 0))
    def _opc(self, ctx: CommandContext) -> None:
        self.esr |= ESR_OPC

    @scpi("*OPC?")
    def _opc_query(self, ctx: CommandContext) -> str:
        return "1"

    @scpi("*WAI", params=(0, 0))
    def _wai(self, ctx: CommandContext) -> None:
        """Every emulated operation completes when its command is processed."""

    @scpi("*TST?")
    def _tst(self, ctx: CommandContext) -> str:
        return "0"

    @scpi("*ESR?")
    def _esr(self, ctx: CommandContext) -> str:
        value, self.esr = self.esr, 0
        return format_nr1(value)

    @scpi("*ESE")
    def _ese_set(self, ctx: CommandContext) -> None:
        self.ese = ctx.integer(0, minimum=0, maximum=255)

    @scpi("*ESE?")
    def _ese(self, ctx: CommandContext) -> str:
        return format_nr1(self.ese)

    @scpi("*SRE")
    def _sre_set(self, ctx: CommandContext) -> None:
        self.sre = ctx.integer(0, minimum=0, maximum=255)

    @scpi("*SRE?")
    def _sre(self, ctx: CommandContext) -> str:
        return format_nr1(self.sre)

    @scpi("*STB?")
    def _stb(self, ctx: CommandContext) -> str:
        stb = (STB_EAV if len(self.errors) else 0) | (STB_ESB if self.esr & self.ese else 0)
        if stb & self.sre:
            stb |= 64  # RQS/MSS summary
        return format_nr1(stb)

    @scpi("SYSTem:ERRor[:NEXT]?")
    def _syst_err(self, ctx: CommandContext) -> str:
        return self.format_error(*self.errors.pop())

    @scpi("SYSTem:ERRor:COUNt?")
    def _syst_err_count(self, ctx: CommandContext) -> str:
        return format_nr1(len(self.errors))

    @scpi("SYSTem:ERRor:ALL?")
    def _syst_err_all(self, ctx: CommandContext) -> str:
        entries = [self.errors.pop() for _ in range(len(self.errors))] or [self.errors.pop()]
        return ",".join(self.format_error(c, m) for c, m in entries)


def commands_of(instrument: type[ScpiInstrument]) -> Iterable[str]:
    """The declared header patterns of an emulator class (for docs and tests)."""
    return [c.pattern for c in instrument._commands]
