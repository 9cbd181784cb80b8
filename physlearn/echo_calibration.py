"""Self-calibration of the echo nudge: fit the node damping m_jΓ_j from echo-orbit mismatches.

The echo drive F̃(t) = F(−t) − 2 m_jΓ_j ẋ_j(−t) (``ep_echo``, DESIGN.md §2) makes the system
retrace its free orbit backwards only with the true m_jΓ_j. With a guess c_j the echo orbit
misses the reversed free orbit by a residual

    r(c) = x̃(c) − P x_free          (B, N, d, all samples and nodes stacked)

that vanishes at the true c and grows linearly with c − c_true (near resonance F̃ ≈ −F(−t), so the
residual is a sensitive probe). `fit_echo_damping` solves r(c) = 0 by Gauss–Newton with a
finite-difference Jacobian over the per-node c_j, measured on the system itself:

    experiments (steady states per sample):
      1                 free orbit (skipped when the caller passes the measured ``free``)
      1                 echo orbit at the starting guess c⁰ (reached from the free state)
      n                 Jacobian: the echo at c⁰ with node j's damping term changed by h_j, applied
                        as an extra force −2 h_j ẋ_j(−t) on top of the echo drive (j = 1…n, the
                        fitted nodes; a small perturbation of the echo orbit)
      iterations        one echo orbit per Gauss–Newton update c^{k+1} = c^k − J⁺ r(c^k)
                        (the Jacobian is kept from c⁰: the residual is almost linear in c)

so 2 + n + iterations (1 + n + iterations given ``free``); the last of them measures the residual
of the final fit (reported). The fitted nodes default to the damped ones (c⁰_j > 0), each needing
a force actuator. The samples of the batch share c (one fit for the whole batch).

Sensing delays. The mismatch also grows linearly with an uncalibrated delay τ_j of node j's
sensing chain (the measured x_j(t − τ_j) gives a wrong ẋ_j and a shifted reference). The ideal twin
has no sensing delays, so they cannot be tested here and are not fitted yet; the routine is built
around a parameter vector with one finite-difference Jacobian column per parameter
(`_echo_force` builds the drive for a parameter vector), so a per-node delay column (shift the
measured waveforms by τ_j before building F̃ and the reference) adds without changing the solver.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import CalibrationError, GradientError
from physlearn.estimators._common import reverse_time
from physlearn.estimators.ep_echo import (
    echo_drive,
    echo_mismatch,
    on_samples,
    require_actuation,
    spectral_derivative,
)
from physlearn.knowledge import ModelKnowledge
from physlearn.system import ForceWaveform, Observation, PhysicalSystem

log = logging.getLogger(__name__)
Array = NDArray[np.float64]


@dataclass(frozen=True)
class EchoDampingFit:
    """Result of `fit_echo_damping`.

    m_gamma: fitted m_jΓ_j (d,) in kg/s (unfitted nodes keep the starting value);
    initial: the starting guess (d,); nodes: the fitted nodes;
    mismatch: relative echo-orbit mismatch (max over samples of max|x̃ − P x| / max|x|) at the
    starting guess and after every update (iterations + 1,);
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

    def knowledge(self, knowledge: ModelKnowledge) -> ModelKnowledge:
        """``knowledge`` with the fitted damping rates Γ_j = c_j / m_j."""
        return knowledge.with_damping(self.m_gamma / knowledge.mass)


def _echo_force(drive: Array, free: Observation, params: Array) -> Array:
    """The echo drive for a parameter vector (today: m_jΓ_j per node)."""
    return echo_drive(drive, free, params)


async def _echo(system: PhysicalSystem, force: Array | None, period_s: float) -> Array:
    await system.set_forces(None if force is None else ForceWaveform(force, period_s))
    return (await system.measure()).one_period().x


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
) -> EchoDampingFit:
    """Fit m_jΓ_j (d,) from echo-orbit mismatches at parameters α and inputs u (module docstring).

    ``knowledge`` supplies the starting guess m_jΓ_j. ``free``: the free orbit already measured
    at (α, u) with the system still set to them (saves one steady state). ``nodes``: the nodes to
    fit (default: the damped ones). ``rel_step``: finite-difference step h_j = rel_step·c⁰_j.
    Leaves the system with no extra force and no echo drive. Raises `CalibrationError` when a
    fitted node is not actuated or the fit is singular.
    """
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise CalibrationError(f"iterations: must be a positive integer, got {iterations!r}")
    if not (np.isfinite(rel_step) and 0 < rel_step < 1):
        raise CalibrationError(f"rel_step: must be in (0, 1), got {rel_step!r}")
    c0 = np.asarray(knowledge.mass * knowledge.damping, dtype=float)
    fit_nodes = [int(j) for j in np.flatnonzero(c0 > 0)] if nodes is None else list(nodes)
    if not fit_nodes:
        raise CalibrationError("no node to fit: the starting guess has no damped node")
    bad = [j for j in fit_nodes if not (0 <= j < c0.size and c0[j] > 0)]
    if bad:
        raise CalibrationError(f"nodes {bad}: need a positive starting m_jΓ_j to fit")
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
    period = free.period_s
    drive = on_samples(await system.drive_forces(), free.x.shape[1], period)
    ref = reverse_time(free.x)
    xdot_rev = reverse_time(spectral_derivative(free.x, period))
    c = c0.copy()
    mism: list[float] = []
    rms: list[float] = []
    try:
        await system.set_echo_drive(ForceWaveform(_echo_force(drive, free, c), period))
        x = await _echo(system, None, period)
        r = x - ref
        mism.append(float(np.max(echo_mismatch(x, free.x))))
        rms.append(float(np.sqrt(np.mean(r**2))))
        # Finite-difference Jacobian at c⁰: node j's damping term as an extra force.
        cols = []
        for j in fit_nodes:
            h = rel_step * c0[j]
            extra = np.zeros_like(drive)
            extra[:, :, j] = -2.0 * h * xdot_rev[:, :, j]
            xj = await _echo(system, extra, period)
            cols.append(((xj - x) / h).ravel())
        J = np.stack(cols, axis=1)
        if np.linalg.matrix_rank(J) < len(fit_nodes):
            raise CalibrationError(
                f"the echo mismatch does not determine m_jΓ_j on nodes {fit_nodes} "
                "(singular Jacobian)"
            )
        for k in range(iterations):
            step, *_ = np.linalg.lstsq(J, -r.ravel(), rcond=None)
            c[fit_nodes] += step
            if np.any(c[fit_nodes] <= 0):
                raise CalibrationError(
                    f"Gauss–Newton step {k + 1} gave a non-positive m_jΓ_j {c[fit_nodes]}"
                )
            await system.set_forces(None)
            await system.set_echo_drive(ForceWaveform(_echo_force(drive, free, c), period))
            x = await _echo(system, None, period)
            r = x - ref
            mism.append(float(np.max(echo_mismatch(x, free.x))))
            rms.append(float(np.sqrt(np.mean(r**2))))
            log.info("echo damping fit %d: m·Γ = %s, mismatch %.2e", k + 1, c[fit_nodes], mism[-1])
    finally:
        await system.set_forces(None)
        await system.set_echo_drive(None)
    return EchoDampingFit(
        c, c0, fit_nodes, np.array(mism), np.array(rms), iterations, system.experiments - n0
    )
