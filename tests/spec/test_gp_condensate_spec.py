"""The saturable incoherent pump (physlearn.spec.gp_condensate): validation and the gain's slope."""

from __future__ import annotations

import numpy as np
import pytest

from physlearn.errors import ConfigError
from physlearn.spec.gp_condensate import SaturablePump


def test_gain_saturates_and_its_slope_is_its_derivative() -> None:
    pump = SaturablePump(rate=np.array([0.0, 0.4, 1.0]), saturation=2.0)
    n = np.array([0.5, 1.0, 3.0])
    np.testing.assert_allclose(pump.gain(np.zeros(3)), [0.0, 0.2, 0.5])
    np.testing.assert_allclose(pump.gain(np.full(3, 2.0)), [0.0, 0.1, 0.25])
    h = 1e-6
    fd = (pump.gain(n + h) - pump.gain(n - h)) / (2 * h)
    np.testing.assert_allclose(pump.gain_slope(n), fd, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize(("rate", "sat", "match"), [(-0.1, 1.0, "rates"), (0.1, 0.0, "saturation")])
def test_invalid_pumps_are_refused(rate: float, sat: float, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SaturablePump(rate=np.array([rate, 0.2]), saturation=sat)
