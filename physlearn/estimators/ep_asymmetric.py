"""`ep_asymmetric`: exact EP for networks with non-reciprocal (directed) couplings.

The Asymmetric EP of Scurria, Vanden Abeele, Mognetti and Massar (arXiv 2602.03670) for
stationary states, carried to the periodic steady states of driven, damped networks through the
echo nudge (docs/estimators.md).

The steady state solves R(x) = m ẍ + mΓ ẋ + ∂V/∂x + Q(x, t) − F = 0, with Jacobian
J = m D² + mΓ D + K(t) + N(t), N = ∂Q/∂x the directed couplings' (non-symmetric) part. The
gradient needs λ = J⁻ᵀ ∂C/∂x; nudging measures J⁻¹. In the *learning phases only*, the system
gets the linear feedback force

    G(t) (x − x_ref(t)),   G = N − Nᵀ  along the free orbit           (`set_feedback`)

which vanishes on the reference orbit (so it stays a solution) and turns the linearisation into
J − G = m D² + mΓ D + K + Nᵀ: the directed couplings act *transposed* around the free orbit.

- Undamped dynamics, or stationary states (constant drive and targets: D x = 0): J − G = Jᵀ.
  Nudge ±β e (e = γ(x_free − y)), λ = (x₊ − x₋)/2β.
- Damped periodic orbits (``echo``): combine with the echo nudge (`ep_echo`). On the echo
  dynamics (drive F̃(s) = F(−s) − 2mΓ ẋ(−s), μ, ν and clamps reversed) the periodic solution is
  x̃(s) = x(−s) and the linearisation m D² + mΓ D + K(−s) + N(−s); the feedback there is
  G(−s)(ξ − x̃(s)) (G along the reversed free orbit), giving m D² + mΓ D + K(−s) + Nᵀ(−s) =
  P Jᵀ P. Nudge ±β e(−s), λ = [x̃₊ − x̃₋](−t)/2β.

Either way dC/dα = −Σ_t Δt λ(t)·∂R/∂α(t) along the free orbit (error O(β²)). Knowledge: the
directed couplings' topology, gains α (set by the controller), ρ′ and μ(t) (for G); ρ, ρ′, μ, ν
(for ∂R/∂α); m_j, Γ_j with the echo. The system must be able to feed node j back onto node i and
i onto j for every directed coupling i ← j (`PhysicalSystem.feedback_pairs`): refused before
anything is switched on (`GradientError` naming the couplings) otherwise.
"""

from __future__ import annotations

import numpy as np

from physlearn.errors import ConfigError, GradientError
from physlearn.estimators._common import (
    Array,
    check_beta,
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
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.spec.system import LinearFeedback, PhysicalSystem
from physlearn.spec.task import Task


def require_feedback(system: PhysicalSystem, knowledge: ModelKnowledge, name: str) -> None:
    """Refuse (GradientError naming the couplings) a system that cannot transpose every
    directed coupling i ← j: it needs feedback pairs (i, j) and (j, i)."""
    have = system.feedback_pairs
    spec = knowledge.spec
    missing = [
        f"directed[{k}] {i}<-{j}"
        for k, (i, j) in enumerate(knowledge.directed_edges())
        if (i, j) not in have or (j, i) not in have
    ]
    if missing:
        raise GradientError(
            f"{name} needs, for every directed coupling i <- j, a learning-phase feedback "
            f"element on both i <- j and j <- i; {type(system).__name__} has none for "
            f"{', '.join(missing)} (network of {spec.nodes.count} nodes)"
        )


class EPAsymmetric(Estimator):
    """Asymmetric EP (module docstring). ``beta``: dimensionless nudge (peak nudge / peak drive
    force). ``echo``: run the learning phases on the echo dynamics (needed for damped periodic
    orbits); None (default) = when the knowledge has any Γ_j > 0. ``attractor_tol``: largest
    relative echo-orbit mismatch accepted (as in `ep_echo`)."""

    name = "ep_asymmetric"

    def __init__(
        self,
        knowledge: ModelKnowledge,
        *,
        beta: float = 1e-3,
        echo: bool | None = None,
        attractor_tol: float = 0.1,
    ):
        super().__init__(knowledge)
        self.beta = check_beta(beta)
        if echo is not None and not isinstance(echo, bool):
            raise ConfigError(f"echo: must be true, false or unset, got {echo!r}")
        self.echo = bool(np.any(knowledge.damping > 0)) if echo is None else echo
        self.attractor_tol = check_beta(attractor_tol, "attractor_tol")

    async def estimate(
        self, system: PhysicalSystem, alpha: Array, u: Array, task: Task
    ) -> GradientEstimate:
        kn = self.knowledge
        require_feedback(system, kn, self.name)
        m_gamma = np.asarray(kn.mass * kn.damping, dtype=float)
        if self.echo:
            require_actuation(system, damped_nodes(m_gamma), "damped nodes, Γ_j > 0", self.name)
        n0 = system.experiments
        free, cost = await measure_free(system, alpha, u, task)
        N = kn.directed_jacobian(free.x, free.t_s, alpha)
        gain = N - N.swapaxes(-1, -2)
        info: dict[str, object] = {"beta_ratio": self.beta, "echo": self.echo}
        err = task.error_force(free.x, free.t_s)
        if self.echo:
            drive = echo_drive(await system.drive_forces(), free, m_gamma)
            pushed = [int(j) for j in np.flatnonzero(np.any(drive != 0.0, axis=(0, 1)))]
            require_actuation(system, pushed, "the echo drive F̃ is non-zero there", self.name)
            err, gain, ref = reverse_time(err), reverse_time(gain), reverse_time(free.x)
        else:
            ref = free.x
        b = physical_beta(self.beta, await system.drive_peak(), err)[:, None, None]
        try:
            if self.echo:
                await enter_echo(system, drive, free, self.attractor_tol, info, self.name)
            await system.set_feedback(LinearFeedback(gain, ref, free.period_s))
            plus = await measure_with(system, nudge(b * err, free, system))
            minus = await measure_with(system, nudge(-b * err, free, system))
        finally:
            await system.set_forces(None)
            await system.set_feedback(None)
            if self.echo:
                await system.set_echo_drive(None)
        lam = (plus.x - minus.x) / (2.0 * b)
        if self.echo:
            lam = reverse_time(lam)
        grad = -kn.dR_dalpha_T(free.x, free.t_s, free.dt_s * lam)
        info["beta"] = b[:, 0, 0]
        return GradientEstimate(
            finite_gradient(grad, self.name), cost, system.experiments - n0, info
        )
