"""Batched, right-preconditioned restarted GMRES: one independent linear system per batch row.

Solves A_b x_b = b_b for every row b of ``b`` (shape (B,n)) with operators that act on the whole
batch at once, so that the Newton–Krylov solver never loops over samples in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]
Op = Callable[[Array], Array]


@dataclass(frozen=True)
class GmresResult:
    x: Array  # (B,n)
    residual: Array  # (B,) final ‖b − A x‖₂ / ‖b‖₂
    iterations: Array  # (B,) Krylov iterations used
    converged: Array  # (B,) bool


def _back_substitute(H: Array, g: Array, k_used: NDArray[np.int_]) -> Array:
    """Solve the triangular R y = g of every row at once, row b on its first k_used[b] columns
    (zeros beyond); returns y (B, max k_used)."""
    kmax = int(k_used.max())
    Y = np.zeros((H.shape[0], kmax))
    for i in range(kmax - 1, -1, -1):
        rows = k_used > i
        s = g[:, i] - np.einsum("bj,bj->b", H[:, i, i + 1 : kmax], Y[:, i + 1 :])
        Y[:, i] = np.where(rows, s / np.where(rows, H[:, i, i], 1.0), 0.0)
    return Y


def gmres(
    matvec: Op,
    b: Array,
    precond: Op | None = None,
    x0: Array | None = None,
    rtol: float | Array = 1e-10,
    restart: int = 40,
    max_restarts: int = 10,
) -> GmresResult:
    """Right-preconditioned GMRES(restart) on a batch of systems (rows of ``b``); ``rtol`` is
    one relative tolerance or one per row (B,)."""
    M = precond if precond is not None else (lambda v: v)
    B, n = b.shape
    x = np.zeros_like(b) if x0 is None else x0.copy()
    bnorm = np.linalg.norm(b, axis=1)
    bnorm_safe = np.where(bnorm > 0, bnorm, 1.0)
    iters = np.zeros(B, dtype=int)
    m = min(restart, n)
    rel = np.zeros(B)
    # the residual of x (no matvec for the zero start; after a cycle, the one the loop computed)
    r = b.copy() if x0 is None else b - matvec(x)
    for cycle in range(max_restarts + 1):
        if cycle > 0:
            r = b - matvec(x)
        beta = np.linalg.norm(r, axis=1)
        rel = beta / bnorm_safe
        active = rel > rtol
        if not active.any():
            break
        V = np.zeros((B, m + 1, n))
        H = np.zeros((B, m + 1, m))
        cs = np.zeros((B, m))
        sn = np.zeros((B, m))
        g = np.zeros((B, m + 1))
        g[:, 0] = beta
        V[:, 0] = np.where(active[:, None], r / np.where(beta > 0, beta, 1.0)[:, None], 0.0)
        k_used = np.zeros(B, dtype=int)
        live = active.copy()
        for j in range(m):
            w = matvec(M(V[:, j]))
            # Classical Gram-Schmidt, applied twice (CGS2): stable and vectorised.
            h = np.einsum("bin,bn->bi", V[:, : j + 1], w)
            w = w - np.einsum("bi,bin->bn", h, V[:, : j + 1])
            h2 = np.einsum("bin,bn->bi", V[:, : j + 1], w)
            w = w - np.einsum("bi,bin->bn", h2, V[:, : j + 1])
            h = h + h2
            hn = np.linalg.norm(w, axis=1)
            H[:, : j + 1, j] = h
            H[:, j + 1, j] = hn
            ok = hn > 1e-300
            V[:, j + 1] = np.where(ok[:, None], w / np.where(ok, hn, 1.0)[:, None], 0.0)
            # Apply the previous Givens rotations to the new column, then make a new one.
            for i in range(j):
                t = cs[:, i] * H[:, i, j] + sn[:, i] * H[:, i + 1, j]
                H[:, i + 1, j] = -sn[:, i] * H[:, i, j] + cs[:, i] * H[:, i + 1, j]
                H[:, i, j] = t
            a, c = H[:, j, j], H[:, j + 1, j]
            den = np.hypot(a, c)
            den_safe = np.where(den > 0, den, 1.0)
            cs[:, j] = np.where(den > 0, a / den_safe, 1.0)
            sn[:, j] = np.where(den > 0, c / den_safe, 0.0)
            H[:, j, j] = cs[:, j] * a + sn[:, j] * c
            H[:, j + 1, j] = 0.0
            g[:, j + 1] = -sn[:, j] * g[:, j]
            g[:, j] = cs[:, j] * g[:, j]
            k_used = np.where(live, j + 1, k_used)
            iters += live
            live = live & (np.abs(g[:, j + 1]) / bnorm_safe > rtol) & ok
            if not live.any():
                break
        Y = _back_substitute(H, g, np.where(active, k_used, 0))
        x = x + M(np.einsum("bi,bin->bn", Y, V[:, : Y.shape[1]]))
    else:
        r = b - matvec(x)
        rel = np.linalg.norm(r, axis=1) / bnorm_safe
    return GmresResult(x, rel, iters, rel <= rtol)
