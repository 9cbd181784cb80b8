"""Helpers (no tests) shared by the emulated-bench tests: the example bench, restricted to the
kinds that have an emulator, and an in-test function generator used until (or besides) the
Keysight emulator."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.simulators.bench_twin import (
    BenchTwin,
    EmulatedBench,
    EmulatorSettings,
    TwinConfig,
    available_emulators,
    load_twin_config,
)
from physlearn.simulators.clock import TimeSource
from physlearn.simulators.instruments.scpi import CommandContext, ScpiInstrument, scpi
from physlearn.spec.bench import BenchConfig, InstrumentConfig
from physlearn.spec.tomlconfig import read_toml

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bench.toml"
Array = NDArray[np.float64]


class SineGenerator(ScpiInstrument):
    """Test double of a 2-channel generator: V_ch(t) = A_ch sin(2π f t + φ_ch) (phase origin
    t = 0), sync output a 0/3.3 V square wave rising at every period start."""

    manufacturer = "PHYSLEARN"
    model = "SINEGEN"

    def reset_state(self) -> None:
        self.frequency_hz = 25.0
        self.amplitude_v = {1: 0.0, 2: 0.0}
        self.phase_rad = {1: 0.0, 2: 0.0}

    @scpi("SOURce<ch>:VOLTage")
    def _volt(self, ctx: CommandContext) -> None:
        self.amplitude_v[ctx.suffix("ch", maximum=2)] = ctx.number(0, minimum=0.0, maximum=5.0)

    @scpi("SOURce<ch>:PHASe")
    def _phase(self, ctx: CommandContext) -> None:
        deg = ctx.number(0, minimum=-360.0, maximum=360.0)
        self.phase_rad[ctx.suffix("ch", maximum=2)] = math.radians(deg)

    def output_voltage(self, channel: int, t_s: Array) -> Array:
        w = 2.0 * math.pi * self.frequency_hz
        return self.amplitude_v[channel] * np.sin(w * np.asarray(t_s) + self.phase_rad[channel])

    def sync_voltage(self, t_s: Array) -> Array:
        return np.where(np.mod(np.asarray(t_s) * self.frequency_hz, 1.0) < 0.5, 3.3, 0.0)


def sine_generator(
    name: str, inst: InstrumentConfig, s: EmulatorSettings, clock: TimeSource, twin: BenchTwin
) -> Any:
    gen = SineGenerator(clock, serial=s.serial or "1")
    twin.connect_generator(name, gen.output_voltage)
    twin.connect_sync(gen.sync_voltage)
    return gen


#: Builders for kinds without a landed emulator (the generator double always replaces it here).
TEST_FACTORIES = {"keysight33500b": sine_generator}


def example_configs(drop_unemulated: bool = True) -> tuple[BenchConfig, TwinConfig]:
    """The example bench; instruments with neither an emulator nor a test double are removed
    (with their wiring), so the tests run whichever emulators exist."""
    raw = read_toml(EXAMPLE)
    if drop_unemulated:
        raw = restrict_to_emulated(raw, available_emulators() | set(TEST_FACTORIES))
    config = BenchConfig.model_validate(raw)
    return config, load_twin_config(config, str(EXAMPLE))


def restrict_to_emulated(raw: dict[str, Any], kinds: Any) -> dict[str, Any]:
    """A copy of a raw bench table with only the instruments whose kind is in `kinds`."""
    raw = copy.deepcopy(raw)
    keep = {n for n, i in raw["instruments"].items() if i["kind"] in kinds}
    raw["instruments"] = {n: v for n, v in raw["instruments"].items() if n in keep}
    wiring = raw.get("wiring", {})
    for key in ("drives", "sense", "edges"):
        wiring[key] = [w for w in wiring.get(key, []) if w["instrument"] in keep]
    if wiring.get("sync", {}).get("instrument") not in keep:
        wiring.pop("sync", None)
    tw = raw["twin"].get("instruments", {})
    raw["twin"]["instruments"] = {n: v for n, v in tw.items() if n in keep}
    return raw


def example_bench(**kwargs: Any) -> EmulatedBench:
    config, twin = example_configs()
    return EmulatedBench(config, twin, factories=TEST_FACTORIES, **kwargs)
