"""Paired bootstrap confidence intervals for the difference between two methods, and quality at matched speed.

Two methods scored on the same (prompt, seed) pairs are compared pair by pair: the per-pair difference
A - B removes the variation between prompts that both methods share, so the interval is much narrower
than comparing two independent means.

Choices:

* Interval: ``scipy.stats.bootstrap`` with ``paired=True`` (pairs are resampled together) and the BCa
  method (bias-corrected and accelerated). PSNR differences are skewed (a few pairs where one method is
  nearly identical to the full run give a long tail); BCa corrects for skew and median bias, which the
  plain percentile interval does not, and its jackknife step is cheap for tens of pairs. The resampling
  uses a fixed seed, so the same numbers give the same interval.
* Infinite PSNR (identical outputs): every PSNR above ``PSNR_CAP`` = 100 dB, infinity included, counts
  as 100 dB, the cap the report uses for its means (``taocache.report.aggregate.PSNR_CAP``). 100 dB is an
  RMS error of 1e-5 of the pixel range, far below a uint8 step (about 48 dB), so no visible difference is lost. The mean difference
  then depends on the cap when identical outputs occur for one method only, so the result says how many
  values were capped. NaN and -inf are errors.
* Too few pairs: at least ``MIN_PAIRS`` = 10. With fewer, the bootstrap has few distinct resamples and
  its intervals are too narrow. The benchmark's quick run (4 pairs) is too small for an interval.
* All differences equal: the interval is that value (the bootstrap distribution is a single point,
  where BCa is undefined).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: PSNR values above this (identical outputs give +inf) count as this many dB.
PSNR_CAP = 100.0
#: Fewest pairs for an interval.
MIN_PAIRS = 10
#: Fixed seed of the resampling, for reproducible intervals.
SEED = 0


@dataclass(frozen=True)
class PairedDifference:
    """Mean of A - B over the pairs, with its bootstrap confidence interval [low, high]."""

    mean: float
    low: float
    high: float
    pairs: int
    capped: int  # values of A or B at the cap (identical outputs)
    confidence: float
    method: str

    def leads(self, higher_is_better: bool = True) -> bool:
        """True when the whole interval favours A: above zero (or below it, for lower-is-better metrics)."""
        return self.low > 0 if higher_is_better else self.high < 0


def _values(values, name: str, cap: float | None) -> tuple[np.ndarray, int]:
    """The values as a float array with +inf and values above ``cap`` set to ``cap``; and how many are at it."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of per-pair values, got shape {array.shape}")
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN (a missing or failed run?); drop that pair from both methods")
    if np.isneginf(array).any():
        raise ValueError(f"{name} contains -inf")
    if cap is None:
        if np.isinf(array).any():
            raise ValueError(
                f"{name} contains +inf; pass cap= (e.g. PSNR_CAP for PSNR) to count it as a value"
            )
        return array, 0
    return np.minimum(array, cap), int((array >= cap).sum())


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    cap: float | None = PSNR_CAP,
    n_resamples: int = 9999,
    method: str = "BCa",
    seed: int = SEED,
) -> PairedDifference:
    """Mean of ``a - b`` and its paired bootstrap interval; ``a[i]`` and ``b[i]`` must score the same pair.

    ``cap`` bounds the values from above (see the module docstring; None forbids infinities). ``method``
    is passed to ``scipy.stats.bootstrap`` ('BCa', 'percentile' or 'basic').
    """
    from scipy.stats import bootstrap

    x, capped_a = _values(a, "a", cap)
    y, capped_b = _values(b, "b", cap)
    if x.shape != y.shape:
        raise ValueError(
            f"a has {x.size} values and b {y.size}: they must score the same pairs, in the same order"
        )
    if x.size < MIN_PAIRS:
        raise ValueError(f"{x.size} pairs are too few for a bootstrap interval; need at least {MIN_PAIRS}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    differences = x - y
    mean = float(differences.mean())
    if np.ptp(differences) <= 1e-12 * max(1.0, abs(mean)):  # a single value: no spread to resample
        low = high = mean
    else:
        result = bootstrap(
            (x, y),
            lambda u, v, axis: np.mean(u - v, axis=axis),
            paired=True,
            vectorized=True,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method=method,
            rng=np.random.default_rng(seed),
        )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise RuntimeError(
                f"the {method} interval is undefined for these values (low={low}, high={high})"
            )
    return PairedDifference(mean, low, high, x.size, capped_a + capped_b, confidence, method)


def leads(a: Sequence[float], b: Sequence[float], *, higher_is_better: bool = True, **options) -> bool:
    """True when A beats B on the same pairs with confidence: the interval of A - B lies above zero
    (below zero when lower is better, e.g. LPIPS). ``options`` go to ``paired_difference``."""
    return paired_difference(a, b, **options).leads(higher_is_better)


# ----------------------------------------------------------------------------------------- matched speed


def at_ratio(
    settings: Sequence[tuple[float, Sequence[float]]], target: float, *, cap: float | None = PSNR_CAP
):
    """One method's per-pair quality at the speed ratio ``target``, or None outside its measured range.

    ``settings`` holds (mean ratio, per-pair values) for each of the method's settings, all over the same
    pairs in the same order. The ratio is a speed-up or a call ratio; use one axis throughout.

    Rule: take the setting with the largest mean ratio at or below ``target`` and the one with the
    smallest at or above it, and interpolate each pair's value linearly in the ratio between them (with a
    ``cap``, the values are PSNR in dB and their squared error is interpolated: ``between_decibels``), with
    the same weight for every pair, from the settings' mean ratios. Per-pair ratios are not used: measured
    speed-ups are noisy per run, and a single weight keeps the mean of the interpolated values equal to the
    interpolation of the means, as in the report's matched table. A setting exactly at ``target`` is taken
    as it is. Nothing is extrapolated: a target outside the settings' ratios gives None. Which settings to
    pass (all, or only a frontier chosen on the means) is the caller's choice.
    """
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise ValueError(f"target ratio must be a positive number, got {target!r}")
    if not settings:
        raise ValueError("no settings given")
    points = []
    for i, (ratio, values) in enumerate(settings):
        if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and ratio > 0):
            raise ValueError(f"setting {i}: mean ratio must be a positive number, got {ratio!r}")
        points.append((float(ratio), _values(values, f"setting {i} (ratio {ratio:g})", cap)[0]))
    sizes = {v.size for _, v in points}
    if len(sizes) != 1:
        raise ValueError(f"the settings score different numbers of pairs: {sorted(sizes)}")
    ratios = [r for r, _ in points]
    if len(set(ratios)) != len(ratios):
        raise ValueError(
            f"two settings share a mean ratio ({sorted(ratios)}): keep one, or the bracket is ambiguous"
        )
    points.sort(key=lambda p: p[0])
    below = [p for p in points if p[0] <= target]
    above = [p for p in points if p[0] >= target]
    if not below or not above:
        return None
    (r0, v0), (r1, v1) = below[-1], above[0]
    if r0 == r1:
        return v0.copy()
    weight = (target - r0) / (r1 - r0)
    if cap is None:
        return v0 + weight * (v1 - v0)
    return between_decibels(v0, v1, weight)


def between_decibels(db0, db1, weight):
    """PSNR ``weight`` of the way from ``db0`` to ``db1``, interpolated through the squared error.

    Running the two settings on shares ``1 - weight`` and ``weight`` of the videos costs the interpolated
    ratio and gives the interpolated squared error; interpolating the decibels instead would let a lossless
    setting (PSNR at the cap) lift every value near it by tens of dB.
    """
    error0, error1 = np.power(10.0, -np.asarray(db0) / 10.0), np.power(10.0, -np.asarray(db1) / 10.0)
    return -10.0 * np.log10(error0 + weight * (error1 - error0))


def compare_at_ratio(
    settings_a: Sequence[tuple[float, Sequence[float]]],
    settings_b: Sequence[tuple[float, Sequence[float]]],
    target: float,
    **options,
) -> PairedDifference | None:
    """A - B at the same speed ratio (each method interpolated by ``at_ratio``), with its paired interval;
    None when either method was not measured on both sides of ``target``. ``options`` go to
    ``paired_difference``; the cap is applied before interpolating."""
    cap = options.get("cap", PSNR_CAP)
    a, b = at_ratio(settings_a, target, cap=cap), at_ratio(settings_b, target, cap=cap)
    if a is None or b is None:
        return None
    return paired_difference(a, b, **options)
