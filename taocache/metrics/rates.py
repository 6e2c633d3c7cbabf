"""How sure a success rate is: a rate over a few dozen samples (an edit evaluation, a quality bar) moves by
several points per sample, so it is reported with its 95% Wilson interval (scipy) to show which differences
between methods, or against a bar, are larger than that."""

from __future__ import annotations

from scipy.stats import binomtest


def rate_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of ``successes / trials``, as (low, high) fractions."""
    if trials < 1:
        raise ValueError(f"trials={trials} must be at least 1")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes={successes} must be between 0 and trials={trials}")
    interval = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def format_rate(rate: float, interval) -> str:
    """``75% (55-88%)``: the rate with its interval, in whole percent."""
    low, high = interval
    return f"{100 * rate:.0f}% ({100 * low:.0f}-{100 * high:.0f}%)"
