"""`Feedback`: a learning phase's linear feedback force G(t)(x − r(t)) on a collocation grid
(the twin's form of `physlearn.spec.system.LinearFeedback`, used by ``ep_asymmetric``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Feedback:
    """A linear feedback force G(t)(x − r(t)) on the grid: gain (B,N,d,d) (force per unit
    coordinate, N/m), reference orbit r (B,N,d). The reference solves the dynamics without it."""

    gain: Array
    reference: Array

    def take(self, idx: NDArray[np.intp]) -> Feedback:
        return Feedback(self.gain[idx], self.reference[idx])

    def force(self, x: Array) -> Array:
        """G (x − r), shape (B,N,d)."""
        return np.einsum("bnij,bnj->bni", self.gain, x - self.reference)

    def apply(self, v: Array, transpose: bool = False) -> Array:
        """G v (or Gᵀ v), shape (B,N,d)."""
        return np.einsum("bnji,bnj->bni" if transpose else "bnij,bnj->bni", self.gain, v)
