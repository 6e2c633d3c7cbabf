"""What predicting chosen steps does to the sample, predictor by predictor (docs/algorithm.md, section 6.1).

    python eval/skip_probe.py --steps 20 --predict 5,7,9,11,13,15,17              # one fixed pattern
    python eval/skip_probe.py --steps 20 --single 5,7,9,11,13,15,17 --prompts 6 --seeds 0   # one step at a time

TaoCache normally decides which calls to predict; here the steps are fixed, so that the predictors (reuse, the
calibrated coefficient, first-order extrapolation) are compared on the same skips. The hook is calibrated as
the benchmark calibrates it (4 tune captions, 50 steps, the default horizon; ``--calibration-steps`` and
``--horizon`` change them), run with an unbounded error budget and one prediction in a row, and limited to
the given steps. Prints the mean PSNR of the video against the full run over the first ``--prompts`` odd
tune captions and the ``--seeds`` (a probe for choosing the method: the test captions stay out of it).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PREDICTORS = ("reuse", "geometric", "linear")


def _steps(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


@contextmanager
def predicting_only(steps: set[int]):
    """Within the block, TaoCache predicts no call outside ``steps`` (its own rule still decides inside)."""
    from taocache.taocache.hook import TaoCacheHook

    original = TaoCacheHook._predict

    def limited(self, plan, context):
        return original(self, plan, context) if plan.step in steps else None

    TaoCacheHook._predict = limited
    try:
        yield
    finally:
        TaoCacheHook._predict = original


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-t2v", help="video recipe (default: tiny-t2v)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--predict", type=_steps, help="steps to predict together (comma-separated, 0-based)")
    what.add_argument("--single", type=_steps, help="steps to predict one at a time")
    parser.add_argument("--prompts", type=int, default=8, help="first N odd tune captions (default 8)")
    parser.add_argument("--seeds", type=_steps, default=[0, 1], help="comma-separated (default 0,1)")
    parser.add_argument("--calibration-steps", type=int, default=None,
                        help="steps of the calibration runs (default: the larger of --steps and 50)")
    parser.add_argument("--horizon", type=int, default=None,
                        help="longest run of predicted steps calibrated; gaps up to horizon + 1 (default: 3)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    chosen = args.predict or args.single or []
    late = [s for s in chosen if not 0 <= s < args.steps]
    if late or args.prompts < 1:
        parser.error(f"steps to predict must lie in 0..{args.steps - 1} (got {late}) and --prompts must be >= 1")
    torch.set_num_threads(args.threads)

    import taocache
    from taocache.bench.sweep import world_calibration_prompts
    from taocache.metrics import psnr
    from taocache.recipes import load_pipeline
    from taocache.taocache.calibration import DEFAULT_HORIZON, calibration_steps_for
    from taocache.world import scenes_of

    pipe, recipe = load_pipeline(args.model)
    call = recipe.call_kwargs(num_inference_steps=args.steps)
    calibration_steps = args.calibration_steps or calibration_steps_for(args.steps)
    calibration = taocache.calibrate(pipe, world_calibration_prompts("video"),
                                     call_kwargs={**call, "num_inference_steps": calibration_steps}, seed=1000,
                                     horizon=args.horizon or DEFAULT_HORIZON, save=False, progress=False)

    def video(prompt, seed):
        return pipe(prompt, generator=torch.Generator().manual_seed(seed), output_type="np", **call).frames[0]

    prompts = [scene.caption for scene in scenes_of("tune", video=True)[1::2]]
    runs = [(p, s) for p in prompts[: args.prompts] for s in args.seeds]
    references = [video(p, s) for p, s in runs]
    patterns = [args.predict] if args.predict else [[step] for step in args.single]
    print(f"{args.model}, {args.steps} steps (calibrated on {calibration_steps}), {len(runs)} videos: "
          "mean PSNR (dB) against the full run")
    print("predicted steps".ljust(28) + "".join(p.rjust(11) for p in PREDICTORS))
    for pattern in patterns:
        row = []
        for predictor in PREDICTORS:
            config = taocache.TaoCacheConfig(predictor=predictor, start_fraction=0.0, error_budget=1e9,
                                             max_consecutive=1, calibration=calibration, auto_calibrate=False)
            values = []
            with predicting_only(set(pattern)):
                for (prompt, seed), reference in zip(runs, references):
                    taocache.enable(pipe, config)
                    try:
                        values.append(psnr(video(prompt, seed), reference))
                    finally:
                        taocache.disable(pipe)
            row.append(float(np.mean(values)))
        print(",".join(map(str, pattern)).ljust(28) + "".join(f"{v:11.2f}" for v in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
