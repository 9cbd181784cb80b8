"""Measurement primitives of the calibration: multisine transfer functions on the scope,
lock-in phasors of a sine drive, and scope records, all waiting through the bench `Clock`.

Multisine. Each generator channel plays a periodic arb (period `period_s`, zero-order hold at
`sample_rate_hz`) containing sines on its own set of frequency lines (channels interleaved, so
one record gives every column of the transfer matrix). The scope, triggered on the generator
sync (rising at the arb's sample 0), records exactly one arb period; the DFT of the record at
line k divided by the DFT of the *played* (quantised, zero-order-held) arb at line k is the
transfer H_sj. Noise per line comes from the record's unexcited lines above the band (white).
"""

from __future__ import annotations

import logging
import math
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
    await bench.clock.wait(arm_wait_s + length_s * (2 * averages - 1))
    await s.wait_triggered(
        timeout_s=2.0 * averages * length_s + 1.0, poll_s=0.1, sleep=bench.clock.wait
    )
    waves = await s.read_channels(channels)
    for ch, w in waves.items():
        if w.clipped:
            raise CalibrationError(
                f"{what}: {scope} channel {ch} clipped (signal beyond the ADC range); "
                "reduce the drive or widen the channel scale"
            )
    return waves


async def multisine_transfer(
    bench: CalibrationBench,
    plan: MultisinePlan,
    *,
    scope: str,
    settle_s: float,
    what: str,
    span_v: dict[int, float] | None = None,
    averages: int = 1,
) -> tuple[Measurement, dict[str, Array]]:
    """Play the multisine on every drive, wait `settle_s`, record one arb period on every scope
    channel; returns the transfer `Measurement` (scope paths only) and the raw data."""
    cfg = bench.config
    drives = cfg.wiring.drives
    n_drives = len(drives)
    paths = [i for i, sw in enumerate(cfg.wiring.sense) if sw.instrument == scope]
    channels = [cfg.wiring.sense[i].channel or 1 for i in paths]
    played: list[Array] = []
    gens = sorted({d.instrument for d in drives})
    for j, dw in enumerate(drives):
        gen = bench.generator(dw.instrument)
        samples = plan.samples(j, n_drives)
        await gen.clear_arbs(dw.channel)
        info = await gen.upload_arb(dw.channel, f"CAL{j}", samples, plan.sample_rate_hz)
        await gen.play_arb(dw.channel, f"CAL{j}")
        played.append(info.samples_v)
    sync_gen = cfg.wiring.sync.instrument if cfg.wiring.sync else gens[0]
    for g in gens:
        await bench.generator(g).sync_phases()
    t_origin = bench.clock.now()
    first = next(d for d in drives if d.instrument == sync_gen)
    await bench.generator(sync_gen).set_sync(True, first.channel)
    for dw in drives:
        await bench.generator(dw.instrument).output(dw.channel, True)
    await configure_scope_for(bench, scope, channels, span_v or {})
    # wait whole arb periods so the record starts at a sync edge just after arming
    n_wait = max(1, math.ceil(settle_s / plan.period_s))
    await bench.clock.wait(n_wait * plan.period_s - 0.01)
    waves = await scope_record(
        bench, scope, channels, length_s=plan.period_s, arm_wait_s=0.02, what=what
    )
    for _ in range(averages - 1):  # software average of successive single records
        now = bench.clock.now()
        nxt = t_origin + math.ceil((now - t_origin + 0.005) / plan.period_s) * plan.period_s
        await bench.clock.wait(max(0.0, nxt - now - 0.01))
        more = await scope_record(
            bench, scope, channels, length_s=plan.period_s, arm_wait_s=0.02, what=what
        )
        waves = {
            c: Waveform(w.channel, w.t_s, w.volts + more[c].volts, w.clipped, w.preamble)
            for c, w in waves.items()
        }
    waves = {
        c: Waveform(w.channel, w.t_s, w.volts / averages, w.clipped, w.preamble)
        for c, w in waves.items()
    }
    n = plan.n_points
    omegas, pth, drv, hs, sig = [], [], [], [], []
    raw: dict[str, Array] = {}
    for p, ch in zip(paths, channels, strict=True):
        w = waves[ch]
        if w.volts.size != round(plan.period_s / float(w.t_s[1] - w.t_s[0])):
            raise CalibrationError(f"{what}: {scope} channel {ch}: record is not one period")
        spec, sigma = record_spectrum(w, n // 2)
        raw[f"scope_ch{ch}_v"] = w.volts
        raw[f"scope_ch{ch}_t_s"] = w.t_s
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
    raw["arb_origin_s"] = np.array([t_origin])
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
        await bench.clock.wait(settle_s)
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
