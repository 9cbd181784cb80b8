"""Predicting a bench measurement from the last settled response to the same input.

A training run measures the same inputs again and again (every epoch; the +β and −β phases of
a sample differ from its free phase at order β), while the parameters move by small steps. The
last settled response to an input is therefore a good prediction of the next one, and it gives
the controller, *before* it waits:

- the size of the transient the change starts (the relative change from the response settled
  before it), so that the first acquisition comes after the settle time instead of being
  repeated when a drive-only estimate was too small;
- each scope channel's peak, so that its V/div is set while the transient decays instead of
  from preview records taken during the transient.

Predictions only plan: every measurement is still verified (measured change, clipping,
periodicity) and repeated if the prediction was wrong.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]

__all__ = ["Recalled", "ResponseMemory"]


@dataclass(frozen=True)
class Recalled:
    """A remembered settled response x (M, d) (node units) to the same input, and how far the
    present settings are from the ones it was measured at (relative force change plus the
    largest coupling change in units of m ω²)."""

    x: Array
    distance: float


class ResponseMemory:
    """The last settled response per input (key: the input drive's samples), at most
    ``capacity`` inputs (least recently used forgotten)."""

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be ≥ 1, got {capacity}")
        self.capacity = capacity
        self._store: OrderedDict[bytes, tuple[Array, Array, Array | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._store)

    @staticmethod
    def key(drive: Array) -> bytes:
        """Key of an input: its drive samples (M, d) without nudge forces."""
        return np.ascontiguousarray(drive, dtype=np.float64).tobytes()

    def remember(self, key: bytes, x: Array, force: Array, alpha: Array | None) -> None:
        """Store the settled response x (M, d) to total force ``force`` (M, d) at parameters
        ``alpha`` (P,) (None: not set)."""
        self._store[key] = (
            np.array(x, dtype=float),
            np.array(force, dtype=float),
            None if alpha is None else np.array(alpha, dtype=float),
        )
        self._store.move_to_end(key)
        while len(self._store) > self.capacity:
            self._store.popitem(last=False)

    def recall(
        self, key: bytes, force: Array, alpha: Array | None, alpha_unit: float
    ) -> Recalled | None:
        """The remembered response to input ``key`` (None if unknown), with its distance from
        total force ``force`` at parameters ``alpha`` (couplings in units of ``alpha_unit``,
        N/m: m ω²)."""
        hit = self._store.get(key)
        if hit is None:
            return None
        self._store.move_to_end(key)
        x, f, a = hit
        nf = float(np.linalg.norm(force)) or 1.0
        dist = float(np.linalg.norm(np.asarray(force) - f)) / nf
        if alpha is not None and a is not None and a.shape == np.shape(alpha):
            dist += float(np.max(np.abs(np.asarray(alpha) - a), initial=0.0)) / alpha_unit
        elif alpha is not None or a is not None:
            dist = math.inf
        return Recalled(x, dist)

    def clear(self) -> None:
        self._store.clear()

    def state_dict(self) -> dict[str, Any]:
        """The remembered responses as arrays, least recently used first: ``drives`` (n, M, d)
        (the keys), ``x`` and ``force`` (n, M, d), ``alpha`` (n, P) with ``has_alpha`` (n,)."""
        items = list(self._store.items())
        if not items:
            return {"n": 0}
        shape = items[0][1][0].shape
        alphas = [a for _, (_, _, a) in items if a is not None]
        p = alphas[0].size if alphas else 0
        return {
            "n": len(items),
            "drives": np.stack(
                [np.frombuffer(k, dtype=np.float64).reshape(shape) for k, _ in items]
            ),
            "x": np.stack([x for _, (x, _, _) in items]),
            "force": np.stack([f for _, (_, f, _) in items]),
            "alpha": np.stack(
                [a if a is not None and a.size == p else np.zeros(p) for _, (_, _, a) in items]
            ),
            "has_alpha": np.array([a is not None and a.size == p for _, (_, _, a) in items]),
        }

    def load_state_dict(self, state: dict[str, Any], shape: tuple[int, int]) -> None:
        """Restore a :meth:`state_dict` of responses of shape ``shape`` (M, d); a state of
        another shape raises ValueError naming it."""
        self._store.clear()
        n = int(state.get("n", 0))
        if n == 0:
            return
        arrays = {k: np.asarray(state[k]) for k in ("drives", "x", "force", "alpha", "has_alpha")}
        for k in ("drives", "x", "force"):
            if arrays[k].shape != (n, *shape):
                raise ValueError(
                    f"response memory: {k} has shape {arrays[k].shape}, expected {(n, *shape)}"
                )
        if arrays["alpha"].shape[0] != n or arrays["has_alpha"].shape != (n,):
            raise ValueError("response memory: alpha / has_alpha do not match the responses")
        for i in range(n):
            alpha = arrays["alpha"][i] if bool(arrays["has_alpha"][i]) else None
            self.remember(self.key(arrays["drives"][i]), arrays["x"][i], arrays["force"][i], alpha)
