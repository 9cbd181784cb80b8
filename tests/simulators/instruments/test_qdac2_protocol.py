"""QDAC-II emulator against its command reference: forms, queries, errors, time evolution."""

from __future__ import annotations

import numpy as np
import pytest

from physlearn.simulators.clock import VirtualClock
from physlearn.simulators.instruments.qdac2 import DAC_BITS, Qdac2Emulator, quantise

pytestmark = pytest.mark.timeout(60)


def reported(voltage_v: float, range_name: str = "HIGH") -> float:
    """What the instrument reports for a setpoint: quantised, sent with 9 significant digits."""
    return float(f"{quantise(voltage_v, range_name):.9g}")


def q(emu: Qdac2Emulator, text: str) -> str:
    reply = emu.process(text.encode())
    assert reply.endswith(b"\n")
    return reply[:-1].decode()


def test_identity_and_error_format(qdac_emulator: Qdac2Emulator) -> None:
    assert q(qdac_emulator, "*IDN?") == "QDevil, QDAC-II, 00042, 13-1.57"
    assert q(qdac_emulator, "syst:err?") == '0, "No error"'
    qdac_emulator.process(b"sour1:bogus 1")
    assert q(qdac_emulator, "SYST:ERR?") == '-113, "Undefined header"'


@pytest.mark.parametrize(
    "command",
    [
        "sour3:volt 0.25",
        "SOURCE3:VOLTAGE 0.25",
        "sour3:dc:volt 0.25",
        ":SOUR3:DC:VOLT:LEV:IMM:AMPL 0.25",
        "Sour3:Volt:Level 250e-3",
        "sour:volt 0.25,(@3)",
    ],
)
def test_voltage_forms(qdac_emulator: Qdac2Emulator, command: str) -> None:
    qdac_emulator.process(command.encode())
    assert float(q(qdac_emulator, "sour3:volt?")) == reported(0.25)
    assert q(qdac_emulator, "syst:err?") == '0, "No error"'


def test_setpoint_is_quantised_on_the_range_grid(qdac_emulator: Qdac2Emulator) -> None:
    q(qdac_emulator, "*OPC?")
    qdac_emulator.process(b"sour1:volt 0.1;:sour2:rang low;:sour2:volt 0.1")
    high = float(q(qdac_emulator, "sour1:volt?"))
    low = float(q(qdac_emulator, "sour2:volt?"))
    lsb_high, lsb_low = 20.0 / 2**DAC_BITS, 4.0 / 2**DAC_BITS
    assert high == float(f"{round(0.1 / lsb_high) * lsb_high:.9g}")
    assert low == float(f"{round(0.1 / lsb_low) * lsb_low:.9g}")
    assert abs(high - 0.1) <= lsb_high / 2 and abs(low - 0.1) <= lsb_low / 2
    assert q(qdac_emulator, "sour1:volt?") == "0.0999999046"  # 9 significant digits


def test_every_setting_is_queryable(qdac_emulator: Qdac2Emulator) -> None:
    assert q(qdac_emulator, "sour5:rang?;filt?;dc:volt:mode?;slew?") == ("high;high;fix;20000000")
    qdac_emulator.process(b"sour5:rang low;filt dc;dc:volt:slew 0.5;mode fix")
    assert q(qdac_emulator, "sour5:rang?;filt?;volt:slew?;mode?") == "low;dc;0.5;fix"
    qdac_emulator.process(b"sour5:filt medium")
    assert q(qdac_emulator, "sour5:filt?") == "med"
    assert q(qdac_emulator, "sour5:rang:low:min?;max?;:sour5:rang:high:min?;max?") == (
        "-2;2;-10;10"
    )
    assert q(qdac_emulator, "syst:err?") == '0, "No error"'


@pytest.mark.parametrize(
    ("command", "code"),
    [
        ("sour1:volt 10.5", -222),
        ("sour1:volt -11", -222),
        ("sour25:volt 1", -114),
        ("sour0:volt 1", -114),
        ("sour1:volt:slew 0", -222),
        ("sour1:volt:slew 3e7", -222),
        ("sour1:rang medium", -224),
        ("sour1:filt low", -224),
        ("sour1:volt:mode list", -224),
        ("sour1:volt", -109),
        ("sour1:volt 1,2,3", -108),
        ("sour1:volt one", -104),
        ("sour:volt 1,(@1,25)", -222),
        ("sour2:volt 1,(@1)", -108),
        ("sour1:volt:last 1", -113),
    ],
)
def test_error_codes(qdac_emulator: Qdac2Emulator, command: str, code: int) -> None:
    qdac_emulator.process(command.encode())
    entry = q(qdac_emulator, "syst:err?")
    assert entry.startswith(f"{code}, "), entry
    assert q(qdac_emulator, "sour:volt? (@1,2)") == "0,0"


def test_low_range_refuses_what_high_range_accepts(qdac_emulator: Qdac2Emulator) -> None:
    qdac_emulator.process(b"sour7:rang low;:sour7:volt 2.5")
    assert q(qdac_emulator, "syst:err?") == '-222, "Data out of range"'
    qdac_emulator.process(b"sour7:rang high;:sour7:volt 2.5;:sour7:rang low")
    assert q(qdac_emulator, "syst:err?").startswith("-221, ")
    assert q(qdac_emulator, "sour7:rang?") == "high"
    qdac_emulator.process(b"sour7:volt min")
    assert q(qdac_emulator, "sour7:volt?") == "-10"


def test_channel_lists(qdac_emulator: Qdac2Emulator) -> None:
    qdac_emulator.process(b"sour:volt 0.5,(@2:4,6)")
    values = q(qdac_emulator, "sour:volt? (@1:7)").split(",")
    expected = reported(0.5)
    assert [float(v) for v in values] == [0, expected, expected, expected, 0, expected, 0]


def test_terminations_crlf_and_lf(qdac_emulator: Qdac2Emulator) -> None:
    splitter = qdac_emulator.message_splitter()
    messages = splitter.feed(b"sour1:volt 1\r\nsour1:volt?\nsour1:rang?\r\n")
    replies = [qdac_emulator.process(m) for m in messages]
    assert replies == [b"", b"1.00000024\n", b"high\n"]


def test_slew_rate_evolves_with_the_virtual_clock(
    qdac_emulator: Qdac2Emulator, clock: VirtualClock
) -> None:
    qdac_emulator.process(b"sour4:dc:volt:slew 2;:sour4:volt 1")
    assert float(q(qdac_emulator, "sour4:volt?")) == reported(1.0)
    assert q(qdac_emulator, "sour4:volt:last?") == "0"
    clock.advance(0.25)
    assert float(q(qdac_emulator, "sour4:volt:last?")) == pytest.approx(0.5, abs=1e-6)
    clock.advance(1.0)
    assert float(q(qdac_emulator, "sour4:volt:last?")) == reported(1.0)


def test_output_voltages_for_the_twin(qdac_emulator: Qdac2Emulator, clock: VirtualClock) -> None:
    qdac_emulator.process(b"sour1:dc:volt:slew 10;:sour1:filt dc;:sour1:volt 1;:sour2:volt -1")
    tau = 1.0 / (2 * np.pi * 10.0)
    t = np.array([0.0, 0.05, 0.1, 0.1 + 5 * tau, 1.0])
    out = qdac_emulator.output_voltages(t)
    assert out.shape == (5, 24)
    # Channel 1: 10 V/s ramp through a 10 Hz first-order filter: y = r(t - tau(1 - e^{-t/tau})).
    ramp = 10.0 * (0.05 - tau * (1 - np.exp(-0.05 / tau)))
    assert out[1, 0] == pytest.approx(ramp, rel=1e-9)
    assert out[0, 0] == 0.0
    assert out[-1, 0] == pytest.approx(quantise(1.0, "HIGH"), abs=1e-6)
    assert (
        out[2:, 0].max() <= quantise(1.0, "HIGH") + 1e-12
    )  # a first-order filter never overshoots
    # Channel 2: max slew, 300 kHz filter: settled after a few microseconds.
    assert out[1:, 1] == pytest.approx(quantise(-1.0, "HIGH"), abs=1e-12)
    assert np.all(out[:, 2:] == 0.0)
    assert qdac_emulator.output_voltages(0.05).shape == (24,)
    with pytest.raises(ValueError):
        qdac_emulator.output_voltages(-1.0)


def test_output_is_continuous_when_a_ramp_is_retargeted(
    qdac_emulator: Qdac2Emulator, clock: VirtualClock
) -> None:
    qdac_emulator.process(b"sour1:dc:volt:slew 1;:sour1:volt 1")
    clock.advance(0.5)
    qdac_emulator.process(b"sour1:volt 0")
    before, at, after = qdac_emulator.output_voltages([0.5 - 1e-9, 0.5, 0.75])[:, 0]
    assert before == pytest.approx(at, abs=1e-8)
    assert after == pytest.approx(0.25, abs=1e-5)


def test_fault_dac_loses_its_setpoints(qdac_emulator: Qdac2Emulator, clock: VirtualClock) -> None:
    qdac_emulator.process(b"sour:volt 0.5,(@1:24)")
    clock.advance(1.0)
    qdac_emulator.lose_setpoints()
    assert q(qdac_emulator, "sour:volt? (@1,12,24)") == "0,0,0"
    assert np.all(qdac_emulator.output_voltages(1.0) == 0.0)
    assert q(qdac_emulator, "syst:err?") == '0, "No error"'  # silently


def test_rst_restores_defaults(qdac_emulator: Qdac2Emulator) -> None:
    qdac_emulator.process(b"sour2:rang low;filt dc;dc:volt:slew 1;:sour2:volt 1")
    qdac_emulator.process(b"*RST")
    assert q(qdac_emulator, "sour2:rang?;filt?;volt:slew?;:sour2:volt?") == "high;high;20000000;0"
