"""Measurement primitives of the calibration: multisine transfer functions on the scopes,
lock-in phasors of a sine drive, and scope records, all waiting through the bench `Clock`.

Multisine. Each generator channel plays a periodic arb (period `period_s`, zero-order hold at
`sample_rate_hz`) containing sines on its own set of frequency lines (channels interleaved, so
one record gives every column of the transfer matrix). The scope, triggered on the generator
sync (rising at the arb's sample 0), records exactly one arb period; the DFT of the record at
line k divided by the DFT of the *played* (quantised, zero-order-held) arb at line k is the
transfer H_sj. Noise per line comes from the record's unexcited lines above the band (white).

Several scopes. Every scope's EXT input is cabled to the same generator sync, so a record that
reads node waveforms arms every scope for the same sync edge (concurrently) and merges their
channels: each record's time axis is relative to its own trigger instant (the sync edge), so the
records of one acquisition are simultaneous and are required to share one time grid. A node
sensed by several scopes (the reference node that stitches the groups) is compared across them
(`stitch_check`): a scope that recorded another edge, or a mis-cabled channel, is an error
naming both scopes.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from physlearn.calibration.bench import CalibrationBench
from physlearn.calibration.model import Measurement
from physlearn.drivers.rigol_ds1000z import Waveform
from physlearn.errors import CalibrationError

logger = logging.getLogger(__name__)

Array = NDArray[np.float64]
CArray = NDArray[np.complex128]


@dataclass(frozen=True)
class MultisinePlan:
    """Lines k/period_s, k in [k_lo, k_hi]; drive j gets lines with k ≡ j (mod n_drives)."""

    period_s: float = 1.2
    sample_rate_hz: float = 1600.0
    f_lo_hz: float = 12.0
    f_hi_hz: float = 60.0
    peak_v: float = 0.05
    seed: int = 1

    @property
    def n_points(self) -> int:
        return round(self.period_s * self.sample_rate_hz)

    def lines(self, j: int, n_drives: int) -> NDArray[np.intp]:
        k_lo = math.ceil(self.f_lo_hz * self.period_s)
        k_hi = math.floor(self.f_hi_hz * self.period_s)
        k = np.arange(k_lo, k_hi + 1)
        return k[(k % n_drives) == j]

    def samples(self, j: int, n_drives: int) -> Array:
        """The arb samples (volts) of drive j: Schroeder-phased lines scaled to `peak_v`."""
        k = self.lines(j, n_drives)
        rng = np.random.default_rng(self.seed + 7919 * j)
        phase = -np.pi * np.arange(k.size) ** 2 / k.size + rng.uniform(0, 0.2, k.size)
        t = np.arange(self.n_points) / self.sample_rate_hz
        x = np.sin(2 * np.pi * k[:, None] * t[None, :] / self.period_s + phase[:, None]).sum(0)
        return np.asarray(x * (self.peak_v / np.max(np.abs(x))), dtype=np.float64)

    def played_spectrum(self, samples_v: Array, k: NDArray[np.intp]) -> CArray:
        """Complex amplitude (sin convention: v = Im(A e^{iωt})) of the zero-order-held arb at
        lines k: c_k = 2i·DFT_k/N · sinc(k/N) e^{−iπk/N}."""
        n = samples_v.size
        dft = np.fft.fft(samples_v)[k] / n
        zoh = np.sinc(k / n) * np.exp(-1j * np.pi * k / n)
        out: CArray = 2j * dft * zoh
        return out


def record_spectrum(wave: Waveform, n_lines: int) -> tuple[CArray, float]:
    """(complex amplitudes of the record at lines 0..n_lines−1 in the sin convention, the
    per-line noise σ per real/imaginary part estimated from the top quarter of the spectrum)."""
    v = wave.volts
    n = v.size
    c = 2j * np.fft.fft(v) / n
    # sample i is at t = (i − xref)·xinc + xorigin relative to the trigger
    t0 = float(wave.t_s[0])
    k_all = np.arange(n)
    c = c * np.exp(-2j * np.pi * k_all * t0 / (n * float(wave.t_s[1] - wave.t_s[0])))
    top = c[int(0.6 * n / 2) : n // 2 - 1]
    sigma = float(np.sqrt(np.mean(np.abs(top) ** 2) / 2.0))
    return c[:n_lines], sigma


async def configure_scope_for(
    bench: CalibrationBench,
    scope: str,
    channels: list[int],
    span_v: dict[int, float],
    averages: int = 1,
) -> None:
    """Display `channels` with a scale making ±span fit in ±3.5 divisions; trigger on EXT."""
    s = bench.scope(scope)
    for ch in range(1, 5):
        if ch in channels:
            scale = max(span_v.get(ch, 0.05), 1e-3) / 3.5
            await s.configure_channel(ch, scale_v_per_div=scale, offset_v=0.0, probe=1.0)
        else:
            await s.set_channel_display(ch, False)
    if averages > 1:
        await s.set_acquisition("AVERages", averages)
    else:
        await s.set_acquisition("NORMal")
    await s.set_trigger_edge("EXT", level_v=1.0, slope="POS")


async def scope_record(
    bench: CalibrationBench,
    scope: str,
    channels: list[int],
    *,
    length_s: float,
    arm_wait_s: float,
    what: str,
    averages: int = 1,
) -> dict[int, Waveform]:
    """One triggered single acquisition of `channels` starting at the trigger and lasting
    `length_s` (12 divisions). Clipping raises, naming the instrument and channel."""
    s = bench.scope(scope)
    await s.set_timebase(length_s / 12.0, length_s / 2.0)
    await s.single()
    await bench.clock.sleep(arm_wait_s + length_s * (2 * averages - 1))
    await s.wait_triggered(
        timeout_s=2.0 * averages * length_s + 1.0, poll_s=0.1, sleep=bench.clock.sleep
    )
    waves = await s.read_channels(channels)
    for ch, w in waves.items():
        if w.clipped:
            raise CalibrationError(
                f"{what}: {scope} channel {ch} clipped (signal beyond the ADC range); "
                "reduce the drive or widen the channel scale"
            )
    return waves


def wave_key(scopes: Sequence[str], scope: str, channel: int) -> str:
    """Raw-data key prefix of one scope channel: `scope_ch<c>` when one scope is recorded (the
    one-scope name), `<scope>_ch<c>` when several scopes are merged."""
    return f"scope_ch{channel}" if len(scopes) == 1 else f"{scope}_ch{channel}"


def scope_paths(bench: CalibrationBench, scopes: Sequence[str]) -> list[tuple[int, str, int]]:
    """(sense path, scope, channel) of every sense path on `scopes`, in wiring order."""
    return [
        (i, sw.instrument, sw.channel or 1)
        for i, sw in enumerate(bench.config.wiring.sense)
        if sw.instrument in scopes
    ]


def channels_by_scope(bench: CalibrationBench, scopes: Sequence[str]) -> dict[str, list[int]]:
    """scope → its sensed channels (wiring order), for every scope of `scopes` (in that order)."""
    out: dict[str, list[int]] = {s: [] for s in scopes}
    for _, s, ch in scope_paths(bench, scopes):
        out[s].append(ch)
    return out


async def scopes_record(
    bench: CalibrationBench,
    channels: Mapping[str, list[int]],
    *,
    length_s: float,
    arm_wait_s: float,
    what: str,
    averages: int = 1,
) -> dict[str, dict[int, Waveform]]:
    """`scope_record` on every scope of `channels` for the same sync edge: all scopes armed
    together (asyncio.gather), one wait on the bench clock, then each read. The records of one
    acquisition must share their time grid (relative to each scope's trigger): a scope whose
    timebase or sample clock differs is an error naming both scopes. One scope: exactly
    `scope_record`."""
    names = list(channels)
    if len(names) == 1:
        return {
            names[0]: await scope_record(
                bench,
                names[0],
                channels[names[0]],
                length_s=length_s,
                arm_wait_s=arm_wait_s,
                what=what,
                averages=averages,
            )
        }

    async def arm(name: str) -> None:
        s = bench.scope(name)
        await s.set_timebase(length_s / 12.0, length_s / 2.0)
        await s.single()

    await asyncio.gather(*(arm(n) for n in names))
    await bench.clock.sleep(arm_wait_s + length_s * (2 * averages - 1))
    for n in names:  # all complete after the wait: polling does not advance the clock
        await bench.scope(n).wait_triggered(
            timeout_s=2.0 * averages * length_s + 1.0, poll_s=0.1, sleep=bench.clock.sleep
        )
    reads = await asyncio.gather(*(bench.scope(n).read_channels(channels[n]) for n in names))
    out = dict(zip(names, reads, strict=True))
    first = names[0]
    t_ref = next(iter(out[first].values())).t_s
    for n, waves in out.items():
        for ch, w in waves.items():
            if w.clipped:
                raise CalibrationError(
                    f"{what}: {n} channel {ch} clipped (signal beyond the ADC range); "
                    "reduce the drive or widen the channel scale"
                )
            xinc = float(t_ref[1] - t_ref[0])
            if w.t_s.shape != t_ref.shape or not np.allclose(w.t_s, t_ref, atol=1e-6 * xinc):
                raise CalibrationError(
                    f"{what}: {n} channel {ch} and {first} do not share one time grid "
                    f"({w.t_s.size} points from {w.t_s[0]:.6g} s step "
                    f"{float(w.t_s[1] - w.t_s[0]):.6g} s vs {t_ref.size} from {t_ref[0]:.6g} s "
                    f"step {xinc:.6g} s): the scopes' timebases differ"
                )
    return out


def shared_nodes(bench: CalibrationBench, scopes: Sequence[str]) -> list[tuple[int, int, int]]:
    """(node, path a, path b): every node sensed on more than one of `scopes`, its first path
    (wiring order) paired with each of its paths on another scope."""
    paths = scope_paths(bench, scopes)
    out = []
    for i, (pa, sa, _) in enumerate(paths):
        node = bench.config.wiring.sense[pa].node
        if any(bench.config.wiring.sense[q].node == node for q, _, _ in paths[:i]):
            continue
        for pb, sb, _ in paths[i + 1 :]:
            if bench.config.wiring.sense[pb].node == node and sb != sa:
                out.append((node, pa, pb))
    return out


#: relative rms residual above which a node's records on two scopes disagree (`stitch_check`)
STITCH_TOLERANCE = 0.1


def stitch_check(
    bench: CalibrationBench,
    records: Mapping[str, Mapping[int, Waveform]],
    what: str,
    ratio: Mapping[tuple[int, int], float] | None = None,
    tolerance: float = STITCH_TOLERANCE,
) -> dict[str, float]:
    """The shared nodes' records agree across scopes: record b ≈ r·a(t − δ) + c (r the gain
    ratio of path b to path a — fitted, or given by `ratio[(a, b)]` — δ a small delay
    difference, linearised as a·r + h·ȧ), relative rms residual ≤ `tolerance` (plus three
    times the rms of both records' quantisation, relative to the signal). A disagreement
    (a scope recorded another sync edge, or a channel is mis-cabled) is an error naming both
    scopes. Returns "<path a>-<path b>" → relative residual."""
    sense = bench.config.wiring.sense
    out: dict[str, float] = {}
    for node, pa, pb in shared_nodes(bench, list(records)):
        sa, ca, sb, cb = (
            sense[pa].instrument,
            sense[pa].channel or 1,
            sense[pb].instrument,
            (sense[pb].channel or 1),
        )
        a = np.asarray(records[sa][ca].volts, dtype=np.float64)
        b = np.asarray(records[sb][cb].volts, dtype=np.float64)
        da = np.gradient(a)
        if ratio is None:
            basis = np.column_stack([a, da, np.ones_like(a)])
            target = b
        else:
            basis = np.column_stack([da, np.ones_like(a)])
            target = b - ratio[(pa, pb)] * a
        coef, *_ = np.linalg.lstsq(basis, target, rcond=None)
        resid = target - basis @ coef
        scale = float(np.sqrt(np.mean((b - np.mean(b)) ** 2)))
        rel = float(np.sqrt(np.mean(resid**2)) / max(scale, 1e-12))
        out[f"{pa}-{pb}"] = rel
        # the 8-bit quantisation of both records (uniform, step yincrement) is allowed for
        g = float(coef[0]) if ratio is None else ratio[(pa, pb)]
        qa = records[sa][ca].preamble.yincrement_v
        qb = records[sb][cb].preamble.yincrement_v
        floor = 3.0 * math.hypot(g * qa, qb) / math.sqrt(12.0) / max(scale, 1e-12)
        if not rel <= tolerance + floor:
            raise CalibrationError(
                f"{what}: stitch check failed: node {node} reads differently on {sa} channel "
                f"{ca} and {sb} channel {cb} (rms residual {rel:.1%} of the signal after "
                f"{'the best gain, offset' if ratio is None else 'the fitted gain ratio, offset'}"
                " and delay): the two scopes did not record the same sync edge (check both "
                "EXT trigger cables to the generator sync) or a channel is mis-cabled"
            )
    return out


async def multisine_transfer(
    bench: CalibrationBench,
    plan: MultisinePlan,
    *,
    scope: str | Sequence[str],
    settle_s: float,
    what: str,
    span_v: Mapping[int, float] | Mapping[tuple[str, int], float] | None = None,
    averages: int = 1,
    stitch_tolerance: float = STITCH_TOLERANCE,
) -> tuple[Measurement, dict[str, Array]]:
    """Play the multisine on every drive, wait `settle_s`, record one arb period on every
    channel of every scope of `scope` (one name or several: armed for the same sync edge,
    channels merged, the shared nodes' records checked by `stitch_check`); returns the transfer
    `Measurement` (those scopes' paths) and the raw data (`wave_key` names the records, and
    `stitch_<a>-<b>` the stitch residuals). `span_v`: expected peak volts per channel, keyed by
    channel (one scope) or by (scope, channel)."""
    scopes = [scope] if isinstance(scope, str) else list(scope)
    sp = scope_paths(bench, scopes)
    by_scope = channels_by_scope(bench, scopes)
    spans: dict[str, dict[int, float]] = {s: {} for s in scopes}
    for key, v in (span_v or {}).items():
        if isinstance(key, tuple):
            spans[key[0]][key[1]] = v
        else:
            spans[scopes[0]][key] = v
    played, t_origin = await _play_multisine(bench, plan)
    for s in scopes:
        await configure_scope_for(bench, s, by_scope[s], spans[s])
    # wait whole arb periods so the record starts at a sync edge just after arming
    n_wait = max(1, math.ceil(settle_s / plan.period_s))
    await bench.clock.sleep(n_wait * plan.period_s - 0.01)
    waves = await _averaged_records(bench, plan, by_scope, t_origin, averages, what)
    stitch = stitch_check(bench, waves, what, tolerance=stitch_tolerance)
    m, raw = _transfer_of_records(plan, sp, scopes, waves, played, what)
    raw["arb_origin_s"] = np.array([t_origin])
    for k_, rel in stitch.items():
        raw[f"stitch_{k_}"] = np.array([rel])
    return m, raw


async def single_drive_transfer(
    bench: CalibrationBench,
    plan: MultisinePlan,
    drive: int,
    *,
    scope: Sequence[str],
    settle_s: float,
    what: str,
    averages: int = 1,
) -> Measurement:
    """One column of the transfer matrix: drive ``drive`` alone plays every line of `plan`
    (the others play zeros), every channel of ``scope`` recorded as in `multisine_transfer`;
    the `Measurement`'s drive index is ``drive``."""
    scopes = list(scope)
    by_scope = channels_by_scope(bench, scopes)
    played, t_origin = await _play_multisine(bench, plan, only=drive)
    for s in scopes:
        await configure_scope_for(bench, s, by_scope[s], {})
    n_wait = max(1, math.ceil(settle_s / plan.period_s))
    await bench.clock.sleep(n_wait * plan.period_s - 0.01)
    waves = await _averaged_records(bench, plan, by_scope, t_origin, averages, what)
    sp = scope_paths(bench, scopes)
    m, _ = _transfer_of_records(plan, sp, scopes, waves, [played[drive]], what)
    return Measurement(m.omega_rad_s, m.path, np.full_like(m.drive, drive), m.h, m.sigma)


async def _play_multisine(
    bench: CalibrationBench, plan: MultisinePlan, only: int | None = None
) -> tuple[list[Array], float]:
    """Upload and play drive j's multisine on every drive (``only``: that drive plays every
    line, the others zeros), phase the generators, switch the sync on (the sync generator's
    first drive channel) and the outputs on; returns the played samples (V) per drive and the
    bench-clock time (s) of the arbs' origin."""
    cfg = bench.config
    drives = cfg.wiring.drives
    n_drives = len(drives)
    played: list[Array] = []
    gens = sorted({d.instrument for d in drives})
    for j, dw in enumerate(drives):
        gen = bench.generator(dw.instrument)
        if only is None:
            samples = plan.samples(j, n_drives)
        else:
            samples = plan.samples(0, 1) if j == only else np.zeros(plan.n_points)
        await gen.clear_arbs(dw.channel)
        info = await gen.upload_arb(dw.channel, f"CAL{j}", samples, plan.sample_rate_hz)
        await gen.play_arb(dw.channel, f"CAL{j}")
        played.append(info.samples_v)
    sync_gen = cfg.wiring.sync.instrument if cfg.wiring.sync else gens[0]
    for g in gens:
        await bench.generator(g).sync_phases()
    t_origin = await bench.clock.now()
    first = next(d for d in drives if d.instrument == sync_gen)
    await bench.generator(sync_gen).set_sync(True, first.channel)
    for dw in drives:
        await bench.generator(dw.instrument).output(dw.channel, True)
    return played, t_origin


async def _averaged_records(
    bench: CalibrationBench,
    plan: MultisinePlan,
    by_scope: Mapping[str, list[int]],
    t_origin: float,
    averages: int,
    what: str,
) -> dict[str, dict[int, Waveform]]:
    """`averages` successive one-period records of every scope (each at the next sync edge,
    arbs' origin `t_origin` on the bench clock), averaged in software."""
    waves = await scopes_record(bench, by_scope, length_s=plan.period_s, arm_wait_s=0.02, what=what)
    for _ in range(averages - 1):  # software average of successive single records
        now = await bench.clock.now()
        nxt = t_origin + math.ceil((now - t_origin + 0.005) / plan.period_s) * plan.period_s
        await bench.clock.sleep(max(0.0, nxt - now - 0.01))
        more = await scopes_record(
            bench, by_scope, length_s=plan.period_s, arm_wait_s=0.02, what=what
        )
        waves = {
            s: {
                c: Waveform(w.channel, w.t_s, w.volts + more[s][c].volts, w.clipped, w.preamble)
                for c, w in ws.items()
            }
            for s, ws in waves.items()
        }
    return {
        s: {
            c: Waveform(w.channel, w.t_s, w.volts / averages, w.clipped, w.preamble)
            for c, w in ws.items()
        }
        for s, ws in waves.items()
    }


def _transfer_of_records(
    plan: MultisinePlan,
    sp: list[tuple[int, str, int]],
    scopes: list[str],
    waves: Mapping[str, Mapping[int, Waveform]],
    played: list[Array],
    what: str,
) -> tuple[Measurement, dict[str, Array]]:
    """The transfer `Measurement` of the scope paths `sp` from one-period records `waves` of
    the `played` drives, and the raw data (each record's volts and times, the played drives)."""
    n_drives = len(played)
    n = plan.n_points
    omegas, pth, drv, hs, sig = [], [], [], [], []
    raw: dict[str, Array] = {}
    for p, s, ch in sp:
        w = waves[s][ch]
        if w.volts.size != round(plan.period_s / float(w.t_s[1] - w.t_s[0])):
            raise CalibrationError(f"{what}: {s} channel {ch}: record is not one period")
        spec, sigma = record_spectrum(w, n // 2)
        name = wave_key(scopes, s, ch)
        raw[f"{name}_v"] = w.volts
        raw[f"{name}_t_s"] = w.t_s
        for j in range(n_drives):
            k = plan.lines(j, n_drives)
            vin = plan.played_spectrum(played[j], k)
            hs.append(spec[k] / vin)
            sig.append(sigma / np.abs(vin))
            omegas.append(2 * np.pi * k / plan.period_s)
            pth.append(np.full(k.size, p))
            drv.append(np.full(k.size, j))
    for j in range(n_drives):
        raw[f"drive{j}_v"] = played[j]
    m = Measurement(
        np.concatenate(omegas),
        np.concatenate(pth).astype(np.intp),
        np.concatenate(drv).astype(np.intp),
        np.concatenate(hs),
        np.concatenate(sig),
    )
    return m, raw


async def drives_off(bench: CalibrationBench) -> None:
    for dw in bench.config.wiring.drives:
        await bench.generator(dw.instrument).output(dw.channel, False)


async def lockin_sweep(
    bench: CalibrationBench,
    frequencies_hz: Array,
    *,
    drive: int,
    amplitude_v: float,
    settle_s: float,
    what: str,
) -> tuple[Measurement, dict[str, Array]]:
    """Sine on drive `drive` at each frequency; every lock-in (external reference = the sync,
    reference phase 0) read once settled: after `settle_s` (the network) and at least the
    lock-ins' own settling to 1e-5 of a step (a 24 dB/oct τ = 0.1 s filter still holds
    ≈ 2e-3 of the previous frequency's reading after 1.2 s). Returns the lock-in-path transfer
    values H = √2·(X+iY)/amplitude and the raw readings (with `h` and `sigma`)."""
    cfg = bench.config
    dw = cfg.wiring.drives[drive]
    gen = bench.generator(dw.instrument)
    paths = [
        i
        for i, sw in enumerate(cfg.wiring.sense)
        if cfg.instruments[sw.instrument].role == "lockin"
    ]
    for other in cfg.wiring.drives:
        await bench.generator(other.instrument).output(other.channel, False)
    for p in paths:
        li = bench.lockin(cfg.wiring.sense[p].instrument)
        await li.set_reference_external()
        await li.set_time_constant(0.1, slope_db_per_oct=24)
        await li.set_sensitivity(0.2)
        await li.set_phase(0.0)
        settle_s = max(settle_s, await li.auto_settle_time_s(1e-5))
    await gen.set_sine(dw.channel, float(frequencies_hz[0]), amplitude_v)
    await gen.set_sync(True, dw.channel)
    await gen.output(dw.channel, True)
    omegas, pth, drv, hs = [], [], [], []
    raw_z = np.zeros((len(frequencies_hz), len(paths)), dtype=np.complex128)
    f_played = np.zeros(len(frequencies_hz))
    for i, f in enumerate(frequencies_hz):
        f_played[i] = await gen.set_sine(dw.channel, float(f), amplitude_v)
        await bench.clock.sleep(settle_s)
        for q, p in enumerate(paths):
            name = cfg.wiring.sense[p].instrument
            z = await bench.lockin(name).read_xy(check_overload=True)
            raw_z[i, q] = z
            omegas.append(2 * np.pi * f_played[i])
            pth.append(p)
            drv.append(drive)
            hs.append(math.sqrt(2.0) * z / amplitude_v)
    await gen.output(dw.channel, False)
    h = np.array(hs, dtype=np.complex128)
    # noise: lock-in reading scatter is not available from one reading; use a floor relative
    # to the signal (output resolution) plus the noise-density estimate at the time constant
    sigma = np.maximum(1e-4 * np.abs(h), 1e-6 / amplitude_v)
    m = Measurement(
        np.array(omegas),
        np.array(pth, dtype=np.intp),
        np.array(drv, dtype=np.intp),
        h,
        sigma,
    )
    raw = {"frequency_hz": f_played, "xy_v": raw_z, "paths": np.array(paths)}
    raw.update({"h": h, "sigma": sigma, "omega_rad_s": m.omega_rad_s, "path": m.path})
    raw.update({"drive": m.drive, "settle_s": np.array([settle_s])})
    return m, raw
