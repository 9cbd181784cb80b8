"""The `dac` step: setpoint → delivered volts of every edge's DAC channel, read back from the
DAC's output monitor or through a scope input cabled as a loopback (`dac_loopback`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from physlearn.calibration import plots
from physlearn.calibration.bench import CalibrationBench
from physlearn.calibration.context import StepContext
from physlearn.calibration.options import CalibrationOptions
from physlearn.errors import CalibrationError

Array = NDArray[np.float64]


def _loopbacks(
    bench: CalibrationBench, opts: CalibrationOptions
) -> dict[tuple[str, int], tuple[str, int]]:
    """The `dac_loopback` option parsed and checked against the bench file."""
    cfg = bench.config
    out: dict[tuple[str, int], tuple[str, int]] = {}
    for src, dst in opts.dac_loopback.items():
        try:
            dac, dch = src.rsplit(":", 1)
            scope, sch = dst.rsplit(":", 1)
            key, val_ = (dac, int(dch)), (scope, int(sch))
        except ValueError as exc:
            raise CalibrationError(
                f'dac_loopback: {src!r} = {dst!r}: expected "<dac>:<channel>" = "<scope>:<channel>"'
            ) from exc
        if cfg.instruments.get(dac) is None or cfg.instruments[dac].role != "dac":
            raise CalibrationError(f"dac_loopback: {dac!r} is not a DAC of the bench")
        if cfg.instruments.get(scope) is None or cfg.instruments[scope].role != "scope":
            raise CalibrationError(f"dac_loopback: {scope!r} is not an oscilloscope of the bench")
        if not 1 <= val_[1] <= 4:
            raise CalibrationError(f"dac_loopback: {scope} has channels 1..4, not {val_[1]}")
        out[key] = val_
    return out


async def _scope_dc_volts(
    bench: CalibrationBench, scope: str, channel: int, expect_v: float, what: str
) -> float:
    """Mean volts of a scope channel over a 24 ms record, on a fine scale (50 mV/div) centred
    on `expect_v` by the channel offset, so the 8-bit ADC resolves ≈ 2 mV."""
    s = bench.scope(scope)
    await s.configure_channel(channel, scale_v_per_div=0.05, offset_v=-expect_v, probe=1.0)
    await s.set_acquisition("NORMal")
    await s.set_timebase(0.002, 0.012)
    await s.set_trigger_edge("EXT", level_v=1.0)
    await s.run()
    await bench.clock.sleep(0.1)
    await s.stop()
    w = (await s.read_channels([channel]))[channel]
    if w.clipped:
        raise CalibrationError(
            f"{what}: {scope} channel {channel} clipped: the delivered volts are more than "
            "0.2 V from the setpoint (is the loopback cabled?)"
        )
    return float(np.mean(w.volts))


async def step_dac(bench: CalibrationBench, ctx: StepContext) -> dict[str, Any]:
    """Setpoint → delivered volts per edge channel: through a scope input where the options
    declare a loopback cable (`dac_loopback`), otherwise read back from the DAC's own output
    monitor (`volt:last?`); each channel's result names the method. A channel whose delivered
    volts do not follow the setpoint is an error naming it."""
    cfg = bench.config
    loop = _loopbacks(bench, ctx.opts)
    channels: list[dict[str, Any]] = []
    raw: dict[str, Array] = {}
    for e in cfg.wiring.edges:
        lim = cfg.output_limits(e.instrument).limit_for(e.channel)
        sp = np.linspace(lim.min_v, lim.max_v, 7)
        got = np.zeros_like(sp)
        dac = bench.dac(e.instrument)
        via = loop.get((e.instrument, e.channel))
        for i, v in enumerate(sp):
            await dac.set_voltage(e.channel, float(v))
            await bench.clock.sleep(0.05)
            if via is None:
                got[i] = await dac.get_output_voltage(e.channel)
            else:
                got[i] = await _scope_dc_volts(
                    bench, via[0], via[1], float(v), f"dac: {e.instrument} channel {e.channel}"
                )
        await dac.set_voltage(e.channel, ctx.opts.base_bias_v)
        method = (
            "readback (volt:last?)"
            if via is None
            else f"loopback through {via[0]} channel {via[1]} (mean of a 24 ms record)"
        )
        coef, _res, *_ = np.polyfit(sp, got, 1, full=True)
        gain, offset = float(coef[0]), float(coef[1])
        resid = got - (offset + gain * sp)
        n = sp.size
        s2 = float(np.sum(resid**2) / (n - 2)) if n > 2 else 0.0
        sxx = float(np.sum((sp - sp.mean()) ** 2))
        if not abs(gain) > 0.5:
            raise CalibrationError(
                f"dac: {e.instrument} channel {e.channel} (edge {list(e.nodes)}) does not move: "
                f"delivered {got.min():.4g}..{got.max():.4g} V for setpoints "
                f"{sp.min():.4g}..{sp.max():.4g} V (gain {gain:.3g})"
            )
        channels.append(
            {
                "instrument": e.instrument,
                "channel": e.channel,
                "offset_v": [offset, math.sqrt(s2 * (1 / n + sp.mean() ** 2 / sxx))],
                "gain": [gain, math.sqrt(s2 / sxx)],
                "max_nonlinearity_v": float(np.max(np.abs(resid))),
                "method": method,
            }
        )
        raw[f"{e.instrument}_ch{e.channel}_setpoint_v"] = sp
        raw[f"{e.instrument}_ch{e.channel}_delivered_v"] = got
    plots.plot_dac(ctx.out / "dac.png", raw)
    result = {"channels": channels}
    ctx.save("dac", result, raw)
    return result
