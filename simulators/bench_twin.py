"""`BenchTwin`: the physics hub of one emulated bench, shared by all of its instrument emulators.

It owns the network (the `[twin]` table's `NetworkSpec`), the hidden truth (`BenchTruth`, drawn
from the truth seed) and the RK4 state of the network; it reads time from the bench's
`TimeSource`.

Signals in:  force_j(t) = g_j · V_gen(ch_j, t − τ_j)        per `[[wiring.drives]]` entry
             α_e(t)     = a_e + b_e tanh((V_dac,e(t) − c_e)/w_e)   per `[[wiring.edges]]` entry,
                          evaluated at each integration step's start and held over the step
             κ_t(V)     = κ0_t + s_t (V − z_t) + q_t (V − z_t)²        per `[[wiring.tuners]]` entry
                          (the node's on-site stiffness, held over each step like α_e)
Signals out: v_s(t) = G_s · x_node(t − τ_s) + O_s + drift_s(t)      per `[[wiring.sense]]` entry
             (noise and quantisation are added by the scope / lock-in emulators themselves)

Time and determinism. Integration runs on a fixed absolute grid t_n = n·dt with
dt = T_drive / steps_per_period (T_drive the network spec's nominal drive period; the generator's
arbitrary-waveform sample period should be a whole number of steps, phase origin t = 0, so ZOH
jumps fall on step boundaries). A step is *committed* (stored in a bounded ring buffer of states
(x, ẋ)) only once it lies entirely in the past (t_{n+1} ≤ now): instrument outputs over past
intervals can no longer change, because every command changes an output from `now` on. Commits
happen on `sync()` — called by the twin-control endpoint after each clock advance (virtual mode),
by a pacing thread (free-running mode), and before every signal query. Signals at times not yet
committed (the current partial step, or the future) are computed *provisionally* from the last
committed state and discarded. So the committed trajectory depends only on the instrument
commands and the times at which they were issued — never on when, how often or over which
transport the signals are queried. Between grid points the state is read by cubic Hermite
interpolation of (x, ẋ) at the two neighbouring grid points (a fixed rule). Same seed + same
commands at the same virtual times → bit-identical signals, in memory or over TCP/pty.

Discontinuous forces. A generator arb is a zero-order hold, and an actuator delay τ_j moves its
jumps off the grid (to n·dt + τ_j). Plain RK4 samples the force only at a step's start, middle
and end, so any jump inside the first half of a step would act as if at dt/6 whatever τ_j is.
Instead, over each step the force is sampled at `_FORCE_SUBSAMPLES` midpoints (the same fixed
times for every step), giving its exact-for-ZOH integrals Δv = ∫ f/m ds and
Δx = ∫ (t₁ − s) f/m ds (a jump is placed to within dt/(2·_FORCE_SUBSAMPLES)); the RK4 stage
forces (f_a at t₀, f_m at t₀ + dt/2, f_b at t₁⁻) are chosen so that RK4's force contributions
equal those integrals (f_a + 4 f_m + f_b = 6 Ī₀, f_a + 2 f_m = 6 Ī₁). For a smooth force this is
standard RK4 (f_a = f(t₀), f_m = f(t₀ + dt/2)) to the accuracy of the midpoint rule.

Cost. One RK4 step costs four potential-gradient evaluations (~0.1 ms); the shipped bench
(examples/bench.toml) has Q ≈ 8 at a 25 Hz drive with 64 steps per period, so a steady state
takes ≈ 10 periods ≈ 640 steps to settle (< 0.1 s of CPU), and free-running at speed 1 needs
1600 steps per second of bench time — comfortably real time.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from physlearn.errors import ConfigError
from physlearn.simulators.bench_truth import BenchTruth, TruthNominals
from physlearn.simulators.clock import PacedClock, TimeSource, VirtualClock
from physlearn.simulators.history import HistoryError
from physlearn.simulators.instruments.transports import InMemoryServer, PtyServer, TcpServer
from physlearn.simulators.twin_control import TwinControl, TwinControlServer
from physlearn.spec.bench import (
    SWITCH_THRESHOLD_V,
    BenchConfig,
    InstrumentConfig,
    SenseWire,
    WiringConfig,
)
from physlearn.spec.model import Coefficients, NetworkModel
from physlearn.spec.network import NetworkSpec
from physlearn.spec.tomlconfig import validate

logger = logging.getLogger(__name__)

Array = NDArray[np.float64]
#: per integration step, the active elements' (gain (A,), output node (A,), input node (A,))
Elements = tuple[Array, NDArray[np.intp], NDArray[np.intp]]
GeneratorOutput = Callable[[int, Array], Array]
DacOutput = Callable[[Array], Array]
SyncOutput = Callable[[Array], Array]

_BLOCK_STEPS = 4096
#: a free-running twin this far behind real time (s) after catching up says so …
LAG_WARN_S = 0.25
#: … at most this often (s)
LAG_REPORT_S = 10.0
#: force samples per integration step (midpoint rule; a ZOH jump is placed to dt/(2·this))
_FORCE_SUBSAMPLES = 64


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmulatorSettings(_Model):
    """How `twin serve` exposes one instrument: TCP (port 0: any free port) or a serial pty."""

    transport: str = Field("tcp", pattern="^(tcp|pty)$")
    port: int = Field(0, ge=0, le=65535)
    serial: str | None = None


class ControlSettings(_Model):
    """The twin-control endpoint's TCP address (port 0: any free port)."""

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)


class TwinConfig(_Model):
    """The `[twin]` table: emulator-only; the controller never reads it."""

    seed: int = 0
    network: NetworkSpec
    steps_per_period: int = Field(64, ge=8, le=4096)
    history_s: float = Field(2.0, gt=0.0)
    truth: TruthNominals = Field(default_factory=TruthNominals)
    instruments: dict[str, EmulatorSettings] = Field(default_factory=dict)
    control: ControlSettings = Field(default_factory=ControlSettings)

    @model_validator(mode="after")
    def _check(self) -> TwinConfig:
        net = self.network
        if net.boundary.kind != "periodic":
            raise ValueError("network.boundary.kind: the bench runs a periodic drive ('periodic')")
        if net.drive.tones:
            raise ValueError(
                "network.drive.tones: on the emulated bench forces come only from the generator "
                "through [[wiring.drives]]; remove the tones"
            )
        if net.inputs.nodes:
            raise ValueError(
                "network.inputs.nodes: on the emulated bench inputs are generator outputs wired "
                "by [[wiring.drives]]; leave inputs empty"
            )
        return self

    @property
    def step_s(self) -> float:
        return self.network.period_s / self.steps_per_period


def instrument_seed(seed: int, name: str) -> np.random.SeedSequence:
    """The seed sequence of instrument `name`'s own noise (stable across runs and platforms)."""
    return np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32, zlib.crc32(name.encode())])


@dataclass
class _Ring:
    """Committed states at grid indices [first, last]; state n is in slot n % capacity."""

    capacity: int
    x: Array
    v: Array
    last: int = 0

    @property
    def first(self) -> int:
        return max(0, self.last - self.capacity + 1)


class BenchTwin:
    """The emulated bench's network, hidden truth and integration state (see module docstring)."""

    def __init__(
        self,
        twin: TwinConfig,
        wiring: WiringConfig,
        clock: TimeSource,
        *,
        seed: int | None = None,
    ) -> None:
        self.config = twin
        self.wiring = wiring
        self.clock = clock
        #: the largest lag behind real time seen (s; free-running clocks only)
        self.max_lag_s = 0.0
        self._lag_reported = -math.inf
        self.seed = twin.seed if seed is None else int(seed)
        self.spec = twin.network
        self.model = NetworkModel.from_spec(self.spec)
        self.step_s = twin.step_s
        d = self.model.d
        self._edge_terms = self._match_edges()
        self._tuner_terms = self._match_tuners()
        for i, dw in enumerate(wiring.drives):
            if dw.node >= d:
                raise ConfigError(
                    f"wiring.drives[{i}].node: node {dw.node} not in the network ({d} nodes)"
                )
        for i, sw in enumerate(wiring.sense):
            if sw.node >= d:
                raise ConfigError(
                    f"wiring.sense[{i}].node: node {sw.node} not in the network ({d} nodes)"
                )
        rng = np.random.default_rng(np.random.SeedSequence(self.seed))
        self._truth = BenchTruth.generate(
            twin.truth,
            self.model.theta0[self._edge_terms],
            len(wiring.drives),
            len(wiring.sense),
            rng,
            n_active=len(wiring.active),
            tuner_values=self.model.theta0[self._tuner_terms],
        )
        self._check_active()
        cap = math.ceil(twin.history_s / self.step_s) + 2
        self._ring = _Ring(cap, np.zeros((cap, d)), np.zeros((cap, d)))
        self._lock = threading.RLock()
        self._generators: dict[str, GeneratorOutput] = {}
        self._dacs: dict[str, DacOutput] = {}
        self._sync: SyncOutput | None = None
        self._reference: Callable[[], tuple[float, float]] | None = None
        self._coef_cache: tuple[Array, Coefficients] | None = None
        self._sense_index = {
            (sw.instrument, sw.channel if sw.channel is not None else 1): i
            for i, sw in enumerate(wiring.sense)
        }

    # ------------------------------------------------------------------ set-up
    def _match_edges(self) -> NDArray[np.intp]:
        """Term index (in `NetworkSpec.terms()` order) of each wired edge's coupling."""
        by_pair: dict[tuple[int, int], list[int]] = {}
        for idx, c in enumerate(self.spec.couplings):
            by_pair.setdefault((min(c.nodes), max(c.nodes)), []).append(idx)
        out = []
        for i, e in enumerate(self.wiring.edges):
            found = by_pair.get(e.key, [])
            if len(found) != 1:
                what = "no coupling" if not found else "both a product and a difference coupling"
                raise ConfigError(
                    f"wiring.edges[{i}].nodes: the twin network has {what} between nodes "
                    f"{e.key[0]} and {e.key[1]}"
                )
            out.append(found[0])  # couplings come first in terms() order
        return np.array(out, dtype=np.intp)

    def _match_tuners(self) -> NDArray[np.intp]:
        """Term index of each tuned node's ``[[onsite]]`` term (its κ0 and the slot of κ(V))."""
        offset = len(self.spec.terms()) - len(self.spec.onsite)  # onsite terms come last
        by_node = {o.node: offset + i for i, o in enumerate(self.spec.onsite)}
        out = []
        for i, tw in enumerate(self.wiring.tuners):
            if tw.node not in by_node:
                raise ConfigError(
                    f"wiring.tuners[{i}].node: the twin network has no [[onsite]] term on node "
                    f"{tw.node} (its value is the tuner's nominal κ at zero volts)"
                )
            out.append(by_node[tw.node])
        return np.array(out, dtype=np.intp)

    def _check_active(self) -> None:
        """Every active element joins two nodes of the network that carry no directed term of the
        twin network already (the element *is* that coupling, its gain the truth's map)."""
        d = self.model.d
        fixed = {(c.target, c.source) for c in self.spec.directed}
        for i, a in enumerate(self.wiring.active):
            if max(a.target, a.source) >= d:
                raise ConfigError(f"wiring.active[{i}]: nodes not in the network ({d} nodes)")
            if a.key in fixed or (a.source, a.target) in fixed:
                raise ConfigError(
                    f"wiring.active[{i}]: the twin network already has a directed coupling "
                    f"between {a.target} and {a.source}; the wired element replaces it"
                )

    @property
    def truth(self) -> BenchTruth:
        """The hidden truth (for tests and the emulators; never exposed over any protocol)."""
        return self._truth

    def connect_generator(self, instrument: str, output_voltage: GeneratorOutput) -> None:
        """Take generator `instrument`'s outputs: (channel 1.., times (n,)) → volts (n,)."""
        with self._lock:
            self._generators[instrument] = output_voltage

    def connect_dac(self, instrument: str, output_voltages: DacOutput) -> None:
        """Take DAC `instrument`'s outputs: times (n,) → volts (n, channels)."""
        with self._lock:
            self._dacs[instrument] = output_voltages

    def connect_sync(self, sync_voltage: SyncOutput) -> None:
        """The generator's sync output (volts at times (n,)), cabled to EXT trigger / lock-ins."""
        with self._lock:
            self._sync = sync_voltage

    def connect_reference(self, reference: Callable[[], tuple[float, float]]) -> None:
        """The sync's (frequency Hz, phase rad): rising edges where 2π f t + phase ≡ 0."""
        with self._lock:
            self._reference = reference

    def reference(self) -> tuple[float, float]:
        """(frequency Hz, phase rad) of the generator sync the lock-ins lock to."""
        with self._lock:
            ref = self._reference
        if ref is None:
            raise ValueError("no generator sync is connected to the lock-in reference inputs")
        return ref()

    def instrument_rng(self, name: str) -> np.random.Generator:
        """A fresh seeded generator for instrument `name`'s noise (derived from the bench seed)."""
        return np.random.default_rng(instrument_seed(self.seed, name))

    # ------------------------------------------------------------------ inputs
    def _stage_forces(self, n0: int, count: int) -> Array:
        """RK4 stage forces (count, 3, d) of steps n0..n0+count−1: (f_a, f_m, f_b) used at the
        step's start, middle (twice) and end, matched to the force's integrals over the step
        (module docstring, "Discontinuous forces"); the sample times are fixed per step."""
        k = _FORCE_SUBSAMPLES
        u = (np.arange(k, dtype=np.float64) + 0.5) / k
        steps = (n0 + np.arange(count, dtype=np.float64))[:, None]
        t = np.concatenate(
            [(steps + u[None, :]) * self.step_s, (steps + 1.0 - 1e-7) * self.step_s], axis=1
        )
        f = self.forces_at(t.reshape(-1)).reshape(count, k + 1, self.model.d)
        mid, f_b = f[:, :k], f[:, k]
        i0 = np.mean(mid, axis=1)  # (1/dt) ∫ f ds
        i1 = np.einsum("k,nkd->nd", 1.0 - u, mid) / k  # (1/dt²) ∫ (t₁ − s) f ds
        f_m = 3.0 * (i0 - i1) - 0.5 * f_b
        f_a = 6.0 * i1 - 2.0 * f_m
        out: Array = np.stack([f_a, f_m, f_b], axis=1)
        return out

    def _dac_volts(self, n0: int, count: int) -> Array:
        """Wired edges' then tuners' DAC voltages (count, E + T) at the step start times."""
        w = self.wiring
        wires = [(e.instrument, e.channel) for e in w.edges]
        wires += [(t.instrument, t.channel) for t in w.tuners]
        return self._dac_channels(n0, count, wires)

    def _dac_channels(self, n0: int, count: int, wires: list[tuple[str, int]]) -> Array:
        """DAC voltages (count, len(wires)) of (instrument, channel) wires at the step starts."""
        t = (n0 + np.arange(count, dtype=np.float64)) * self.step_s
        out = np.zeros((count, len(wires)))
        cache: dict[str, Array] = {}
        for e, (name, channel) in enumerate(wires):
            dac = self._dacs.get(name)
            if dac is None:
                continue
            if name not in cache:
                cache[name] = np.asarray(dac(t), dtype=np.float64).reshape(count, -1)
            out[:, e] = cache[name][:, channel - 1]
        return out

    def _active_elements(self, n0: int, count: int) -> list[Elements] | None:
        """Per step: the active elements' (gain (A,), output node (A,), input node (A,)),
        the switch deciding the direction; None without active elements."""
        act = self.wiring.active
        if not act:
            return None
        gain = self._truth.active_gain(
            self._dac_channels(n0, count, [(a.instrument, a.channel) for a in act])
        )
        rev = (
            self._dac_channels(n0, count, [(a.instrument, a.switch_channel) for a in act])
            > SWITCH_THRESHOLD_V
        )
        tgt = np.array([a.target for a in act], dtype=np.intp)
        src = np.array([a.source for a in act], dtype=np.intp)
        return [
            (gain[i], np.where(rev[i], src, tgt), np.where(rev[i], tgt, src)) for i in range(count)
        ]

    def active_force(self, x: Array, v: Array, el: Elements | None) -> Array:
        """The active elements' forces with the sign of ∂V/∂x (d,): on each output node
        k (x_in − τ ẋ_in + o) (module bench_truth: gain, bandwidth, input offset)."""
        q = np.zeros_like(x)
        if el is not None:
            k, out_i, in_i = el
            tr = self._truth
            np.add.at(q, out_i, k * (x[in_i] - tr.active_delay_s * v[in_i] + tr.active_offset))
        return q

    def couplings_at(self, dac_v: Array) -> Array:
        """All term values θ (n_terms,) for the wired edges' DAC voltages (E,), then the
        tuners' (T,) when the bench has tuners (the truth maps)."""
        theta = self.model.theta0.copy()
        v = np.asarray(dac_v, dtype=np.float64)
        e = self._edge_terms.size
        theta[self._edge_terms] = self._truth.coupling(v[:e])
        if self._tuner_terms.size:
            theta[self._tuner_terms] = self._truth.tuner_stiffness(v[e:])
        return theta

    def theta_at(self, t_s: float) -> Array:
        """Term values θ (n_terms,) in force during the step containing time `t_s` (s)."""
        with self._lock:
            n = math.floor(t_s / self.step_s)
            return self.couplings_at(self._dac_volts(n, 1)[0])

    def forces_at(self, t_s: Array) -> Array:
        """Actuator forces (n, d) in N at times `t_s` (the generator outputs through the truth)."""
        t = np.asarray(t_s, dtype=np.float64).reshape(-1)
        f = np.zeros((t.size, self.model.d))
        with self._lock:
            for j, dw in enumerate(self.wiring.drives):
                gen = self._generators.get(dw.instrument)
                if gen is None:
                    continue
                tj = t - self._truth.actuator_delay_s[j]
                volts = np.asarray(gen(dw.channel, tj), dtype=np.float64).reshape(t.shape)
                f[:, dw.node] += self._truth.actuator_gain_n_per_v[j] * np.where(
                    tj >= 0.0, volts, 0.0
                )
        return f

    def _coefficients(self, dac_v: Array) -> Coefficients:
        cached = self._coef_cache
        if cached is not None and np.array_equal(cached[0], dac_v):
            return cached[1]
        coef = self.model.coefficients(self.couplings_at(dac_v)[None, :])
        self._coef_cache = (dac_v.copy(), coef)
        return coef

    # ------------------------------------------------------------------ integration
    def _integrate(self, x: Array, v: Array, n0: int, count: int) -> tuple[Array, Array]:
        """RK4 from state (x, v) at grid index n0 over `count` steps; states at n0+1..n0+count."""
        h = self.step_s
        m, gamma = self.model.mass, self.model.damping
        grad = self.model.grad_potential
        f = self._stage_forces(n0, count)
        dac = self._dac_volts(n0, count)
        elements = self._active_elements(n0, count)
        xs = np.empty((count, x.size))
        vs = np.empty((count, x.size))
        for i in range(count):
            coef = self._coefficients(dac[i])
            el = None if elements is None else elements[i]
            t0 = (n0 + i) * h
            th, t1 = t0 + 0.5 * h, (n0 + i + 1) * h
            f0, fh, f1 = f[i, 0], f[i, 1], f[i, 2]

            def acc(
                t: float,
                xx: Array,
                vv: Array,
                ff: Array,
                c: Coefficients = coef,
                e: Elements | None = el,
            ) -> Array:
                g = grad(xx[None, None, :], np.array([t]), c)[0, 0]
                if e is not None:
                    g = g + self.active_force(xx, vv, e)
                out: Array = (ff - g) / m - gamma * vv
                return out

            a1 = acc(t0, x, v, f0)
            x2, v2 = x + 0.5 * h * v, v + 0.5 * h * a1
            a2 = acc(th, x2, v2, fh)
            x3, v3 = x + 0.5 * h * v2, v + 0.5 * h * a2
            a3 = acc(th, x3, v3, fh)
            x4, v4 = x + h * v3, v + h * a3
            a4 = acc(t1, x4, v4, f1)
            x = x + h / 6.0 * (v + 2.0 * v2 + 2.0 * v3 + v4)
            v = v + h / 6.0 * (a1 + 2.0 * a2 + 2.0 * a3 + a4)
            xs[i], vs[i] = x, v
        if not np.all(np.isfinite(xs[-1])):
            raise FloatingPointError(f"bench twin diverged before t = {(n0 + count) * h} s")
        return xs, vs

    def committed_steps(self) -> int:
        """Index n of the last committed grid state (time n·dt)."""
        with self._lock:
            return self._ring.last

    def sync(self) -> int:
        """Commit every step that lies entirely in the past; returns the last committed index.
        On a free-running clock, says so (a warning at most every `LAG_REPORT_S`) when the
        integration falls behind real time by more than `LAG_WARN_S`."""
        with self._lock:
            last = self._commit_to(math.floor(self.clock.now() / self.step_s + 1e-9))
            lag = self.clock.now() - last * self.step_s
            if lag > LAG_WARN_S and isinstance(self.clock, PacedClock):
                self.max_lag_s = max(self.max_lag_s, lag)
                wall = time.monotonic()
                if wall - self._lag_reported >= LAG_REPORT_S:
                    self._lag_reported = wall
                    logger.warning(
                        "the free-running twin fell %.2f s behind real time (integration "
                        "slower than the clock: CPU load?); instruments answer late",
                        lag,
                    )
            return last

    def _commit_to(self, target: int) -> int:
        """Integrate and commit up to grid index ``target``; the last committed index."""
        with self._lock:
            ring = self._ring
            while ring.last < target:
                n0 = ring.last
                # block ends on absolute multiples of _BLOCK_STEPS (or at the target)
                count = min(target, (n0 // _BLOCK_STEPS + 1) * _BLOCK_STEPS) - n0
                k = n0 % ring.capacity
                xs, vs = self._integrate(ring.x[k], ring.v[k], n0, count)
                slots = (n0 + 1 + np.arange(count)) % ring.capacity
                ring.x[slots], ring.v[slots] = xs, vs
                ring.last = n0 + count
            return ring.last

    def _states(self, i0: int, i1: int) -> tuple[Array, Array]:
        """States (x, v) at grid indices i0..i1 inclusive (rest before 0; provisional beyond)."""
        ring = self._ring
        d = self.model.d
        n = i1 - i0 + 1
        xs, vs = np.zeros((n, d)), np.zeros((n, d))
        lo = max(i0, 0)
        if lo <= i1 and lo < ring.first:
            raise HistoryError(
                (ring.first + 1) * self.step_s,
                f"t = {lo * self.step_s} s is older than the kept history "
                f"({ring.first * self.step_s} s .. {ring.last * self.step_s} s)",
            )
        hi = min(i1, ring.last)
        if lo <= hi:
            slots = np.arange(lo, hi + 1) % ring.capacity
            xs[lo - i0 : hi - i0 + 1], vs[lo - i0 : hi - i0 + 1] = ring.x[slots], ring.v[slots]
        if i1 > ring.last:
            extra = i1 - ring.last
            if extra > ring.capacity:
                raise ValueError(
                    f"t = {i1 * self.step_s} s is too far beyond the committed state "
                    f"({ring.last * self.step_s} s) for the kept history"
                )
            k = ring.last % ring.capacity
            px, pv = self._integrate(ring.x[k], ring.v[k], ring.last, extra)
            start = max(ring.last + 1, i0)
            xs[start - i0 :], vs[start - i0 :] = (
                px[start - ring.last - 1 :],
                pv[start - ring.last - 1 :],
            )
        return xs, vs

    # ------------------------------------------------------------------ outputs
    def positions(self, t_s: Array) -> Array:
        """Node coordinates x at times `t_s` (shape (n,) → (n, d)); rest before t = 0."""
        t = np.asarray(t_s, dtype=np.float64).reshape(-1)
        if t.size == 0:
            return np.zeros((0, self.model.d))
        if not np.all(np.isfinite(t)):
            raise ValueError("positions: times must be finite")
        with self._lock:
            self.sync()
            u = t / self.step_s
            idx = np.floor(u).astype(np.int64)
            s = (u - idx)[:, None]
            i0, i1 = int(idx.min()), int(idx.max()) + 1
            xs, vs = self._states(i0, i1)
        a, b = idx - i0, idx - i0 + 1
        h = self.step_s
        s2, s3 = s * s, s * s * s
        return (
            (2 * s3 - 3 * s2 + 1) * xs[a]
            + (s3 - 2 * s2 + s) * h * vs[a]
            + (-2 * s3 + 3 * s2) * xs[b]
            + (s3 - s2) * h * vs[b]
        )

    def sensed_voltage(self, path: int, t_s: Array) -> Array:
        """Noise-free voltage at the instrument end of sense wire `path` at times `t_s`."""
        sw: SenseWire = self.wiring.sense[path]
        t = np.asarray(t_s, dtype=np.float64)
        tr = self._truth
        x = self.positions(t.reshape(-1) - tr.sensing_delay_s[path])[:, sw.node]
        v = tr.sensing_gain_v_per_unit[path] * x + tr.sensing_offset(path, t.reshape(-1))
        return v.reshape(t.shape)

    def sync_voltage(self, t_s: Array) -> Array:
        """The generator's sync output at times `t_s` (0 V if no generator sync is connected)."""
        t = np.asarray(t_s, dtype=np.float64)
        with self._lock:
            sync = self._sync
        if sync is None:
            return np.zeros(t.shape)
        return np.asarray(sync(t), dtype=np.float64).reshape(t.shape)

    def scope_source(self, instrument: str) -> Callable[[int, Array], Array]:
        """Source for a scope emulator: (channel 1..4, or 0 = EXT trigger; times) → volts."""

        def source(channel: int, t_s: Array) -> Array:
            if channel == 0:
                return self.sync_voltage(t_s)
            path = self._sense_index.get((instrument, int(channel)))
            if path is None:
                return np.zeros(np.shape(t_s))
            return self.sensed_voltage(path, t_s)

        return source

    def lockin_source(self, instrument: str) -> SensedSignal:
        """Source for a lock-in emulator: times → volts at its signal input (with the earliest
        time the kept history still holds)."""
        return SensedSignal(self, self._sense_index.get((instrument, 1)))

    @property
    def history_s(self) -> float:
        """How much of the past the twin keeps (s): older states are gone."""
        return (self._ring.capacity - 2) * self.step_s


class SensedSignal:
    """The voltage at one sense path's instrument input, over the twin's kept history
    (`physlearn.simulators.history.HistorySource`); zero when nothing is wired."""

    def __init__(self, twin: BenchTwin, path: int | None) -> None:
        self.twin, self.path = twin, path

    def __call__(self, t_s: Array) -> Array:
        if self.path is None:
            return np.zeros(np.shape(t_s))
        return self.twin.sensed_voltage(self.path, t_s)

    def history_s(self) -> float:
        return self.twin.history_s


# ---------------------------------------------------------------------------------------------
# The whole emulated bench: twin + emulators + servers + twin control
# ---------------------------------------------------------------------------------------------


def load_twin_config(config: BenchConfig, source: str) -> TwinConfig:
    """Validate the `[twin]` table of a bench file (emulator side only)."""
    if config.twin is None:
        raise ConfigError(f"{source}: no [twin] table: nothing to emulate")
    twin = validate(TwinConfig, config.twin, f"{source}: [twin]")
    for name in twin.instruments:
        if name not in config.instruments:
            raise ConfigError(
                f"{source}: [twin.instruments.{name}]: no instrument {name!r} in [instruments]"
            )
    return twin


class LaunchedPacedClock(PacedClock):
    """A `PacedClock(speed)` that reads 0 until `launch()`: the free-running bench's time starts
    when it starts serving, after every emulator has been built at t = 0."""

    def __init__(self, speed: float = 1.0) -> None:
        super().__init__(speed)
        self._launched = False

    def launch(self) -> None:
        """Start the clock (idempotent)."""
        if not self._launched:
            self._t0 = self._source()
            self._launched = True

    def now(self) -> float:
        return super().now() if self._launched else 0.0


EmulatorFactory = Callable[[str, InstrumentConfig, EmulatorSettings, TimeSource, BenchTwin], Any]


def _qdac2(
    name: str, inst: InstrumentConfig, s: EmulatorSettings, clock: TimeSource, twin: BenchTwin
) -> Any:
    from physlearn.simulators.instruments.qdac2 import Qdac2Emulator

    emulator = Qdac2Emulator(clock, serial=s.serial or "00042")
    twin.connect_dac(name, emulator.output_voltages)
    return emulator


def _rigol_ds1000z(
    name: str, inst: InstrumentConfig, s: EmulatorSettings, clock: TimeSource, twin: BenchTwin
) -> Any:
    from physlearn.simulators.instruments.rigol_ds1000z import RigolDs1000zEmulator

    return RigolDs1000zEmulator(
        clock,
        source=twin.scope_source(name),
        rng=twin.instrument_rng(name),
        adc_noise_v=twin.truth.scope_sigma_v,
        serial=s.serial or "000000001",
    )


def _keysight33500b(
    name: str, inst: InstrumentConfig, s: EmulatorSettings, clock: TimeSource, twin: BenchTwin
) -> Any:
    from physlearn.simulators.instruments.keysight33500b import Keysight33500BEmulator

    emulator = Keysight33500BEmulator(clock, serial=s.serial or "MY53000042")
    twin.connect_generator(name, emulator.output_voltage)
    if twin.wiring.sync is not None and twin.wiring.sync.instrument == name:
        twin.connect_sync(emulator.sync_output)

        def reference() -> tuple[float, float]:
            f_hz = emulator.cycle_rate_hz(emulator.sync_source)
            return f_hz, -2.0 * math.pi * f_hz * emulator.sync_phase_origin_s()

        twin.connect_reference(reference)
    return emulator


def _srs_lockin(
    name: str, inst: InstrumentConfig, s: EmulatorSettings, clock: TimeSource, twin: BenchTwin
) -> Any:
    from physlearn.simulators.instruments.srs_lockin import Sr830Emulator, Sr860Emulator

    cls = Sr830Emulator if inst.kind == "sr830" else Sr860Emulator
    extra = {"serial": s.serial} if s.serial else {}
    return cls(
        clock,
        source=twin.lockin_source(name),
        reference=twin.reference if twin.wiring.sync is not None else None,
        rng=twin.instrument_rng(name),
        input_noise_v_per_rthz=twin.truth.lockin_noise_v_per_rthz,
        **extra,
    )


#: Instrument kind → builder of its emulator, connected to the twin.
EMULATORS: dict[str, EmulatorFactory] = {
    "qdac2": _qdac2,
    "rigol_ds1000z": _rigol_ds1000z,
    "keysight33500b": _keysight33500b,
    "sr830": _srs_lockin,
    "sr860": _srs_lockin,
}
_EMULATOR_MODULES = {
    "qdac2": "qdac2",
    "rigol_ds1000z": "rigol_ds1000z",
    "keysight33500b": "keysight33500b",
    "sr830": "srs_lockin",
    "sr860": "srs_lockin",
}


def available_emulators() -> set[str]:
    """Instrument kinds whose emulator module is installed."""
    return {
        kind
        for kind, module in _EMULATOR_MODULES.items()
        if importlib.util.find_spec(f"physlearn.simulators.instruments.{module}") is not None
    }


class EmulatedBench:
    """Every emulator of one bench around one `BenchTwin`, plus the twin-control endpoint.

    `virtual=True`: a `VirtualClock` advanced through `control`; otherwise free-running on
    `PacedClock(speed)`. `factories` adds or replaces emulator builders by kind (third-party
    instruments, test doubles). `serve()` starts the servers (TCP/pty per `[twin.instruments]`, or all in
    memory) and the twin-control TCP endpoint; `stop()` stops everything (idempotent).
    """

    def __init__(
        self,
        config: BenchConfig,
        twin_config: TwinConfig,
        *,
        virtual: bool = True,
        speed: float = 1.0,
        seed: int | None = None,
        factories: dict[str, EmulatorFactory] | None = None,
    ) -> None:
        self.config = config
        self.twin_config = twin_config
        builders = {**EMULATORS, **(factories or {})}
        self.clock: VirtualClock | LaunchedPacedClock = (
            VirtualClock() if virtual else LaunchedPacedClock(speed)
        )
        self.twin = BenchTwin(twin_config, config.wiring, self.clock, seed=seed)
        self.emulators: dict[str, Any] = {}
        for name, inst in config.instruments.items():
            factory = builders.get(inst.kind)
            if factory is None or (
                inst.kind not in (factories or {}) and inst.kind not in available_emulators()
            ):
                raise ConfigError(
                    f"instruments.{name}.kind: no emulator for {inst.kind!r} is available "
                    f"(emulated kinds: {', '.join(sorted(builders))})"
                )
            settings = twin_config.instruments.get(name, EmulatorSettings())
            self.emulators[name] = factory(name, inst, settings, self.clock, self.twin)
        self.control = TwinControl(self.clock, self.twin)
        self.servers: dict[str, Any] = {}
        self.control_server: TwinControlServer | None = None

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> EmulatedBench:
        """Build from a bench TOML file (its `[twin]` table is required)."""
        config = BenchConfig.load(path)
        return cls(config, load_twin_config(config, str(path)), **kwargs)

    @property
    def virtual(self) -> bool:
        return isinstance(self.clock, VirtualClock)

    def serve(self, *, memory_prefix: str | None = None, control: bool = True) -> dict[str, str]:
        """Start every instrument's server; return name → VISA resource string.

        `memory_prefix`: serve every instrument in memory as `MEM::<prefix><name>::INSTR`
        instead of the transports of `[twin.instruments]`. `control`: also start the
        twin-control TCP endpoint (`control_address`).
        """
        try:
            for name, emulator in self.emulators.items():
                if name in self.servers:
                    continue
                settings = self.twin_config.instruments.get(name, EmulatorSettings())
                server: Any
                if memory_prefix is not None:
                    server = InMemoryServer(emulator, name=f"{memory_prefix}{name}")
                elif settings.transport == "pty":
                    server = PtyServer(emulator, name=name)
                else:
                    server = TcpServer(emulator, port=settings.port, name=name)
                server.start()
                self.servers[name] = server
            if control and self.control_server is None:
                c = self.twin_config.control
                self.control_server = TwinControlServer(self.control, host=c.host, port=c.port)
                self.control_server.start()
            if isinstance(self.clock, LaunchedPacedClock):
                self.clock.launch()
            self.control.start()
        except BaseException:
            self.stop()
            raise
        return self.resources()

    def resources(self) -> dict[str, str]:
        """Name → VISA resource string of every served instrument."""
        return {name: server.resource_string for name, server in self.servers.items()}

    @property
    def control_address(self) -> str | None:
        """``tcp://host:port`` of the twin-control endpoint, once served."""
        return None if self.control_server is None else self.control_server.address

    def stop(self) -> None:
        """Stop the pacing thread, the twin-control endpoint and every server (idempotent)."""
        self.control.stop()
        if self.control_server is not None:
            self.control_server.stop()
            self.control_server = None
        for name in list(self.servers):
            try:
                self.servers.pop(name).stop()
            except Exception:
                logger.exception("stopping the %s server failed", name)

    def __enter__(self) -> EmulatedBench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
