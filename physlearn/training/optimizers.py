"""Optimizers on a flat float64 parameter vector (shape (P,)), with bound projection.

Every optimizer has ``step(params, grad) -> new_params``: it never mutates ``params`` or
``grad``; it advances its own state (step counter, moment buffers) only when the step succeeds.

* **Refusal before change.** A gradient with NaN/inf entries, of the wrong shape, or one whose
  update overflows float64 (e.g. Adam's g² beyond 1.8e308, or lr·g = inf) raises
  :class:`~physlearn.errors.GradientError` before anything is changed: the caller keeps its
  parameters and the optimizer's state is exactly what it was.
* **Projection is reported.** With ``bounds=(lower, upper)`` (each (P,) or a scalar; ±inf
  allowed) the updated parameters are clipped into ``[lower, upper]`` after each step. The
  indices that were clipped are in ``optimizer.last_clipped`` (int64, sorted) and counted in
  ``optimizer.n_clipped_total``; a clip is logged at DEBUG. Moment buffers are not altered by
  the projection (plain projected gradient methods).
* **Learning-rate schedules** are small objects with ``lr(step)``, ``step`` = number of
  updates applied before this one (0 for the first update).
* **Checkpoints.** ``state_dict()`` returns plain Python scalars, strings, dicts and float64
  arrays (copies); ``load_state_dict`` on an optimizer built from the same config restores it
  so that the continuation is bit-identical.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from physlearn.errors import ConfigError, GradientError, PhyslearnError

logger = logging.getLogger(__name__)

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "SGD",
    "Adam",
    "ConstantLR",
    "CosineLR",
    "ExponentialLR",
    "Momentum",
    "Optimizer",
    "Schedule",
    "StepLR",
    "make_optimizer",
    "make_schedule",
    "project_to_bounds",
]


def _positive_finite(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: must be a number, got {value!r}") from None
    if isinstance(value, bool) or not (math.isfinite(v) and v > 0.0):
        raise ConfigError(f"{name}: must be finite and > 0, got {value!r}")
    return v


# --------------------------------------------------------------------------------------------
# Learning-rate schedules


class Schedule(ABC):
    """Learning rate as a function of the update index ``step`` (0-based)."""

    name: ClassVar[str]

    @abstractmethod
    def lr(self, step: int) -> float:
        """Learning rate for update number ``step`` (0 = first update)."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The keyword arguments of :func:`make_schedule` that rebuild this schedule."""


class ConstantLR(Schedule):
    """lr(step) = lr."""

    name = "constant"

    def __init__(self, lr: float) -> None:
        self.base_lr = _positive_finite("lr", lr)

    def lr(self, step: int) -> float:
        return self.base_lr

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "lr": self.base_lr}


class StepLR(Schedule):
    """lr(step) = lr · gamma^(step // step_size): multiply by ``gamma`` every ``step_size``."""

    name = "step"

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1) -> None:
        self.base_lr = _positive_finite("lr", lr)
        if int(step_size) != step_size or step_size < 1:
            raise ConfigError(f"step_size: must be an integer >= 1, got {step_size!r}")
        self.step_size = int(step_size)
        if not 0.0 < gamma <= 1.0:
            raise ConfigError(f"gamma: must be in (0, 1], got {gamma!r}")
        self.gamma = float(gamma)

    def lr(self, step: int) -> float:
        return self.base_lr * self.gamma ** (step // self.step_size)

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lr": self.base_lr,
            "step_size": self.step_size,
            "gamma": self.gamma,
        }


class ExponentialLR(Schedule):
    """lr(step) = lr · gamma^step."""

    name = "exponential"

    def __init__(self, lr: float, gamma: float) -> None:
        self.base_lr = _positive_finite("lr", lr)
        if not 0.0 < gamma <= 1.0:
            raise ConfigError(f"gamma: must be in (0, 1], got {gamma!r}")
        self.gamma = float(gamma)

    def lr(self, step: int) -> float:
        return self.base_lr * self.gamma**step

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "lr": self.base_lr, "gamma": self.gamma}


class CosineLR(Schedule):
    """Cosine annealing from ``lr`` to ``lr_min`` over ``total_steps``, then ``lr_min``.

    lr(step) = lr_min + ½ (lr − lr_min) (1 + cos(π · min(step, total_steps) / total_steps)).
    """

    name = "cosine"

    def __init__(self, lr: float, total_steps: int, lr_min: float = 0.0) -> None:
        self.base_lr = _positive_finite("lr", lr)
        if int(total_steps) != total_steps or total_steps < 1:
            raise ConfigError(f"total_steps: must be an integer >= 1, got {total_steps!r}")
        self.total_steps = int(total_steps)
        if not 0.0 <= lr_min <= self.base_lr:
            raise ConfigError(f"lr_min: must be in [0, lr={self.base_lr}], got {lr_min!r}")
        self.lr_min = float(lr_min)

    def lr(self, step: int) -> float:
        frac = min(step, self.total_steps) / self.total_steps
        return self.lr_min + 0.5 * (self.base_lr - self.lr_min) * (1.0 + math.cos(math.pi * frac))

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lr": self.base_lr,
            "total_steps": self.total_steps,
            "lr_min": self.lr_min,
        }


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": ConstantLR,
    "step": StepLR,
    "exponential": ExponentialLR,
    "cosine": CosineLR,
}


def make_schedule(name: str, **cfg: Any) -> Schedule:
    """Build the schedule registered as ``name`` (constant, step, exponential, cosine)."""
    try:
        cls = SCHEDULES[name]
    except KeyError:
        raise ConfigError(
            f"schedule: unknown schedule {name!r}; known: {', '.join(sorted(SCHEDULES))}"
        ) from None
    try:
        return cls(**cfg)
    except TypeError as exc:
        raise ConfigError(f"schedule {name!r}: {exc}") from None


# --------------------------------------------------------------------------------------------
# Projection


def _as_bounds(bounds: tuple[ArrayLike, ArrayLike], n: int | None) -> tuple[FloatArray, FloatArray]:
    lower = np.asarray(bounds[0], dtype=np.float64)
    upper = np.asarray(bounds[1], dtype=np.float64)
    if lower.ndim > 1 or upper.ndim > 1:
        raise ConfigError(
            f"bounds: must be scalars or 1-D, got shapes {lower.shape}, {upper.shape}"
        )
    if lower.ndim == 1 and upper.ndim == 1 and lower.shape != upper.shape:
        raise ConfigError(f"bounds: lower {lower.shape} and upper {upper.shape} differ in shape")
    if n is not None:
        for label, arr in (("lower", lower), ("upper", upper)):
            if arr.ndim == 1 and arr.shape != (n,):
                raise ConfigError(f"bounds: {label} has shape {arr.shape}, parameters have ({n},)")
    if np.isnan(lower).any() or np.isnan(upper).any():
        raise ConfigError("bounds: NaN in lower or upper bound")
    lower, upper = np.broadcast_arrays(lower, upper)
    bad = np.flatnonzero(np.atleast_1d(lower > upper))
    if bad.size:
        raise ConfigError(f"bounds: lower > upper at indices {bad[:10].tolist()}")
    return lower.copy(), upper.copy()


def project_to_bounds(
    params: FloatArray, lower: ArrayLike, upper: ArrayLike
) -> tuple[FloatArray, IntArray]:
    """Clip ``params`` (P,) into ``[lower, upper]``; return (projected copy, clipped indices).

    The clipped indices (int64, sorted) are those whose value changed.
    """
    params = np.asarray(params, dtype=np.float64)
    projected = np.clip(params, lower, upper)
    clipped = np.flatnonzero(projected != params).astype(np.int64)
    return projected, clipped


# --------------------------------------------------------------------------------------------
# Optimizers


class Optimizer(ABC):
    """Base class: learning rate (or schedule), step counter, bounds, projection report.

    Args:
        lr: a constant learning rate (> 0) or a :class:`Schedule`.
        bounds: optional ``(lower, upper)``, each a scalar or shape (P,); ±inf allowed.
    """

    name: ClassVar[str]
    _buffer_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, lr: float | Schedule = 1e-2, bounds: tuple[ArrayLike, ArrayLike] | None = None
    ) -> None:
        self.schedule: Schedule = lr if isinstance(lr, Schedule) else ConstantLR(lr)
        self.bounds: tuple[FloatArray, FloatArray] | None = (
            None if bounds is None else _as_bounds(bounds, None)
        )
        self.step_count = 0
        self.n_params: int | None = None
        self.buffers: dict[str, FloatArray] = {}
        self.last_clipped: IntArray = np.zeros(0, dtype=np.int64)
        self.n_clipped_total = 0

    # -- hooks ---------------------------------------------------------------------------

    @abstractmethod
    def _update(
        self, params: FloatArray, grad: FloatArray, lr: float, t: int
    ) -> tuple[FloatArray, dict[str, FloatArray]]:
        """Return (unprojected new params, new buffers) without touching ``self``.

        ``t`` is the 1-based index of this update.
        """

    @abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """Hyperparameters other than the learning rate (keyword arguments of the class)."""

    # -- public API ----------------------------------------------------------------------

    @property
    def lr(self) -> float:
        """Learning rate the next step will use."""
        return self.schedule.lr(self.step_count)

    def config(self) -> dict[str, Any]:
        """Keyword arguments of :func:`make_optimizer` that rebuild this optimizer (no bounds)."""
        return {"name": self.name, "schedule": self.schedule.config(), **self.hyperparameters()}

    def set_bounds(self, lower: ArrayLike, upper: ArrayLike) -> None:
        """Set the projection bounds (each a scalar or shape (P,); ±inf allowed)."""
        self.bounds = _as_bounds((lower, upper), self.n_params)

    def step(self, params: ArrayLike, grad: ArrayLike) -> FloatArray:
        """One update: return new parameters (P,), projected onto the bounds.

        Raises:
            GradientError: ``grad`` has the wrong shape, non-finite entries, or the update
                overflows; nothing (parameters, buffers, counters) has been changed.
            PhyslearnError: ``params`` are not a finite 1-D float vector of the expected size.
        """
        p = np.asarray(params, dtype=np.float64)
        g = np.asarray(grad, dtype=np.float64)
        if p.ndim != 1:
            raise PhyslearnError(f"params must be 1-D (P,), got shape {p.shape}")
        if self.n_params is not None and p.shape != (self.n_params,):
            raise PhyslearnError(
                f"params have shape {p.shape}, optimizer state has ({self.n_params},)"
            )
        if self.bounds is not None and self.bounds[0].ndim == 1 and self.bounds[0].shape != p.shape:
            raise PhyslearnError(f"params have shape {p.shape}, bounds have {self.bounds[0].shape}")
        if not np.isfinite(p).all():
            raise PhyslearnError(
                f"params are not finite at indices {np.flatnonzero(~np.isfinite(p))[:10].tolist()}"
            )
        if g.shape != p.shape:
            raise GradientError(f"gradient has shape {g.shape}, parameters have {p.shape}")
        bad = np.flatnonzero(~np.isfinite(g))
        if bad.size:
            raise GradientError(
                f"non-finite gradient at {bad.size} of {g.size} entries "
                f"(first indices {bad[:10].tolist()}); step refused, parameters kept"
            )
        lr = self.schedule.lr(self.step_count)
        with np.errstate(over="ignore", invalid="ignore"):
            new_p, new_buffers = self._update(p, g, lr, self.step_count + 1)
        overflow = not np.isfinite(new_p).all() or any(
            not np.isfinite(b).all() for b in new_buffers.values()
        )
        if overflow:
            raise GradientError(
                f"{self.name} update overflows float64 (max |grad| = {np.abs(g).max():.3g}, "
                f"lr = {lr:.3g}); step refused, parameters kept"
            )
        clipped = np.zeros(0, dtype=np.int64)
        if self.bounds is not None:
            new_p, clipped = project_to_bounds(new_p, self.bounds[0], self.bounds[1])
        # Commit: nothing above changed self.
        self.n_params = p.size
        self.buffers = new_buffers
        self.step_count += 1
        self.last_clipped = clipped
        self.n_clipped_total += int(clipped.size)
        if clipped.size:
            logger.debug(
                "%s step %d: projected %d parameter(s) onto bounds: %s",
                self.name,
                self.step_count,
                clipped.size,
                clipped[:20].tolist(),
            )
        return new_p

    def state_dict(self) -> dict[str, Any]:
        """Serializable state: name, config, counters and copies of the moment buffers."""
        return {
            "name": self.name,
            "config": self.config(),
            "step_count": self.step_count,
            "n_params": self.n_params,
            "n_clipped_total": self.n_clipped_total,
            "buffers": {k: v.copy() for k, v in self.buffers.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` taken from an optimizer with the same config.

        Raises:
            ConfigError: another optimizer, another config, or malformed buffers.
        """
        if state.get("name") != self.name:
            raise ConfigError(f"optimizer state is for {state.get('name')!r}, not {self.name!r}")
        if dict(state.get("config", {})) != self.config():
            raise ConfigError(
                f"optimizer state config {state.get('config')!r} differs from this optimizer's "
                f"{self.config()!r}; resume with the same optimizer settings"
            )
        n_params = state.get("n_params")
        buffers_in = dict(state.get("buffers", {}))
        buffers: dict[str, FloatArray] = {}
        if n_params is None:
            if buffers_in:
                raise ConfigError("optimizer state has buffers but no n_params")
        else:
            n_params = int(n_params)
            if set(buffers_in) != set(self._buffer_names):
                raise ConfigError(
                    f"optimizer state buffers {sorted(buffers_in)} != expected "
                    f"{sorted(self._buffer_names)}"
                )
            for k, v in buffers_in.items():
                arr = np.array(v, dtype=np.float64, copy=True)
                if arr.shape != (n_params,):
                    raise ConfigError(
                        f"optimizer buffer {k!r} has shape {arr.shape}, not ({n_params},)"
                    )
                buffers[k] = arr
            if self.bounds is not None and self.bounds[0].ndim == 1:
                if self.bounds[0].shape != (n_params,):
                    raise ConfigError(
                        f"optimizer state has {n_params} parameters, bounds have "
                        f"{self.bounds[0].shape[0]}"
                    )
        step_count = int(state["step_count"])
        if step_count < 0:
            raise ConfigError(f"optimizer state step_count {step_count} < 0")
        self.n_params = n_params
        self.buffers = buffers
        self.step_count = step_count
        self.n_clipped_total = int(state.get("n_clipped_total", 0))
        self.last_clipped = np.zeros(0, dtype=np.int64)


class SGD(Optimizer):
    """Plain gradient descent: p ← p − lr·g."""

    name = "sgd"

    def _update(
        self, params: FloatArray, grad: FloatArray, lr: float, t: int
    ) -> tuple[FloatArray, dict[str, FloatArray]]:
        return params - lr * grad, {}

    def hyperparameters(self) -> dict[str, Any]:
        return {}


class Momentum(Optimizer):
    """Heavy-ball momentum: v ← μ v + g; p ← p − lr·v (Nesterov: p ← p − lr·(g + μ v)).

    The buffer v starts at zero (PyTorch's convention for the first step: v₁ = g).
    """

    name = "momentum"
    _buffer_names = ("velocity",)

    def __init__(
        self,
        lr: float | Schedule = 1e-2,
        momentum: float = 0.9,
        nesterov: bool = False,
        bounds: tuple[ArrayLike, ArrayLike] | None = None,
    ) -> None:
        super().__init__(lr, bounds)
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum: must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _update(
        self, params: FloatArray, grad: FloatArray, lr: float, t: int
    ) -> tuple[FloatArray, dict[str, FloatArray]]:
        v_old = self.buffers.get("velocity")
        v = grad.copy() if v_old is None else self.momentum * v_old + grad
        direction = grad + self.momentum * v if self.nesterov else v
        return params - lr * direction, {"velocity": v}

    def hyperparameters(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba 2015).

    m ← β₁ m + (1−β₁) g;  v ← β₂ v + (1−β₂) g²;  m̂ = m / (1−β₁ᵗ);  v̂ = v / (1−β₂ᵗ);
    p ← p − lr · m̂ / (√v̂ + eps), with t the 1-based update index.
    """

    name = "adam"
    _buffer_names = ("m", "v")

    def __init__(
        self,
        lr: float | Schedule = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        bounds: tuple[ArrayLike, ArrayLike] | None = None,
    ) -> None:
        super().__init__(lr, bounds)
        for label, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= b < 1.0:
                raise ConfigError(f"{label}: must be in [0, 1), got {b!r}")
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.eps = _positive_finite("eps", eps)

    def _update(
        self, params: FloatArray, grad: FloatArray, lr: float, t: int
    ) -> tuple[FloatArray, dict[str, FloatArray]]:
        m_old = self.buffers.get("m")
        v_old = self.buffers.get("v")
        m = (
            (1.0 - self.beta1) * grad
            if m_old is None
            else self.beta1 * m_old + (1.0 - self.beta1) * grad
        )
        g2 = grad * grad
        v = (
            (1.0 - self.beta2) * g2
            if v_old is None
            else self.beta2 * v_old + (1.0 - self.beta2) * g2
        )
        m_hat = m / (1.0 - self.beta1**t)
        v_hat = v / (1.0 - self.beta2**t)
        return params - lr * m_hat / (np.sqrt(v_hat) + self.eps), {"m": m, "v": v}

    def hyperparameters(self) -> dict[str, Any]:
        return {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def make_optimizer(name: str, **cfg: Any) -> Optimizer:
    """Build the optimizer registered as ``name`` (sgd, momentum, adam).

    Keyword arguments: ``lr`` (float) and/or ``schedule`` (a :class:`Schedule`, a schedule
    name, or a mapping ``{"name": ..., **kwargs}``; its ``lr`` defaults to ``lr``), ``bounds``
    and the optimizer's hyperparameters (momentum, nesterov; beta1, beta2, eps).

    Raises:
        ConfigError: unknown optimizer or schedule name (listing the known ones) or option.
    """
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ConfigError(
            f"optimizer: unknown optimizer {name!r}; known: {', '.join(sorted(OPTIMIZERS))}"
        ) from None
    cfg = dict(cfg)
    lr = cfg.pop("lr", None)
    schedule = cfg.pop("schedule", None)
    if isinstance(schedule, Schedule):
        if lr is not None:
            raise ConfigError("optimizer: give lr or a Schedule object, not both")
        cfg["lr"] = schedule
    elif schedule is None:
        if lr is not None:
            cfg["lr"] = ConstantLR(lr)
    else:
        spec: dict[str, Any] = {"name": schedule} if isinstance(schedule, str) else dict(schedule)
        sched_name = spec.pop("name", None)
        if not isinstance(sched_name, str):
            raise ConfigError(f"optimizer.schedule: needs a 'name', got {schedule!r}")
        if lr is not None:
            if "lr" in spec and spec["lr"] != lr:
                raise ConfigError(f"optimizer: lr={lr} and schedule.lr={spec['lr']} disagree")
            spec["lr"] = lr
        cfg["lr"] = make_schedule(sched_name, **spec)
    try:
        return cls(**cfg)
    except TypeError as exc:
        raise ConfigError(f"optimizer {name!r}: {exc}") from None
