"""The final stability report of a run: whether the free orbits of the result attract (Floquet
multipliers, through the `StabilityCheck` of an ideal twin) and where its linear modes at rest
sit relative to ω and 2ω."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.errors import SolverError
from physlearn.spec.gp_system import GPSpec
from physlearn.spec.network import NetworkSpec
from physlearn.spec.system import StabilityCheck
from physlearn.spec.topology import mode_report
from physlearn.systems.gp_lattice import BOGOLIUBOV_MAX_SITES
from physlearn.training.datasets import Dataset
from physlearn.training.encoding import ClassTargets

Array = NDArray[np.float64]

__all__ = ["STABILITY_TOL", "stability_report"]

#: A free orbit attracts when every Floquet multiplier has modulus ≤ 1 + STABILITY_TOL.
STABILITY_TOL = 1e-6


async def stability_report(
    twin: StabilityCheck,
    spec: NetworkSpec | GPSpec,
    dataset: Dataset,
    targets: ClassTargets,
    params: Array,
    max_samples: int | None = None,
    method: str = "full",
) -> dict[str, Any]:
    """Floquet multipliers of the free orbits of every test sample (the first ``max_samples``
    when given) at ``params`` — the orbits the reported test accuracy was measured on; on the
    evaluation twin these are the orbits the evaluation measured
    (warm-started, as a bench would have them), not a fresh solve from rest, which can fail or
    land elsewhere — and the linear modes at rest (`physlearn.spec.topology.mode_report`). On a
    GP lattice the "multipliers" are e^{max Re λ} of the free stationary states' Bogoliubov
    spectra over one unit time ħ/E (≤ 1: stable), and there are no modes at rest to report.
    ``method``: the Floquet computation (`StabilityCheck.floquet_check`), ``training.stability_check``
    when that is set."""
    u = dataset.x_test[:max_samples]
    lab = dataset.y_test[:max_samples]
    out: dict[str, Any] = {
        "samples_checked": int(u.shape[0]),
        "split": "test",
        "orbits": "evaluated",
    }
    if not isinstance(spec, NetworkSpec) and spec.n_sites > BOGOLIUBOV_MAX_SITES:
        return {
            "samples_checked": 0,
            "orbits": "stationary states (Bogoliubov spectra)",
            "stable": None,
            "skipped": f"{spec.n_sites} sites: the dense Bogoliubov spectrum is checked up to "
            f"{BOGOLIUBOV_MAX_SITES} (physlearn.systems.gp_lattice.BOGOLIUBOV_MAX_SITES)",
        }
    try:
        mult = await twin.floquet_check(params, u, targets.task(spec, lab), method=method)
        worst = float(np.max(mult))
        out.update(
            stable=bool(worst <= 1.0 + STABILITY_TOL),
            max_floquet_multiplier=worst,
            unstable_samples=int(np.sum(mult > 1.0 + STABILITY_TOL)),
        )
    except SolverError as exc:
        out.update(stable=False, error=str(exc))
    if method != "full":
        out["floquet_method"] = method
    if isinstance(spec, NetworkSpec):
        out["linear_modes_at_rest"] = mode_report(spec, params).as_dict()
    else:
        out["orbits"] = "stationary states (Bogoliubov spectra)"
    return out
