"""Coverage of the paired 95% interval, BCa against percentile, for 32 pairs (evidence for the BCa choice).

Differences either normal or skewed (lognormal, like PSNR gaps with a tail); prints the share of intervals
that contain the true mean difference and their mean width. About 8 s on one core:

    OMP_NUM_THREADS=1 python eval/bootstrap_coverage.py
"""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from taocache.metrics.paired import paired_difference

rng = np.random.default_rng(123)
n, reps = 32, 400
t = time.perf_counter()
for dist in ("lognormal", "normal"):
    hits = {"BCa": 0, "percentile": 0}
    widths = {"BCa": [], "percentile": []}
    for r in range(reps):
        b = rng.normal(30, 4, n)
        if dist == "lognormal":
            d = rng.lognormal(0, 1.2, n)
            true = np.exp(1.2**2 / 2)
        else:
            d = rng.normal(0.5, 1, n)
            true = 0.5
        a = b + d
        for m in hits:
            res = paired_difference(a, b, method=m, n_resamples=2000, seed=r)
            hits[m] += res.low <= true <= res.high
            widths[m].append(res.high - res.low)
    print(dist, {m: (hits[m] / reps, round(float(np.mean(widths[m])), 3)) for m in hits})
print(f"{time.perf_counter() - t:.1f} s")
