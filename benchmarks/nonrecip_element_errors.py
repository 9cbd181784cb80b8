"""How `ep_asymmetric` degrades when the learning-phase element is imperfect (docs/estimators.md,
"Element errors"): the realised feedback gain off by ε, or the replayed reference orbit offset.

On the ideal twin (d = 6, Γ = 0.2, periodic orbits with the echo, batch of 2) a wrapper distorts
every `LinearFeedback` before the twin applies it; the estimate is compared with the adjoint
(relative error, cosine of the batch means). An `UnstableOrbitError` means the distorted learning
phase has no attracting orbit (a bench would not settle).

    python benchmarks/nonrecip_element_errors.py      # ≈ 1 min
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "estimators"))

from physlearn.errors import PhyslearnError  # noqa: E402
from physlearn.estimators import make_estimator  # noqa: E402
from physlearn.estimators.knowledge import ModelKnowledge  # noqa: E402
from physlearn.spec.delegating import DelegatingSystem  # noqa: E402
from physlearn.spec.system import LinearFeedback, PhysicalSystem  # noqa: E402
from physlearn.spec.task import Task  # noqa: E402
from physlearn.systems.ideal import IdealSystem  # noqa: E402

CASES = ((0.01, 0.0), (0.02, 0.0), (0.05, 0.0), (-0.02, 0.0), (-0.05, 0.0), (0.0, 0.01))


class DistortedFeedback(DelegatingSystem):
    """Realises G (1 + ε) about the reference shifted by ``offset`` (coordinate units)."""

    def __init__(self, inner: PhysicalSystem, eps: float, offset: float):
        super().__init__(inner)
        self.eps, self.offset = eps, offset

    async def set_feedback(self, feedback: LinearFeedback | None) -> None:
        if feedback is not None:
            feedback = LinearFeedback(
                feedback.gain * (1.0 + self.eps),
                feedback.reference + self.offset,
                feedback.period_s,
            )
        await self.inner.set_feedback(feedback)


async def main() -> None:
    from test_ep_asymmetric import network

    for kind in ("tanh_active", "feedforward"):
        spec = network(kind, 6, static=False)
        rng = np.random.default_rng(0)
        u = rng.uniform(0.5, 1.0, (2, 2))
        task = Task.from_spec(spec, rng.uniform(-0.5, 0.5, (2, 1)))
        kn, alpha = ModelKnowledge.from_spec(spec), spec.initial_parameters()
        twin = IdealSystem(spec, 33, echo_settle="newton")
        ref = (await make_estimator("adjoint", kn).estimate(twin, alpha, u, task)).grad
        for eps, offset in CASES:
            est = make_estimator("ep_asymmetric", kn)
            try:
                g = (await est.estimate(DistortedFeedback(twin, eps, offset), alpha, u, task)).grad
            except PhyslearnError as exc:
                print(f"{kind:12s} ε={eps:+.2f} offset={offset:.2f}: {type(exc).__name__}: {exc}")
                continue
            rel = np.linalg.norm(g - ref) / np.linalg.norm(ref)
            gm, rm = g.mean(axis=0), ref.mean(axis=0)
            cos = gm @ rm / np.linalg.norm(gm) / np.linalg.norm(rm)
            print(
                f"{kind:12s} ε={eps:+.2f} offset={offset:.2f}: rel. error {rel:.2e}, cos {cos:.5f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
