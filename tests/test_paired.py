"""The paired bootstrap interval of the difference between two methods, and quality at a matched speed ratio."""

import math

import numpy as np
import pytest

from taocache.metrics.paired import (
    MIN_PAIRS,
    PSNR_CAP,
    at_ratio,
    between_decibels,
    compare_at_ratio,
    leads,
    paired_difference,
)


def psnr_pairs(n=32, seed=0):
    """Per-pair PSNRs that vary a lot between prompts (as real ones do)."""
    return np.random.default_rng(seed).normal(30.0, 5.0, n)


def test_constant_shift_plus_noise_gives_an_interval_around_it():
    b = psnr_pairs()
    a = b + 1.5 + np.random.default_rng(1).normal(0, 0.3, b.size)
    d = paired_difference(a, b)
    assert d.low < 1.5 < d.high
    assert d.low < d.mean < d.high
    assert d.high - d.low < 0.5  # pairing removes the 5 dB spread between prompts
    assert d.leads() and leads(a, b) and not leads(b, a)


def test_exact_constant_shift_gives_that_value():
    b = psnr_pairs()
    d = paired_difference(b + 2.0, b)
    assert d.low == pytest.approx(2.0) and d.high == pytest.approx(2.0) and d.mean == pytest.approx(2.0)


def test_no_difference_interval_contains_zero():
    b = psnr_pairs()
    a = b + np.random.default_rng(2).normal(0, 0.5, b.size)
    a -= (a - b).mean()  # no mean difference at all
    d = paired_difference(a, b)
    assert d.low < 0 < d.high and not leads(a, b) and not leads(b, a)


def test_reproducible_and_seed_dependent():
    b = psnr_pairs()
    a = b + np.random.default_rng(3).normal(0.2, 1.0, b.size)
    first = paired_difference(a, b)
    assert paired_difference(a, b) == first
    other = paired_difference(a, b, seed=1)
    assert other.mean == first.mean and (other.low, other.high) != (first.low, first.high)


def test_percentile_method_is_available():
    b = psnr_pairs()
    a = b + np.random.default_rng(4).normal(1.0, 1.0, b.size)
    d = paired_difference(a, b, method="percentile")
    assert d.method == "percentile" and d.low < 1.0 < d.high


def test_lower_is_better_metrics():
    lpips_b = np.random.default_rng(5).uniform(0.1, 0.3, 32)
    lpips_a = lpips_b - 0.02 + np.random.default_rng(6).normal(0, 0.005, 32)
    assert leads(lpips_a, lpips_b, higher_is_better=False, cap=None)
    assert not leads(lpips_a, lpips_b, cap=None)


def test_infinite_psnr_counts_as_the_cap():
    b = psnr_pairs()
    a = b + 1.0 + np.random.default_rng(7).normal(0, 0.2, b.size)
    a[:3] = math.inf  # identical outputs for three pairs
    d = paired_difference(a, b)
    expected = np.mean(np.where(np.isinf(a), PSNR_CAP, a) - b)
    assert d.mean == pytest.approx(expected) and d.capped == 3
    assert math.isfinite(d.low) and math.isfinite(d.high)
    assert paired_difference(np.full(32, 120.0), np.full(32, math.inf)).mean == 0.0  # both beyond the cap


@pytest.mark.parametrize(
    "a, b, options, message",
    [
        (np.ones(MIN_PAIRS - 1), np.zeros(MIN_PAIRS - 1), {}, "too few"),
        (np.ones(12), np.zeros(11), {}, "same pairs"),
        (np.r_[np.nan, np.ones(11)], np.zeros(12), {}, "NaN"),
        (np.r_[-np.inf, np.ones(11)], np.zeros(12), {}, "-inf"),
        (np.r_[np.inf, np.ones(11)], np.zeros(12), {"cap": None}, "pass cap="),
        (np.ones((4, 4)), np.zeros((4, 4)), {}, "1-D"),
        (np.ones(12), np.zeros(12), {"confidence": 95}, "confidence"),
    ],
)
def test_bad_inputs_raise_clear_errors(a, b, options, message):
    with pytest.raises(ValueError, match=message):
        paired_difference(a, b, **options)


# ---------------------------------------------------------------------------------------- matched speed


def test_interpolates_per_pair_between_the_bracketing_settings():
    slow, mid, fast = np.array([40.0, 30.0]), np.array([34.0, 26.0]), np.array([20.0, 10.0])
    settings = [(3.0, fast), (1.2, slow), (1.8, mid)]  # any order
    # Without a cap (SSIM, CVVDP) the values themselves are interpolated.
    # 1.5 lies halfway between 1.2 and 1.8: the mean of those two settings, pair by pair.
    np.testing.assert_allclose(at_ratio(settings, 1.5, cap=None), [37.0, 28.0])
    # 2.0 lies a sixth of the way from 1.8 to 3.0.
    np.testing.assert_allclose(at_ratio(settings, 2.0, cap=None), mid + (fast - mid) / 6)
    np.testing.assert_allclose(at_ratio(settings, 1.8), mid)  # exactly at a setting
    np.testing.assert_allclose(at_ratio(settings, 3.0), fast)


def test_psnr_is_interpolated_through_its_squared_error():
    # halfway between 40 dB (error 1e-4) and 30 dB (1e-3): error 5.5e-4, 32.6 dB, not the 35 dB of the decibels
    np.testing.assert_allclose(at_ratio([(1.0, [40.0]), (2.0, [30.0])], 1.5), [-10 * math.log10(5.5e-4)])
    np.testing.assert_allclose(between_decibels(40.0, 30.0, 0.5), 32.596, atol=1e-3)
    np.testing.assert_allclose(between_decibels(40.0, 30.0, 0.0), 40.0)
    np.testing.assert_allclose(between_decibels(40.0, 30.0, 1.0), 30.0)


def test_no_extrapolation_outside_the_measured_ratios():
    settings = [(1.2, [40.0, 30.0]), (1.8, [34.0, 26.0])]
    assert at_ratio(settings, 2.0) is None
    assert at_ratio(settings, 1.1) is None
    assert at_ratio([(2.0, [30.0])], 2.0).tolist() == [30.0]


def test_a_lossless_setting_does_not_lift_the_interpolation():
    # infinite PSNR is capped, then its (tiny) error interpolated: halfway to 40 dB is 43 dB, not (100 + 40) / 2
    value = at_ratio([(1.0, [math.inf]), (2.0, [40.0])], 1.5)
    expected = -10 * math.log10((10 ** (-PSNR_CAP / 10) + 1e-4) / 2)
    np.testing.assert_allclose(value, [expected])
    assert 43.0 < value[0] < 43.1


@pytest.mark.parametrize(
    "settings, target, message",
    [
        ([(1.0, [1.0, 2.0]), (2.0, [1.0])], 1.5, "different numbers of pairs"),
        ([(1.5, [1.0]), (1.5, [2.0])], 1.5, "share a mean ratio"),
        ([(0.0, [1.0])], 1.5, "mean ratio must be a positive"),
        ([(1.0, [1.0])], -2, "target ratio"),
        ([], 1.5, "no settings"),
    ],
)
def test_bad_settings_raise_clear_errors(settings, target, message):
    with pytest.raises(ValueError, match=message):
        at_ratio(settings, target)


def test_compare_at_matched_ratio():
    rng = np.random.default_rng(8)
    base = rng.normal(30, 5, 32)
    # Method A: 1.0x -> base + 12 dB, 3.0x -> base + 2, so at 2x base + 2 + 10 log10(2 / 1.1) = base + 4.60
    # (squared errors interpolated). Method B: 1.5x -> base + 4, 2.5x -> base + 2, so at 2x base + 2.89.
    a = [(1.0, base + 12 + rng.normal(0, 0.2, 32)), (3.0, base + 2 + rng.normal(0, 0.2, 32))]
    b = [(1.5, base + 4 + rng.normal(0, 0.2, 32)), (2.5, base + 2 + rng.normal(0, 0.2, 32))]
    d = compare_at_ratio(a, b, 2.0)
    assert d.low < 4.60 - 2.89 < d.high and d.leads()
    assert compare_at_ratio(a, b, 2.8) is None  # B was not measured beyond 2.5x
