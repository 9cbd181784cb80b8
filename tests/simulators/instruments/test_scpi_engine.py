"""The SCPI engine: framing, headers, parameters, error queue, common commands, formats."""

from __future__ import annotations

from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from physlearn.simulators.instruments.scpi import (
    CommandContext,
    MessageSplitter,
    ScpiInstrument,
    commands_of,
    format_block,
    format_nr1,
    format_nr2,
    format_nr3,
    format_significant,
    scpi,
    split_top_level,
)

pytestmark = pytest.mark.timeout(60)


class Toy(ScpiInstrument):
    """A small instrument exercising every parameter kind."""

    manufacturer = "ACME"
    model = "TOY-1"
    error_queue_capacity = 4
    error_messages: ClassVar[dict[int, str]] = {-222: "Value out of range"}  # own wording

    def reset_state(self) -> None:
        self.volts = {1: 0.0, 2: 0.0}
        self.enabled = False
        self.label = ""
        self.data = b""
        self.mode = "FAST"
        self.chans: tuple[int, ...] = ()

    @scpi("SOURce<ch>:VOLTage[:LEVel][:IMMediate]")
    def _v(self, ctx: CommandContext) -> None:
        ch = ctx.suffix("ch", maximum=2)
        self.volts[ch] = ctx.number(
            0, minimum=-5.0, maximum=5.0, default=0.0, units={"V": 1.0, "MV": 1e-3}
        )

    @scpi("SOURce<ch>:VOLTage[:LEVel][:IMMediate]?")
    def _vq(self, ctx: CommandContext) -> str:
        return format_nr3(self.volts[ctx.suffix("ch", maximum=2)], 4)

    @scpi("OUTPut[:STATe]")
    def _out(self, ctx: CommandContext) -> None:
        self.enabled = ctx.boolean(0)

    @scpi("OUTPut[:STATe]?")
    def _outq(self, ctx: CommandContext) -> str:
        return "1" if self.enabled else "0"

    @scpi("DISPlay:TEXT")
    def _text(self, ctx: CommandContext) -> None:
        self.label = ctx.string(0)

    @scpi("DATA")
    def _data(self, ctx: CommandContext) -> None:
        self.data = ctx.block(0)

    @scpi("DATA?")
    def _dataq(self, ctx: CommandContext) -> bytes:
        return format_block(self.data, 9)

    @scpi("MODE")
    def _mode(self, ctx: CommandContext) -> None:
        self.mode = ctx.choice(0, ("FAST", "SLOW", "MEDium"))

    @scpi("ROUTe:CLOSe")
    def _route(self, ctx: CommandContext) -> None:
        self.chans = ctx.channel_list(0, maximum=8)

    @scpi("COUNt")
    def _count(self, ctx: CommandContext) -> None:
        self.count = ctx.integer(0, minimum=0, maximum=1000)


@pytest.fixture
def toy() -> Toy:
    return Toy()


def err(inst: ScpiInstrument) -> bytes:
    return inst.process(b"SYST:ERR?")


# -- headers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "SOUR2:VOLT",
        "SOURCE2:VOLTAGE",
        "sour2:volt:lev",
        ":Source2:Voltage:Level:Immediate",
        "SOUR2:VOLT:IMM",
        "sOuRcE2:vOlT",
    ],
)
def test_short_and_long_forms_case_insensitive(toy: Toy, header: str) -> None:
    assert toy.process(f"{header} 1.25".encode()) == b""
    assert toy.volts[2] == 1.25
    assert err(toy) == b'0,"No error"\n'


@pytest.mark.parametrize("header", ["SOURC2:VOLT", "SOU2:VOLT", "SOUR2:VOLTA", "SOUR2:LEV"])
def test_neither_short_nor_long_form_is_undefined(toy: Toy, header: str) -> None:
    toy.process(f"{header} 1".encode())
    assert err(toy) == b'-113,"Undefined header"\n'


def test_omitted_suffix_means_one_and_bad_suffix_is_114(toy: Toy) -> None:
    toy.process(b"SOUR:VOLT 2")
    assert toy.volts[1] == 2.0
    toy.process(b"SOUR3:VOLT 2")
    assert err(toy) == b'-114,"Header suffix out of range"\n'
    toy.process(b"OUTP2 ON")  # a suffix on a node that takes none
    assert err(toy) == b'-113,"Undefined header"\n'


def test_compound_relative_path_and_reset_by_colon(toy: Toy) -> None:
    # After SOUR1:VOLT the path is SOUR1, so 'VOLT?' is SOUR1:VOLT?.
    assert toy.process(b"SOUR1:VOLT 1;VOLT?;:SOUR2:VOLT 2;VOLT?") == b"+1.0000E+00;+2.0000E+00\n"
    # Common commands do not change the path.
    assert toy.process(b"SOUR2:VOLT 3;*OPC;VOLT?") == b"+3.0000E+00\n"
    # Without ':' the header is relative: OUTP under SOUR2 does not exist.
    toy.process(b"SOUR2:VOLT 1;OUTP ON")
    assert err(toy) == b'-113,"Undefined header"\n'
    assert toy.enabled is False


def test_command_error_discards_rest_of_message_execution_error_does_not(toy: Toy) -> None:
    toy.process(b"FOO 1;:SOUR1:VOLT 4")
    assert toy.volts[1] == 0.0
    toy.process(b"SOUR1:VOLT 9;:SOUR2:VOLT 4")
    assert toy.volts == {1: 0.0, 2: 4.0}
    assert err(toy) == b'-113,"Undefined header"\n'
    assert err(toy) == b'-222,"Value out of range"\n'


def test_multiple_queries_joined_by_semicolon(toy: Toy) -> None:
    assert toy.process(b"*IDN?;OUTP?;*OPC?") == b"ACME,TOY-1,00000,0;0;1\n"


def test_mnemonic_too_long_and_empty_nodes(toy: Toy) -> None:
    toy.process(b"SOURCEVERYLONGNAME:VOLT 1")
    assert err(toy) == b'-112,"Program mnemonic too long"\n'
    toy.process(b"SOUR1::VOLT 1")
    assert err(toy) == b'-102,"Syntax error"\n'


# -- parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1.0),
        ("-2", -2.0),
        ("1.5", 1.5),
        ("+.5", 0.5),
        ("2.", 2.0),
        ("1.5E-1", 0.15),
        ("-5e-1", -0.5),
        ("250 mV", 0.25),
        ("250MV", 0.25),
        ("3V", 3.0),
        ("MIN", -5.0),
        ("minimum", -5.0),
        ("MAX", 5.0),
        ("DEF", 0.0),
        ("#H2", 2.0),
        ("#B11", 3.0),
        ("#Q4", 4.0),
    ],
)
def test_numeric_parameters(toy: Toy, text: str, value: float) -> None:
    toy.process(f"SOUR1:VOLT {text}".encode())
    assert toy.volts[1] == pytest.approx(value, rel=1e-15)
    assert err(toy) == b'0,"No error"\n'


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("6", -222),
        ("-5.0001", -222),
        ("1 kV", -131),
        ("HIGH", -104),
        ('"1"', -104),
        ("1e999", -120),
        ("1,2", -108),
        ("", -109),
        ("1$", -102),
    ],
)
def test_bad_numeric_parameters(toy: Toy, text: str, code: int) -> None:
    toy.process(f"SOUR1:VOLT {text}".encode())
    assert err(toy).startswith(f"{code},".encode())
    assert toy.volts[1] == 0.0


@pytest.mark.parametrize(
    ("text", "state"), [("ON", True), ("on", True), ("1", True), ("OFF", False), ("0", False)]
)
def test_boolean_parameters(toy: Toy, text: str, state: bool) -> None:
    toy.enabled = not state
    toy.process(f"OUTP {text}".encode())
    assert toy.enabled is state


def test_character_data_short_long_and_illegal(toy: Toy) -> None:
    toy.process(b"MODE med")
    assert toy.mode == "MEDium"
    toy.process(b"MODE MEDIUM")
    assert toy.mode == "MEDium"
    toy.process(b"MODE MEDI")
    assert err(toy) == b'-224,"Illegal parameter value"\n'


def test_strings_channel_lists_and_integers(toy: Toy) -> None:
    toy.process(b'DISP:TEXT "say ""hi""; ok"')
    assert toy.label == 'say "hi"; ok'
    toy.process(b"DISP:TEXT 'single'")
    assert toy.label == "single"
    toy.process(b"ROUT:CLOS (@1,3:5,8)")
    assert toy.chans == (1, 3, 4, 5, 8)
    toy.process(b"ROUT:CLOS (@9)")
    assert err(toy) == b'-222,"Value out of range"\n'
    toy.process(b"COUN 12.6")
    assert toy.count == 13
    toy.process(b'DISP:TEXT "unterminated')
    assert err(toy) == b'-151,"Invalid string data"\n'


def test_definite_block_with_newlines_semicolons_and_commas(toy: Toy) -> None:
    payload = b"a\nb;c,d\r\n#9\x00\xff"
    message = b"DATA " + format_block(payload) + b";DATA?"
    assert toy.process(message) == format_block(payload, 9) + b"\n"
    assert toy.data == payload


@pytest.mark.parametrize("payload", [b"ends\n", b"ends ", b"ends\r", b"\r\n", b""])
def test_block_payload_ending_in_blanks_is_kept(toy: Toy, payload: bytes) -> None:
    splitter = MessageSplitter()
    (message,) = splitter.feed(b"DATA " + format_block(payload) + b"\r\n")
    toy.process(message)
    assert toy.data == payload
    assert err(toy) == b'0,"No error"\n'


def test_indefinite_block_and_wrong_length_header(toy: Toy) -> None:
    toy.process(b"DATA #0raw bytes")
    assert toy.data == b"raw bytes"
    toy.process(b"DATA #13abcd")
    assert err(toy).startswith(b"-161,")
    toy.process(b"DATA #3ab")
    assert err(toy).startswith(b"-161,")


# -- framing ------------------------------------------------------------------------------------


def test_splitter_keeps_blocks_whole_across_chunks() -> None:
    stream = b"A 1\r\nDATA #210\n\n\n\n\n\n\n\n\n\n\nB?\n#"
    messages: list[bytes] = []
    splitter = MessageSplitter()
    for i in range(len(stream)):  # one byte at a time
        messages += splitter.feed(stream[i : i + 1])
    assert messages == [b"A 1", b"DATA #210" + b"\n" * 10, b"B?"]
    assert splitter.pending_bytes == 1


def test_split_top_level_respects_quotes_parens_blocks() -> None:
    assert split_top_level(b'A "x;y";B (@1;2);C #13;;;;D', ord(";")) == [
        b'A "x;y"',
        b"B (@1;2)",
        b"C #13;;;",
        b"D",
    ]


_plain = st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"").replace(b"#", b""))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_plain, st.binary(max_size=300)), min_size=1, max_size=6),
    st.integers(min_value=1, max_value=64),
)
def test_property_splitter_recovers_messages_with_blocks(
    parts: list[tuple[bytes, bytes]], chunk: int
) -> None:
    messages = [prefix.rstrip(b"\r") + format_block(block) for prefix, block in parts]
    stream = b"".join(m + b"\n" for m in messages)
    splitter = MessageSplitter()
    out: list[bytes] = []
    for i in range(0, len(stream), chunk):
        out += splitter.feed(stream[i : i + chunk])
    assert out == messages


def _spellings(word: str) -> st.SearchStrategy[str]:
    short = "".join(c for c in word if c.isupper())
    return st.sampled_from([short, word.upper()]).flatmap(
        lambda w: st.lists(st.booleans(), min_size=len(w), max_size=len(w)).map(
            lambda flags: "".join(c.lower() if f else c for c, f in zip(w, flags, strict=True))
        )
    )


@settings(max_examples=200, deadline=None)
@given(
    _spellings("SOURce"),
    _spellings("VOLTage"),
    st.sampled_from(["", ":LEV", ":level", ":LEV:IMM", ":IMMediate"]),
    st.booleans(),
    st.integers(min_value=-5000, max_value=5000),
)
def test_property_every_spelling_reaches_the_handler(
    source: str, volt: str, tail: str, colon: bool, millivolts: int
) -> None:
    toy = Toy()
    header = (":" if colon else "") + f"{source}2:{volt}{tail}"
    toy.process(f"{header} {millivolts} mV".encode())
    assert toy.volts[2] == pytest.approx(millivolts * 1e-3)
    assert err(toy) == b'0,"No error"\n'


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_property_garbage_never_crashes_and_replies_are_terminated(garbage: bytes) -> None:
    toy = Toy()
    for message in MessageSplitter().feed(garbage + b"\n"):
        reply = toy.process(message)
        assert reply == b"" or reply.endswith(b"\n")
    assert len(toy.errors) <= toy.error_queue_capacity


# -- error queue and status ---------------------------------------------------------------------


def test_error_queue_fifo_overflow_and_cls(toy: Toy) -> None:
    assert err(toy) == b'0,"No error"\n'
    for _ in range(6):
        toy.process(b"FOO")
    assert toy.process(b"SYST:ERR:COUN?") == b"4\n"
    assert [err(toy) for _ in range(5)] == [
        b'-113,"Undefined header"\n',
        b'-113,"Undefined header"\n',
        b'-113,"Undefined header"\n',
        b'-350,"Queue overflow"\n',
        b'0,"No error"\n',
    ]
    toy.process(b"FOO")
    toy.process(b"*CLS")
    assert err(toy) == b'0,"No error"\n'


def test_event_status_and_status_byte(toy: Toy) -> None:
    assert toy.process(b"*ESR?") == b"0\n"
    toy.process(b"FOO")  # command error → CME (32)
    toy.process(b"SOUR1:VOLT 99")  # execution error → EXE (16)
    toy.process(b"*OPC")  # OPC (1)
    assert toy.process(b"*STB?") == b"4\n"  # error queue not empty
    toy.process(b"*ESE 32")
    assert toy.process(b"*ESE?;*STB?") == b"32;36\n"
    assert toy.process(b"*ESR?") == b"49\n"
    assert toy.process(b"*ESR?") == b"0\n"


def test_rst_idn_opc_wai(toy: Toy) -> None:
    toy.process(b"SOUR1:VOLT 1;:OUTP ON")
    toy.process(b"*RST;*WAI")
    assert toy.volts == {1: 0.0, 2: 0.0} and toy.enabled is False
    assert toy.process(b"*IDN?") == b"ACME,TOY-1,00000,0\n"
    assert toy.process(b"*OPC?") == b"1\n"
    assert toy.process(b"*TST?") == b"0\n"


def test_injected_error_entries_use_instrument_messages(toy: Toy) -> None:
    toy.push_error(-222, "injected")
    toy.push_error(-300)
    assert toy.process(b"SYST:ERR:ALL?") == (
        b'-222,"Value out of range;injected",-300,"Device-specific error"\n'
    )


def test_declared_patterns_are_listed() -> None:
    patterns = list(commands_of(Toy))
    assert "SOURce<ch>:VOLTage[:LEVel][:IMMediate]?" in patterns
    assert "*IDN?" in patterns


# -- formats ------------------------------------------------------------------------------------


def test_number_formats() -> None:
    assert format_nr1(-3) == "-3"
    assert format_nr2(1.25, 4) == "1.2500"
    assert format_nr3(1000.0, 8) == "+1.00000000E+03"
    assert format_nr3(-0.00125, 3, plus=False) == "-1.250E-03"
    assert format_nr3(float("inf"), 3) == "+9.9E+37"
    assert format_significant(0.0, 9) == "0"
    assert format_significant(-2.0, 9) == "-2"
    assert format_significant(1e-7, 6, upper_exponent=True) == "1E-07"
    assert format_block(b"ab", 9) == b"#9000000002ab"
    assert format_block(b"x" * 12) == b"#212" + b"x" * 12
    with pytest.raises(ValueError):
        format_block(b"x" * 10, 1)
