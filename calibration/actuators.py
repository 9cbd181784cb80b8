"""The `actuators` step: each generator channel's force gain (per unit mass) and delay, read from
the resonance step's network fit (the actuator part of the multisine transfer functions)."""

from __future__ import annotations

from typing import Any

import numpy as np

from physlearn.calibration import plots
from physlearn.calibration.bench import CalibrationBench
from physlearn.calibration.context import StepContext


async def step_actuators(bench: CalibrationBench, ctx: StepContext) -> dict[str, Any]:
    """Generator → node force gain (per unit mass) and phase vs frequency, from the network fit
    of the multisine transfer functions (the actuator part of H_sj)."""
    res = ctx.load("resonance")
    fit = res["fit"]
    f = np.linspace(ctx.opts.band_hz[0], ctx.opts.band_hz[1], 50)
    out, raw = [], {"frequency_hz": f}
    for j, _dw in enumerate(bench.config.wiring.drives):
        g, gs = fit["act_gain"][j], fit["sigma"]["act_gain"][j]
        tau, ts = fit["act_delay_s"][j], fit["sigma"]["act_delay_s"][j]
        raw[f"drive{j}_phase_rad"] = -2 * np.pi * f * tau
        raw[f"drive{j}_gain"] = np.full(f.size, g)
        out.append({"drive": j, "gain": [g, gs], "delay": [tau, ts]})
    plots.plot_actuators(ctx.out / "actuators.png", raw, len(out))
    result = {"drives": out}
    ctx.save("actuators", result, raw)
    return result
