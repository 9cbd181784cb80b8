"""The response memory (`physlearn.systems.bench.response_memory`): scope ranging rule, recall distances, and
through the in-memory emulated XOR bench, measurements planned from the last settled response
to the same input — and a wrong prediction caught by the measured change, never trusted."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest
from test_acquisition_window import make

from physlearn.drivers.rigol_ds1000z import V_DIVISIONS
from physlearn.systems.bench.journal import MeasurementRecord, SampleRecord
from physlearn.systems.bench.ranging import ranged_scale
from physlearn.systems.bench.response_memory import ResponseMemory

pytestmark = pytest.mark.timeout(300)


def test_ranged_scale_hysteretic_and_canonical() -> None:
    top = 2.0  # V/div the interlock allows
    full = V_DIVISIONS / 2  # full scale (V) at 1 V/div
    # hysteretic: anything between 0.2 and 1 of full scale keeps the scale
    for frac in (0.21, 0.5, 0.99):
        assert ranged_scale(frac * full, 1.0, top, clipped=False, canonical=False) == 1.0
    # below 0.2: down to 1-2-5 ≥ 1.4 × (peak + 2 LSB); clipped: 1-2-5 ≥ 2.01 × up, capped at top
    down = ranged_scale(0.1 * full, 1.0, top, clipped=False, canonical=False)
    assert down == 0.2 and 0.1 * full <= V_DIVISIONS / 2 * down
    assert ranged_scale(0.8, 0.2, top, clipped=True, canonical=False) == 0.5  # 1-2-5 ≥ 2.01 ×
    assert ranged_scale(full, 1.0, top, clipped=True, canonical=False) == top
    # canonical: a function of the peak alone, whatever the present scale
    got = {ranged_scale(0.3 * full, s, top, clipped=False, canonical=True) for s in (0.2, 1, 2)}
    assert got == {0.5}
    assert ranged_scale(1e-9, 1.0, top, clipped=False, canonical=True) == 1e-3  # 1 mV/div floor


def test_recall_distance_capacity_and_unknown_inputs() -> None:
    mem = ResponseMemory(capacity=2)
    drive = np.ones((5, 3))
    x = np.arange(15.0).reshape(5, 3)
    key = mem.key(drive)
    assert mem.recall(key, drive, None, 1.0) is None
    mem.remember(key, x, drive, np.array([0.1, 0.2]))
    hit = mem.recall(key, drive * 1.01, np.array([0.1, 0.25]), 0.5)
    assert hit is not None and np.array_equal(hit.x, x)
    # relative force change 0.01/1.01 plus the largest coupling change 0.05 in units of 0.5
    assert hit.distance == pytest.approx(0.01 / 1.01 + 0.1)
    # parameters of another shape: nothing can be said about the distance
    other = mem.recall(key, drive, np.array([0.1]), 0.5)
    assert other is not None and math.isinf(other.distance)
    for k in range(2):
        mem.remember(mem.key(drive * (k + 2)), x, drive, None)
    assert len(mem) == 2 and mem.recall(key, drive, None, 1.0) is None  # least recent dropped
    with pytest.raises(ValueError):
        ResponseMemory(capacity=0)


def _raws(journal: list[MeasurementRecord]) -> list[SampleRecord]:
    return [r for entry in journal for r in entry.samples]


def test_bench_plans_from_the_remembered_response_and_verifies_it() -> None:
    bench, sysb = make()  # calibrated decay rate judges settling, K = 1
    spec = sysb.spec
    alpha = spec.initial_parameters()
    u = np.array([[1.0, 0.0], [0.0, 1.0]])
    try:

        async def run() -> tuple[list[MeasurementRecord], ...]:
            await sysb.connect()
            await sysb.arm()
            await sysb.set_parameters(alpha)
            await sysb.set_input(u)
            await sysb.measure()
            first = sysb.drain_journal()
            await sysb.set_parameters(alpha * 1.001)
            await sysb.measure()
            second = sysb.drain_journal()
            # a wrong memory: the second input "responds" like the first one
            keys = [ResponseMemory.key(f) for f in await sysb.drive_forces()]
            bogus = sysb.settler.memory.recall(keys[0], np.zeros(1), None, 1.0)
            assert bogus is not None
            sysb.settler.memory.remember(
                keys[1], bogus.x, (await sysb.drive_forces())[1], sysb.settler.alpha
            )
            await sysb.measure()
            return first, second, sysb.drain_journal()

        first, second, third = asyncio.run(run())
    finally:
        asyncio.run(sysb.close())
        bench.stop()
    r1, r2, r3 = _raws(first), _raws(second), _raws(third)
    assert not any(r.predicted_from_memory for r in r1)
    assert all(r.previews > 0 for r in r1[1:])  # ranged from previews without a memory
    # same inputs, parameters moved by 0.1 %: planned from the memory, one record each (the
    # ranging was right), the predicted transient within 10 % of the measured one
    for r in r2:
        assert r.predicted_from_memory and r.previews == 0 and r.records == 1
        assert r.rho_predicted == pytest.approx(r.rho_measured, rel=0.1)
    # the wrong prediction (input 1 after input 0 predicted as no change at all): the measured
    # change overrules it — acquired again after the settle time of the real transient
    bad = r3[1]
    assert bad.predicted_from_memory and bad.rho_predicted < 0.1 * bad.rho_measured
    assert bad.acquisitions >= 2
    # (rho_measured includes the margin c: the settle rule is c ρ e^{−σ t} ≤ tol)
    need = math.log(bad.rho_measured / sysb.options.settle.tol) / bad.decay_rate_per_s
    assert bad.t_window - bad.t_change >= need - 1e-9


def test_memory_state_round_trips_through_a_checkpoint(tmp_path: Any) -> None:
    from physlearn.training.runstore import load_checkpoint, write_checkpoint

    mem = ResponseMemory()
    rng = np.random.default_rng(3)
    drives = [rng.normal(size=(5, 3)) for _ in range(3)]
    for i, d in enumerate(drives):
        mem.remember(mem.key(d), d * 2, d, None if i == 1 else np.arange(4.0) + i)
    state = mem.state_dict()
    write_checkpoint(
        tmp_path,
        params=np.zeros(4),
        optimizer_state={},
        rng=np.random.default_rng(0),
        epoch=0,
        step=1,
        extra={"m": state},
    )
    back = ResponseMemory()
    back.load_state_dict(load_checkpoint(tmp_path).extra["m"], (5, 3))
    assert len(back) == 3
    for i, d in enumerate(drives):
        a = None if i == 1 else np.arange(4.0) + i
        got, want = back.recall(mem.key(d), d, a, 1.0), mem.recall(mem.key(d), d, a, 1.0)
        assert got is not None and want is not None
        assert np.array_equal(got.x, want.x) and got.distance == want.distance == 0.0
    with pytest.raises(ValueError, match="shape"):
        ResponseMemory().load_state_dict(state, (4, 3))
    empty = ResponseMemory()
    empty.load_state_dict(ResponseMemory().state_dict(), (5, 3))
    assert len(empty) == 0


@pytest.mark.parametrize(
    "case",
    [
        "both_fixed",  # the peak reads lower on the finer scale, the boundary between
        "only_finer",
        "only_coarser",
        "neither",  # the two scales send the channel to each other
        "far",
    ],
)
def test_canonical_ranging_ends_on_one_scale_from_either_side(case: str) -> None:
    from physlearn.systems.bench.ranging import canonical_choice

    top = 5.0
    theta = 0.2 * (V_DIVISIONS / 2) / 1.4  # peak at which 0.2 → 0.5 V/div
    # (peak read on the finer 0.2 V/div, on the coarser 0.5 V/div)
    peaks = {
        "both_fixed": (theta * 0.999, theta * 1.001),
        "only_finer": (theta * 0.999, theta * 0.998),
        "only_coarser": (theta * 1.001, theta * 1.002),
        "neither": (theta * 1.001, theta * 0.999),
        "far": (theta * 0.7, theta * 0.7),
    }[case]

    def peak(scale: float) -> float:
        return peaks[0] if scale <= 0.2 else peaks[1]

    def settle(start: float) -> tuple[float, int]:
        tried: dict[float, float] = {}
        scale, records = start, 0
        while True:
            records += 1
            want = ranged_scale(peak(scale), scale, top, clipped=False, canonical=True)
            new = canonical_choice(tried, scale, want, peak(scale), top)
            if new == scale:
                return scale, records
            scale = new

    ends = {start: settle(start) for start in (0.01, 0.2, 0.5, top)}
    finals = {end for end, _ in ends.values()}
    assert len(finals) == 1, ends
    want_final = {"only_finer": 0.2, "far": 0.2}.get(case, 0.5)
    assert finals == {want_final}
    assert max(n for _, n in ends.values()) <= 5  # within the re-ranges a measurement allows
