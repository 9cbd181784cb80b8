"""The bench config file: instruments, wiring and output limits — one file for bench and twin.

The same TOML file drives the controller on a real bench (with the instruments' real VISA
addresses) and `physlearn twin serve` (which builds an emulated bench from it). Layout:

    [instruments.<name>]        kind, model, resource, backend, timeout, output limits
    [[wiring.drives]]           network node ← generator channel (force actuator)
    [[wiring.sense]]            network node → scope channel or lock-in input
    [[wiring.edges]]            coupling between two nodes ← DAC channel (its bias voltage)
    [wiring.sync]               the generator whose sync output feeds the scope's EXT trigger
                                and every lock-in's reference input
    [twin]                      EMULATOR ONLY: the twin's network, truth seed and nominals

This module is the controller's view and lives in `physlearn` (not `physlearn.simulators`) so the
controller never imports the twin. It keeps the `[twin]` table as an opaque, uninterpreted
mapping: its schema lives in `physlearn.simulators.bench_twin.TwinConfig`, and nothing on the
controller side reads it (`BenchConfig.controller_view()` drops it entirely). A real bench's file
simply has no `[twin]` table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from physlearn.spec.limits import OutputLimits, VoltageLimit
from physlearn.spec.tomlconfig import read_toml, validate

InstrumentKind = Literal["keysight33500b", "rigol_ds1000z", "sr830", "sr860", "qdac2"]
Role = Literal["generator", "scope", "lockin", "dac"]

#: What each instrument kind does on the bench.
ROLE: dict[str, Role] = {
    "keysight33500b": "generator",
    "rigol_ds1000z": "scope",
    "sr830": "lockin",
    "sr860": "lockin",
    "qdac2": "dac",
}
#: Output or input channels per kind (1-based; a lock-in has one signal input).
CHANNELS: dict[str, int] = {
    "keysight33500b": 2,
    "rigol_ds1000z": 4,
    "sr830": 1,
    "sr860": 1,
    "qdac2": 24,
}
#: Default model of each kind (what the emulator identifies as).
DEFAULT_MODEL: dict[str, str] = {
    "keysight33500b": "33522B",
    "rigol_ds1000z": "DS1054Z",
    "sr830": "SR830",
    "sr860": "SR860",
    "qdac2": "QDAC-II",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsConfig(_Model):
    """Allowed output voltages of an output instrument: a default and per-channel overrides."""

    default: VoltageLimit | None = None
    channels: dict[int, VoltageLimit] = Field(default_factory=dict)


class InstrumentConfig(_Model):
    """One instrument. `resource` is its VISA address on a real bench (the emulated bench
    assigns its own and prints it); `limits` are required on every output instrument."""

    kind: InstrumentKind
    model: str | None = None
    resource: str | None = None
    backend: Literal["pyvisa", "pyserial"] = "pyvisa"
    timeout_s: float = Field(2.0, gt=0.0, le=600.0)
    limits: LimitsConfig | None = None

    @property
    def role(self) -> Role:
        return ROLE[self.kind]

    @property
    def n_channels(self) -> int:
        return CHANNELS[self.kind]

    @property
    def model_name(self) -> str:
        return self.model or DEFAULT_MODEL[self.kind]

    @model_validator(mode="after")
    def _check(self) -> InstrumentConfig:
        if self.role in ("generator", "dac"):
            if self.limits is None or (self.limits.default is None and not self.limits.channels):
                raise ValueError(
                    f"limits: a {self.kind} is an output instrument; give limits.default "
                    "and/or limits.channels (volts) — outputs are never unlimited"
                )
        elif self.limits is not None:
            raise ValueError(f"limits: a {self.kind} has no outputs to limit")
        if self.limits is not None:
            for ch in self.limits.channels:
                if not 1 <= ch <= self.n_channels:
                    raise ValueError(
                        f"limits.channels: {self.kind} has channels 1..{self.n_channels}, not {ch}"
                    )
        return self


class DriveWire(_Model):
    """A generator output drives a force actuator on `node`."""

    node: int = Field(ge=0)
    instrument: str
    channel: int = Field(ge=1)


class SenseWire(_Model):
    """A sensor on `node` feeds a scope channel (1..4) or a lock-in's input (channel omitted)."""

    node: int = Field(ge=0)
    instrument: str
    channel: int | None = Field(None, ge=1)


class EdgeWire(_Model):
    """A DAC channel biases the tunable coupling between two nodes."""

    nodes: tuple[int, int]
    instrument: str
    channel: int = Field(ge=1)

    @property
    def key(self) -> tuple[int, int]:
        return (min(self.nodes), max(self.nodes))


class ActiveWire(_Model):
    """An active (non-reciprocal) coupling element ``target`` ← ``source``: an amplifier fed by
    x_source that pushes node ``target``, its gain set by DAC ``channel``; a reversing switch
    driven by DAC ``switch_channel`` (below `SWITCH_THRESHOLD_V`: forward; above: the same
    amplifier fed by x_target pushes ``source``) — the learning-phase transposition of
    ``ep_asymmetric`` (docs/estimators.md)."""

    target: int = Field(ge=0)
    source: int = Field(ge=0)
    instrument: str
    channel: int = Field(ge=1)
    switch_channel: int = Field(ge=1)

    @property
    def key(self) -> tuple[int, int]:
        return (self.target, self.source)


class TunerWire(_Model):
    """A DAC-tuned on-site spring on ``node`` (a voltage-controlled stiffness, e.g. a varactor
    or an electrostatic spring): DAC ``channel`` sets κ(V), added to the node's fixed stiffness
    (the network's trainable ``[[onsite]]`` term of that node; natural frequency
    √((k + κ)/m))."""

    node: int = Field(ge=0)
    instrument: str
    channel: int = Field(ge=1)

    @property
    def key(self) -> int:
        return self.node


#: An active element's switch is reversed above this DAC voltage (forward below).
SWITCH_THRESHOLD_V = 0.5
#: The volts the controller writes to a switch channel: forward, reversed.
SWITCH_FORWARD_V, SWITCH_REVERSED_V = 0.0, 1.0


class SyncWire(_Model):
    """The generator whose sync output is cabled to the scope EXT trigger and lock-in references."""

    instrument: str


class WiringConfig(_Model):
    drives: list[DriveWire] = Field(default_factory=list)
    sense: list[SenseWire] = Field(default_factory=list)
    edges: list[EdgeWire] = Field(default_factory=list)
    active: list[ActiveWire] = Field(default_factory=list)
    tuners: list[TunerWire] = Field(default_factory=list)
    sync: SyncWire | None = None


class BenchConfig(_Model):
    """A bench: instruments, wiring, limits; `twin` is opaque here (emulator-only)."""

    name: str = "bench"
    instruments: dict[str, InstrumentConfig]
    wiring: WiringConfig = Field(default_factory=WiringConfig)
    twin: dict[str, Any] | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _check_wiring(self) -> BenchConfig:
        w = self.wiring

        def instrument(name: str, where: str, roles: tuple[Role, ...]) -> InstrumentConfig:
            if name not in self.instruments:
                raise ValueError(
                    f"{where}.instrument: no instrument {name!r} in [instruments] "
                    f"(known: {', '.join(sorted(self.instruments))})"
                )
            inst = self.instruments[name]
            if inst.role not in roles:
                raise ValueError(
                    f"{where}.instrument: {name!r} is a {inst.kind} ({inst.role}), "
                    f"expected a {' or '.join(roles)}"
                )
            return inst

        def channel_ok(inst: InstrumentConfig, channel: int, where: str) -> None:
            if not 1 <= channel <= inst.n_channels:
                raise ValueError(
                    f"{where}.channel: {inst.kind} has channels 1..{inst.n_channels}, not {channel}"
                )

        used: dict[tuple[str, int], str] = {}

        def claim(name: str, channel: int, where: str) -> None:
            key = (name, channel)
            if key in used:
                raise ValueError(
                    f"{where}: {name} channel {channel} is already used by {used[key]}"
                )
            used[key] = where

        for i, d in enumerate(w.drives):
            where = f"wiring.drives[{i}]"
            inst = instrument(d.instrument, where, ("generator",))
            channel_ok(inst, d.channel, where)
            claim(d.instrument, d.channel, where)
        for i, s in enumerate(w.sense):
            where = f"wiring.sense[{i}]"
            inst = instrument(s.instrument, where, ("scope", "lockin"))
            if inst.role == "lockin":
                if s.channel not in (None, 1):
                    raise ValueError(f"{where}.channel: a lock-in has one input; omit channel")
                claim(s.instrument, 1, where)
            else:
                if s.channel is None:
                    raise ValueError(f"{where}.channel: which scope channel (1..4)?")
                channel_ok(inst, s.channel, where)
                claim(s.instrument, s.channel, where)
        seen_edges: dict[tuple[int, int], int] = {}
        for i, e in enumerate(w.edges):
            where = f"wiring.edges[{i}]"
            if e.nodes[0] == e.nodes[1] or min(e.nodes) < 0:
                raise ValueError(f"{where}.nodes: two different nodes ≥ 0, got {list(e.nodes)}")
            if e.key in seen_edges:
                raise ValueError(
                    f"{where}.nodes: edge {e.key} is already wired by edges[{seen_edges[e.key]}]"
                )
            seen_edges[e.key] = i
            inst = instrument(e.instrument, where, ("dac",))
            channel_ok(inst, e.channel, where)
            claim(e.instrument, e.channel, where)
        self._check_elements(instrument, channel_ok, claim)
        if w.sync is not None:
            instrument(w.sync.instrument, "wiring.sync", ("generator",))
        return self

    def _check_elements(
        self,
        instrument: Callable[[str, str, tuple[Role, ...]], InstrumentConfig],
        channel_ok: Callable[[InstrumentConfig, int, str], None],
        claim: Callable[[str, int, str], None],
    ) -> None:
        """The active elements and node tuners of the wiring (each DAC channel claimed once)."""
        w = self.wiring
        seen_active: dict[tuple[int, int], int] = {}
        for i, a in enumerate(w.active):
            where = f"wiring.active[{i}]"
            if a.target == a.source:
                raise ValueError(f"{where}: target and source must differ, got {a.target}")
            if seen_active.setdefault(a.key, i) != i:
                raise ValueError(f"{where}: element {a.target}<-{a.source} is wired twice")
            inst = instrument(a.instrument, where, ("dac",))
            for ch in (a.channel, a.switch_channel):
                channel_ok(inst, ch, where)
                claim(a.instrument, ch, where)
        seen_tuners: dict[int, int] = {}
        for i, tw in enumerate(w.tuners):
            where = f"wiring.tuners[{i}]"
            if seen_tuners.setdefault(tw.node, i) != i:
                raise ValueError(
                    f"{where}.node: node {tw.node} is already tuned by "
                    f"tuners[{seen_tuners[tw.node]}]"
                )
            inst = instrument(tw.instrument, where, ("dac",))
            channel_ok(inst, tw.channel, where)
            claim(tw.instrument, tw.channel, where)

    # ------------------------------------------------------------------ loading / views
    @classmethod
    def load(cls, path: str | Path) -> BenchConfig:
        """Read and validate a bench file; errors name the file, field path and bad value."""
        return validate(cls, read_toml(path), str(path))

    def controller_view(self) -> BenchConfig:
        """The config without the emulator-only `[twin]` table (what a controller keeps)."""
        return self.model_copy(update={"twin": None})

    def output_limits(self, name: str) -> OutputLimits:
        """The driver-side `OutputLimits` of output instrument `name`."""
        inst = self.instruments[name]
        if inst.limits is None:
            raise KeyError(f"instrument {name!r} ({inst.kind}) has no output limits")
        return OutputLimits(
            instrument=name, default=inst.limits.default, channels=dict(inst.limits.channels)
        )

    def by_role(self, role: Role) -> list[str]:
        """Names of the instruments with `role`, in file order."""
        return [n for n, inst in self.instruments.items() if inst.role == role]
