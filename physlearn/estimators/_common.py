"""Pieces shared by the estimators: the free phase, the dimensionless β, checks on the result."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError, GradientError
from physlearn.spec.system import ForceWaveform, Observation, PhysicalSystem
from physlearn.spec.task import Task, check_task

Array = NDArray[np.float64]


def as_batch_inputs(u: Array) -> Array:
    a = np.asarray(u, dtype=float)
    if a.ndim != 2:
        raise ConfigError(f"inputs: expected shape (batch, n_in), got {a.shape}")
    return a


async def measure_free(
    system: PhysicalSystem, alpha: Array, u: Array, task: Task
) -> tuple[Observation, Array]:
    """Set α and u, remove extra forces, measure the free phase (one period) and its cost (B,)."""
    uu = as_batch_inputs(u)
    check_task(system, task, uu.shape[0])
    await system.set_parameters(np.asarray(alpha, dtype=float))
    await system.set_input(uu)
    await system.set_forces(None)
    free = (await system.measure()).one_period()
    return free, task.cost(free.x, free.t_s, free.dt_s)


def reverse_time(x: Array) -> Array:
    """t → −t on a uniform periodic grid starting at t = 0: sample n → sample (−n mod N)."""
    n = x.shape[1]
    return np.take(x, (-np.arange(n)) % n, axis=1)


def physical_beta(beta_ratio: float, drive_peak: Array, error: Array) -> Array:
    """Physical β (B,) making max|β·error| = beta_ratio · drive peak for every sample.

    A sample whose output error is exactly zero gets β = 1: its nudge force is then zero and its
    EP quotient exactly 0, the true gradient at a zero-cost point.
    """
    drive = np.asarray(drive_peak, dtype=float)
    if drive.shape != (error.shape[0],) or not np.all(np.isfinite(drive)) or np.any(drive <= 0):
        raise GradientError(
            f"a dimensionless β needs a positive, finite drive peak per sample; got {drive}"
        )
    err = np.max(np.abs(error), axis=(1, 2))
    return np.where(err > 0, beta_ratio * drive / np.where(err > 0, err, 1.0), 1.0)


def nudge(samples: Array, obs: Observation, system: PhysicalSystem) -> ForceWaveform:
    """An open-loop nudge force waveform on the observation's grid, refused if it would push a
    node the system cannot actuate."""
    pushed = np.flatnonzero(np.any(samples != 0.0, axis=(0, 1)))
    missing = sorted(set(pushed.tolist()) - set(system.actuated_nodes))
    if missing:
        raise GradientError(f"the nudge needs a force on nodes {missing}, which are not actuated")
    return ForceWaveform(np.ascontiguousarray(samples, dtype=float), obs.period_s)


async def measure_with(system: PhysicalSystem, force: ForceWaveform) -> Observation:
    await system.set_forces(force)
    return (await system.measure()).one_period()


def finite_gradient(grad: Array, name: str) -> Array:
    """Refuse a gradient with NaN or inf entries (the step must be stopped)."""
    if not np.all(np.isfinite(grad)):
        bad = np.argwhere(~np.isfinite(grad))
        raise GradientError(
            f"{name}: non-finite gradient (first bad entry sample {bad[0][0]}, parameter "
            f"{bad[0][1]}); parameters must not be updated"
        )
    return grad


def check_beta(beta: object, name: str = "beta") -> float:
    if isinstance(beta, bool) or not isinstance(beta, int | float):
        raise ConfigError(f"{name}: must be a number, got {beta!r}")
    b = float(beta)
    if not (math.isfinite(b) and b > 0):
        raise ConfigError(f"{name}: must be a positive finite number, got {beta!r}")
    return b


def check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)
