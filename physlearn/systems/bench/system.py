"""`BenchSystem`: the `PhysicalSystem` of a bench — real instruments or the emulated bench.

Configured by the bench config (instruments, VISA resources, wiring, output limits;
`physlearn.spec.bench`), a calibration, and the controller's network spec (topology, ρ,
modulations, input encoding — never the coupling values: those are what is trained).

Per measured sample (the batch samples are measured one after the other on the one network):

1. the sample's total force per node, F(t) = input drive + fixed tones + extra force (nudge), is
   turned into one arbitrary waveform per generator channel wired to a node: volts = F/g_j
   pre-compensated, harmonic by harmonic, for the actuator delay τ_j and the generator's
   zero-order hold (sample rate = M_arb × f, so the arb spans exactly one drive period; the
   channel carries drive + nudge together). Every channel's samples are checked against its
   limits before the first write;
2. the generators (different instruments: concurrently) upload and play; every command is
   completed (error-queue query) before the clock waits;
3. settling (`physlearn.systems.bench.settling`): the first wait comes from the calibrated decay rate; then
   every scope takes ONE triggered :SINGle acquisition of all its channels over K periods
   (scopes concurrently); the per-period fits' approach is fitted to estimate the remaining
   transient, and the controller waits more if needed; non-T-periodic responses are reported;
4. the scopes' volts become node coordinates on the period grid (`physlearn.systems.bench.acquisition`),
   groups are stitched on a reference node measured by every scope (the stitch is checked), and
   the interlock checks the measured response amplitude.

Parameters α (trainable couplings, in the spec's order) → DAC volts through the calibration's
inverse maps, refused (`LimitError`) outside the calibrated range or the DAC limits before any
write; the DAC slews at its configured rate and the controller waits the ramp before measuring.

Nothing is switched on before `arm()`; `plan_check` (the dry run) checks every planned setting
without writing anything; `close()` (every exit path) puts the bench in its safe state: drive
outputs off, DACs ramped to their safe values at the slew limit (waited for), links closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.calibration.bench import config_hash
from physlearn.calibration.schema import CalibrationFile
from physlearn.drivers.scpi_instrument import ScpiInstrument
from physlearn.errors import (
    CalibrationError,
    ConfigError,
    GradientError,
    InstrumentError,
    InstrumentProtocolError,
    SafetyError,
)
from physlearn.spec.bench import SWITCH_FORWARD_V, BenchConfig
from physlearn.spec.clock import Clock
from physlearn.spec.modulation import Constant
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import (
    ForceWaveform,
    Level,
    LinearFeedback,
    Observation,
    PhysicalSystem,
    SettleInfo,
)
from physlearn.systems.bench.chains import Chains, calibration_version
from physlearn.systems.bench.feedback import bench_feedback_pairs, plan_feedback
from physlearn.systems.bench.instruments import BenchTime, DriverFactory, Instruments
from physlearn.systems.bench.journal import Journal, MeasurementRecord
from physlearn.systems.bench.options import BenchOptions
from physlearn.systems.bench.outputs import Outputs
from physlearn.systems.bench.planner import Planner
from physlearn.systems.bench.ranging import ranging_policy
from physlearn.systems.bench.readout import (
    Readout,
    ReadoutContext,
    ReadoutFactory,
    ScopeReadout,
)
from physlearn.systems.bench.response_memory import ResponseMemory
from physlearn.systems.bench.scopes import ScopeGroups
from physlearn.systems.bench.settler import SettledSample, Settler
from physlearn.systems.safety import Interlock, check_finite

log = logging.getLogger(__name__)
Array = NDArray[np.float64]

__all__ = ["BenchSystem", "calibration_version"]


class BenchSystem(PhysicalSystem):
    """See the module docstring. Use: ``await connect()``, ``await arm()``, train, ``close()``.

    Composed of: ``planner`` (chains, layout, plans; no I/O), ``outputs`` (generators, DACs),
    ``scopes`` (scope groups: configuration, ranging, acquisition), ``settler`` (settle loop,
    response memory), ``readout`` (scope readout, or the lock-in readout: ``readout=``, a
    `ReadoutFactory`), ``journal`` (typed measurement records)."""

    def __init__(
        self,
        config: BenchConfig,
        calibration: CalibrationFile,
        spec: NetworkSpec,
        clock: Clock,
        options: BenchOptions,
        *,
        resources: dict[str, str] | None = None,
        driver_factory: DriverFactory | None = None,
        level: Level = Level.BENCH,
        readout: ReadoutFactory | None = None,
    ):
        self.level = level
        self.config = config.controller_view()
        self.cal = calibration
        self.calibration_version = calibration_version(calibration)
        self.spec = spec
        self.clock = clock
        self.options = options
        self.resources = dict(resources or {})
        self.experiments = 0
        self.interlock = Interlock(options.safety.max_response)
        self.journal = Journal()
        self.armed = False
        self.closed = False
        self.planner = Planner(self.config, calibration, spec, options, self.calibration_version)
        self.grid_t: Array = self.planner.grid_t
        self.time = BenchTime(clock)
        self.instruments = Instruments(
            self.config, self.resources, options.safety.safe_dac_v, driver_factory
        )
        policy = ranging_policy(options.ranging)
        self.outputs = Outputs(self.planner, self.instruments, self.time)
        self.scopes = ScopeGroups(self.planner, policy, self.instruments, self.time)
        self.settler = Settler(
            options,
            self.period_s,
            self.chains.decay_rate_per_s,
            self.planner.alpha_unit,
            policy,
            self.scopes,
            self.time,
            self.interlock,
            self.outputs.upload,
        )
        # the present batch: inputs (B, n_in), drive forces, extra forces (nudges) and the
        # echo drive replacing the drive, each (B, M, d) on the period grid
        self._u: Array | None = None
        self._drive: Array | None = None
        self._extra: Array | None = None
        self._echo: Array | None = None
        self._feedback: Array | None = None  # open-loop forces of the learning-phase feedback
        context = ReadoutContext(
            self.config,
            calibration,
            self.calibration_version,
            self.period_s,
            self.grid_t,
            options,
            self.time,
            self.instruments,
            self.interlock,
        )
        self.readout: Readout = (readout or ScopeReadout)(context)

    # ------------------------------------------------------------------ description
    @property
    def chains(self) -> Chains:
        """The calibration resolved against the wiring."""
        return self.planner.chains

    @property
    def reference_node(self) -> int | None:
        """The stitch check's node (sensed by every scope)."""
        return self.planner.layout.reference_node

    @property
    def n_nodes(self) -> int:
        return self.spec.nodes.count

    @property
    def n_params(self) -> int:
        return self.planner.n_params

    @property
    def period_s(self) -> float:
        return self.spec.period_s

    @property
    def actuated_nodes(self) -> list[int]:
        return list(self.planner.layout.drive_nodes)

    @property
    def drivers(self) -> dict[str, ScpiInstrument]:
        """The drivers by instrument name (empty until `connect`)."""
        return self.instruments.by_name

    @property
    def io_time_s(self) -> float:
        """Wall time spent in instrument I/O (s)."""
        return self.time.io_time_s

    @property
    def wait_time_s(self) -> float:
        """Controller-clock time spent waiting (s)."""
        return self.time.wait_time_s

    @property
    def used_instruments(self) -> list[str]:
        lay = self.planner.layout
        return [
            *lay.generators,
            *lay.dacs,
            *sorted(lay.scope_channels),
            *self.readout.instrument_names,
        ]

    # ------------------------------------------------------------------ plans (no I/O)
    def parameter_range(self) -> tuple[Array, Array]:
        """(lower, upper) α (P,) reachable within the calibration and the DAC limits."""
        return self.planner.parameter_range()

    def dac_plan(self, alpha: Array) -> dict[tuple[str, int], float]:
        """DAC volts for α, every value checked (calibrated range, finite, limits); no write."""
        return self.planner.dac_plan(alpha)

    def drive_plan(self, force: Array) -> dict[tuple[str, int], Array]:
        """Arb volts (M_arb,) per generator channel for one sample's total force (M, d); every
        sample checked against the channel's limits; no write."""
        return self.planner.drive_plan(force)

    def plan_check(
        self, alphas: list[Array], inputs: Array, max_nudge_ratio: float = 0.0
    ) -> dict[str, Any]:
        """The dry run (`Planner.plan_check`): nothing is connected or written."""
        return self.planner.plan_check(alphas, inputs, max_nudge_ratio)

    # ------------------------------------------------------------------ connection, arming
    async def connect(self) -> None:
        """Open every used instrument concurrently (identity checked; nothing switched on)."""
        drivers = self.instruments.by_name
        for name in self.used_instruments:
            if name not in drivers:
                drivers[name] = self.instruments.make(name)
        await asyncio.gather(*(drivers[n].connect() for n in self.used_instruments))
        self.check_calibration()

    def check_calibration(self) -> None:
        """The calibration file against the connected instruments: model and serial of every
        instrument it used that this loop drives (a mismatch names the instrument), the bench
        config hash; a warning when older than ``calibration_max_age_days``."""
        ids = {n: str(self.drivers[n].identity) for n in self.used_instruments}
        absent = sorted(set(ids) - set(self.cal.instruments))
        if absent:
            raise CalibrationError(
                f"calibration {self.calibration_version} does not cover instruments {absent} "
                "(their identities were not recorded); recalibrate"
            )
        mine = {k: v for k, v in self.cal.instruments.items() if k in ids}
        age = self.options.calibration_max_age_days
        self.cal.model_copy(update={"instruments": mine}).check_bench(
            ids, config_hash(self.config), max_age_s=None if age is None else age * 86400.0
        )

    async def disconnect(self) -> None:
        """Close the links of an unarmed bench without touching any output (after a dry run)."""
        if self.armed:
            raise SafetyError("the bench is armed: close() puts it in its safe state")
        for drv in self.drivers.values():
            try:
                await drv.close()
            except InstrumentError:
                log.debug("closing a driver failed", exc_info=True)
        self.drivers.clear()

    async def reconnect(self) -> None:
        """After a fault: reopen every link (the state is re-applied by the retry wrapper)."""
        for name in self.used_instruments:
            drv = self.drivers.get(name)
            if drv is None:
                continue
            try:
                await drv.close()
            except InstrumentError:
                log.debug("closing %s before reconnecting failed", name, exc_info=True)
        await asyncio.gather(*(self.drivers[n].connect() for n in self.used_instruments))
        self.outputs.arb_now = {}  # re-upload everything: the generators may have been reset
        # the DACs may have lost setpoints (a swallowed write, a reset): the cache takes what
        # they hold, so that re-applying the parameters writes what is missing
        held = self.outputs.dac_v
        lost = await self.outputs.read_back(
            {n: sorted(ch for (i, ch) in held if i == n) for n in self.planner.layout.dacs}
        )
        if lost:
            log.warning("after reconnecting: DAC setpoints lost: %s", lost)
        if self.armed:
            # the scopes may have been reset: program them as they were, V/div included (the
            # auto-ranging is hysteretic: restarting at full range would quantise the repeated
            # measurement on another scale than the uninterrupted run)
            await self.scopes.configure(self.scopes.scales())
            await self.readout.configure()

    async def arm(self) -> None:
        """Enable outputs: generators (zero drive, loads high-Z, phase-synchronised, sync on the
        scope trigger), DAC slew rates, scopes configured, the readout's instruments. Only
        after an explicit arm."""
        if not self.drivers:
            await self.connect()
        if self.closed:
            raise SafetyError("bench system already closed")
        await self.outputs.arm_dacs()
        await self.outputs.arm_generators()
        # the sync edges (trigger instants) fall on phase_origin + n T; on a wall clock this is
        # within the command latency of the truth (the trigger arming keeps a T/8 margin)
        self.scopes.window.phase_origin_s = await self.clock.now()
        self.outputs.playing_zero()
        self.settler.at_rest((self.grid_t.size, self.n_nodes))  # at rest, zero drive
        await self.scopes.configure()
        await self.outputs.enable()
        self.armed = True
        log.info("bench armed: outputs enabled on %s", ", ".join(self.planner.layout.generators))
        await self.readout.configure()

    # ------------------------------------------------------------------ settings
    def _require_armed(self) -> None:
        if self.closed:
            raise SafetyError("the bench system is closed (safe state)")
        if not self.armed:
            raise SafetyError(
                "the bench is not armed: run the dry run, then arm (physlearn train --arm)"
            )

    async def set_parameters(self, alpha: Array) -> None:
        plan = self.dac_plan(alpha)  # every value checked before any write
        self._require_armed()
        with self.time.io():
            by_dac, ramp = self.outputs.dac_changes(plan)
            slew = self.options.safety.dac_slew_v_per_s
            try:
                await self.outputs.write_dacs(by_dac)
            except BaseException:
                # whatever reached a DAC is ramping from now on
                if ramp:
                    self.settler.mark_change(await self.clock.now() + 1.01 * ramp / slew + 1e-3)
                raise
            self.outputs.dac_v.update(plan)
            ramp_end = None
            if ramp:
                now = await self.clock.now()
                ramp_end = now + 1.01 * ramp / slew + 1e-3
            self.settler.parameters_written(alpha, ramp_end)
            # a write has no reply: one that a dropped link swallowed is only seen by reading back
            lost = await self.outputs.read_back({n: list(vs) for n, vs in by_dac.items()})
        if lost:
            detail = "; ".join(
                f"{n} channel {ch} reads {rb:.6g} V, written {v:.6g} V" for n, ch, v, rb in lost
            )
            err = InstrumentProtocolError(
                f"{lost[0][0]}: DAC setpoints lost (a write was not delivered): {detail}"
            )
            err.instrument = lost[0][0]  # type: ignore[attr-defined]
            raise err

    @property
    def feedback_pairs(self) -> frozenset[tuple[int, int]]:
        return bench_feedback_pairs(self.planner.layout)

    async def set_feedback(self, feedback: LinearFeedback | None) -> None:
        """The active elements reversed and the open-loop forces that realise ``feedback``
        (`physlearn.systems.bench.feedback`); None: every element forward again."""
        if feedback is None:
            if self._feedback is not None:
                lay = self.planner.layout
                sw = {(a.instrument, a.switch_channel): SWITCH_FORWARD_V for a in lay.active}
                self._feedback = None
                await self._write_switches(sw)
            return
        plan = plan_feedback(
            self.planner, feedback, self.settler.alpha, self._require_input().shape[0]
        )
        self.readout.check_forces(plan.forces, "feedback force", GradientError)
        self._require_armed()
        self._feedback = plan.forces
        await self._write_switches(plan.switches)

    async def _write_switches(self, plan: dict[tuple[str, int], float]) -> None:
        """Write switch volts; the settler waits from the end of their ramp."""
        by_dac, ramp = self.outputs.dac_changes(plan)
        if not by_dac:
            return
        with self.time.io():
            await self.outputs.write_dacs(by_dac)
            self.outputs.dac_v.update(plan)
            end = await self.clock.now() + 1.01 * ramp / self.options.safety.dac_slew_v_per_s
            self.settler.mark_change(end + 1e-3)

    async def set_input(self, u: Array) -> None:
        if self._feedback is not None:
            await self.set_feedback(None)
        a = check_finite("inputs", np.asarray(u, dtype=float))
        n_in = len(self.spec.inputs.nodes)
        if a.ndim != 2 or a.shape[1] != n_in or a.shape[0] < 1:
            raise ConfigError(f"inputs: expected shape (batch, {n_in}), got {a.shape}")
        self._drive = self.planner.drive_force(a)
        self._u, self._extra, self._echo = a, None, None
        self.readout.check_forces(self._drive.copy(), "input drive", ConfigError)

    async def set_forces(self, forces: ForceWaveform | None) -> None:
        if forces is not None:
            self.readout.check_forces(forces.samples, "nudge force", GradientError)
        if forces is None:
            self._extra = None
            return
        missing = sorted(set(forces.nodes) - set(self.planner.layout.drive_nodes))
        if missing:
            raise GradientError(f"forces on nodes {missing}, which have no actuator on this bench")
        self._extra = self.planner.on_grid(forces, self._require_input().shape[0])

    async def set_echo_drive(self, drive: ForceWaveform | None) -> None:
        if drive is not None:
            self.readout.check_forces(drive.samples, "echo drive", GradientError)
        if drive is None:
            self._echo = None
            return
        g = np.asarray(self.spec.nodes.arrays()[2], dtype=float)
        damped = {int(j) for j in np.flatnonzero(g > 0)}
        missing = sorted(damped - set(self.planner.layout.drive_nodes))
        if missing:
            raise GradientError(
                f"ep_echo needs a force actuator on every damped node; nodes {missing} are damped "
                "and have no [[wiring.drives]] actuator on this bench"
            )
        mods = self.spec.modulations
        if not (isinstance(mods.mu, Constant) and isinstance(mods.nu, Constant)):
            raise GradientError("echo drive: the bench cannot reverse time-modulated couplings")
        self._echo = self.planner.on_grid(drive, self._require_input().shape[0])

    def _require_input(self) -> Array:
        if self._drive is None:
            raise ConfigError("no input set: call set_input(u) before forces or measurements")
        return self._drive

    async def drive_peak(self) -> Array:
        drive = self._require_input() if self._echo is None else self._echo
        return np.asarray(np.max(np.abs(drive), axis=(1, 2)), dtype=float)

    async def drive_forces(self) -> Array:
        return self._require_input().copy()

    # ------------------------------------------------------------------ measurement
    async def _measure_sample(self, force: Array, key: bytes | None) -> SettledSample:
        """One sample: the readout's force check, settled by the settler, read by the readout."""
        # the total force played (drive + nudge): refused before any write, whatever set it
        self.readout.check_forces(force[None], "total force", GradientError)
        sample = await self.settler.measure_sample(force, key)
        return await self.readout.read(sample)

    async def measure(self) -> Observation:
        drive = self._require_input()
        self._require_armed()
        base = drive if self._echo is None else self._echo
        B = base.shape[0]
        xs = np.zeros((B, self.grid_t.size, self.n_nodes))
        waited = np.zeros(B)
        remaining = np.zeros(B)
        periodic = np.ones(B, bool)
        samples = []
        for b in range(B):
            f = base[b] + (self._extra[b] if self._extra is not None else 0.0)
            if self._feedback is not None:
                f = f + self._feedback[b if self._feedback.shape[0] > 1 else 0]
            s = await self._measure_sample(f, ResponseMemory.key(base[b]))
            xs[b], waited[b], remaining[b] = s.x, s.waited_s, s.assessment.remaining
            periodic[b] = s.assessment.periodic
            samples.append(s.record)
            self.experiments += 1
        self.journal.append(
            MeasurementRecord(self.level, xs.copy(), self._extra is not None, samples)
        )
        return Observation(
            self.grid_t.copy(),
            xs,
            self.period_s,
            1,
            "m",
            await self.clock.now(),
            SettleInfo(waited, remaining, periodic),
            {"level": str(self.level), "calibration": self.calibration_version},
        )

    def drain_journal(self) -> list[MeasurementRecord]:
        """The measurement records since the last drain (oldest first)."""
        return self.journal.drain()

    async def settings_snapshot(self) -> dict[str, Any]:
        """Instrument settings for the records (DAC setpoints, arming, scope modes, the
        readout's settings)."""
        return {
            "dac_v": {f"{k[0]}/ch{k[1]}": v for k, v in self.outputs.dac_v.items()},
            "armed": self.armed,
            "scope_modes": self.scopes.modes(),
            "calibration": self.calibration_version,
            **self.readout.snapshot(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Controller state a resumed run needs to measure as the uninterrupted one would: the
        scopes' V/div per channel (the auto-ranging is hysteretic) and the response memory (it
        plans the settle waits and the ranging). The network's physical state cannot be
        stored: it settles again."""
        return {
            "scope_scales_v": {
                n: {str(ch): float(v) for ch, v in scales.items()}
                for n, scales in self.scopes.scales().items()
            },
            "responses": self.settler.memory.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`: the scales are programmed before the next acquisition
        (checked: known scope and channel, 0 < V/div ≤ the channel's full range)."""
        self.scopes.load_scales(dict(state.get("scope_scales_v") or {}))
        if "responses" in state:
            try:
                self.settler.memory.load_state_dict(
                    dict(state["responses"]), (self.grid_t.size, self.n_nodes)
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"bench state: {exc}") from None

    # ------------------------------------------------------------------ safe state
    async def safe_state(self) -> None:
        """Drive outputs off, DACs ramped to the safe value at the slew limit (waited for)."""
        errors = await self.outputs.safe_state()
        self.armed = False
        self._feedback = None
        if errors:
            log.error("safe state incomplete: %s", "; ".join(errors))
            raise SafetyError("safe state incomplete: " + "; ".join(errors))
        log.info("bench in its safe state")

    async def pause(self) -> None:
        """Hold still mid-run (`physlearn.spec.system.Pausable`): the safe state, links open."""
        await self.safe_state()

    async def unpause(self) -> None:
        """Ready to measure again after `pause`: armed as at the start (settles from rest), on
        the drive-period lattice of the first arm — the generators' phases are synchronised
        a whole number of periods after the first time, so the sync edges, and every
        acquisition on them, fall where the uninterrupted run's would (on the emulated bench's
        virtual clock: bit for bit)."""
        origin, period = self.scopes.window.phase_origin_s, self.period_s
        lag = (origin - await self.clock.now()) % period
        if 0.0 < lag < period:
            await self.clock.sleep(lag)
        await self.arm()

    async def close(self) -> None:
        if self.closed:
            return
        try:
            if self.drivers:
                await self.safe_state()
        finally:
            self.closed = True
            for drv in self.drivers.values():
                try:
                    await drv.close()
                except Exception:
                    log.debug("closing a driver failed", exc_info=True)
