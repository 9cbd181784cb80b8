"""`ep_echo`: EP along the time-reversed orbit — exact for damped, nonlinear networks.

docs/physics.md ("Echo nudge"). With damping, EP needs J⁻ᵀ where nudging gives J⁻¹
(J = m D² + mΓ D + K(t)). Drive the system along its *time-reversed orbit*:

    F̃_j(t) = F_j(−t) − 2 m_j Γ_j ẋ_j(−t)          on every node j

(F the drive force, `PhysicalSystem.drive_forces`; ẋ the spectral derivative of the measured free
orbit, taken *before* the reversal), with μ, ν and the clamp δ, u running time-reversed
(`PhysicalSystem.set_echo_drive`). The damped system's periodic solution is then exactly
x̃(t) = x(−t), and its linearisation m D² + mΓ D + K(−t) = P Jᵀ P (P: t → −t). Nudging the echo
orbit with the time-reversed output error and reversing the response gives the adjoint state:

    nudge force ±β e(−t),  e = γ(t)(x_free − y)               (open loop, from the free orbit)
    λ(t) = [x̃₊β − x̃₋β](−t) / 2β                               (= J⁻ᵀ e + O(β²))
    dC/dα = −Σ_t Δt λ(t)·∂R/∂α(t),  ∂R/∂α = ∂²V/∂α∂x along the free orbit

Sign convention as everywhere: +β pushes the outputs away from their targets; β is dimensionless
(peak nudge force / peak drive force, `drive_peak`). Four steady states per sample: free, echo,
+β, −β, for any number of parameters.

The attractor check: the measured echo orbit must equal the reversed free orbit. The echo orbit
has the free orbit's Floquet multipliers, so it attracts exactly when the free orbit does, but the
system reaches it from the free state and basins are not symmetric: it can settle on another
attractor. The relative mismatch max|x̃ − P x| / max|x| is reported per sample in
``info["echo_mismatch"]``, and above ``attractor_tol`` the estimate is refused (`GradientError`).
The mismatch also grows linearly with errors in m_jΓ_j and in sensing delays: ``self_calibrate=True``
first fits m_jΓ_j from echo-orbit mismatches, and with ``calibrate_delays=True`` also a sensing-delay
correction per node, applied to every observation of the estimate
(`physlearn.estimators.echo_fit.fit_echo_model`).

Knowledge: m_j, Γ_j (`ModelKnowledge.mass`, ``damping``), ρ′ and the modulations
(`ModelKnowledge.dR_dalpha_T`). Needs a force actuator on every damped node and every node where
F̃ ≠ 0 (refused with `GradientError` naming the nodes otherwise), diagonal viscous damping, and a
system that implements `drive_forces` and `set_echo_drive`.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from physlearn.errors import ConfigError
from physlearn.estimators._common import (
    Array,
    check_beta,
    check_positive_int,
    finite_gradient,
    measure_free,
    measure_with,
    nudge,
    physical_beta,
    reverse_time,
)
from physlearn.estimators.base import Estimator, GradientEstimate
from physlearn.estimators.echo_common import (
    damped_nodes,
    echo_drive,
    enter_echo,
    require_actuation,
)
from physlearn.estimators.echo_fit import (
    EchoFit,
    SensingDelayCorrection,
    fit_echo_model,
    shift_nodes,
)
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.system import PhysicalSystem
from physlearn.spec.task import Task

log = logging.getLogger(__name__)


class EPEcho(Estimator):
    """Echo-nudge EP (module docstring). ``beta``: dimensionless nudge (peak nudge / peak drive
    force). ``attractor_tol``: largest relative echo-orbit mismatch accepted (above it the system
    settled on another attractor, or m_jΓ_j is badly wrong). ``self_calibrate``: fit m_jΓ_j from
    echo mismatches first (`fit_echo_model`, ``calibration_iterations`` Gauss–Newton steps;
    costs 1 + n_damped + iterations more steady states per sample) and use the fit;
    ``calibrate_delays`` (with ``self_calibrate``): fit a sensing-delay correction on every node
    too (d more steady states) and apply it to every observation of the estimate.
    ``calibration_rel_step``, ``calibration_delay_step``: the fit's finite-difference steps
    (relative m_jΓ_j change; delay in periods) — on a noisy bench they must move the echo orbit
    well beyond the noise (docs/estimators.md)."""

    name = "ep_echo"
    assumes_reciprocity = True

    def __init__(
        self,
        knowledge: ModelKnowledge,
        *,
        beta: float = 1e-3,
        attractor_tol: float = 0.1,
        self_calibrate: bool = False,
        calibration_iterations: int = 3,
        calibrate_delays: bool = False,
        calibration_rel_step: float = 1e-2,
        calibration_delay_step: float = 1e-3,
    ):
        super().__init__(knowledge)
        self.beta = check_beta(beta)
        self.attractor_tol = check_beta(attractor_tol, "attractor_tol")
        if not isinstance(self_calibrate, bool):
            raise ConfigError(f"self_calibrate: must be true or false, got {self_calibrate!r}")
        self.self_calibrate = self_calibrate
        self.calibration_iterations = check_positive_int(
            calibration_iterations, "calibration_iterations"
        )
        if not isinstance(calibrate_delays, bool):
            raise ConfigError(f"calibrate_delays: must be true or false, got {calibrate_delays!r}")
        if calibrate_delays and not self_calibrate:
            raise ConfigError("calibrate_delays: needs self_calibrate = true")
        self.calibrate_delays = calibrate_delays
        if not (isinstance(calibration_rel_step, float | int) and 0 < calibration_rel_step < 1):
            raise ConfigError(
                f"calibration_rel_step: must be in (0, 1), got {calibration_rel_step!r}"
            )
        if not (
            isinstance(calibration_delay_step, float | int) and 0 < calibration_delay_step < 0.1
        ):
            raise ConfigError(
                "calibration_delay_step: must be in (0, 0.1) periods, got "
                f"{calibration_delay_step!r}"
            )
        self.calibration_rel_step = float(calibration_rel_step)
        self.calibration_delay_step = float(calibration_delay_step)
        self.last_calibration: EchoFit | None = None

    async def estimate(
        self, system: PhysicalSystem, alpha: Array, u: Array, task: Task
    ) -> GradientEstimate:
        kn = self.knowledge
        m_gamma = np.asarray(kn.mass * kn.damping, dtype=float)
        require_actuation(system, damped_nodes(m_gamma), "damped nodes, Γ_j > 0")
        n0 = system.experiments
        free, cost = await measure_free(system, alpha, u, task)
        info: dict[str, object] = {"beta_ratio": self.beta}
        if self.self_calibrate:
            fit = await fit_echo_model(
                system,
                kn,
                alpha,
                u,
                free=free,
                delay_nodes=list(range(system.n_nodes)) if self.calibrate_delays else [],
                iterations=self.calibration_iterations,
                rel_step=self.calibration_rel_step,
                delay_step=self.calibration_delay_step,
            )
            self.last_calibration = fit
            m_gamma = fit.m_gamma
            info["calibrated_m_gamma"] = fit.m_gamma.copy()
            info["calibration_mismatch"] = fit.mismatch.copy()
            if self.calibrate_delays:
                info["calibrated_delays_s"] = fit.delays_s.copy()
                system = SensingDelayCorrection(system, fit.delays_s)
                free = dataclasses.replace(
                    free,
                    x=shift_nodes(free.x, free.n_periods * free.period_s, fit.delays_s),
                )
        drive = echo_drive(await system.drive_forces(), free, m_gamma)
        pushed = [int(j) for j in np.flatnonzero(np.any(drive != 0.0, axis=(0, 1)))]
        require_actuation(system, pushed, "the echo drive F̃ is non-zero there")
        err_rev = reverse_time(task.error_force(free.x, free.t_s))
        b = physical_beta(self.beta, await system.drive_peak(), err_rev)[:, None, None]
        try:
            await enter_echo(system, drive, free, self.attractor_tol, info)
            plus = await measure_with(system, nudge(b * err_rev, free, system))
            minus = await measure_with(system, nudge(-b * err_rev, free, system))
        finally:
            await system.set_forces(None)
            await system.set_echo_drive(None)
        lam = reverse_time(plus.x - minus.x) / (2.0 * b)
        grad = -kn.dR_dalpha_T(free.x, free.t_s, free.dt_s * lam)
        info["beta"] = b[:, 0, 0]
        log.debug("ep_echo: echo mismatch %s", info["echo_mismatch"])
        return GradientEstimate(
            finite_gradient(grad, self.name), cost, system.experiments - n0, info
        )
