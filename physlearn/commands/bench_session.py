"""`physlearn train` on a bench (``[system] kind = "bench"``): the dry run and the arm step, before
the run itself (`physlearn.training.session.run_session`: retries, per-step records, arming, the
safe state on every exit path).

* ``--dry-run``: every planned setting is checked — DAC volts of the initial parameters and of
  every corner of the parameter bounds through the calibration against the DAC limits, the drive
  of every data-set input (with a nudge of up to β × the drive peak on the outputs) against the
  generator limits — and the calibration file is checked against the connected instruments'
  identities. Nothing is switched on; exit 0 if everything passes.
* without ``--arm`` the command refuses to enable outputs (exit 2, with a message);
* ``--arm``: connect, arm (outputs enabled), train; transient instrument faults are retried
  (the measurement is repeated, never skipped); a persistent fault, an interlock trip, an
  exception or SIGINT/SIGTERM put the bench in its safe state before the process exits.

Per-step records (`physlearn.training.bench_records`): ``records.h5`` in the run directory, one
row per training step — parameters the gradient was measured at, gradient, loss, the raw scope
volts of every measurement of the step, the conjugate quantities, settle times and decay
estimates, faults, the instrument settings, the calibration version, units as attributes.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from physlearn.systems.bench.system import BenchSystem
from physlearn.training.setup import TrainSetup

__all__ = ["dry_run", "ready"]


def dry_run(setup: TrainSetup, bench: BenchSystem) -> dict[str, Any]:
    """Check every planned setting (no connection, nothing written)."""
    spec, ds = setup.spec, setup.dataset
    lo, hi = spec.parameter_bounds()
    beta = float(setup.config.estimator.kwargs().get("beta", 0.0) or 0.0)
    inputs = np.concatenate([ds.x_train, ds.x_test], axis=0)
    return bench.plan_check([setup.initial_parameters(), lo, hi], inputs, beta)


async def ready(setup: TrainSetup, bench: BenchSystem, args: argparse.Namespace) -> bool:
    """The dry run, then connect (the calibration is checked against the identities): True to
    train (``--arm``); False after ``--dry-run``; without ``--arm``, exit 2 (nothing enabled)."""
    report = dry_run(setup, bench)
    await bench.connect()
    print(
        f"dry run: {report['dac_settings']} DAC settings and {report['arb_waveforms']} "
        f"drive waveforms for {report['inputs']} inputs within the limits and the calibrated "
        f"range; calibration {bench.calibration_version} matches the connected instruments"
    )
    if args.dry_run:
        await bench.disconnect()
        return False
    if not args.arm:
        await bench.disconnect()
        print(
            "refusing to enable the bench outputs without --arm: check the dry run above "
            "(physlearn train --dry-run), then run again with --arm",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return True
