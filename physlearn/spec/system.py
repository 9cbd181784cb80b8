"""The `PhysicalSystem` interface: what the learning loop may do to a physical network.

The controller never knows which fidelity level it drives (ideal twin, emulated bench, real
bench). It sets the trainable parameters α, sets the input drive for a batch of samples, adds
per-node force waveforms (nudges), can replace its drive by an echo drive with its own time
modulations reversed (`set_echo_drive`, for the echo nudge), can add a learning-phase linear
feedback around a reference orbit (`set_feedback`, for non-reciprocal couplings), and measures each sample's periodic steady state
as an `Observation`: node waveforms over whole periods on a uniform time grid.

Arrays are float64 with shapes (batch, time, node). Times in seconds; node coordinates in the
system's node unit (``Observation.node_unit``); forces in newtons (or the unit the node coordinate
makes them: force = mass × coordinate / s²).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import GradientError
from physlearn.spec.task import Task

Array = NDArray[np.float64]


class Level(StrEnum):
    """The fidelity level a system runs at (what produced an observation)."""

    #: the ideal twin: direct physics in float64, exact adjoint gradients
    IDEAL = "ideal"
    #: the real drivers against the instrument emulators, through an in-memory transport
    EMULATED_MEMORY = "emulated-memory"
    #: the same emulators served on TCP sockets and serial ptys (`physlearn twin serve`)
    EMULATED_SERVED = "emulated-served"
    #: real instruments
    BENCH = "bench"


@dataclass(frozen=True)
class ForceWaveform:
    """Extra force on every node over one drive period: samples (B, M, d) at t_m = m T / M.

    Nodes that receive no extra force hold zeros. The system repeats the waveform periodically,
    phase-locked to the drive (t = 0 is the drive's phase origin).
    """

    samples: Array
    period_s: float

    def __post_init__(self) -> None:
        if self.samples.ndim != 3:
            raise ValueError(f"force samples must be (batch, time, node), got {self.samples.shape}")
        if not np.all(np.isfinite(self.samples)):
            raise ValueError("force waveform contains NaN or inf")

    @property
    def nodes(self) -> list[int]:
        """Nodes that receive a non-zero force."""
        return [int(j) for j in np.flatnonzero(np.any(self.samples != 0.0, axis=(0, 1)))]


@dataclass(frozen=True)
class LinearFeedback:
    """A learning-phase force G(t)(x − r(t)) over one drive period, on t_m = m T / M.

    ``gain`` (B or 1, M, d, d): G[b, m, i, j] is the force on node i per unit of x_j − r_j
    (N/m); ``reference`` (B or 1, M, d): the orbit r(t) the deviations are taken from (the
    measured free orbit, replayed). ``ep_asymmetric`` uses it to transpose the non-reciprocal
    couplings around the free orbit (docs/estimators.md).
    """

    gain: Array
    reference: Array
    period_s: float

    def __post_init__(self) -> None:
        g, r = self.gain, self.reference
        if g.ndim != 4 or g.shape[2] != g.shape[3] or r.ndim != 3 or r.shape[1:] != g.shape[1:3]:
            raise ValueError(
                f"feedback gain must be (batch, time, node, node) and reference (batch, time, "
                f"node) on the same grid, got {g.shape} and {r.shape}"
            )
        if not (np.all(np.isfinite(g)) and np.all(np.isfinite(r))):
            raise ValueError("feedback gain or reference contains NaN or inf")

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """(i, j) pairs with a non-zero gain: a force on i from x_j."""
        nz = np.any(self.gain != 0.0, axis=(0, 1))
        return [(int(i), int(j)) for i, j in zip(*np.nonzero(nz), strict=True)]


@dataclass(frozen=True)
class SettleInfo:
    """How a steady state was reached, per sample (B,): time waited (s), estimated remaining
    relative transient, and whether the response was found T-periodic."""

    waited_s: Array
    remaining: Array
    periodic: NDArray[np.bool_]


@dataclass(frozen=True)
class Observation:
    """A measured periodic steady state.

    x: node coordinates (B, N, d) on the uniform grid t_s (N,), covering n_periods · period_s
    exactly (t_s[0] = 0 at the drive's phase origin, endpoint excluded).
    """

    t_s: Array
    x: Array
    period_s: float
    n_periods: int = 1
    node_unit: str = "m"
    timestamp_s: float = 0.0
    settle: SettleInfo | None = None
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.ndim != 3 or self.x.shape[1] != self.t_s.shape[0]:
            raise ValueError(f"x must be (batch, time, node) on t_s; got {self.x.shape}")
        if not np.all(np.isfinite(self.x)):
            raise ValueError("observation contains NaN or inf node coordinates")

    @property
    def dt_s(self) -> float:
        return self.n_periods * self.period_s / self.t_s.shape[0]

    def one_period(self) -> Observation:
        """Average over the measured periods onto one period's grid (B, N/n_periods, d)."""
        if self.n_periods == 1:
            return self
        n = self.t_s.shape[0] // self.n_periods
        x = self.x.reshape(self.x.shape[0], self.n_periods, n, self.x.shape[2]).mean(axis=1)
        return Observation(
            self.t_s[:n],
            x,
            self.period_s,
            1,
            self.node_unit,
            self.timestamp_s,
            self.settle,
            dict(self.meta),
        )


class PhysicalSystem(abc.ABC):
    """An oscillator network the controller can drive and measure (ideal twin or bench).

    ``experiments`` counts the steady states measured so far (one per batch sample); ``level``
    is the fidelity level it runs at (every `Observation` names it in ``meta["level"]``).
    """

    experiments: int = 0
    level: Level = Level.BENCH

    @property
    @abc.abstractmethod
    def n_nodes(self) -> int: ...

    @property
    @abc.abstractmethod
    def n_params(self) -> int: ...

    @property
    @abc.abstractmethod
    def period_s(self) -> float: ...

    @property
    @abc.abstractmethod
    def actuated_nodes(self) -> list[int]:
        """Nodes that can receive an extra force waveform."""

    @abc.abstractmethod
    async def set_parameters(self, alpha: Array) -> None:
        """Set the trainable parameters α (P,) in physical units; limits are checked first."""

    @abc.abstractmethod
    async def set_input(self, u: Array) -> None:
        """Set the input drive for a batch of input vectors u (B, n_in)."""

    @abc.abstractmethod
    async def set_forces(self, forces: ForceWaveform | None) -> None:
        """Add per-node force waveforms (B, M, d) to the drive (None removes them)."""

    @abc.abstractmethod
    async def drive_peak(self) -> Array:
        """Peak |drive force| per sample (B,) for the inputs last set, in force units.

        The scale of the dimensionless β (docs/physics.md: β is quoted as the ratio of the nudge
        force's peak to the drive force's peak). Input drive forces and fixed tones count; for
        clamped inputs, the clamp's force δ(t)·u(t). A bench computes it from the programmed drive
        amplitudes and the calibrated actuator gains.
        """

    async def drive_forces(self) -> Array:
        """The drive force waveform currently applied, (B, M, d) over one period on a uniform grid
        t_m = m T / M from the drive's phase origin, in force units.

        Input drive forces and fixed tones count, on every node (zeros where nothing drives);
        clamps are not forces and are left out; extra forces from `set_forces` are left out. The
        echo nudge (``ep_echo``) builds its drive from it. A bench computes it from the programmed
        waveforms and the calibrated actuator gains. Systems that cannot report it raise
        `GradientError` (this default).
        """
        raise GradientError(
            f"{type(self).__name__} cannot report its drive force waveform (drive_forces); "
            "the echo nudge needs it"
        )

    async def set_echo_drive(self, drive: ForceWaveform | None) -> None:
        """Run the system on its echo dynamics (docs/physics.md, echo nudge), or back (None).

        While set: the input drive (input forces and fixed tones) is *replaced* by ``drive``
        (B or 1, M, d), and the system's own time modulations μ(t), ν(t) and the clamp δ(t), u(t)
        run time-reversed (t → −t, phase-locked to the drive's origin). `set_forces` still adds
        its waveforms (nudges) on top, and `measure` waits for the steady state of these dynamics
        from whatever state the system is in. ``None`` restores normal operation; a new
        `set_input` also does (the echo drive belonged to the previous batch). Systems without echo support raise `GradientError`
        (this default).
        """
        raise GradientError(
            f"{type(self).__name__} cannot run echo dynamics (set_echo_drive: replace the drive, "
            "reverse the modulations and clamps); the echo nudge needs it"
        )

    @property
    def feedback_pairs(self) -> frozenset[tuple[int, int]]:
        """(i, j) pairs for which the system can apply a learning-phase feedback force on node i
        from x_j − r_j (`set_feedback`); empty (this default) when it has no such element."""
        return frozenset()

    async def set_feedback(self, feedback: LinearFeedback | None) -> None:
        """Add the linear feedback force G(t)(x − r(t)) (`LinearFeedback`) to the dynamics, or
        remove it (None), phase-locked to the drive; on top of the drive or echo drive and of
        `set_forces`. A new `set_input` removes it. Systems without feedback elements raise
        `GradientError` (this default)."""
        raise GradientError(
            f"{type(self).__name__} cannot apply a learning-phase feedback (set_feedback: "
            "transposed non-reciprocal couplings); ep_asymmetric needs it"
        )

    @abc.abstractmethod
    async def measure(self) -> Observation:
        """Wait for every sample's periodic steady state and measure it (B, N, d)."""

    async def close(self) -> None:
        """Put the system in its safe state and release it (no-op on the twin)."""
        return None

    async def __aenter__(self) -> PhysicalSystem:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@runtime_checkable
class ExactGradients(Protocol):
    """A system that can compute the exact (adjoint) gradient of a task's steady-state cost
    itself: the ideal twin. The `adjoint` estimator needs it; no bench has it."""

    def exact_gradient(self, alpha: Array, u: Array, task: Task) -> tuple[Array, Array]:
        """(dC/dα (B, P), cost (B,)) at parameters α (P,) for inputs u (B, n_in)."""
        ...


@runtime_checkable
class StabilityCheck(Protocol):
    """A system that can tell whether the free orbits it settles on attract: the ideal twin
    (Floquet multipliers of its own steady states). No bench has it; the trainer then checks on
    an extra twin."""

    async def floquet_check(
        self, alpha: Array, u: Array, task: Task, method: str = "full"
    ) -> Array:
        """Largest |Floquet multiplier| per sample (B,) of the free steady states at parameters
        α (P,) for inputs u (B, n_in), measured as `measure` would (warm-started; counted as
        experiments). An orbit attracts when it is ≤ 1; `SolverError` if a sample has none.
        ``method``: ``"full"`` (the monodromy matrix) or ``"collocation"`` (the collocated
        eigenproblem, `physlearn.simulators.floquet_collocation`) where the system has it."""
        ...


@runtime_checkable
class Pausable(Protocol):
    """A system that can hold still mid-run: ``pause`` puts it in its safe state without
    closing it (a bench: drive outputs off, DACs ramped to their safe value), ``unpause`` makes
    it ready to measure again (a bench re-arms; the next measurement settles from rest)."""

    async def pause(self) -> None: ...

    async def unpause(self) -> None: ...
