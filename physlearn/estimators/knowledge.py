"""What the gradient estimators know about the network, declared explicitly.

EP needs no values of the couplings: V is linear in α, so the conjugate densities ∂V/∂α and the
mixed derivatives ∂²V/∂α∂x depend only on the topology, ρ (and ρ′), and the modulations μ(t),
ν(t) — things the experimenter chose. The echo and time-reversed estimators also need masses and
damping rates. On the twin this comes from the network spec; on a bench from its config and
calibration file. Never from solver internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import ConfigError
from physlearn.spec.model import NetworkModel, conjugates
from physlearn.spec.network import NetworkSpec

if TYPE_CHECKING:
    from physlearn.calibration.schema import CalibrationFile

Array = NDArray[np.float64]


@dataclass(frozen=True)
class ModelKnowledge:
    """Conjugate functions of a network (topology, ρ, μ, ν) plus node masses and damping."""

    spec: NetworkSpec
    mass: Array  # (d,)
    damping: Array  # (d,) Γ_j, 1/s
    source: str = "network spec"

    @classmethod
    def from_spec(cls, spec: NetworkSpec, source: str = "network spec") -> ModelKnowledge:
        """Knowledge declared by a spec (its term *values* are never used)."""
        m, _, g = spec.nodes.arrays()
        return cls(spec, m, g, source)

    @classmethod
    def from_calibration(cls, spec: NetworkSpec, calibration: CalibrationFile) -> ModelKnowledge:
        """Knowledge on a bench: topology, ρ and modulations from ``spec`` (as designed), the node
        mass (kg, declared in the file) and damping rates Γ_j (1/s, fitted) from the calibration.

        Raises `ConfigError` naming the nodes the file does not calibrate.
        """
        d = spec.nodes.count
        fitted = {n.node: float(n.damping_per_s.value) for n in calibration.nodes}
        missing = [j for j in range(d) if j not in fitted or not np.isfinite(fitted[j])]
        if missing:
            raise ConfigError(
                f"calibration of bench {calibration.bench_name!r}: no damping rate for nodes "
                f"{missing} (run the 'resonance' step)"
            )
        mass = np.full(d, float(calibration.mass_kg))
        damping = np.array([fitted[j] for j in range(d)])
        return cls(spec, mass, damping, f"calibration of {calibration.bench_name}")

    @cached_property
    def _model(self) -> NetworkModel:
        return NetworkModel.from_spec(self.spec)

    def conjugates(self, x: Array, t_s: Array, weights: Array | float) -> Array:
        """A = ∫ ∂L/∂α dt = −Σ w ∂V/∂α on sampled waveforms x (B,N,d); shape (B,P)."""
        return conjugates(self._model, x, t_s, weights)

    def dR_dalpha_T(self, x: Array, t_s: Array, lam: Array) -> Array:
        """Σ_t λ(t)·∂²V/∂α∂x along the orbit x (B,N,d); λ carries quadrature weights; (B,P)."""
        model = self._model
        return model.vjp_theta(x, t_s, lam)[:, model.trainable]

    @property
    def nonreciprocal_terms(self) -> list[str]:
        """Names of the network's directed (non-reciprocal) couplings, trainable or fixed."""
        return self.spec.nonreciprocal_terms()

    def require_reciprocal(self, estimator: str) -> None:
        """Refuse (`ConfigError` naming the terms) a network with directed couplings for an
        estimator whose identity needs forces that derive from a potential."""
        names = self.nonreciprocal_terms
        if names:
            raise ConfigError(
                f"estimator {estimator!r} assumes reciprocal couplings (forces −∂V/∂x), but the "
                f"network has non-reciprocal terms {', '.join(names)}; use 'ep_asymmetric' "
                "(exact) or 'ep_vector_field' (the biased baseline)"
            )

    def directed_edges(self) -> list[tuple[int, int]]:
        """(target, source) of every directed coupling, in spec order."""
        return [(c.target, c.source) for c in self.spec.directed]

    def directed_jacobian(self, x: Array, t_s: Array, alpha: Array) -> Array:
        """N(t) = ∂Q/∂x along sampled waveforms x (B,N,d), shape (B,N,d,d): N[b,n,i,j] =
        μ(t_n) α_{i←j} s′(x_j) for each directed coupling i ← j (s′ = 1 or ρ′). Needs the
        directed gains α (the controller sets them: ``alpha`` (P,), fixed gains from the spec),
        the topology, ρ′ and μ — unlike conjugates, it uses parameter *values*."""
        model = self._model
        theta = model.full_theta(np.asarray(alpha, dtype=float), batch=x.shape[0])
        return model.directed_jacobian(x, t_s, model.coefficients(theta))

    def with_damping(self, damping: Array) -> ModelKnowledge:
        """The same knowledge with other damping rates (e.g. a calibrated Γ)."""
        return ModelKnowledge(self.spec, self.mass, np.asarray(damping, dtype=float), self.source)
