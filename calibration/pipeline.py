"""The resumable calibration pipeline: `run_step` runs one step (its dependencies complete
first) and `run_all` every step in dependency order; both rewrite `calibration.json` from the
completed steps' results. Completed steps are skipped unless forced."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from physlearn.calibration.active import step_active
from physlearn.calibration.actuators import step_actuators
from physlearn.calibration.assemble import assemble
from physlearn.calibration.bench import CalibrationBench
from physlearn.calibration.context import DEPENDS, STEPS, StepContext
from physlearn.calibration.couplings import step_couplings
from physlearn.calibration.dac import step_dac
from physlearn.calibration.resonance import step_resonance
from physlearn.calibration.schema import CalibrationFile
from physlearn.calibration.sensing import step_sensing
from physlearn.calibration.tuners import step_tuners
from physlearn.errors import CalibrationError

logger = logging.getLogger(__name__)

StepFn = Callable[[CalibrationBench, StepContext], Awaitable[dict[str, Any]]]
STEP_FUNCTIONS: dict[str, StepFn] = {
    "dac": step_dac,
    "resonance": step_resonance,
    "sensing": step_sensing,
    "actuators": step_actuators,
    "couplings": step_couplings,
    "active": step_active,
    "tuners": step_tuners,
}


async def run_step(
    bench: CalibrationBench, ctx: StepContext, step: str, *, force: bool = False
) -> CalibrationFile:
    """Run one step (its dependencies must be complete) and rewrite calibration.json."""
    if step not in STEP_FUNCTIONS:
        raise CalibrationError(f"unknown step {step!r}; steps: {', '.join(STEPS)}, all")
    for dep in DEPENDS[step]:
        if not ctx.done(dep):
            raise CalibrationError(f"step {step!r} needs {dep!r} first (or run 'all')")
    if force or not ctx.done(step):
        logger.info("calibration step %s", step)
        await STEP_FUNCTIONS[step](bench, ctx)
    else:
        logger.info("calibration step %s: already done (use --force to redo)", step)
    cal = assemble(bench, ctx)
    cal.save(ctx.out / "calibration.json")
    return cal


async def run_all(
    bench: CalibrationBench, ctx: StepContext, *, force: bool = False
) -> CalibrationFile:
    """Every step in dependency order; completed steps are skipped unless `force`, and the
    `active` (`tuners`) step on a bench without active coupling elements (node tuners)."""
    cal: CalibrationFile | None = None
    for step in STEPS:
        if step == "active" and not bench.config.wiring.active:
            continue
        if step == "tuners" and not bench.config.wiring.tuners:
            continue
        cal = await run_step(bench, ctx, step, force=force)
    assert cal is not None
    return cal
