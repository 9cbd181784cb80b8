"""The bench's outputs: the drive generators' arbitrary waveforms and the DACs' setpoints — what
is written, what is playing, the read-back of the DACs, arming and the safe state."""

from __future__ import annotations

import asyncio
import math

import numpy as np
from numpy.typing import NDArray

from physlearn.spec.bench import SWITCH_FORWARD_V
from physlearn.systems.bench.instruments import BenchTime, Instruments
from physlearn.systems.bench.planner import Planner

Array = NDArray[np.float64]

__all__ = ["Outputs"]

#: the arbitrary waveform's name in the generators' volatile memory
_ARB = "PLW"


class Outputs:
    """The generators and DACs of one bench. ``dac_v``: the setpoint (V) each DAC channel
    holds, per (instrument, channel); ``arb_now``: the arb volts (M_arb,) each generator
    channel plays."""

    def __init__(self, planner: Planner, instruments: Instruments, time_: BenchTime) -> None:
        self.planner = planner
        self.options = planner.options
        self.instruments = instruments
        self.time = time_
        self.dac_v: dict[tuple[str, int], float] = {}
        self.arb_now: dict[tuple[str, int], Array] = {}

    @property
    def _arb_rate(self) -> float:
        """The arb sample rate (Sa/s): M_arb samples per drive period."""
        return self.options.arb_points_per_period / self.planner.period_s

    # ------------------------------------------------------------------ arming
    async def arm_dacs(self) -> None:
        """Every DAC channel of a trainable edge slews at the configured rate."""
        slew = self.options.safety.dac_slew_v_per_s
        for name in self.planner.layout.dacs:
            dac = self.instruments.dac(name)
            for e in self.planner.layout.param_edges:
                if e.instrument == name:
                    await dac.set_slew_rate(e.channel, slew)
            for a in self.planner.layout.active:
                if a.instrument == name:
                    await dac.set_slew_rate(a.switch_channel, slew)

    async def arm_generators(self) -> None:
        """Every drive channel: high-Z load, a zero arb playing; the sync on the first channel
        of the sync generator; the generators phase-synchronised (outputs still off)."""
        wiring = self.planner.config.wiring
        sync = wiring.sync
        assert sync is not None
        zero = np.zeros(self.options.arb_points_per_period)
        rate = self._arb_rate
        for name in self.planner.layout.generators:
            gen = self.instruments.generator(name)
            for dw in wiring.drives:
                if dw.instrument != name:
                    continue
                await gen.set_load(dw.channel, math.inf)
                await gen.clear_arbs(dw.channel)
                await gen.upload_arb(dw.channel, _ARB, zero, rate)
                await gen.play_arb(dw.channel, _ARB)
            if name == sync.instrument:
                first = min(dw.channel for dw in wiring.drives if dw.instrument == name)
                await gen.set_sync(True, first)
        gens = self.planner.layout.generators
        await asyncio.gather(*(self.instruments.generator(n).sync_phases() for n in gens))

    def playing_zero(self) -> None:
        """Every drive channel plays the zero arb (after `arm_generators`)."""
        zero = np.zeros(self.options.arb_points_per_period)
        self.arb_now = {
            (dw.instrument, dw.channel): zero for dw in self.planner.config.wiring.drives
        }

    async def enable(self) -> None:
        """Switch every drive channel's output on."""
        for name in self.planner.layout.generators:
            gen = self.instruments.generator(name)
            for dw in self.planner.config.wiring.drives:
                if dw.instrument == name:
                    await gen.output(dw.channel, True)

    # ------------------------------------------------------------------ drive
    async def upload(self, force: Array) -> bool:
        """Program every generator channel whose arb differs from what it plays (all channels
        checked before any write); True if anything was written."""
        plan = self.planner.drive_plan(force)  # all channels checked before any write
        rate = self._arb_rate
        todo = {
            key: v
            for key, v in plan.items()
            if key not in self.arb_now or not np.array_equal(self.arb_now[key], v)
        }

        async def program(name: str) -> None:
            gen = self.instruments.generator(name)
            for (inst, ch), v in todo.items():
                if inst == name:
                    self.arb_now.pop((inst, ch), None)
                    await gen.clear_arbs(ch)
                    await gen.upload_arb(ch, _ARB, v, rate)
                    await gen.play_arb(ch, _ARB)
                    self.arb_now[(inst, ch)] = v

        await asyncio.gather(*(program(n) for n in sorted({k[0] for k in todo})))
        return bool(todo)

    # ------------------------------------------------------------------ DACs
    def dac_changes(
        self, plan: dict[tuple[str, int], float]
    ) -> tuple[dict[str, dict[int, float]], float]:
        """The setpoints of ``plan`` that differ from what the DACs hold, per DAC, and the
        largest step (V) from the held value (the safe value where unknown)."""
        by_dac: dict[str, dict[int, float]] = {}
        ramp = 0.0
        for (inst, ch), v in plan.items():
            old = self.dac_v.get((inst, ch))
            if old is not None and old == v:
                continue
            by_dac.setdefault(inst, {})[ch] = v
            ramp = max(ramp, abs(v - (old if old is not None else self.options.safety.safe_dac_v)))
        return by_dac, ramp

    async def write_dacs(self, by_dac: dict[str, dict[int, float]]) -> None:
        """Write the setpoints (DACs concurrently). When a write fails, it is unknown which
        landed: those channels are forgotten (written again next time)."""
        try:
            await asyncio.gather(
                *(self.instruments.dac(n).set_voltages(vs) for n, vs in by_dac.items())
            )
        except BaseException:
            for inst, chans in by_dac.items():
                for ch in chans:
                    self.dac_v.pop((inst, ch), None)
            raise

    async def read_back(
        self, channels: dict[str, list[int]]
    ) -> list[tuple[str, int, float, float]]:
        """Read the setpoints of ``channels`` (per DAC) back, concurrently; returns the lost
        ones (instrument, channel, expected V, read-back V) and makes the cache hold what the
        DAC really has, so that the next `set_parameters` writes them again."""
        names = [n for n, chs in channels.items() if chs]

        async def read(n: str) -> Array:
            return np.asarray(await self.instruments.dac(n).get_voltages(channels[n]), dtype=float)

        got = await asyncio.gather(*(read(n) for n in names))
        lost = []
        for n, values in zip(names, got, strict=True):
            for ch, rb in zip(channels[n], values, strict=True):
                v = self.dac_v.get((n, ch))
                # the read-back is the DAC-quantised setpoint, printed to ~6 digits
                if v is not None and not abs(float(rb) - v) <= 2e-5 + 1e-5 * abs(v):
                    lost.append((n, ch, v, float(rb)))
                    self.dac_v[(n, ch)] = float(rb)
        return lost

    # ------------------------------------------------------------------ safe state
    async def safe_state(self) -> list[str]:
        """Drive outputs off, DACs ramped to the safe value at the slew limit (waited for);
        every output is tried whatever fails. Returns what failed (``"<name>: <error>"``)."""
        errors: list[str] = []
        for name in self.planner.layout.generators:
            if name not in self.instruments.by_name:
                continue
            try:
                await self.instruments.generator(name).safe_state()
            except Exception as exc:  # keep going: every output must be made safe
                errors.append(f"{name}: {exc}")
        safe = self.options.safety.safe_dac_v
        ramp = 0.0
        for name in self.planner.layout.dacs:
            if name not in self.instruments.by_name:
                continue
            chans = {
                e.channel: safe for e in self.planner.layout.param_edges if e.instrument == name
            }
            # active elements forward (their gain channel at the safe value above)
            chans.update(
                {
                    a.switch_channel: SWITCH_FORWARD_V
                    for a in self.planner.layout.active
                    if a.instrument == name
                }
            )
            try:
                await self.instruments.dac(name).set_voltages(chans)
            except Exception as exc:
                errors.append(f"{name}: {exc}")
        for v in self.dac_v.values():
            ramp = max(ramp, abs(v - safe))
        self.dac_v = {}
        self.arb_now = {}
        if ramp > 0:
            try:
                await self.time.clock.sleep(
                    1.01 * ramp / self.options.safety.dac_slew_v_per_s + 1e-3
                )
            except Exception as exc:
                errors.append(f"clock: {exc}")
        return errors
