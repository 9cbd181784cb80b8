"""Gradient estimators: EP variants, black-box baselines, and the exact adjoint (twin only).

`make_estimator(name, knowledge, **cfg)` builds one by name; `known_estimators()` lists them.
Every estimator acts on a `PhysicalSystem` through waveforms in and `Observation`s out (except
``adjoint``, which needs the ideal twin), reports the steady states it used, and raises
`GradientError` on a non-finite gradient. See docs/estimators.md.
"""

from __future__ import annotations

import inspect
from typing import Any

from physlearn.errors import ConfigError
from physlearn.estimators._common import measure_free
from physlearn.estimators.adjoint import Adjoint
from physlearn.estimators.base import Estimator, GradientEstimate
from physlearn.estimators.ep_asymmetric import EPAsymmetric
from physlearn.estimators.ep_autonomous import EPFixedAction, EPFixedEnergy, EPFixedPeriod
from physlearn.estimators.ep_echo import EPEcho
from physlearn.estimators.ep_gp import GPNearEP, GPPhaseConjugate
from physlearn.estimators.ep_one_sided import EPOneSided
from physlearn.estimators.ep_symmetric import EPSymmetric
from physlearn.estimators.ep_time_reversed import EPTimeReversed
from physlearn.estimators.ep_vector_field import EPVectorField
from physlearn.estimators.finite_difference import FiniteDifference
from physlearn.estimators.knowledge import ModelKnowledge
from physlearn.estimators.spsa import SPSA
from physlearn.spec.gp_system import GPKnowledge

ESTIMATORS: dict[str, type[Estimator]] = {
    cls.name: cls
    for cls in (
        EPSymmetric,
        EPOneSided,
        EPTimeReversed,
        EPEcho,
        EPAsymmetric,
        EPVectorField,
        FiniteDifference,
        SPSA,
        Adjoint,
        EPFixedEnergy,
        EPFixedAction,
        EPFixedPeriod,
        GPNearEP,
        GPPhaseConjugate,
    )
}

#: the family of network each kind of knowledge describes
FAMILY_NAMES = {"oscillator": "an oscillator network", "gp": "a GP lattice"}


def known_estimators() -> list[str]:
    """Names accepted by `make_estimator`."""
    return list(ESTIMATORS)


def known_estimators_for(family: str) -> list[str]:
    """Names of the estimators that work on a network of ``family`` (oscillator or gp)."""
    return [n for n, c in ESTIMATORS.items() if family in c.families]


def make_estimator(name: str, knowledge: ModelKnowledge | GPKnowledge, **cfg: Any) -> Estimator:
    """The estimator called ``name`` with its options ``cfg`` (ConfigError names a bad one, or
    one that does not work on the network ``knowledge`` describes)."""
    cls = ESTIMATORS.get(name)
    if cls is None:
        raise ConfigError(f"estimator: unknown {name!r}; known: {', '.join(known_estimators())}")
    family = "gp" if isinstance(knowledge, GPKnowledge) else "oscillator"
    if family not in cls.families:
        raise ConfigError(
            f"estimator {name!r}: does not work on {FAMILY_NAMES[family]}; use one of "
            f"{', '.join(known_estimators_for(family))}"
        )
    params = inspect.signature(cls.__init__).parameters
    allowed = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ConfigError(
            f"estimator {name!r}: unknown option(s) {', '.join(unknown)}; "
            f"options: {', '.join(allowed) or 'none'}"
        )
    build: Any = cls  # each family's estimators take their own knowledge
    est: Estimator = build(knowledge, **cfg)
    return est


__all__ = [
    "ESTIMATORS",
    "Estimator",
    "GradientEstimate",
    "known_estimators",
    "known_estimators_for",
    "make_estimator",
    "measure_free",
]
