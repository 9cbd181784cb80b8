"""``python tests/telemetry/telemetry_bench_main.py TRAIN-ARGS...``: ``physlearn train --arm`` on the
in-memory emulated bench with test hooks from the JSON in $PHYSLEARN_TEST_TELEMETRY_HOOKS:

* everything of tests/training/test_resume_bench.py's hooks (``faults``, ``noise_seed``);
* ``interlock_at``: k — the k-th `BenchSystem.measure` runs with the interlock's limit at 1e-9
  (one trip; the limit is restored after it);
* ``persistent_at``: [k, instrument] — from the k-th measure on, the instrument's emulator
  garbles every reply, until the ``clear_at_reconnect``-th `BenchSystem.reconnect` after that;
* ``drift_at``: k — before the k-th measure, the hidden truth's sensing gains grow by 25 %;
* ``trace``: a file — after every `BenchSystem.pause` and `close` (the safe state), the
  emulators' generator outputs (on/off) and DAC volts, read back, appended as a JSON line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

ENV = "PHYSLEARN_TEST_TELEMETRY_HOOKS"


def outputs_state(bench: Any) -> dict[str, Any]:
    import numpy as np

    gens = [
        emu
        for emu in bench.emulators.values()
        if hasattr(emu, "channels") and hasattr(emu.channels[0], "output_on")
    ]
    on = [bool(ch.output_on) for g in gens for ch in g.channels]
    t = np.array([bench.clock.now()])
    dac = bench.emulators["qdac"].output_voltages(t)[0]
    return {"outputs_on": on, "dac_v": [float(v) for v in dac]}


def install(spec: dict[str, Any]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    from test_resume_bench import install_hooks

    from physlearn.systems.bench.system import BenchSystem

    state = install_hooks(spec, setattr)
    measure, reconnect = BenchSystem.measure, BenchSystem.reconnect
    pause, close = BenchSystem.pause, BenchSystem.close
    counts: dict[str, Any] = {"measures": 0, "reconnects_after": None}

    async def patched_measure(self: BenchSystem) -> Any:
        counts["measures"] += 1
        k = counts["measures"]
        bench = state["benches"][-1]
        if spec.get("drift_at") == k:
            bench.twin.truth.sensing_gain_v_per_unit[...] *= 1.25
        p = spec.get("persistent_at")
        if p is not None and p[0] == k:
            bench.emulators[p[1]].faults.garble_replies(10**9)
            counts["reconnects_after"] = 0
        if spec.get("interlock_at") == k:
            limit = self.interlock.max_response
            self.interlock.max_response = 1e-9
            try:
                return await measure(self)
            finally:
                self.interlock.max_response = limit
        return await measure(self)

    async def patched_reconnect(self: BenchSystem) -> None:
        n = counts["reconnects_after"]
        if n is not None:
            counts["reconnects_after"] = n + 1
            if n + 1 >= int(spec.get("clear_at_reconnect", 1)):
                p = spec["persistent_at"]
                state["benches"][-1].emulators[p[1]].faults.clear()
                counts["reconnects_after"] = None
        await reconnect(self)

    def trace(what: str) -> None:
        if spec.get("trace"):
            with open(spec["trace"], "a") as fh:
                fh.write(json.dumps({"at": what, **outputs_state(state["benches"][-1])}) + "\n")

    async def patched_pause(self: BenchSystem) -> None:
        await pause(self)
        trace("pause")

    async def patched_close(self: BenchSystem) -> None:
        await close(self)
        if state["benches"]:
            trace("close")

    BenchSystem.measure = patched_measure  # type: ignore[method-assign]
    BenchSystem.reconnect = patched_reconnect  # type: ignore[method-assign]
    BenchSystem.pause = patched_pause  # type: ignore[method-assign]
    BenchSystem.close = patched_close  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    install(json.loads(os.environ.get(ENV, "{}")))
    from physlearn.cli import main as cli_main

    return int(cli_main(["train", *argv]) or 0)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
