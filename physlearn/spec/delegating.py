"""`DelegatingSystem`: a `PhysicalSystem` that forwards everything to an inner system.

Wrappers (retries, sensing corrections, test fault injection) subclass it and override only what
they change; the description (node count, parameters, period, actuated nodes, experiment count)
and every operation they do not override reach the inner system unchanged.
"""

from __future__ import annotations

from physlearn.spec.system import (
    Array,
    ForceWaveform,
    Level,
    LinearFeedback,
    Observation,
    PhysicalSystem,
)

__all__ = ["DelegatingSystem"]


class DelegatingSystem(PhysicalSystem):
    """Forwards every `PhysicalSystem` operation to ``inner``."""

    def __init__(self, inner: PhysicalSystem):
        self.inner = inner

    @property
    def n_nodes(self) -> int:
        return self.inner.n_nodes

    @property
    def n_params(self) -> int:
        return self.inner.n_params

    @property
    def period_s(self) -> float:
        return self.inner.period_s

    @property
    def actuated_nodes(self) -> list[int]:
        return self.inner.actuated_nodes

    @property
    def level(self) -> Level:  # type: ignore[override]
        return self.inner.level

    @property
    def experiments(self) -> int:  # type: ignore[override]
        return self.inner.experiments

    async def set_parameters(self, alpha: Array) -> None:
        await self.inner.set_parameters(alpha)

    async def set_input(self, u: Array) -> None:
        await self.inner.set_input(u)

    async def set_forces(self, forces: ForceWaveform | None) -> None:
        await self.inner.set_forces(forces)

    async def set_echo_drive(self, drive: ForceWaveform | None) -> None:
        await self.inner.set_echo_drive(drive)

    async def drive_peak(self) -> Array:
        return await self.inner.drive_peak()

    @property
    def feedback_pairs(self) -> frozenset[tuple[int, int]]:
        return self.inner.feedback_pairs

    async def set_feedback(self, feedback: LinearFeedback | None) -> None:
        await self.inner.set_feedback(feedback)

    async def drive_forces(self) -> Array:
        return await self.inner.drive_forces()

    async def measure(self) -> Observation:
        return await self.inner.measure()

    async def close(self) -> None:
        await self.inner.close()
