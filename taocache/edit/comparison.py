"""The method against a baseline on the same edits: paired, since both edited the same cases.

Two independent Wilson intervals overlap far more often than two paired rates differ, so the difference of
the "all kept" indicator is judged per case: a paired bootstrap of its mean (percentile interval, 10 000
resamples of the cases, a fixed seed, so a rerun gives the same interval), and the exact McNemar test (a
binomial test on the cases where exactly one of the two succeeded).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest, bootstrap

RESAMPLES = 10_000


def paired_comparison(ours, theirs, seed: int = 0, confidence: float = 0.95) -> dict:
    """Difference of two paired success indicators (``ours - theirs``, over the same cases in the same order)."""
    a, b = np.asarray(ours, dtype=bool), np.asarray(theirs, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired indicators must be two 1-D sequences of one length, got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        return {"n": 0, "difference": None, "interval": None, "only_ours": 0, "only_theirs": 0, "mcnemar_p": None}
    d = a.astype(float) - b.astype(float)
    if np.all(d == d[0]):  # every resample gives the same mean
        interval = (float(d[0]), float(d[0]))
    else:
        result = bootstrap((d,), np.mean, n_resamples=RESAMPLES, confidence_level=confidence,
                           method="percentile", rng=np.random.default_rng(seed))
        interval = (float(result.confidence_interval.low), float(result.confidence_interval.high))
    only_ours, only_theirs = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_ours + only_theirs
    return {
        "n": n,
        "difference": float(d.mean()),
        "interval": list(interval),
        "only_ours": only_ours,
        "only_theirs": only_theirs,
        "mcnemar_p": float(binomtest(only_ours, discordant, 0.5).pvalue) if discordant else 1.0,
    }
