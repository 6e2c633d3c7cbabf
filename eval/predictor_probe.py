"""How well each way of continuing the computed outputs predicts the next one, on full-run trajectories.

    OMP_NUM_THREADS=1 python eval/predictor_probe.py --steps 50
    OMP_NUM_THREADS=1 python eval/predictor_probe.py --steps 20 --pattern consecutive

Records the clean-sample estimates (TaoCache's default space, docs/algorithm.md section 2) of full runs, then
predicts every step from ``start_fraction`` on from the computed ones before it, as TaoCache would: the last
computed step ``j = i - 1`` and, before it, ``a`` and ``b`` at the pattern's gaps (``alternate``: every second
step predicted, so the gaps are 2; ``consecutive``: gaps of 1). Compared, by the relative error ``||x0_i -
prediction|| / ||x0_i||`` averaged over steps, branches and captions (and that mean in dB):

- reuse (``x0_j``), linear (first order in the timestep), quadratic (second order in the timestep, through
  ``b``, ``a``, ``j``, the form TaylorSeer extrapolates features with);
- geometric: ``x0_j + k D1`` with ``D1 = x0_j - x0_a`` and ``k`` the calibrated least-squares gain (TaoCache);
- corrected: the same ``k`` times a per-caption correction checked online, the median over this trajectory's
  earlier steps of the gain that was observed there over the calibrated one (1 until a step was seen);
- regression: ``x0_j + k1 D1 + k2 D2`` with ``D2 = x0_a - x0_b``, both coefficients a least-squares fit.

Coefficients are fitted per step on the even tune captions and measured on the odd ones (seed 1000 and 0),
so the test captions play no part. A probe for choosing the method: it measures one prediction at a time,
not a whole cached run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PREDICTORS = ("reuse", "linear", "quadratic", "geometric", "corrected", "regression")


def trajectories(pipe, call, prompts, seed):
    """Per caption and guidance branch: the timesteps and the clean-sample estimates of a full run."""
    from taocache.core.outputs import sample_of
    from taocache.core.steps import as_timestep
    from taocache.taocache.space import line_at

    calls = []

    def record(module, args, kwargs, output):
        sample = kwargs.get("hidden_states", args[0] if args else None)
        calls.append((as_timestep(kwargs["timestep"]), sample.detach().double(), sample_of(output).detach().double()))

    handle = pipe.transformer.register_forward_hook(record, with_kwargs=True)
    runs = []
    try:
        for prompt in prompts:
            calls.clear()
            pipe(prompt, generator=torch.Generator().manual_seed(seed), output_type="latent", **call)
            for branch in (calls[0::2], calls[1::2]):  # Wan: the conditional pass, then the unconditional one
                timesteps = [t for t, _, _ in branch]
                estimates = [line_at(pipe.scheduler, i, t).estimate(out, x).flatten()
                             for i, (t, x, out) in enumerate(branch)]
                runs.append((timesteps, estimates))
    finally:
        handle.remove()
    return runs


def deltas(run, i, gap):
    """(T, D1, D2, x0_i, timesteps of i, j, a, b) for predicting step ``i`` from ``j = i - 1``, ``a = j - gap``
    and ``b = a - gap``; None where ``b`` is before the first step."""
    timesteps, x0 = run
    j = i - 1
    a, b = j - gap, j - 2 * gap
    if b < 0:
        return None
    return (x0[i] - x0[j], x0[j] - x0[a], x0[a] - x0[b], x0[i], (timesteps[i], timesteps[j], timesteps[a], timesteps[b]))


def fit(runs, i, gap):
    """The geometric gain and the two regression coefficients at step ``i``, pooled over ``runs``."""
    gram, cross = np.zeros((2, 2)), np.zeros(2)
    for run in runs:
        found = deltas(run, i, gap)
        if found is None:
            return None
        target, d1, d2 = found[:3]
        scale = float(d1 @ d1)
        gram += np.array([[d1 @ d1, d1 @ d2], [d1 @ d2, d2 @ d2]], dtype=float) / scale
        cross += np.array([target @ d1, target @ d2], dtype=float) / scale
    return cross[0] / gram[0, 0], np.linalg.solve(gram, cross)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-t2v", help="video recipe (default: tiny-t2v)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--height", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--width", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--pattern", choices=("alternate", "consecutive"), default="alternate")
    parser.add_argument("--start-fraction", type=float, default=0.2)
    parser.add_argument("--prompts", type=int, default=8, help="odd tune captions measured (default 8)")
    parser.add_argument("--fit-prompts", type=int, default=4, help="even tune captions fitted on (default 4)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from taocache.bench.sweep import spread
    from taocache.recipes import load_pipeline
    from taocache.world import scenes_of

    pipe, recipe = load_pipeline(args.model, kind="video")
    pipe.set_progress_bar_config(disable=True)
    call = recipe.call_kwargs(num_inference_steps=args.steps, height=args.height, width=args.width)
    tune = [scene.caption for scene in scenes_of("tune", video=True)]
    fitted = trajectories(pipe, call, spread(tune[0::2], args.fit_prompts), seed=1000)
    measured = trajectories(pipe, call, spread(tune[1::2], args.prompts), seed=0)
    gap = 2 if args.pattern == "alternate" else 1
    errors = {name: [] for name in PREDICTORS}
    seen = [[] for _ in measured]  # per trajectory: observed over calibrated gain at the steps already passed
    for i in range(max(1, round(args.start_fraction * args.steps)), args.steps - 1):
        coefficients = fit(fitted, i, gap)
        if coefficients is None:
            continue
        gain, (k1, k2) = coefficients
        for n, run in enumerate(measured):
            target, d1, d2, x0, (ti, tj, ta, tb) = deltas(run, i, gap)
            first = (ti - tj) / (tj - ta)
            second = (ti - tj) * (ti - ta) / (tj - tb) * (d1 / (tj - ta) - d2 / (ta - tb))
            correction = float(np.median(seen[n])) if seen[n] else 1.0
            predictions = {"reuse": 0 * d1, "linear": first * d1, "quadratic": first * d1 + second,
                           "geometric": gain * d1, "corrected": correction * gain * d1,
                           "regression": k1 * d1 + k2 * d2}
            for name, predicted in predictions.items():
                errors[name].append(float((target - predicted).norm() / x0.norm()))
            if abs(gain) > 1e-3:
                seen[n].append(float(target @ d1 / (d1 @ d1)) / gain)
    print(f"{args.model}, {args.steps} steps, {args.pattern} pattern (gaps of {gap}), from step "
          f"{round(args.start_fraction * args.steps)}; {len(measured)} trajectories measured, "
          f"{len(fitted)} fitted on")
    print("predictor".ljust(12) + "mean relative error".rjust(22) + "in dB".rjust(10))
    for name, values in errors.items():
        mean = float(np.mean(values))
        print(name.ljust(12) + f"{mean:22.5f}" + f"{-20 * np.log10(mean):10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
