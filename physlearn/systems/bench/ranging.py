"""Scope V/div ranging: the 1-2-5 rule, and the two ranging policies of ``[system.bench.options]
ranging`` (`physlearn.systems.bench.options.BenchOptions`), chosen once from the options.

- `HystereticRanging` (default): a channel's V/div goes up when the record clipped and down
  when the peak falls below 0.2 of full scale; never oscillates on a noisy signal, but the scale
  a measurement ends at depends on the transient before it. Its plans may use the history
  (remembered responses, the input measured last).
- `CanonicalRanging`: the V/div is a function of the fitted waveform's peak alone (1-2-5 ≥ 1.4 ×
  peak), the records' samples sit on one lattice relative to the sync and are fitted by lattice
  phase, and no plan uses the history: a resumed run measures as the uninterrupted one.

In both, a channel never goes back down to a V/div the same measurement left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from physlearn.drivers.rigol_ds1000z import CODES_PER_DIVISION, V_DIVISIONS
from physlearn.errors import ConfigError
from physlearn.systems.bench.acquisition import scale_125_at_least

__all__ = [
    "CENTRED",
    "MEASURING",
    "CanonicalRanging",
    "ChannelPeak",
    "HystereticRanging",
    "RangingPolicy",
    "canonical_choice",
    "ranged_scale",
    "ranging_policy",
]

#: peak band (fractions of full scale) a measurement keeps a channel in (hysteretic ranging)
MEASURING = (0.2, 1.0)
#: peak band a preview or a prediction re-centres a channel into
CENTRED = (0.3, 0.8)


def ranged_scale(
    peak_v: float,
    scale_v: float,
    max_scale_v: float,
    *,
    clipped: bool,
    canonical: bool,
    band: tuple[float, float] = MEASURING,
) -> float:
    """The V/div a scope channel should have for a response of peak ``peak_v`` (V, from the
    channel's offset) measured at ``scale_v`` V/div (``clipped``: it left the ADC range).

    ``canonical``: 1-2-5 ≥ 1.4 × peak, a function of the peak alone. Otherwise hysteretic: kept
    unless clipped (then 1-2-5 ≥ 2.01 × the full scale) or the peak leaves ``band`` (fractions
    of full scale; default: below 0.2) (then 1-2-5 ≥ 1.4 × (peak + 2 LSB)), so ranging never
    oscillates on a noisy signal; a narrower band re-centres a channel ahead of a measurement
    (previews, predictions). Never above ``max_scale_v`` (the interlock's range) nor below
    1 mV/div."""
    full_v = V_DIVISIONS / 2 * scale_v
    inside = band[0] * full_v <= peak_v <= band[1] * full_v
    if not (clipped or not inside or canonical):
        return scale_v
    lsb_v = scale_v / CODES_PER_DIVISION
    grow = peak_v * 1.4 if canonical else (peak_v + 2 * lsb_v) * 1.4
    want = 2.01 * full_v if clipped else min(grow, max_scale_v * V_DIVISIONS / 2)
    return float(min(max(scale_125_at_least(want / (V_DIVISIONS / 2)), 1e-3), max_scale_v))


def canonical_choice(
    tried: dict[float, float], scale: float, want: float, peak_v: float, top: float
) -> float:
    """Canonical ranging's next V/div for a channel measured at ``scale`` whose fitted peak
    ``peak_v`` asks for ``want`` (`ranged_scale`), given what the records of this
    measurement asked for at each V/div they were taken at (``tried``: V/div → wanted; updated).

    The fitted peak depends a little on the scale it was quantised on, so near a 1-2-5
    boundary two neighbouring scales can both be fixed points (each asks for itself) or
    send the channel to each other. The choice is made the same whichever side the
    channel comes from: the coarser of two fixed points (a fixed point within 1 % of the
    boundary to the next scale up probes that scale once), and the coarser of two scales
    that send the channel to each other."""
    tried[scale] = want
    if want > scale:
        return want
    if want < scale:
        back = tried.get(want)
        # the finer scale already measured and sent the channel elsewhere: neither is a
        # fixed point (or only this coarser one would be): stay coarser
        return scale if back is not None and back != want else want
    up = scale_125_at_least(scale * 1.01)
    near = 1.4 * peak_v / (V_DIVISIONS / 2) > scale / 1.01
    if near and up <= top and tried.get(up, up) == up:
        return up  # unmeasured, or measured as a fixed point: the coarser one
    return scale


def _never_back_down(tried: dict[float, float], scale: float, new: float) -> float:
    """Record ``new`` as asked for at ``scale``; refuse going back down to a V/div this
    measurement left (a peak on a boundary that reads differently on the two scales)."""
    tried[scale] = new
    if new < scale and new in tried:
        return scale
    return new


@dataclass(frozen=True)
class ChannelPeak:
    """One channel's record: peak of the raw samples and of the fitted waveform (V, from the
    channel's offset), and whether the record left the ADC range."""

    peak_v: float
    fit_peak_v: float
    clipped: bool


class RangingPolicy(Protocol):
    """How a scope channel's V/div follows the response (module docstring)."""

    #: whether settle plans may use the history (remembered responses, the input measured last)
    plans_from_history: bool

    def lattice_s(self, sample_interval_s: float) -> float | None:
        """The lattice (s) the records' samples are placed on and fitted by (None: none)."""
        ...

    def next_scale(
        self,
        tried: dict[float, float],
        scale_v: float,
        peak: ChannelPeak,
        max_scale_v: float,
        band: tuple[float, float],
    ) -> float:
        """The V/div for the channel's next record (``scale_v``: keep), given what this
        measurement's records asked for at each V/div (``tried``, updated)."""
        ...


class HystereticRanging:
    """Up when clipped, down below the band; history-dependent plans allowed."""

    plans_from_history = True

    def lattice_s(self, sample_interval_s: float) -> float | None:
        return None

    def next_scale(
        self,
        tried: dict[float, float],
        scale_v: float,
        peak: ChannelPeak,
        max_scale_v: float,
        band: tuple[float, float],
    ) -> float:
        new = ranged_scale(
            peak.peak_v, scale_v, max_scale_v, clipped=peak.clipped, canonical=False, band=band
        )
        return _never_back_down(tried, scale_v, new)


class CanonicalRanging:
    """V/div from the fitted peak alone, records on the sample lattice, no history in plans."""

    plans_from_history = False

    def lattice_s(self, sample_interval_s: float) -> float | None:
        return sample_interval_s

    def next_scale(
        self,
        tried: dict[float, float],
        scale_v: float,
        peak: ChannelPeak,
        max_scale_v: float,
        band: tuple[float, float],
    ) -> float:
        if peak.clipped:
            new = ranged_scale(
                peak.peak_v, scale_v, max_scale_v, clipped=True, canonical=True, band=band
            )
            return _never_back_down(tried, scale_v, new)
        # from the fitted waveform's peak, which (unlike the raw samples') barely depends on
        # the 8-bit scale it was quantised on
        want = ranged_scale(
            peak.fit_peak_v, scale_v, max_scale_v, clipped=False, canonical=True, band=band
        )
        return canonical_choice(tried, scale_v, want, peak.fit_peak_v, max_scale_v)


def ranging_policy(name: Literal["hysteretic", "canonical"]) -> RangingPolicy:
    """The policy of ``options.ranging``."""
    if name == "canonical":
        return CanonicalRanging()
    if name == "hysteretic":
        return HystereticRanging()
    raise ConfigError(f"ranging: unknown policy {name!r}")
