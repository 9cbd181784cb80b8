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
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from physlearn.calibration.bench import config_hash
from physlearn.calibration.schema import ActuatorCal, CalibrationFile, CouplingMap
from physlearn.drivers.rigol_ds1000z import (
    CODES_PER_DIVISION,
    H_DIVISIONS,
    SCREEN_POINTS_PER_DIVISION,
    V_DIVISIONS,
)
from physlearn.errors import (
    CalibrationError,
    ConfigError,
    GradientError,
    InstrumentError,
    InstrumentProtocolError,
    LimitError,
    SafetyError,
    SteadyStateError,
)
from physlearn.spec.bench import BenchConfig
from physlearn.spec.clock import Clock
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import ForceWaveform, Level, Observation, PhysicalSystem, SettleInfo
from physlearn.systems.bench.acquisition import choose_mode, fit_periods, scale_125_at_least
from physlearn.systems.bench.options import BenchOptions
from physlearn.systems.bench.response_memory import Recalled, ResponseMemory, ranged_scale
from physlearn.systems.bench.settling import (
    PeriodAssessment,
    assess_periods,
    contraction_from_decay,
    settle_time_s,
    settle_wait_s,
)
from physlearn.systems.safety import Interlock, check_finite

log = logging.getLogger(__name__)
Array = NDArray[np.float64]

__all__ = ["BenchSystem"]

# ---------------------------------------------------------------------------------------------
# calibration: what the controller takes from the calibration file, per wiring entry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Chains:
    """The calibration file resolved against the wiring (config order): per drive wire the
    actuator (force/mass per volt, delay), per sense wire gain/offset/delay, per trainable edge
    its α(V) map; the slowest calibrated transient decay rate (Γ/2), if the file has Γ."""

    actuators: list[ActuatorCal]
    sense_gain: Array
    sense_offset: Array
    sense_delay: Array
    decay_rate_per_s: float | None


def _resolve(cal: CalibrationFile, config: BenchConfig) -> _Chains:
    w = config.wiring
    acts: list[ActuatorCal] = []
    for j, dw in enumerate(w.drives):
        found = [
            a for a in cal.actuators if (a.instrument, a.channel) == (dw.instrument, dw.channel)
        ]
        if not found or found[0].node != dw.node:
            raise CalibrationError(
                f"calibration of {cal.created_utc}: no actuator calibration for wiring.drives[{j}] "
                f"({dw.instrument} channel {dw.channel} → node {dw.node}); recalibrate (actuators)"
            )
        acts.append(found[0])
    gains, offsets, delays = [], [], []
    for i, sw in enumerate(w.sense):
        s = cal.sense(sw.instrument, sw.channel)
        if s.node != sw.node:
            raise CalibrationError(
                f"calibration: {sw.instrument} channel {sw.channel} senses node {s.node} in the "
                f"file, node {sw.node} in wiring.sense[{i}]"
            )
        gains.append(s.gain_v_per_unit.value)
        offsets.append(s.offset_v.value)
        delays.append(s.delay_s.value)
    decay = (
        min(n.damping_per_s.value for n in cal.nodes) / 2.0
        if cal.nodes and min(n.damping_per_s.value for n in cal.nodes) > 0
        else None
    )
    return _Chains(
        acts,
        np.array(gains, dtype=float),
        np.array(offsets, dtype=float),
        np.array(delays, dtype=float),
        decay,
    )


def calibration_version(cal: CalibrationFile) -> str:
    """How the records name a calibration: bench name and creation time (UTC)."""
    return f"{cal.bench_name}@{cal.created_utc}"


#: factor on a transient predicted from a remembered response (`_predicted_transient`)
_PREDICTION_CUSHION = 1.05
#: a remembered response this close (relative settings change) plans the ranging without previews
_CLOSE_RECALL = 0.01
#: peak band (fractions of full scale) a preview or a prediction re-centres a channel into
_CENTRED = (0.3, 0.8)

# ---------------------------------------------------------------------------------------------
# the system
# ---------------------------------------------------------------------------------------------


@dataclass
class _Scope:
    name: str
    driver: Any
    channels: dict[int, int]  # scope channel → sense wire index
    scale_v: dict[int, float] = field(default_factory=dict)
    mode: str = "NORMal"
    offset_s: float = math.nan  # timebase offset programmed (s)


class _Reranged(Exception):
    """A scope channel's vertical scale was changed: acquire again."""


@dataclass
class _Journal:
    """Raw per-measurement data since the last drain (for the per-step records)."""

    entries: list[dict[str, Any]] = field(default_factory=list)


class BenchSystem(PhysicalSystem):
    """See the module docstring. Use: ``await connect()``, ``await arm()``, train, ``close()``."""

    def __init__(
        self,
        config: BenchConfig,
        calibration: CalibrationFile,
        spec: NetworkSpec,
        clock: Clock,
        options: BenchOptions,
        *,
        resources: dict[str, str] | None = None,
        driver_factory: Callable[[str, Any], Any] | None = None,
        level: Level = Level.BENCH,
    ):
        self.level = level
        self.config = config.controller_view()
        self.cal = calibration
        self.chains = _resolve(calibration, self.config)
        self.calibration_version = calibration_version(calibration)
        self.spec = spec
        self.clock = clock
        self.options = options
        self.resources = dict(resources or {})
        self._driver_factory = driver_factory
        self.experiments = 0
        self.interlock = Interlock(options.safety.max_response)
        self.journal = _Journal()
        self.armed = False
        self.closed = False
        self.drivers: dict[str, Any] = {}
        self._validate()
        m = options.points_per_period
        self.grid_t: Array = np.arange(m, dtype=np.float64) * (self.period_s / m)
        self._u: Array | None = None
        self._drive: Array | None = None
        self._extra: Array | None = None
        self._echo: Array | None = None
        self._alpha: Array | None = None
        self._dac_v: dict[tuple[str, int], float] = {}
        self.io_time_s = 0.0
        self.wait_time_s = 0.0
        # settling bookkeeping (controller clock): when the bench last changed (end of the last
        # write or DAC ramp), the last settled response before that change, the arbs playing
        self._t_change: float | None = None
        self._x_before: Array | None = None
        self._x_settled: Array | None = None
        self._changed_alpha = 0.0
        self._settled_since_change = True
        self._last_force: Array | None = None
        self._arb_now: dict[tuple[str, int], Array] = {}
        self._phase_origin = 0.0
        self._screen_s = 0.0
        self._tb_scale_s = 0.0
        self._pending_scales: dict[str, dict[int, float]] = {}
        # the last settled response per input: plans the settle wait and the scope ranging
        self._memory = ResponseMemory()
        self._last_key: bytes | None = None  # the input of the last settled measurement
        # V/div each scope channel had in the present measurement's records (no oscillation)
        self._tried_scales: dict[tuple[str, int], dict[float, float]] = {}

    # ------------------------------------------------------------------ configuration checks
    def _validate(self) -> None:
        w, spec = self.config.wiring, self.spec
        d = spec.nodes.count
        if spec.boundary.kind != "periodic":
            raise ConfigError("network: a bench runs a periodic drive (boundary.kind periodic)")
        masses = np.asarray(spec.nodes.arrays()[0], dtype=float)
        if not np.allclose(masses, self.cal.mass_kg, rtol=1e-9, atol=0.0):
            raise CalibrationError(
                f"calibration {self.calibration_version}: declared mass {self.cal.mass_kg} kg, "
                f"the network spec's node masses are {sorted(set(masses.tolist()))} kg; α in N/m "
                "would be misread (set network.nodes.mass to the calibration's mass)"
            )
        edge_of = {e.key: e for e in w.edges}
        self._param_edges = []
        self._maps: list[CouplingMap] = []
        for name, term in spec.terms():
            if not term.trainable:
                continue
            nodes = getattr(term, "nodes", None)
            if nodes is None or len(nodes) != 2:
                raise ConfigError(
                    f"network: trainable term {name} is not a coupling; a bench trains only the "
                    "DAC-tuned couplings of [[wiring.edges]]"
                )
            key = (min(nodes), max(nodes))
            if key not in edge_of:
                raise ConfigError(f"network: trainable coupling {name} {key} has no DAC wire")
            cmap = self.cal.coupling(key)
            ew = edge_of[key]
            if (cmap.instrument, cmap.channel) != (ew.instrument, ew.channel):
                raise CalibrationError(
                    f"calibration {self.calibration_version}: edge {key} was calibrated on "
                    f"{cmap.instrument} channel {cmap.channel}, the wiring has {ew.instrument} "
                    f"channel {ew.channel}"
                )
            self._param_edges.append(ew)
            self._maps.append(cmap)
        self._names = [n for n, t in spec.terms() if t.trainable]
        if spec.inputs.nodes and spec.inputs.mode != "force":
            raise ConfigError("network.inputs.mode: a bench drives inputs as forces, not clamps")
        self._drive_nodes = sorted({dw.node for dw in w.drives})
        for dw in w.drives:
            if dw.node >= d:
                raise ConfigError(f"wiring.drives: node {dw.node} not in the network ({d} nodes)")
        needed = set(spec.inputs.nodes) | {t.node for t in spec.drive.tones}
        missing = sorted(needed - set(self._drive_nodes))
        if missing:
            raise ConfigError(f"wiring.drives: nodes {missing} are driven but have no actuator")
        scopes: dict[str, dict[int, int]] = {}
        for i, sw in enumerate(w.sense):
            inst = self.config.instruments[sw.instrument]
            if inst.role == "scope":
                assert sw.channel is not None
                scopes.setdefault(sw.instrument, {})[sw.channel] = i
        sensed = {w.sense[i].node for chans in scopes.values() for i in chans.values()}
        unsensed = sorted(set(range(d)) - sensed)
        if unsensed:
            raise ConfigError(
                f"wiring.sense: nodes {unsensed} are not sensed by any scope; the conjugate "
                "quantities need every node's waveform"
            )
        if not scopes:
            raise ConfigError("wiring.sense: a bench needs at least one oscilloscope")
        ref = self.options.reference_node
        if len(scopes) > 1:
            common = set.intersection(
                *({w.sense[i].node for i in ch.values()} for ch in scopes.values())
            )
            if ref is None:
                ref = min(common) if common else None
            if ref is None or ref not in common:
                raise ConfigError(
                    "wiring.sense: with several scopes (groups), one reference node must be sensed "
                    f"by every scope to check the stitch; common nodes: {sorted(common)}"
                )
        self.reference_node = ref
        self._scope_channels = scopes
        gens = {dw.instrument for dw in w.drives}
        if w.sync is None or w.sync.instrument not in gens:
            raise ConfigError("wiring.sync: the scopes trigger on a drive generator's sync")
        self._generators = sorted(gens)
        self._dacs = sorted({e.instrument for e in self._param_edges})
        self._alpha_lo, self._alpha_hi = self.parameter_range()

    # ------------------------------------------------------------------ description
    @property
    def n_nodes(self) -> int:
        return self.spec.nodes.count

    @property
    def n_params(self) -> int:
        return len(self._param_edges)

    @property
    def period_s(self) -> float:
        return self.spec.period_s

    @property
    def actuated_nodes(self) -> list[int]:
        return list(self._drive_nodes)

    def parameter_range(self) -> tuple[Array, Array]:
        """(lower, upper) α reachable within the calibration and the DAC limits."""
        lo, hi = [], []
        for e, m in zip(self._param_edges, self._maps, strict=True):
            a1, a2 = (float(m.alpha(v)) for v in self._volt_range(e, m))
            lo.append(min(a1, a2))
            hi.append(max(a1, a2))
        return np.array(lo), np.array(hi)

    def _volt_range(self, e: Any, m: CouplingMap) -> tuple[float, float]:
        """The DAC volts both calibrated (the map's valid range) and allowed (output limits)."""
        lim = self.config.output_limits(e.instrument).limit_for(e.channel)
        v0, v1 = max(lim.min_v, m.v_min), min(lim.max_v, m.v_max)
        if not v0 < v1:
            raise CalibrationError(
                f"edge {e.key}: the calibrated bias range [{m.v_min}, {m.v_max}] V and the "
                f"limits [{lim.min_v}, {lim.max_v}] V of {e.instrument} channel {e.channel} "
                "do not overlap"
            )
        return v0, v1

    # ------------------------------------------------------------------ plan checks (dry run)
    def dac_plan(self, alpha: Array) -> dict[tuple[str, int], float]:
        """DAC volts for α, every value checked (calibrated range, finite, limits); no write."""
        a = check_finite("parameters", alpha)
        if a.shape != (self.n_params,):
            raise ConfigError(f"parameters: expected shape ({self.n_params},), got {a.shape}")
        out: dict[tuple[str, int], float] = {}
        lo, hi = self._alpha_lo, self._alpha_hi
        for i, (e, ai) in enumerate(zip(self._param_edges, a, strict=True)):
            if not lo[i] <= ai <= hi[i]:
                raise LimitError(
                    f"parameters[{i}] ({self._names[i]}) = {ai} is outside the calibrated range "
                    f"[{lo[i]}, {hi[i]}] of edge {e.key}; refused, nothing was written"
                )
            v = float(self._maps[i].volts(float(ai)))
            self.config.output_limits(e.instrument).check(e.channel, v)
            out[(e.instrument, e.channel)] = v
        return out

    def drive_plan(self, force: Array) -> dict[tuple[str, int], Array]:
        """Arb volts (M_arb,) per generator channel for one sample's total force (M, d); every
        sample checked against the channel's limits; no write."""
        f = check_finite("force", force)
        m_arb = self.options.arb_points_per_period
        spec_f = np.fft.rfft(f, axis=0) / f.shape[0]  # (H+1, d) one-sided coefficients
        h = np.arange(spec_f.shape[0])
        zoh = np.sinc(h / m_arb) * np.exp(-1j * math.pi * h / m_arb)
        out: dict[tuple[str, int], Array] = {}
        k_max = min(spec_f.shape[0], m_arb // 2)
        for j, dw in enumerate(self.config.wiring.drives):
            # the calibration file's actuator: F/m = a_j V(t − τ_j), so V = F(t + τ_j)/(m a_j)
            act = self.chains.actuators[j]
            g = self.cal.mass_kg * act.gain_per_s2_per_v.value
            lag = np.exp(-2j * math.pi * h * act.delay_s.value / self.period_s)
            c = np.zeros(m_arb // 2 + 1, dtype=complex)
            c[:k_max] = spec_f[:k_max, dw.node] / (g * zoh[:k_max] * lag[:k_max])
            v = np.fft.irfft(c * m_arb, n=m_arb)
            v = np.where(np.abs(v) < 1e-15, 0.0, v)
            lim = self.config.output_limits(dw.instrument)
            lim.check(dw.channel, float(v.min()))
            lim.check(dw.channel, float(v.max()))
            out[(dw.instrument, dw.channel)] = v
        return out

    def plan_check(
        self, alphas: list[Array], inputs: Array, max_nudge_ratio: float = 0.0
    ) -> dict[str, Any]:
        """The dry run: check every planned setting — DAC volts for each α in ``alphas`` (e.g. the
        initial parameters and every corner of the bounds), and the drive of every input vector
        (with a nudge of up to ``max_nudge_ratio`` × the drive peak on the outputs) — against the
        calibration and the limits. Nothing is connected or written. Raises on the first refusal."""
        n_dac = 0
        for a in alphas:
            n_dac += len(self.dac_plan(a))
        u = check_finite("inputs", np.atleast_2d(inputs))
        drive = self._drive_force(u)
        n_arb = 0
        for b in range(drive.shape[0]):
            f = drive[b].copy()
            if max_nudge_ratio > 0 and self.spec.outputs.nodes:
                peak = float(np.max(np.abs(f))) * max_nudge_ratio
                for o in self.spec.outputs.nodes:
                    f[:, o] += peak
            n_arb += len(self.drive_plan(f))
        return {"dac_settings": n_dac, "arb_waveforms": n_arb, "inputs": int(u.shape[0])}

    def _drive_force(self, u: Array) -> Array:
        from physlearn.simulators.excitation import build_excitation

        exc = build_excitation(self.spec, inputs=u).on_grid(self.grid_t)
        if np.any(exc.clamp_weight != 0):
            raise ConfigError("network.inputs: a bench cannot clamp nodes; use force inputs")
        return np.ascontiguousarray(
            np.broadcast_to(exc.force, (u.shape[0], *exc.force.shape[1:])), dtype=float
        )

    # ------------------------------------------------------------------ connection, arming
    def _make_driver(self, name: str) -> Any:
        from physlearn.drivers.registry import make_driver, transport_settings

        inst = self.config.instruments[name]
        if self._driver_factory is not None:
            return self._driver_factory(
                name, transport_settings(name, inst, self.resources.get(name))
            )
        if inst.role not in ("generator", "dac", "scope", "lockin"):
            raise ConfigError(f"instruments.{name}.kind: {inst.kind} is not used by the bench loop")
        return make_driver(
            name,
            inst,
            self.resources.get(name),
            limits=self.config.output_limits(name) if inst.role in ("generator", "dac") else None,
            safe_voltage_v=self.options.safety.safe_dac_v,
        )

    @property
    def used_instruments(self) -> list[str]:
        return [*self._generators, *self._dacs, *sorted(self._scope_channels)]

    async def connect(self) -> None:
        """Open every used instrument concurrently (identity checked; nothing switched on)."""
        for name in self.used_instruments:
            if name not in self.drivers:
                self.drivers[name] = self._make_driver(name)
        await asyncio.gather(*(self.drivers[n].connect() for n in self.used_instruments))
        self.check_calibration()

    def check_calibration(self) -> None:
        """The calibration file against the connected instruments: model and serial of every
        instrument it used that this loop drives (a mismatch names the instrument), the bench
        config hash; a warning when older than ``calibration_max_age_days``."""
        ids = {n: str(getattr(self.drivers[n], "identity", "")) for n in self.used_instruments}
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
        self.drivers = {}

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
        self._arb_now = {}  # re-upload everything: the generators may have been reset
        # the DACs may have lost setpoints (a swallowed write, a reset): the cache takes what
        # they hold, so that re-applying the parameters writes what is missing
        lost = await self._read_back_dacs(
            {n: sorted(ch for (i, ch) in self._dac_v if i == n) for n in self._dacs}
        )
        if lost:
            log.warning("after reconnecting: DAC setpoints lost: %s", lost)
        if self.armed:
            # the scopes may have been reset: program them as they were, V/div included (the
            # auto-ranging is hysteretic: restarting at full range would quantise the repeated
            # measurement on another scale than the uninterrupted run)
            await self._configure_scopes(
                {n: dict(sc.scale_v) for n, sc in getattr(self, "_scopes", {}).items()}
            )

    async def arm(self) -> None:
        """Enable outputs: generators (zero drive, loads high-Z, phase-synchronised, sync on the
        scope trigger), DAC slew rates, scopes configured. Only after an explicit arm."""
        if not self.drivers:
            await self.connect()
        if self.closed:
            raise SafetyError("bench system already closed")
        slew = self.options.safety.dac_slew_v_per_s
        for name in self._dacs:
            dac = self.drivers[name]
            for e in self._param_edges:
                if e.instrument == name:
                    await dac.set_slew_rate(e.channel, slew)
        sync = self.config.wiring.sync
        assert sync is not None
        zero = np.zeros(self.options.arb_points_per_period)
        rate = self.options.arb_points_per_period / self.period_s
        for name in self._generators:
            gen = self.drivers[name]
            for dw in self.config.wiring.drives:
                if dw.instrument != name:
                    continue
                await gen.set_load(dw.channel, math.inf)
                await gen.clear_arbs(dw.channel)
                await gen.upload_arb(dw.channel, "PLW", zero, rate)
                await gen.play_arb(dw.channel, "PLW")
            if name == sync.instrument:
                first = min(dw.channel for dw in self.config.wiring.drives if dw.instrument == name)
                await gen.set_sync(True, first)
        await asyncio.gather(*(self.drivers[n].sync_phases() for n in self._generators))
        # the sync edges (trigger instants) fall on phase_origin + n T; on a wall clock this is
        # within the command latency of the truth (the trigger arming keeps a T/8 margin)
        self._phase_origin = await self.clock.now()
        self._arb_now = {(dw.instrument, dw.channel): zero for dw in self.config.wiring.drives}
        self._x_settled = np.zeros((self.grid_t.size, self.n_nodes))  # at rest, zero drive
        self._settled_since_change = True
        self._t_change = None
        await self._configure_scopes()
        for name in self._generators:
            gen = self.drivers[name]
            for dw in self.config.wiring.drives:
                if dw.instrument == name:
                    await gen.output(dw.channel, True)
        self.armed = True
        log.info("bench armed: outputs enabled on %s", ", ".join(self._generators))

    async def _configure_scopes(self, scales_v: dict[str, dict[int, float]] | None = None) -> None:
        """Program every scope: channels (V/div from ``scales_v`` where given — a reconnect
        keeps the ranging — else full range), timebase, trigger, acquisition mode. The mode is
        chosen from the full-range resolution whatever the scales, so that it never depends on
        the ranging history."""
        k = self.options.settle.acquire_periods
        screen = k * self.period_s
        scale_t = scale_125_at_least(screen / H_DIVISIONS)
        self._screen_s = H_DIVISIONS * scale_t
        self._tb_scale_s = scale_t
        # the record ends K periods after the trigger (the offset is set per acquisition:
        # `_window`); within the scope's range −screen/2 ≤ offset
        offset0 = k * self.period_s - self._screen_s / 2
        for name, chans in self._scope_channels.items():
            scope = self.drivers[name]
            drv_info = _Scope(name, scope, chans)
            for ch in range(1, 5):
                if ch not in chans:
                    await scope.set_channel_display(ch, False)
            kept = (scales_v or {}).get(name, {})
            for ch, i in chans.items():
                scale = kept.get(ch, self._max_scale_v(i))
                await scope.configure_channel(
                    ch, scale, -float(self.chains.sense_offset[i]), "DC", 1.0
                )
                drv_info.scale_v[ch] = scale
            await scope.set_timebase(scale_t, offset0)
            drv_info.offset_s = offset0
            await scope.set_trigger_edge("EXT", 1.0, "POS")
            lsb = min(self._max_scale_v(i) for i in chans.values()) / CODES_PER_DIVISION
            needed = (
                self.options.beta_resolution
                * self.options.safety.max_response
                * min(abs(self.chains.sense_gain[i]) for i in chans.values())
            )
            acq = await scope.get_acquisition()
            over = max(1, int(1e9 / max(acq.sample_rate_sa_per_s, 1.0)))
            mode, avg = choose_mode(lsb, needed, over)
            await scope.set_acquisition(mode, avg)
            drv_info.mode = mode
            self._scopes = getattr(self, "_scopes", {})
            self._scopes[name] = drv_info

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
        t0 = time.perf_counter()
        by_dac: dict[str, dict[int, float]] = {}
        ramp = 0.0
        for (inst, ch), v in plan.items():
            old = self._dac_v.get((inst, ch))
            if old is not None and old == v:
                continue
            by_dac.setdefault(inst, {})[ch] = v
            ramp = max(ramp, abs(v - (old if old is not None else self.options.safety.safe_dac_v)))
        slew = self.options.safety.dac_slew_v_per_s
        try:
            await asyncio.gather(*(self.drivers[n].set_voltages(vs) for n, vs in by_dac.items()))
        except BaseException:
            # unknown which writes landed: those channels are written again next time, and
            # whatever reached a DAC is ramping from now on
            for inst, chans in by_dac.items():
                for ch in chans:
                    self._dac_v.pop((inst, ch), None)
            if ramp:
                self._mark_change(await self.clock.now() + 1.01 * ramp / slew + 1e-3)
            raise
        for (inst, ch), v in plan.items():
            self._dac_v[(inst, ch)] = v
        if ramp:
            now = await self.clock.now()
            self._mark_change(now + 1.01 * ramp / slew + 1e-3)
            prev = self._alpha if self._alpha is not None else np.zeros(self.n_params)
            self._changed_alpha += (
                float(np.max(np.abs(np.asarray(alpha) - prev))) / self._alpha_unit
            )
        self._alpha = np.array(alpha, dtype=float)
        # a write has no reply: one that a dropped link swallowed is only seen by reading back
        lost = await self._read_back_dacs({n: list(vs) for n, vs in by_dac.items()})
        self.io_time_s += time.perf_counter() - t0
        if lost:
            detail = "; ".join(
                f"{n} channel {ch} reads {rb:.6g} V, written {v:.6g} V" for n, ch, v, rb in lost
            )
            err = InstrumentProtocolError(
                f"{lost[0][0]}: DAC setpoints lost (a write was not delivered): {detail}"
            )
            err.instrument = lost[0][0]  # type: ignore[attr-defined]
            raise err

    async def _read_back_dacs(
        self, channels: dict[str, list[int]]
    ) -> list[tuple[str, int, float, float]]:
        """Read the setpoints of ``channels`` (per DAC) back, concurrently; returns the lost
        ones (instrument, channel, expected V, read-back V) and makes the cache hold what the
        DAC really has, so that the next `set_parameters` writes them again."""
        names = [n for n, chs in channels.items() if chs]

        async def read(n: str) -> Array:
            return np.asarray(await self.drivers[n].get_voltages(channels[n]), dtype=float)

        got = await asyncio.gather(*(read(n) for n in names))
        lost = []
        for n, values in zip(names, got, strict=True):
            for ch, rb in zip(channels[n], values, strict=True):
                v = self._dac_v.get((n, ch))
                # the read-back is the DAC-quantised setpoint, printed to ~6 digits
                if v is not None and not abs(float(rb) - v) <= 2e-5 + 1e-5 * abs(v):
                    lost.append((n, ch, v, float(rb)))
                    self._dac_v[(n, ch)] = float(rb)
        return lost

    def _mark_change(self, t: float) -> None:
        """The bench changed (a write takes effect, or a DAC ramp ends) at controller time t."""
        if self._t_change is None or self._x_before is None or self._settled_since_change:
            self._x_before = self._x_settled
        self._settled_since_change = False
        self._t_change = t if self._t_change is None else max(self._t_change, t)

    async def set_input(self, u: Array) -> None:
        a = check_finite("inputs", np.asarray(u, dtype=float))
        n_in = len(self.spec.inputs.nodes)
        if a.ndim != 2 or a.shape[1] != n_in or a.shape[0] < 1:
            raise ConfigError(f"inputs: expected shape (batch, {n_in}), got {a.shape}")
        self._drive = self._drive_force(a)
        self._u, self._extra, self._echo = a, None, None

    def _on_grid(self, forces: ForceWaveform) -> Array:
        from physlearn.spec.waveform import SampledWaveform

        s = forces.samples
        B = self._require_input().shape[0]
        if s.ndim != 3 or s.shape[2] != self.n_nodes or s.shape[0] not in (1, B):
            raise ConfigError(f"forces: expected ({B} or 1, M, {self.n_nodes}), got {s.shape}")
        if not np.isclose(forces.period_s, self.period_s, rtol=1e-9, atol=0.0):
            raise ConfigError(
                f"forces: period {forces.period_s} s ≠ drive period {self.period_s} s"
            )
        f = (
            s
            if s.shape[1] == self.grid_t.size
            else SampledWaveform(s, self.period_s, "spectral")(self.grid_t)
        )
        return np.ascontiguousarray(np.broadcast_to(f, (B, self.grid_t.size, self.n_nodes)))

    async def set_forces(self, forces: ForceWaveform | None) -> None:
        if forces is None:
            self._extra = None
            return
        missing = sorted(set(forces.nodes) - set(self._drive_nodes))
        if missing:
            raise GradientError(f"forces on nodes {missing}, which have no actuator on this bench")
        self._extra = self._on_grid(forces)

    async def set_echo_drive(self, drive: ForceWaveform | None) -> None:
        if drive is None:
            self._echo = None
            return
        g = np.asarray(self.spec.nodes.arrays()[2], dtype=float)
        damped = {int(j) for j in np.flatnonzero(g > 0)}
        missing = sorted(damped - set(self._drive_nodes))
        if missing:
            raise GradientError(
                f"ep_echo needs a force actuator on every damped node; nodes {missing} are damped "
                "and have no [[wiring.drives]] actuator on this bench"
            )
        mods = self.spec.modulations
        if any(type(getattr(mods, k)).__name__ != "Constant" for k in ("mu", "nu")):
            raise GradientError("echo drive: the bench cannot reverse time-modulated couplings")
        self._echo = self._on_grid(drive)

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
    async def _upload(self, force: Array) -> bool:
        """Program every generator channel whose arb differs from what it plays (all channels
        checked before any write); True if anything was written."""
        plan = self.drive_plan(force)  # all channels checked before any write
        rate = self.options.arb_points_per_period / self.period_s
        todo = {
            key: v
            for key, v in plan.items()
            if key not in self._arb_now or not np.array_equal(self._arb_now[key], v)
        }

        async def program(name: str) -> None:
            gen = self.drivers[name]
            for (inst, ch), v in todo.items():
                if inst == name:
                    self._arb_now.pop((inst, ch), None)
                    await gen.clear_arbs(ch)
                    await gen.upload_arb(ch, "PLW", v, rate)
                    await gen.play_arb(ch, "PLW")
                    self._arb_now[(inst, ch)] = v

        await asyncio.gather(*(program(n) for n in sorted({k[0] for k in todo})))
        return bool(todo)

    def _next_edge(self, t: float) -> float:
        """The first sync edge (trigger instant) at or after controller time t."""
        T = self.period_s
        n = math.ceil((t - self._phase_origin) / T - 1e-9)
        return self._phase_origin + n * T

    def _lead_s(self) -> float:
        """How long before the fit start an acquisition must be armed: the pre-trigger part of
        the record (screen − K T), the T/8 margin before the trigger edge, and T/64 for the
        arming command."""
        T = self.period_s
        return self._screen_s - self.options.settle.acquire_periods * T + T / 8 + T / 64

    def _window(self, not_before: float) -> tuple[float, float, float, float]:
        """(fit start w0, trigger edge e, timebase offset, arm time) of an acquisition whose K
        fitted periods start at controller time w0 = ``not_before``.

        The screen (≥ K T, 1-2-5 timebase) is placed to END at w0 + K T: the record
        [w0 + K T − screen, w0 + K T] holds the K fitted periods and, before them, what the
        1-2-5 rounding adds (up to a period) for the periodicity check. The scope triggers on
        e, the first sync edge at or after w0 (so e − T < w0 ≤ e ≤ w0 + K T): the record
        before e is pre-trigger memory, the offset (trigger → screen centre, s) is
        w0 + K T − screen/2 − e ∈ [−screen/2, screen/2], within the scope's range. No time
        is spent waiting for an edge: the record ends, and the acquisition completes, exactly
        when the K fitted periods end. A :SINGle searches for the edge from its arming +
        the pre-trigger time, so arming at the record start − T/8 makes the search begin at
        e − T/8, after the edge before e.

        With ``ranging = "canonical"`` the offset is rounded up to a whole screen-sample
        interval (timebase/100; ≤ T/800 at a 1.5 T screen, inside the T/256 read margin): the
        samples then sit on one lattice relative to the sync edges whatever ``not_before`` was,
        so the same steady response is quantised the same way in every acquisition (a resumed
        run measures what the uninterrupted one did on a noise-free bench)."""
        T = self.period_s
        k = self.options.settle.acquire_periods
        w0 = not_before
        start = w0 + k * T - self._screen_s
        e = self._next_edge(w0)
        offset = max(w0 + k * T - self._screen_s / 2 - e, -self._screen_s / 2)
        dt = self._tb_scale_s / SCREEN_POINTS_PER_DIVISION
        if self.options.ranging == "canonical" and dt > 0:
            offset = math.ceil(offset / dt - 1e-6) * dt
        return w0, e, offset, start - T / 8

    def state_dict(self) -> dict[str, Any]:
        """Controller state a resumed run needs to measure as the uninterrupted one would: the
        scopes' V/div per channel (the auto-ranging is hysteretic) and the response memory (it
        plans the settle waits and the ranging). The network's physical state cannot be
        stored: it settles again."""
        return {
            "scope_scales_v": {
                n: {str(ch): float(v) for ch, v in sc.scale_v.items()}
                for n, sc in getattr(self, "_scopes", {}).items()
            },
            "responses": self._memory.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`: the scales are programmed before the next acquisition
        (checked: known scope and channel, 0 < V/div ≤ the channel's full range)."""
        pending: dict[str, dict[int, float]] = {}
        for name, chans in dict(state.get("scope_scales_v") or {}).items():
            if name not in self._scope_channels:
                raise ConfigError(f"bench state: scope {name!r} is not in this bench's wiring")
            for ch_s, v in dict(chans).items():
                ch = int(ch_s)
                i = self._scope_channels[name].get(ch)
                if i is None:
                    raise ConfigError(f"bench state: {name} channel {ch} senses no node")
                if not (math.isfinite(float(v)) and 0 < float(v) <= self._max_scale_v(i)):
                    raise ConfigError(
                        f"bench state: {name} channel {ch} scale {v!r} V/div is outside "
                        f"(0, {self._max_scale_v(i)}]"
                    )
                pending.setdefault(name, {})[ch] = float(v)
        self._pending_scales = pending
        if "responses" in state:
            try:
                self._memory.load_state_dict(
                    dict(state["responses"]), (self.grid_t.size, self.n_nodes)
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise ConfigError(f"bench state: {exc}") from None

    async def _apply_pending_scales(self) -> None:
        pending, self._pending_scales = self._pending_scales, {}
        for name, chans in pending.items():
            sc = self._scopes[name]
            for ch, v in chans.items():
                if sc.scale_v.get(ch) != v:
                    i = sc.channels[ch]
                    await sc.driver.configure_channel(
                        ch, v, -float(self.chains.sense_offset[i]), "DC", 1.0
                    )
                    sc.scale_v[ch] = v

    async def _acquire(
        self, not_before: float, *, preview: bool = False
    ) -> tuple[Array, dict[str, Any], float, float]:
        """One :SINGle per scope (concurrently) whose record ends K periods after the fit start
        ``not_before`` (later if the scope cannot be armed in time; `_window`). Returns node
        coordinates (K, M, d), raw data (with the fit start ``t_window`` and the trigger edge
        ``t_edge``), noise and the fit start."""
        if self._pending_scales:
            await self._apply_pending_scales()
        k = self.options.settle.acquire_periods
        m = self.grid_t.size
        T = self.period_s
        harmonics = self.options.harmonics or (m - 1) // 2
        now = await self.clock.now()
        w0, edge, offset, t_arm = self._window(max(not_before, now + self._lead_s()))

        async def position(s: _Scope) -> None:
            # while the scope is stopped (the last record is read already): the timebase
            # offset that puts the record's end at w0 + K T, off the arming's critical path
            if s.offset_s != offset:
                s.offset_s = math.nan  # unknown if the command fails
                await s.driver.set_timebase(self._tb_scale_s, offset)
                s.offset_s = offset

        t0 = time.perf_counter()
        await asyncio.gather(*(position(s) for s in self._scopes.values()))
        self.io_time_s += time.perf_counter() - t0
        await self._wait(t_arm - await self.clock.now())
        t0 = time.perf_counter()
        await asyncio.gather(*(s.driver.single() for s in self._scopes.values()))
        self.io_time_s += time.perf_counter() - t0
        now = await self.clock.now()
        await self._wait(w0 + k * T + T / 256 - now)

        async def read(s: _Scope) -> dict[int, Any]:
            await s.driver.wait_triggered(timeout_s=4 * T, poll_s=T / 32, sleep=self._wait)
            waves: dict[int, Any] = await s.driver.read_channels(sorted(s.channels))
            return waves

        t0 = time.perf_counter()
        results = await asyncio.gather(*(read(s) for s in self._scopes.values()))
        self.io_time_s += time.perf_counter() - t0
        # small least-squares fits: a multithreaded BLAS only adds overhead (and contention
        # with the twin's thread on the emulated bench)
        with threadpool_limits(1, "blas"):
            x, raw, noise = await self._process(
                results, k, m, harmonics, w0 - edge, preview=preview
            )
        raw.update(t_window=w0, t_edge=edge)
        return x, raw, noise, w0

    async def _process(
        self,
        results: list[dict[int, Any]],
        k: int,
        m: int,
        harmonics: int,
        start_s: float = 0.0,
        *,
        preview: bool = False,
    ) -> tuple[Array, dict[str, Any], float]:
        """Node coordinates (K, M, d), raw data and noise of one acquisition's records; raises
        `_Reranged` after re-programming the channels whose V/div must change (a ``preview``
        during the transient also re-centres channels whose peak is outside 0.3–0.8 of full
        scale, so that the measurement after it does not have to)."""
        x = np.zeros((k, m, self.n_nodes))
        seen = np.zeros(self.n_nodes, bool)
        raw: dict[str, Any] = {}
        noise2 = 0.0
        refs: list[Array] = []
        rerange: list[tuple[_Scope, int, int, float]] = []
        for s, waves in zip(self._scopes.values(), results, strict=True):
            for ch, wf in waves.items():
                i = s.channels[ch]
                node = self.config.wiring.sense[i].node
                peak_v = float(np.max(np.abs(wf.volts - self.chains.sense_offset[i])))
                if wf.clipped and s.scale_v[ch] >= self._max_scale_v(i):
                    raise SafetyError(
                        f"interlock: {s.name} channel {ch} (node {node}) clipped: the response "
                        f"exceeds the interlock amplitude {self.options.safety.max_response}"
                    )
                raw[f"{s.name}/ch{ch}"] = np.asarray(wf.volts, dtype=np.float32)
                fit = fit_periods(
                    wf.t_s,
                    wf.volts,
                    self.period_s,
                    k,
                    self.grid_t,
                    harmonics,
                    self.chains.sense_delay[i],
                    start_s,
                    # canonical: records on the screen-sample lattice (`_window`)
                    lattice_s=self._tb_scale_s / SCREEN_POINTS_PER_DIVISION
                    if self.options.ranging == "canonical"
                    else None,
                )
                xn = (fit.values - self.chains.sense_offset[i]) / self.chains.sense_gain[i]
                canonical = self.options.ranging == "canonical"
                # canonical: from the fitted waveform's peak, which (unlike the raw samples')
                # barely depends on the 8-bit scale it was quantised on
                fit_peak_v = float(np.max(np.abs(fit.values - self.chains.sense_offset[i])))
                new = ranged_scale(
                    fit_peak_v if canonical and not wf.clipped else peak_v,
                    s.scale_v[ch],
                    self._max_scale_v(i),
                    clipped=wf.clipped,
                    canonical=canonical,
                    band=_CENTRED if preview else (0.2, 1.0),
                )
                tried = self._tried_scales.setdefault((s.name, ch), {})
                if canonical and not wf.clipped:
                    new = self._canonical_choice(
                        tried, s.scale_v[ch], new, fit_peak_v, self._max_scale_v(i)
                    )
                else:
                    tried[s.scale_v[ch]] = new
                    if new < s.scale_v[ch] and new in tried:
                        # back down to a scale this measurement left: a peak on a boundary
                        # that reads differently on the two scales; stay on the coarser one
                        new = s.scale_v[ch]
                if new != s.scale_v[ch]:
                    log.debug(
                        "%s ch%d: scale %g -> %g V/div (peak %g V, clipped %s)",
                        s.name,
                        ch,
                        s.scale_v[ch],
                        new,
                        peak_v,
                        wf.clipped,
                    )
                    rerange.append((s, ch, i, new))
                # a response that is not T-periodic (subharmonic, quasi-periodic) leaves what
                # the harmonic fit cannot follow, and the record before the fitted periods
                # differs from their periodic extension: the part of either that the channel's
                # noise (white part of the residual, or quantisation) cannot explain, relative
                # to the channel's swing
                lsb_v = s.scale_v[ch] / CODES_PER_DIVISION
                fit_rel = fit.unexplained_rms_v(lsb_v) / max(peak_v, lsb_v)
                raw["fit_residual_rel"] = max(float(raw.get("fit_residual_rel", 0.0)), fit_rel)
                sig = fit.residual_rms_v / abs(self.chains.sense_gain[i])
                noise2 += sig**2 * m * (2 * harmonics + 1) / max(fit.points_per_period, 1) * 2
                if node == self.reference_node:
                    refs.append(xn)
                if not seen[node]:
                    x[:, :, node] = xn
                    seen[node] = True
        stitch = 0.0
        if len(refs) > 1 and not rerange:
            base = refs[0]
            nb = float(np.linalg.norm(base)) or 1.0
            stitch = max(float(np.linalg.norm(r - base)) / nb for r in refs[1:])
            if stitch > self.options.stitch_tol:
                log.warning(
                    "stitch check: reference node %s differs by %.3g between scope groups",
                    self.reference_node,
                    stitch,
                )
        raw["stitch_rel"] = stitch
        if rerange:
            for sc, ch, i, new in rerange:
                await sc.driver.configure_channel(
                    ch, new, -float(self.chains.sense_offset[i]), "DC", 1.0
                )
                sc.scale_v[ch] = new
            raise _Reranged()
        return x, raw, math.sqrt(noise2)

    @staticmethod
    def _canonical_choice(
        tried: dict[float, float], scale: float, want: float, peak_v: float, top: float
    ) -> float:
        """Canonical ranging's next V/div for a channel measured at ``scale`` whose fitted peak
        ``peak_v`` asks for ``want`` (`ranged_scale`), given what the records of this
        measurement asked for at each V/div they were taken at (``tried``: V/div → wanted).

        The fitted peak depends a little on the scale it was quantised on, so near a 1-2-5
        boundary two neighbouring scales can both be fixed points (each asks for itself) or
        send the channel to each other. The choice is made the same whichever side the
        channel comes from: the coarser of two fixed points (a fixed point within 1 % of the
        boundary to the next scale up probes that scale once), and the coarser of two scales
        that send the channel to each other."""
        tried[scale] = want
        if want > scale:
            return want
        if want < scale:
            back = tried.get(want)
            # the finer scale already measured and sent the channel elsewhere: neither is a
            # fixed point (or only this coarser one would be): stay coarser
            return scale if back is not None and back != want else want
        up = scale_125_at_least(scale * 1.01)
        near = 1.4 * peak_v / (V_DIVISIONS / 2) > scale / 1.01
        if near and up <= top and tried.get(up, up) == up:
            return up  # unmeasured, or measured as a fixed point: the coarser one
        return scale

    def _max_scale_v(self, i: int) -> float:
        peak = abs(self.chains.sense_gain[i]) * self.options.safety.max_response
        return scale_125_at_least(peak * 1.05 / (V_DIVISIONS / 2))

    async def _wait(self, dt_s: float) -> None:
        self.wait_time_s += max(0.0, dt_s)
        await self.clock.sleep(dt_s)

    @property
    def _alpha_unit(self) -> float:
        """m ω² (N/m): the scale in which a coupling change counts as a relative change."""
        return float(self.cal.mass_kg * (2 * math.pi / self.period_s) ** 2)

    def _predicted_transient(
        self, force: Array, x_ref: Array | None, recalled: Recalled | None, new_input: bool
    ) -> float:
        """A priori relative size of the transient the new settings start (before margin).
        With a remembered response to the same input: its relative change from the response
        settled before the change, ``x_ref``, plus how far the settings moved since it was
        measured; otherwise the relative change of the drive force plus the coupling change
        in units of m ω², at least 1 for an input not measured last (``new_input``: another
        sample's response differs by its own size; a force-based guess fell short by up to
        1.8× on the XOR bench; never set with canonical ranging, whose plans depend on the
        present change alone); 1 when nothing is known (first measurement, after a
        reconnect)."""
        if recalled is not None and x_ref is not None:
            amp = float(np.max(np.abs(recalled.x))) or 1.0
            rho = float(np.max(np.abs(recalled.x - x_ref))) / amp + recalled.distance
            # 5 % over the prediction: waits ln(1.05)/σ longer, where a prediction a fraction
            # of a percent short would cost a whole repeated acquisition
            rho *= _PREDICTION_CUSHION
        elif self._x_before is None or self._last_force is None:
            return 1.0
        else:
            nf = float(np.linalg.norm(force)) or 1.0
            rho = float(np.linalg.norm(force - self._last_force)) / nf + self._changed_alpha
            if new_input:
                rho = max(rho, 1.0)
        return min(max(rho, self.options.settle.tol), 1.0e3)

    async def _range_for(self, x: Array) -> None:
        """Set every scope channel's V/div for a predicted response x (M, d) before it is
        acquired: 1-2-5 ≥ 1.4 × the predicted peak where the predicted peak is outside 0.3–0.8
        of the present full scale (near clipping, or near the 0.2 at which the measurement
        would re-range down). The acquisition checks the real peak as usual. (Canonical
        ranging plans without remembered responses: never called there.)"""

        async def one(sc: _Scope) -> None:
            for ch, i in sc.channels.items():
                node = self.config.wiring.sense[i].node
                peak_v = abs(float(self.chains.sense_gain[i])) * float(np.max(np.abs(x[:, node])))
                full_v = V_DIVISIONS / 2 * sc.scale_v[ch]
                lo, hi = _CENTRED
                if lo * full_v <= peak_v <= hi * full_v:
                    continue
                new = ranged_scale(
                    peak_v, sc.scale_v[ch], self._max_scale_v(i), clipped=False, canonical=True
                )
                if new != sc.scale_v[ch]:
                    await sc.driver.configure_channel(
                        ch, new, -float(self.chains.sense_offset[i]), "DC", 1.0
                    )
                    sc.scale_v[ch] = new

        t0 = time.perf_counter()
        await asyncio.gather(*(one(sc) for sc in self._scopes.values()))
        self.io_time_s += time.perf_counter() - t0

    async def _measure_sample(
        self, force: Array, key: bytes | None = None
    ) -> tuple[Array, PeriodAssessment, float, dict[str, Any]]:
        """Upload, wait the predicted settle time, acquire, verify with the measured change of
        the response (`physlearn.systems.bench.settling`), wait and acquire again if it was too early.

        ``key``: the input's key in the response memory (`physlearn.systems.bench.response_memory`); with a
        remembered response to it, the settle time and the scope ranging are planned from that
        response (preview records only when the settings moved by more than 1 % since)."""
        t0 = time.perf_counter()
        if await self._upload(force):
            self._mark_change(await self.clock.now())
        self.io_time_s += time.perf_counter() - t0
        st = self.options.settle
        T = self.period_s
        c = st.transient_margin
        sigma = self.chains.decay_rate_per_s
        r_known = contraction_from_decay(sigma, T) if sigma else None
        now = await self.clock.now()
        t_change = self._t_change if self._t_change is not None else now
        fresh = self._settled_since_change  # nothing changed since the last settled response
        x_ref = self._x_settled if fresh else self._x_before
        recalled = None
        # canonical ranging promises a history-free measurement path (a resumed run measures
        # as the uninterrupted one did): plans from remembered responses would depend on
        # which responses this session has seen, so that mode does without them
        canonical_path = self.options.ranging == "canonical"
        if key is not None and not fresh and not canonical_path:
            recalled = self._memory.recall(key, force, self._alpha, self._alpha_unit)
        # (canonical: not from which input this session measured last — a retry changes it)
        new_input = not canonical_path and key is not None and key != self._last_key
        rho_pred = self._predicted_transient(force, x_ref, recalled, new_input)
        if st.first_wait_periods is not None:
            settle_end = t_change + st.first_wait_periods * T
        elif sigma:
            settle_end = t_change + settle_time_s(c * rho_pred, st.tol, sigma)
        else:
            settle_end = t_change + 10 * T
        if self._settled_since_change:
            settle_end = min(settle_end, now)
        reranges = acquisitions = previews = records = 0  # records: every scope acquisition
        preview_reranges = 0
        if recalled is not None:
            await self._range_for(recalled.x)
        # unless the remembered response is close (settings moved by < 1 %, e.g. a nudge),
        # scope ranging while the transient decays: preview acquisitions (not measurements)
        # once the transient is below 10 %, as long as one (its record ending K T after its
        # fit start, then T/4 to read it) ends before the measurement must be armed
        if sigma and not fresh and (recalled is None or recalled.distance > _CLOSE_RECALL):
            t_prev = t_change + settle_time_s(c * rho_pred, 0.1, sigma)
            lead = self._lead_s()
            while previews < 4 and (
                max(t_prev, await self.clock.now() + lead) + st.acquire_periods * T + T / 4
                < settle_end - lead
            ):
                previews += 1
                records += 1
                try:
                    await self._acquire(t_prev, preview=True)
                    break
                except _Reranged:
                    reranges += 1
                    preview_reranges += 1
                t_prev = await self.clock.now()
        self._tried_scales = {}  # previews saw the transient: only measurement records count
        while True:
            records += 1
            t_settle = settle_end  # the settle decision: no fitted sample before it
            try:
                x, raw, noise, t_fit = await self._acquire(t_settle)
            except _Reranged:
                reranges += 1
                # previews re-range while the transient decays: only the measurement's own
                # re-ranges count towards the limit
                if reranges - preview_reranges > 4:
                    raise SteadyStateError("scope ranging did not converge in 4 tries") from None
                settle_end = await self.clock.now()
                continue
            acquisitions += 1
            self.interlock.check(x, "measured response")
            waited = t_fit - t_change  # to the first fitted sample
            if x.shape[0] >= 2:
                a = assess_periods(x, tol=st.tol, noise_floor=noise, contraction=r_known)
            else:  # one period: the calibrated decay rate judges (below)
                amp1 = float(np.max(np.abs(x[-1]))) * math.sqrt(x[-1].size)
                a = PeriodAssessment("settled", 0.0, r_known or math.nan, False, math.nan, amp1)
            if x.shape[0] >= 2 and not a.periodic:
                raise SteadyStateError(
                    f"bench response is not T-periodic ({a.verdict.replace('_', ' ')}; step "
                    f"{a.step:.3g}, contraction {a.contraction:.3g}) after {waited:.3g} s"
                )
            # the transient started at t_change from the settled response before it: its size
            # is (with the margin c for velocity and modal mixing) the measured change
            xs = x[-1]
            amp = float(np.max(np.abs(xs))) or 1.0
            if x_ref is not None:
                rho = c * float(np.max(np.abs(xs - x_ref))) / amp
            else:
                rho = c * rho_pred
            if sigma:
                remaining = rho * math.exp(-sigma * max(waited, 0.0))
                if x.shape[0] >= 3 and a.fitted:
                    remaining = max(remaining, a.remaining)
            else:
                remaining = a.remaining
            raw.update(
                t_change=t_change,
                t_trigger=raw["t_edge"],
                t_window=t_fit,
                t_settle=t_settle,
                rho_predicted=c * rho_pred,
                predicted_from_memory=recalled is not None,
                rho_measured=rho,
                decay_rate_per_s=sigma if sigma else math.nan,
                contraction=a.contraction if a.fitted else (r_known or math.nan),
                acquisitions=acquisitions,
                reranges=reranges,
                previews=previews,
                records=records,
            )
            if remaining <= st.tol or (
                sigma is None and a.verdict == "settled" and x.shape[0] >= 2
            ):
                # judged only on a response otherwise accepted: before, a decaying transient
                # (largest in the record's part before the fitted periods) is not periodic
                # either, and the next acquisition comes later anyway
                if float(raw.get("fit_residual_rel", 0.0)) > st.periodic_residual:
                    raise SteadyStateError(
                        "bench response is not T-periodic: beyond the noise, the harmonic fit "
                        f"or the preceding part of the record leaves "
                        f"{raw['fit_residual_rel']:.3g} of the swing (> "
                        f"{st.periodic_residual}) after {waited:.3g} s"
                    )
                self._x_settled = xs.copy()
                self._settled_since_change = True
                self._last_force = force.copy()
                self._changed_alpha = 0.0
                self._last_key = key
                if key is not None:
                    self._memory.remember(key, xs, force, self._alpha)
                return xs, replace(a, remaining=remaining), waited, raw
            if waited > st.max_wait_s:
                raise SteadyStateError(
                    f"bench response not settled after {waited:.3g} s (remaining {remaining:.3g} "
                    f"> tol {st.tol})"
                )
            if sigma:
                settle_end = t_change + settle_time_s(rho, st.tol, sigma)
            else:
                settle_end = t_fit + settle_wait_s(remaining, st.tol, a.contraction, T)

    async def measure(self) -> Observation:
        drive = self._require_input()
        self._require_armed()
        base = drive if self._echo is None else self._echo
        B = base.shape[0]
        xs = np.zeros((B, self.grid_t.size, self.n_nodes))
        waited = np.zeros(B)
        remaining = np.zeros(B)
        periodic = np.ones(B, bool)
        raws = []
        for b in range(B):
            f = base[b] + (self._extra[b] if self._extra is not None else 0.0)
            x, a, w, raw = await self._measure_sample(f, ResponseMemory.key(base[b]))
            xs[b], waited[b], remaining[b], periodic[b] = x, w, a.remaining, a.periodic
            raws.append(raw)
            self.experiments += 1
        self.journal.entries.append(
            {
                "raw": raws,
                "x": xs.copy(),
                "settle_s": waited.copy(),
                "remaining": remaining.copy(),
                "decay_rate_per_s": [r["decay_rate_per_s"] for r in raws],
                "initial_transient": [r["rho_measured"] for r in raws],
                "t_change": [r["t_change"] for r in raws],
                "t_trigger": [r["t_trigger"] for r in raws],
                "t_window": [r["t_window"] for r in raws],
                "t_settle": [r["t_settle"] for r in raws],
                "acquisitions": [r["records"] for r in raws],  # scope records, previews too
                "nudged": self._extra is not None,
            }
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

    def drain_journal(self) -> list[dict[str, Any]]:
        out, self.journal.entries = self.journal.entries, []
        return out

    async def settings_snapshot(self) -> dict[str, Any]:
        """Instrument settings for the records (DAC setpoints, arming, scope modes)."""
        return {
            "dac_v": {f"{k[0]}/ch{k[1]}": v for k, v in self._dac_v.items()},
            "armed": self.armed,
            "scope_modes": {n: s.mode for n, s in getattr(self, "_scopes", {}).items()},
            "calibration": self.calibration_version,
        }

    # ------------------------------------------------------------------ safe state
    async def safe_state(self) -> None:
        """Drive outputs off, DACs ramped to the safe value at the slew limit (waited for)."""
        errors: list[str] = []
        for name in self._generators:
            drv = self.drivers.get(name)
            if drv is None:
                continue
            try:
                await drv.safe_state()
            except Exception as exc:  # keep going: every output must be made safe
                errors.append(f"{name}: {exc}")
        safe = self.options.safety.safe_dac_v
        ramp = 0.0
        for name in self._dacs:
            drv = self.drivers.get(name)
            if drv is None:
                continue
            chans = {e.channel: safe for e in self._param_edges if e.instrument == name}
            try:
                await drv.set_voltages(chans)
            except Exception as exc:
                errors.append(f"{name}: {exc}")
        for (_, _), v in self._dac_v.items():
            ramp = max(ramp, abs(v - safe))
        self._dac_v = {}
        self._arb_now = {}
        if ramp > 0:
            try:
                await self.clock.sleep(1.01 * ramp / self.options.safety.dac_slew_v_per_s + 1e-3)
            except Exception as exc:
                errors.append(f"clock: {exc}")
        self.armed = False
        if errors:
            log.error("safe state incomplete: %s", "; ".join(errors))
            raise SafetyError("safe state incomplete: " + "; ".join(errors))
        log.info("bench in its safe state")

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


Waiter = Callable[[float], Awaitable[None]]
