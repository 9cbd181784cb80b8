"""`TrainConfig`: the TOML file of ``physlearn train``, validated by pydantic (extra keys refused).

Tables (every error names the field path and the bad value, through `physlearn.spec.tomlconfig`)::

    [network]            one of [network.topology] (a documented topology, physlearn.spec.topology),
                         [network.spec] (an inline NetworkSpec), [network.gp_lattice] (a
                         driven-dissipative GP lattice, physlearn.spec.gp_network) or
                         [network.gp_field] (a GP field on a grid,
                         physlearn.spec.gp_field_network); optional kind = "oscillator" |
                         "gp_lattice" | "gp_field" must agree with the table)
    [data]               name = "xor" | "iris" | "digits" | "sine", [data.options] for get_dataset
    [targets]            kind = "inphase" (one-hot in-phase amplitudes on/off), "sine", "level"
                         (autonomous orbits) or "density" (GP lattices and fields: output
                         occupations or integrated densities)
    [estimator]          name, beta (dimensionless), [estimator.options]
    [optimizer]          name, lr, schedule, [optimizer.options]
    [training]           epochs, batch_size, seed, log_cosine_to_adjoint, target_accuracy, ...
    [system]             kind = "ideal" (default), points_per_period, floquet, tol
    [output]             root, name
    [telemetry]          MQTT broker, credentials (never the password itself), topics, buffers
                         (physlearn.telemetry.config; docs/telemetry.md)
    [suspenders]         conditions that pause the run by themselves: interlock, persistent
                         fault, calibration drift (physlearn.training.suspenders)

**β (estimator.beta)** is dimensionless: the ratio of the nudge force's peak to the drive force's
peak, per sample. Sign convention (docs/physics.md): with L = L0 + βC the nudge force is
+β ∂C/∂x = +β γ (x_out − y), so β > 0 pushes the outputs *away* from their targets; symmetric
estimators use ±β.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from physlearn.errors import ConfigError
from physlearn.spec.autonomous import AutonomousOptions
from physlearn.spec.gp_field_network import GPFieldNetworkSpec
from physlearn.spec.gp_network import GPNetworkSpec
from physlearn.spec.network import NetworkSpec
from physlearn.spec.tomlconfig import read_toml, validate
from physlearn.systems.bench.options import BenchOptions, LockinOptions
from physlearn.telemetry.config import TelemetryConfig
from physlearn.training.suspenders import SuspendersConfig

__all__ = [
    "DataConfig",
    "EstimatorConfig",
    "LayeredTopology",
    "NetworkConfig",
    "OptimizerConfig",
    "OutputConfig",
    "SystemConfig",
    "TargetsConfig",
    "TrainConfig",
    "TrainingConfig",
    "load_train_config",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LayeredTopology(_Model):
    """`physlearn.spec.topology.layered` arguments (SI units; None = the regime's default)."""

    kind: Literal["layered"] = "layered"
    layers: list[int] = Field(min_length=2)
    coupling: Literal["product", "difference", "directed", "bidirected", "mixed"] = "product"
    regime: Literal["conservative", "lossy_resonant"] = "conservative"
    init_scale: float = Field(0.5, gt=0)
    seed: int = 0
    mass: float = Field(1.0, gt=0)
    stiffness: float | None = Field(None, gt=0)
    damping: float | None = Field(None, ge=0)
    omega_rad_s: float = Field(1.0, gt=0)
    nonlinearity: str = "tanh"
    coupling_bound: float | None = Field(None, gt=0)
    bias_bound: float | None = Field(None, gt=0)
    bias_node: bool = True
    bias_amplitude: float = 1.0
    node_biases: bool = True
    input_gain: float | None = None
    input_offset: float = 0.0
    input_phase_rad: float | list[float] = 0.0
    input_waveform: Literal["cos", "constant"] = "cos"
    target_kind: Literal["inphase", "constant", "sine"] = "inphase"
    detuning_linewidths: float = 0.5
    check_modes: bool = True
    onsite_bound: float | None = Field(None, gt=0)
    output_stiffness: float | None = Field(None, gt=0)

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError(f"every layer needs ≥ 1 node, got {v}")
        return v

    def build(self) -> NetworkSpec:
        from physlearn.spec.topology import layered

        return layered(
            self.layers,
            kind=self.coupling,
            regime=self.regime,
            init_scale=self.init_scale,
            seed=self.seed,
            mass=self.mass,
            stiffness=self.stiffness,
            damping=self.damping,
            omega_rad_s=self.omega_rad_s,
            nonlinearity=self.nonlinearity,
            coupling_bound=self.coupling_bound,
            bias_bound=self.bias_bound,
            bias_node=self.bias_node,
            bias_amplitude=self.bias_amplitude,
            node_biases=self.node_biases,
            input_gain=self.input_gain,
            input_offset=self.input_offset,
            input_phase_rad=self.input_phase_rad,
            input_waveform=self.input_waveform,
            target_kind=self.target_kind,
            detuning_linewidths=self.detuning_linewidths,
            check_modes=self.check_modes,
            onsite_bound=self.onsite_bound,
            output_stiffness=self.output_stiffness,
        )


class NetworkConfig(_Model):
    """Exactly one of ``topology`` (built by physlearn.spec.topology), an inline ``spec`` (both
    oscillator networks), ``gp_lattice`` (a GP lattice, `GPNetworkSpec`) or ``gp_field`` (a GP
    field, `GPFieldNetworkSpec`). ``kind``, when given, names the family and must agree with
    the table."""

    kind: Literal["oscillator", "gp_lattice", "gp_field"] | None = None
    topology: LayeredTopology | None = None
    spec: NetworkSpec | None = None
    gp_lattice: GPNetworkSpec | None = None
    gp_field: GPFieldNetworkSpec | None = None

    @model_validator(mode="after")
    def _one(self) -> NetworkConfig:
        tables = (self.topology, self.spec, self.gp_lattice, self.gp_field)
        if sum(t is not None for t in tables) != 1:
            raise ValueError(
                "give exactly one of [network.topology], [network.spec], [network.gp_lattice] "
                "or [network.gp_field]"
            )
        family = (
            "gp_lattice"
            if self.gp_lattice is not None
            else ("gp_field" if self.gp_field is not None else "oscillator")
        )
        if self.kind is not None and self.kind != family:
            table = {
                "gp_lattice": "[network.gp_lattice]",
                "gp_field": "[network.gp_field]",
            }.get(self.kind, "[network.topology] or [network.spec]")
            raise ValueError(f"kind: {self.kind!r} needs {table}")
        return self

    @property
    def is_gp(self) -> bool:
        return self.gp_lattice is not None or self.gp_field is not None

    def build(self) -> NetworkSpec | GPNetworkSpec | GPFieldNetworkSpec:
        if self.gp_lattice is not None:
            return self.gp_lattice
        if self.gp_field is not None:
            return self.gp_field
        return self.build_oscillator()

    def build_oscillator(self) -> NetworkSpec:
        """The oscillator network (ConfigError for a GP lattice)."""
        if self.spec is not None:
            return self.spec
        if self.topology is None:
            raise ConfigError("network: a GP lattice or field is not an oscillator network")
        return self.topology.build()


class DataConfig(_Model):
    """A data set of `physlearn.training.datasets` by name, with its keyword options."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from physlearn.training.datasets import DATASETS

        if v not in DATASETS:
            raise ValueError(f"unknown data set {v!r}; known: {', '.join(sorted(DATASETS))}")
        return v


class TargetsConfig(_Model):
    """Targets and decoding (physlearn.training.encoding). Levels and amplitudes in node units (m).
    ``kind = "density"`` (GP lattices, physlearn.training.gp_targets): one-hot target occupations
    |ψ_j|² = ``on`` / ``off`` on the output sites, decoded by the largest output occupation.
    ``kind = "level"`` (autonomous orbits, physlearn.training.orbit_targets): static target
    levels, decoded from the time-averaged outputs; ``orbit_cost``: the cost trained, the
    time-averaged ⟨c⟩ or the integrated ∮ c dt over the orbit's own period."""

    kind: Literal["inphase", "sine", "level", "density"] | None = None
    # None: "sine" for the sine data set, "density" on a GP lattice, else "inphase"
    orbit_cost: Literal["averaged", "integrated"] = "averaged"
    on: float = 0.2
    off: float = 0.0
    amplitude: float = Field(0.2, gt=0)


class EstimatorConfig(_Model):
    """Gradient estimator. ``beta``: dimensionless nudge = peak nudge force / peak drive force;
    +β pushes the outputs away from their targets (docs/physics.md). Estimators without a nudge
    (adjoint, finite_difference, spsa) take no beta."""

    name: str = "ep_symmetric"
    beta: float | None = Field(None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from physlearn.estimators import known_estimators

        if v not in known_estimators():
            raise ValueError(f"unknown estimator {v!r}; known: {', '.join(known_estimators())}")
        return v

    def kwargs(self) -> dict[str, Any]:
        kw = dict(self.options)
        if self.beta is not None:
            kw["beta"] = self.beta
        return kw


class OptimizerConfig(_Model):
    """Optimizer (physlearn.training.optimizers): name, learning rate, optional schedule and options.
    A ``cosine`` schedule without ``total_steps`` anneals over the whole run (epochs × batches)."""

    name: str = "adam"
    lr: float = Field(0.03, gt=0)
    schedule: dict[str, Any] | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from physlearn.training.optimizers import OPTIMIZERS

        if v not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {v!r}; known: {', '.join(sorted(OPTIMIZERS))}")
        return v


class TrainingConfig(_Model):
    """The loop (physlearn.training.loop).

    ``target_accuracy`` / ``target_loss``: stop early once ``target_split`` reaches them.
    ``max_consecutive_failures``: steps whose steady state could not be found (or whose gradient
    was non-finite) in a row before the run stops with an error.
    ``select``: which epoch's parameters are the result — ``last``, or the best epoch by the
    accuracy of the ``train``, ``validation`` or ``test`` split (ties: lower loss); selecting on
    ``test`` makes the reported test accuracy optimistic (it is recorded as such).
    ``patience``: stop after this many epochs without improvement of that selection.
    ``validation_fraction``: a stratified hold-out of the training split (seeded by ``seed``),
    never trained on. ``failure_backoff``: factor applied to the step length after a step whose
    steady state could not be found (the parameters go back to the last measured ones);
    ``recovery_steps`` successful steps double it back, up to 1. ``revert_unsolved``: an epoch
    whose evaluation finds training or validation samples without a steady state sends the
    parameters back to the last epoch that solved all of them (with the same step shortening);
    if the last epoch does, the run ends on those parameters and its result (``summary.json``
    ``final``, ``selected_epoch``) is their evaluation; an epoch that reverted is never the one
    ``select`` chooses. Unsolved test samples count as misclassified but never revert.
    ``min_mode_margin``: refuse (shrink, then skip) updates that move a linear mode at rest within
    this fraction of ω from ω or 2ω (keeps a conservative-like network off resonance).
    ``min_orbit_stiffness`` (autonomous systems, in (0, 1)): the `OrbitGuard`
    (systems/autonomous_guard.py) — the initial parameters are scaled by ½ⁿ (smallest n) until
    every training input's static equilibrium has its lowest ω² ≥ this fraction of the nodes'
    bare k/m (and, at fixed energy, lies below E₀), and updates that would break that are
    shortened (½, ¼, ⅛) or refused, so that every input keeps an orbit to train on.
    ``stability_check`` (``"none"``, ``"full"`` or ``"collocation"``; not on autonomous systems):
    after every optimizer step, the free orbits of the mini-batch at the new parameters are solved
    on an ideal twin of the network and their largest Floquet multiplier checked (``"full"``: the
    RK4 monodromy; ``"collocation"``: the collocated eigenproblem,
    `physlearn.simulators.floquet_collocation` — as exact, but slower: docs/benchmarks.md); a step after which an orbit does not attract —
    |μ| > 1 − ``stability_margin``, or > 1 + 1e-6 when the margin is 0 — or has no steady state is
    halved up to ``stability_backtracks`` times, then refused (parameters kept)
    (training/stability_guard.py; counted as ``stability_shortened`` / ``stability_refusals``,
    reported as `StabilityGuarded` events). The final stability report then uses the same method.
    ``max_loss_increase`` (≥ 0; None: off): the same guard also shortens or refuses a step after
    which the mini-batch's mean free-phase cost (on the guard's twin) exceeds (1 + this) × the
    cost before it — a backtracking line search that catches the jump to another attractor at a
    fold, which the Floquet test passes when the new orbit attracts. It works with
    ``stability_check = "none"`` too (the cost test alone).
    ``stability_stall_steps``: the run stops (``summary["stop_reason"]``) once the guard has
    refused this many steps in a row — the parameters then have not moved for that long, and
    every update the optimizer proposes leaves an orbit non-attracting (None: never).
    ``eval_batch_size``: samples per batched steady-state solve during evaluation.
    ``checkpoint_interval_s``: wall seconds (≥ 0) between the checkpoints that commit ordinary
    mini-batch steps; 0 (default) checkpoints after every step. Epoch ends, failed steps and the
    first checkpoint are always written. A kill then loses at most this much training, which the
    resumed run redoes (bit-identical on the twin); it saves the checkpoint writes of cheap twin
    steps (the warm-start orbits make a digits checkpoint ≈ 70 MB).
    ``epochs = 0``: evaluate the initial parameters only (e.g. another run's, with
    ``physlearn train --init-from``): summary.json's ``final`` is that evaluation."""

    epochs: int = Field(100, ge=0)
    batch_size: int = Field(4, ge=1)
    seed: int = 0
    shuffle: bool = True
    log_cosine_to_adjoint: bool = False
    target_accuracy: float | None = Field(None, gt=0, le=1)
    target_split: Literal["train", "validation", "test"] = "train"
    target_loss: float | None = Field(None, gt=0)
    max_consecutive_failures: int = Field(10, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    select: Literal["last", "train", "validation", "test"] = "last"
    patience: int | None = Field(None, ge=1)
    validation_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    failure_backoff: float = Field(0.5, gt=0.0, le=1.0)
    recovery_steps: int = Field(10, ge=1)
    revert_unsolved: bool = True
    min_mode_margin: float | None = Field(None, gt=0.0, lt=0.5)
    min_orbit_stiffness: float | None = Field(None, gt=0.0, lt=1.0)
    checkpoint_interval_s: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    stability_check: Literal["none", "full", "collocation"] = "none"
    stability_margin: float = Field(0.0, ge=0.0, lt=1.0)
    stability_backtracks: int = Field(3, ge=0, le=20)
    stability_stall_steps: int | None = Field(50, ge=1)
    max_loss_increase: float | None = Field(None, ge=0.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _selection(self) -> TrainingConfig:
        if self.select == "validation" and self.validation_fraction <= 0.0:
            raise ValueError("select = 'validation' needs validation_fraction > 0")
        if self.patience is not None and self.select == "last":
            raise ValueError("patience needs select = 'train', 'validation' or 'test'")
        if self.target_split == "validation" and self.validation_fraction <= 0.0:
            raise ValueError("target_split = 'validation' needs validation_fraction > 0")
        return self


class BenchSessionConfig(_Model):
    """``[system.bench]``: the bench a ``kind = "bench"`` run trains on (README "Bench session").

    ``config``: the bench file (instruments, wiring, limits); ``calibration``: its calibration
    file (``physlearn calibrate all``); paths relative to the train config. ``twin_control``:
    ``"memory"`` runs the emulated bench of the bench file's ``[twin]`` in this process (examples,
    CI); ``"tcp://HOST:PORT"`` drives a served emulated bench's virtual clock (``physlearn twin
    serve``); absent: a real bench on the wall clock. ``resources``: VISA resource per instrument
    (overrides the bench file's). ``options``: `physlearn.systems.bench.options.BenchOptions` (sampling,
    settling, interlock, DAC slew, calibration age). ``retries``: attempts per measurement on a
    transient instrument fault. ``readout``: ``"scope"`` reads every node's waveform with the
    scopes; ``"lockin"`` (linear ρ only) reads the nodes wired to a lock-in as phasors
    (`physlearn.systems.bench.lockin.LockinBenchSystem`), tuned by ``lockin``
    (`physlearn.systems.bench.options.LockinOptions`)."""

    config: Path
    calibration: Path
    twin_control: str | None = None
    resources: dict[str, str] = Field(default_factory=dict)
    options: BenchOptions
    retries: int = Field(4, ge=1)
    readout: Literal["scope", "lockin"] = "scope"
    lockin: LockinOptions = Field(default_factory=LockinOptions)

    @model_validator(mode="after")
    def _lockin_options(self) -> BenchSessionConfig:
        # (the defaults pass: a run's resolved config.toml writes them out, and must load back
        # for --resume)
        changed = "lockin" in self.model_fields_set and self.lockin != LockinOptions()
        if changed and self.readout != "lockin":
            raise ValueError('lockin: options of the lock-in readout need readout = "lockin"')
        return self

    @model_serializer(mode="wrap")
    def _without_unused_lockin(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The lock-in options are written only with the lock-in readout (the resolved config
        of a scope run must load again: its options would be refused)."""
        data: dict[str, Any] = handler(self)
        if self.readout != "lockin":
            data.pop("lockin", None)
        return data


class SystemConfig(_Model):
    """The physical system. ``kind = "ideal"``: the ideal twin (physlearn.systems.ideal.IdealSystem);
    ``kind = "bench"``: instruments through `physlearn.systems.bench.system.BenchSystem`, configured by
    ``[system.bench]``. ``floquet``: which steady states of the training steps get their Floquet
    multipliers checked on the ideal twin (``none`` is fastest; the final parameters are always
    checked on the free phase of the model; with ``all`` or ``free`` the per-epoch evaluation checks its
    free orbits too, and a sample whose orbit does not attract counts as unsolved — misclassified —
    so an epoch that trained the network into unstable orbits is not selected). ``echo_settle`` (ideal twin, ``ep_echo``): reach the
    echo orbit by RK4 integration from the current state as a bench would (``integrate``; ~1/Γ
    of simulated time per echo phase, slow at Γ·T ≪ 1) or by Newton from the reversed orbit
    (``newton``; fast, blind to a change of attractor). ``kind = "autonomous"``: the ideal twin of an
    autonomous network (physlearn.systems.autonomous.AutonomousTwin: no drive, Γ = 0, static
    inputs), its orbit held at the set point of ``[system.autonomous]``
    (`physlearn.spec.autonomous.AutonomousOptions`); ``floquet`` then checks the orbits'
    nontrivial multipliers (≤ 1: neutrally stable)."""

    kind: Literal["ideal", "bench", "autonomous"] = "ideal"
    points_per_period: int = Field(33, ge=3)
    floquet: Literal["all", "free", "none"] = "none"
    tol: float = Field(1e-10, gt=0)
    echo_settle: Literal["integrate", "newton"] = "integrate"
    bench: BenchSessionConfig | None = None
    autonomous: AutonomousOptions | None = None

    @model_validator(mode="after")
    def _bench(self) -> SystemConfig:
        if (self.kind == "bench") != (self.bench is not None):
            raise ValueError('[system.bench] is required with kind = "bench" and only then')
        if (self.kind == "autonomous") != (self.autonomous is not None):
            raise ValueError(
                '[system.autonomous] is required with kind = "autonomous" and only then'
            )
        return self

    @field_validator("points_per_period")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd, got {v}")
        return v


class OutputConfig(_Model):
    """Where the run directory goes: ``<root>/<name>`` (name default: set by the caller)."""

    root: Path = Path("runs")
    name: str | None = None


class TrainConfig(_Model):
    """A ``physlearn train`` config file (see the module docstring)."""

    network: NetworkConfig
    data: DataConfig
    targets: TargetsConfig = Field(default_factory=TargetsConfig)
    estimator: EstimatorConfig = Field(default_factory=EstimatorConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    system: SystemConfig = Field(default_factory=SystemConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    telemetry: TelemetryConfig | None = None
    suspenders: SuspendersConfig | None = None

    @model_validator(mode="after")
    def _gp(self) -> TrainConfig:
        if self.network.is_gp and self.system.kind != "ideal":
            raise ValueError(
                f'system.kind: a GP lattice or field trains on its ideal twin (kind = "ideal"), got '
                f"{self.system.kind!r} (no GP bench class exists yet)"
            )
        tc = self.training
        if self.network.is_gp and (
            tc.min_mode_margin is not None or tc.min_orbit_stiffness is not None
        ):
            raise ValueError(
                "training.min_mode_margin / min_orbit_stiffness: guards of oscillator networks; "
                "a GP lattice has no modes at rest or orbits to guard"
            )
        if self.targets.kind == "density" and not self.network.is_gp:
            raise ValueError(
                'targets.kind: "density" targets need [network.gp_lattice] or [network.gp_field]'
            )
        if self.network.is_gp and self.targets.kind not in (None, "density"):
            raise ValueError(
                f'targets.kind: a GP lattice has density targets ("density"), got '
                f"{self.targets.kind!r}"
            )
        return self

    def resolved(self) -> dict[str, Any]:
        """Plain data for the run directory's config.toml (None fields left out)."""
        data: dict[str, Any] = self.model_dump(mode="json", exclude_none=True)
        return data


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read and validate a train config; ``overrides`` (dotted keys, e.g. ``training.epochs``)
    are applied before validation, so they are checked like the file's own values."""
    data = read_toml(path)
    for key, value in (overrides or {}).items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return validate(TrainConfig, data, str(path))
