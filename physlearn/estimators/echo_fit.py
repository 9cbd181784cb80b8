"""Self-calibration of the echo nudge: fit m_jΓ_j and sensing delays from echo-orbit mismatches.

The echo drive F̃(t) = F(−t) − 2 m_jΓ_j ẋ_j(−t) (``ep_echo``, docs/physics.md) makes the system
retrace its free orbit backwards only with the true m_jΓ_j. With a guess c_j the echo orbit
misses the reversed free orbit by a residual

    r(c) = x̃(c) − P x_free          (B, N, d, all samples and nodes stacked)

that vanishes at the true c and grows linearly with c − c_true (near resonance F̃ ≈ −F(−t), so the
residual is a sensitive probe).

Sensing delays. The residual also grows linearly with a residual delay ε_j of node j's sensing
chain (its calibrated delay is off by ε_j, so the system reports x_j(t − ε_j)): it shifts the
reference P x and the measured echo, and gives F̃ a wrong ẋ_j. Corrections τ_j (ideally τ_j = ε_j)
are applied in software: every measured waveform is advanced, x_j(t) ← x_j,meas(t + τ_j)
(`shift_nodes`; `SensingDelayCorrection` does it to all of a system's observations), before F̃
and the residual are built. A delay common to every node is identifiable too: F(−t) is reversed
about the generator's phase origin, which the sensing chain does not move.

`fit_echo_model` solves r(c, τ) = 0 by Gauss–Newton with a finite-difference Jacobian measured on
the system itself:

    experiments (steady states per sample):
      1                 free orbit (skipped when the caller passes the measured ``free``)
      1                 echo orbit at the starting guess (c⁰, τ = 0), reached from the free state
      n                 damping columns: the echo with node j's damping term changed by h_j, applied
                        as an extra force −2 h_j ẋ_j(−t) on top of the echo drive
      n_τ               delay columns: the echo driven by F̃ built from the free orbit shifted by
                        h_τ on node k, residual from the equally shifted echo and reference
      iterations        one echo orbit per update p^{k+1} = p^k − J⁺ r(p^k) (the Jacobian is kept
                        from the start: the residual is almost linear in c and τ)

so 2 + n + n_τ + iterations (one less given ``free``); the last one measures the residual of the
final fit (reported). The damping nodes default to the damped ones (c⁰_j > 0), each needing a force
actuator; delays are fitted on ``delay_nodes`` (default none: `fit_echo_damping`). The samples of
the batch share c and τ (one fit for the whole batch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import CalibrationError, GradientError
from physlearn.estimators._common import reverse_time
from physlearn.estimators.echo_common import (
    echo_drive,
    echo_mismatch,
    on_samples,
    require_actuation,
    spectral_derivative,
)
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.delegating import DelegatingSystem
from physlearn.spec.system import ForceWaveform, Observation, PhysicalSystem

log = logging.getLogger(__name__)
Array = NDArray[np.float64]

__all__ = [
    "EchoDampingFit",
    "EchoFit",
    "SensingDelayCorrection",
    "fit_echo_damping",
    "fit_echo_model",
    "shift_nodes",
]


def shift_nodes(x: Array, span_s: float, delays_s: Array) -> Array:
    """Advance each node's periodic waveform: x_j(t + τ_j), samples (B, N, d) covering ``span_s``
    seconds (whole periods) on a uniform grid; ``delays_s`` (d,) in s. Trigonometric
    interpolation (the Nyquist mode of an even N is dropped)."""
    tau = np.asarray(delays_s, dtype=float)
    if not np.any(tau):
        return np.asarray(x, dtype=float)
    n = x.shape[1]
    f = np.arange(n // 2 + 1, dtype=float) / span_s
    spec = np.fft.rfft(x, axis=1)
    if n % 2 == 0:
        spec[:, -1, :] = 0.0
    phase = np.exp(2j * np.pi * f[None, :, None] * tau[None, None, :])
    return np.asarray(np.fft.irfft(spec * phase, n=n, axis=1), dtype=float)


def _shift(obs: Observation, delays_s: Array) -> Observation:
    return replace(obs, x=shift_nodes(obs.x, obs.n_periods * obs.period_s, delays_s))


class SensingDelayCorrection(DelegatingSystem):
    """The inner system with every observation's node j advanced by τ_j (``delays_s`` (d,), s):
    corrects residual sensing delays found by `fit_echo_model`."""

    def __init__(self, inner: PhysicalSystem, delays_s: Array):
        super().__init__(inner)
        self.delays_s = np.asarray(delays_s, dtype=float)
        if self.delays_s.shape != (inner.n_nodes,) or not np.all(np.isfinite(self.delays_s)):
            raise CalibrationError(
                f"sensing delay corrections: need {inner.n_nodes} finite values (s), "
                f"got {self.delays_s!r}"
            )

    async def measure(self) -> Observation:
        return _shift(await self.inner.measure(), self.delays_s)


@dataclass(frozen=True)
class EchoFit:
    """Result of `fit_echo_model`.

    m_gamma: fitted m_jΓ_j (d,) in kg/s (unfitted nodes keep the starting value);
    initial: the starting guess (d,); nodes: the damping nodes fitted;
    delays_s: fitted sensing-delay corrections τ_j (d,) in s (0 where not fitted; advance node j's
    measured waveform by τ_j, `SensingDelayCorrection`); delay_nodes: the nodes whose delay was
    fitted;
    mismatch: relative echo-orbit mismatch (max over samples of max|x̃ − P x| / max|x|, after the
    delay corrections) at the starting guess and after every update (iterations + 1,);
    residual_rms: RMS of the residual r at the same points, in the node unit;
    iterations: Gauss–Newton updates made; experiments: steady states used (all samples).
    """

    m_gamma: Array
    initial: Array
    nodes: list[int]
    mismatch: Array
    residual_rms: Array
    iterations: int
    experiments: int
    delays_s: Array
    delay_nodes: list[int]

    def knowledge(self, knowledge: ModelKnowledge) -> ModelKnowledge:
        """``knowledge`` with the fitted damping rates Γ_j = c_j / m_j."""
        return knowledge.with_damping(self.m_gamma / knowledge.mass)


#: The damping-only fit's result (same class; ``delays_s`` all zero).
EchoDampingFit = EchoFit


async def _echo(system: PhysicalSystem, force: Array | None, period_s: float) -> Observation:
    await system.set_forces(None if force is None else ForceWaveform(force, period_s))
    return (await system.measure()).one_period()


def _check_nodes(nodes: list[int], d: int, what: str) -> list[int]:
    out = [int(j) for j in nodes]
    bad = [j for j in out if not 0 <= j < d]
    if bad or len(set(out)) != len(out):
        raise CalibrationError(f"{what}: nodes {nodes} must be distinct node indices 0…{d - 1}")
    return out


def _check_steps(iterations: object, rel_step: float, delay_step: float) -> None:
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise CalibrationError(f"iterations: must be a positive integer, got {iterations!r}")
    if not (np.isfinite(rel_step) and 0 < rel_step < 1):
        raise CalibrationError(f"rel_step: must be in (0, 1), got {rel_step!r}")
    if not (np.isfinite(delay_step) and 0 < delay_step < 0.1):
        raise CalibrationError(f"delay_step: must be in (0, 0.1) periods, got {delay_step!r}")


def _fitted_nodes(
    c0: Array, nodes: list[int] | None, delay_nodes: list[int] | None
) -> tuple[list[int], list[int]]:
    """(damping nodes, delay nodes) to fit, checked against the starting m_jΓ_j ``c0`` (d,)."""
    d = c0.size
    fit_nodes = (
        [int(j) for j in np.flatnonzero(c0 > 0)]
        if nodes is None
        else _check_nodes(nodes, d, "nodes")
    )
    tau_nodes = _check_nodes(delay_nodes or [], d, "delay_nodes")
    if not fit_nodes and not tau_nodes:
        raise CalibrationError("nothing to fit: no damped node and no delay node")
    bad = [j for j in fit_nodes if not c0[j] > 0]
    if bad:
        raise CalibrationError(f"nodes {bad}: need a positive starting m_jΓ_j to fit")
    return fit_nodes, tau_nodes


class _EchoProbe:
    """Echo experiments around one free orbit: the residual r (B, N, d) of the echo driven with
    m·Γ = c and sensing-delay corrections τ, and the mismatch history of the fit."""

    def __init__(self, system: PhysicalSystem, free: Observation, drive: Array) -> None:
        self.system, self.free, self.drive = system, free, drive
        self.period = free.period_s
        self.mismatch: list[float] = []
        self.rms: list[float] = []

    async def residual(self, c: Array, tau: Array) -> Array:
        """Residual r (B, N, d) of the echo driven with (c, tau); sets the echo drive."""
        ref = _shift(self.free, tau)
        await self.system.set_forces(None)
        await self.system.set_echo_drive(ForceWaveform(echo_drive(self.drive, ref, c), self.period))
        echo = await _echo(self.system, None, self.period)
        return _shift(echo, tau).x - reverse_time(ref.x)

    def record(self, r: Array, tau: Array) -> None:
        ref = _shift(self.free, tau).x  # the corrected free orbit; r = corrected echo − P ref
        self.mismatch.append(float(np.max(echo_mismatch(r + reverse_time(ref), ref))))
        self.rms.append(float(np.sqrt(np.mean(r**2))))

    async def jacobian(
        self,
        r: Array,
        c: Array,
        tau: Array,
        fit_nodes: list[int],
        tau_nodes: list[int],
        steps: tuple[Array, float],
    ) -> tuple[Array, Array]:
        """Finite-difference Jacobian of r.ravel() with respect to (c[fit_nodes], τ[tau_nodes])
        and its column norms; ``steps``: (h_j per damping node, h_τ in s)."""
        h_c, h_tau = steps
        cols = []
        # Damping columns: node j's damping term as an extra force on the same echo drive.
        xdot_rev = reverse_time(spectral_derivative(self.free.x, self.period))
        x_echo = r + reverse_time(self.free.x)
        for j in fit_nodes:
            h = h_c[j]
            extra = np.zeros_like(self.drive)
            extra[:, :, j] = -2.0 * h * xdot_rev[:, :, j]
            xj = (await _echo(self.system, extra, self.period)).x
            cols.append(((xj - x_echo) / h).ravel())
        # Delay columns: a new echo drive from the shifted free orbit, shifted residual.
        for k in tau_nodes:
            tk = tau.copy()
            tk[k] += h_tau
            cols.append(((await self.residual(c, tk)) - r).ravel() / h_tau)
        J = np.stack(cols, axis=1)
        scale = np.linalg.norm(J, axis=0)
        names = [f"m·Γ of node {j}" for j in fit_nodes] + [f"delay of node {k}" for k in tau_nodes]
        if np.any(scale == 0) or np.linalg.matrix_rank(J / scale) < J.shape[1]:
            raise CalibrationError(
                f"the echo mismatch does not determine {', '.join(names)} (singular Jacobian)"
            )
        return J, scale


async def _gauss_newton(
    probe: _EchoProbe,
    fit: tuple[Array, Array, list[int], list[int]],
    r: Array,
    jac: tuple[Array, Array],
    iterations: int,
) -> None:
    """``iterations`` Gauss–Newton updates of c[fit_nodes] and τ[tau_nodes] in place (fixed
    Jacobian ``jac`` = (J, column norms)), each followed by a new echo."""
    c, tau, fit_nodes, tau_nodes = fit
    J, scale = jac
    nc, period = len(fit_nodes), probe.period
    for it in range(iterations):
        step, *_ = np.linalg.lstsq(J / scale, -r.ravel(), rcond=None)
        step = step / scale
        c[fit_nodes] += step[:nc]
        tau[tau_nodes] += step[nc:]
        if np.any(c[fit_nodes] <= 0):
            raise CalibrationError(
                f"Gauss–Newton step {it + 1} gave a non-positive m_jΓ_j {c[fit_nodes]}"
            )
        if np.any(np.abs(tau) > 0.25 * period):
            raise CalibrationError(
                f"Gauss–Newton step {it + 1} gave sensing-delay corrections {tau} s beyond "
                f"a quarter period ({0.25 * period:.3g} s): the echo mismatch is not from "
                "small calibration errors"
            )
        r = await probe.residual(c, tau)
        probe.record(r, tau)
        log.info(
            "echo model fit %d: m·Γ = %s, τ = %s s, mismatch %.2e",
            it + 1,
            c[fit_nodes],
            tau[tau_nodes],
            probe.mismatch[-1],
        )


async def fit_echo_model(
    system: PhysicalSystem,
    knowledge: ModelKnowledge,
    alpha: Array,
    u: Array,
    *,
    free: Observation | None = None,
    nodes: list[int] | None = None,
    delay_nodes: list[int] | None = None,
    iterations: int = 3,
    rel_step: float = 1e-2,
    delay_step: float = 1e-3,
) -> EchoFit:
    """Fit m_jΓ_j and sensing-delay corrections τ_j from echo-orbit mismatches at parameters α
    and inputs u (module docstring).

    ``knowledge`` supplies the starting guess m_jΓ_j. ``free``: the free orbit already measured
    at (α, u) with the system still set to them, *uncorrected* (saves one steady state).
    ``nodes``: the damping nodes to fit (default: the damped ones; [] fits none).
    ``delay_nodes``: the nodes whose sensing delay to fit (default none). ``rel_step``:
    finite-difference step h_j = rel_step·c⁰_j; ``delay_step``: h_τ as a fraction of the period.
    Leaves the system with no extra force and no echo drive. Raises `CalibrationError` when a
    damping node is not actuated or the fit is singular.
    """
    _check_steps(iterations, rel_step, delay_step)
    c0 = np.asarray(knowledge.mass * knowledge.damping, dtype=float)
    fit_nodes, tau_nodes = _fitted_nodes(c0, nodes, delay_nodes)
    try:
        require_actuation(system, fit_nodes, "fitted damping")
    except GradientError as err:
        raise CalibrationError(str(err)) from err
    n0 = system.experiments
    if free is None:
        await system.set_parameters(np.asarray(alpha, dtype=float))
        await system.set_input(np.asarray(u, dtype=float))
        await system.set_forces(None)
        await system.set_echo_drive(None)
        free = (await system.measure()).one_period()
    drive = on_samples(await system.drive_forces(), free.x.shape[1], free.period_s)
    probe = _EchoProbe(system, free, drive)
    c, tau = c0.copy(), np.zeros(c0.size)
    try:
        r = await probe.residual(c, tau)
        probe.record(r, tau)
        jac = await probe.jacobian(
            r, c, tau, fit_nodes, tau_nodes, (rel_step * c0, delay_step * free.period_s)
        )
        await _gauss_newton(probe, (c, tau, fit_nodes, tau_nodes), r, jac, iterations)
    finally:
        await system.set_forces(None)
        await system.set_echo_drive(None)
    return EchoFit(
        c,
        c0,
        fit_nodes,
        np.array(probe.mismatch),
        np.array(probe.rms),
        iterations,
        system.experiments - n0,
        tau,
        tau_nodes,
    )


async def fit_echo_damping(
    system: PhysicalSystem,
    knowledge: ModelKnowledge,
    alpha: Array,
    u: Array,
    *,
    free: Observation | None = None,
    nodes: list[int] | None = None,
    iterations: int = 3,
    rel_step: float = 1e-2,
) -> EchoFit:
    """Fit m_jΓ_j (d,) only (`fit_echo_model` without delays): 2 + n + iterations experiments."""
    return await fit_echo_model(
        system,
        knowledge,
        alpha,
        u,
        free=free,
        nodes=nodes,
        delay_nodes=[],
        iterations=iterations,
        rel_step=rel_step,
    )
