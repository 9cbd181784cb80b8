"""What acts on the network besides its potential: drive forces, clamps, and the cost's target.

An `Excitation` describes, as functions of time, the external force F(t), the clamp weight
δ(t)·[j clamped] with its target u(t), and the cost weight γ(t)·[j output] with its target y(t).
Each function maps times (N,) to an array broadcastable to (batch, N, node). `on_grid` samples
them for the collocation solver; the time integrator evaluates them at its stage times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from physlearn.spec.network import NetworkSpec
from physlearn.spec.task import target_shape

Array = NDArray[np.float64]
TimeFn = Callable[[Array], Array]


@dataclass(frozen=True)
class GridExcitation:
    """An excitation sampled on a time grid; every array has shape (B,N,d)."""

    force: Array
    clamp_weight: Array
    clamp_target: Array
    cost_weight: Array
    target: Array

    def take(self, idx: NDArray[np.intp]) -> GridExcitation:
        """The samples ``idx`` of the batch (every array indexed along its first axis)."""
        return GridExcitation(
            self.force[idx],
            self.clamp_weight[idx],
            self.clamp_target[idx],
            self.cost_weight[idx],
            self.target[idx],
        )

    def cost_density(self, x: Array) -> Array:
        """c(t) = ½ Σ_j γ_j(t) (x_j − y_j)², shape (B,N)."""
        return 0.5 * np.sum(self.cost_weight * (x - self.target) ** 2, axis=-1)

    def cost_gradient(self, x: Array) -> Array:
        """∂c/∂x = γ (x − y), shape (B,N,d): the nudge force per unit β."""
        return self.cost_weight * (x - self.target)

    def external_force(self, x: Array, beta: float | Array = 0.0) -> Array:
        """F − δ (x − u) + β γ (x − y): every non-potential force, shape (B,N,d)."""
        b = np.asarray(beta, dtype=float).reshape(-1, 1, 1) if np.ndim(beta) else beta
        return (
            self.force
            - self.clamp_weight * (x - self.clamp_target)
            + b * self.cost_weight * (x - self.target)
        )

    def external_stiffness(self, beta: float | Array = 0.0) -> Array:
        """−∂(external force)/∂x = δ − β γ, shape (B,N,d) (diagonal)."""
        b = np.asarray(beta, dtype=float).reshape(-1, 1, 1) if np.ndim(beta) else beta
        return self.clamp_weight - b * self.cost_weight


def _zeros(batch: int, d: int) -> TimeFn:
    def f(t: Array) -> Array:
        return np.zeros((1, np.size(t), d))

    return f


@dataclass(frozen=True)
class Excitation:
    """Forces, clamps and cost as functions of time (see module docstring)."""

    batch: int
    d: int
    force: TimeFn
    clamp_weight: TimeFn
    clamp_target: TimeFn
    cost_weight: TimeFn
    target: TimeFn

    def on_grid(self, t: Array) -> GridExcitation:
        shape = (self.batch, np.size(t), self.d)

        def s(f: TimeFn) -> Array:
            return np.ascontiguousarray(np.broadcast_to(f(t), shape), dtype=float)

        return GridExcitation(
            s(self.force),
            s(self.clamp_weight),
            s(self.clamp_target),
            s(self.cost_weight),
            s(self.target),
        )

    def plus_force(self, extra: TimeFn) -> Excitation:
        """The same excitation with an extra force waveform added (e.g. a nudge)."""
        base = self.force

        def f(t: Array) -> Array:
            return base(t) + extra(t)

        return replace(self, force=f)

    def with_force(self, force: TimeFn) -> Excitation:
        """The same clamps and cost with the force replaced."""
        return replace(self, force=force)


def _as_batch(values: Array | list[float], n: int) -> Array:
    """Values (n,) or (B, n) as a (B, n) float array (B = 1 when n = 0)."""
    a = np.asarray(values, dtype=float)
    if n == 0:
        return np.zeros((max(1, a.shape[0]) if a.ndim == 2 else 1, 0))
    return np.atleast_2d(a).reshape(-1, n)


def build_excitation(
    spec: NetworkSpec,
    inputs: Array | None = None,
    targets: Array | None = None,
    target_fn: TimeFn | None = None,
) -> Excitation:
    """The excitation of ``spec`` for a batch of input vectors (B,n_in) and target values (B,n_out).

    ``inputs``/``targets`` default to the spec's ``inputs.values`` / ``outputs.target.values``.
    ``target_fn`` overrides the target entirely: t (N,) → (B,N,n_out) waveforms on output nodes.
    """
    d, omega = spec.nodes.count, spec.drive.omega_rad_s
    period = spec.period_s if spec.boundary.kind == "periodic" else None
    inp, out = spec.inputs, spec.outputs
    n_in, n_out = len(inp.nodes), len(out.nodes)
    u = _as_batch(inputs if inputs is not None else (inp.values or [0.0] * n_in), n_in)
    y = _as_batch(targets if targets is not None else (out.target.values or [0.0] * n_out), n_out)
    batch = max(u.shape[0], y.shape[0])
    if u.shape[0] not in (1, batch) or y.shape[0] not in (1, batch):
        raise ValueError(f"inputs batch {u.shape[0]} and targets batch {y.shape[0]} differ")
    in_nodes = np.array(inp.nodes, dtype=int)
    out_nodes = np.array(out.nodes, dtype=int)
    phases = np.array(inp.phases(), dtype=float)
    amp = inp.gain * (u + inp.offset)  # (B?, n_in)
    tones = spec.drive.tones
    mods = spec.modulations

    def input_wave(t: Array) -> Array:
        t = np.asarray(t, dtype=float)
        if inp.waveform == "constant":
            w = np.ones((t.size, n_in))
        else:
            w = np.cos(omega * t[:, None] + phases[None, :])
        return amp[:, None, :] * w[None, :, :]  # (B?,N,n_in)

    def force(t: Array) -> Array:
        t = np.asarray(t, dtype=float)
        f = np.zeros((u.shape[0], t.size, d))
        if inp.mode == "force" and n_in:
            f[:, :, in_nodes] += input_wave(t)
        for tone in tones:
            f[:, :, tone.node] += tone.amplitude_n * np.cos(
                tone.harmonic * omega * t + tone.phase_rad
            )
        return f

    def clamp_weight(t: Array) -> Array:
        w = np.zeros((1, np.size(t), d))
        if inp.mode == "clamp" and n_in:
            w[:, :, in_nodes] = mods.delta(np.asarray(t, dtype=float), period)[None, :, None]
        return w

    def clamp_target(t: Array) -> Array:
        z = np.zeros((u.shape[0], np.size(t), d))
        if inp.mode == "clamp" and n_in:
            z[:, :, in_nodes] = input_wave(t)
        return z

    def cost_weight(t: Array) -> Array:
        w = np.zeros((1, np.size(t), d))
        if n_out:
            w[:, :, out_nodes] = mods.gamma(np.asarray(t, dtype=float), period)[None, :, None]
        return w

    shape = target_shape(spec)

    def target(t: Array) -> Array:
        z = np.zeros((y.shape[0] if target_fn is None else batch, np.size(t), d))
        if n_out:
            if target_fn is not None:
                z[:, :, out_nodes] = target_fn(np.asarray(t, dtype=float))
            else:
                z[:, :, out_nodes] = y[:, None, :] * shape(t)[None, :, None]
        return z

    return Excitation(batch, d, force, clamp_weight, clamp_target, cost_weight, target)
