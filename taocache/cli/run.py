"""``taocache run`` (the main job: a full run against TaoCache on one prompt, timed and compared) and
``taocache calibrate``."""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from pathlib import Path

import numpy as np

from ..results.media import check_video_path, side_by_side, write_video
from . import common

#: Timed runs of each, full and cached, after the warm-up (the median is reported).
MIN_REPEATS = 3


def register(sub) -> None:
    run_parser = sub.add_parser("run", help="run a model in full and with TaoCache; compare speed and fidelity")
    common.add_model_argument(run_parser)
    common.add_call_arguments(run_parser)
    run_parser.add_argument("--prompt", default=None, help="prompt (default: the first test caption of the sample world)")
    run_parser.add_argument("--seed", type=int, default=0)
    run_parser.add_argument("--predictor", default=None, help="geometric, linear or reuse (default: the config's)")
    run_parser.add_argument("--start", type=float, default=None, help="start_fraction (default: the config's)")
    run_parser.add_argument("--budget", type=float, default=None, help="error_budget (default: the config's)")
    run_parser.add_argument("--max-consecutive", type=int, default=None, help="(default: the config's)")
    run_parser.add_argument(
        "--weigh-by-step",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="weigh each call's predicted error by its step size (default: the config's)",
    )
    run_parser.add_argument(
        "--calibration", type=Path, default=None, help="calibration JSON (default: look one up, else calibrate and save one)"
    )
    run_parser.add_argument(
        "--calibration-prompts", type=int, default=4,
        help="tune captions to calibrate on when no calibration exists (default 4)",
    )
    run_parser.add_argument(
        "--repeats", type=int, default=MIN_REPEATS,
        help=f"timed runs of each, full and TaoCache, after a warm-up; the median is reported (default and least {MIN_REPEATS})",
    )
    common.add_output_arguments(
        run_parser, Path("runs/taocache-run.gif"),
        "side-by-side video, .gif or .mp4 (.png for image models); default runs/taocache-run.gif under the "
        "current folder",
    )
    run_parser.add_argument("--fps", type=float, default=8.0, help="frames per second of the video (default 8)")
    run_parser.set_defaults(func=run_command)

    cal = sub.add_parser("calibrate", help="measure TaoCache's delta statistics for a model from full runs")
    common.add_model_argument(cal)
    common.add_call_arguments(cal)
    cal.add_argument(
        "--prompts-file", type=Path, default=None,
        help="calibration prompts, one a line (default: the sample world's tune captions)",
    )
    cal.add_argument("--num-prompts", type=int, default=8, help="use the first N prompts (default 8)")
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--horizon", type=int, default=3, help="longest run of predicted steps calibrated (1-8)")
    cal.add_argument(
        "--ulysses-degree", type=int, default=1,
        help="context parallelism under torchrun: ranks sharing the attention heads (default 1; docs/several-gpus.md)",
    )
    cal.add_argument(
        "--ring-degree", type=int, default=1,
        help="context parallelism under torchrun: ranks passing key/value blocks round (default 1)",
    )
    common.add_output_arguments(
        cal, None,
        "JSON file (default: the calibration folder, ~/.cache/taocache/calibration or "
        "$TAOCACHE_CALIBRATION_DIR, under the calibration's key)",
    )
    cal.set_defaults(func=calibrate_command)


def _generate(pipe, prompt, seed, call) -> tuple[np.ndarray, float]:
    """One pipeline call's first video (or image, as one frame) and its wall time."""
    import torch

    from ..core.frames import frames_of

    start = time.perf_counter()
    output = pipe(prompt, generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **call)
    return frames_of(output), time.perf_counter() - start


def run_command(args) -> int:
    from .. import api
    from ..metrics import psnr, ssim
    from ..taocache.backend import has_calibration
    from ..taocache.config import TaoCacheConfig
    from ..world import scenes_of

    check_video_path(args.output)
    if not math.isfinite(args.fps) or args.fps <= 0:
        raise ValueError(f"--fps {args.fps:g} must be a number > 0")
    if args.calibration_prompts < 1:
        raise ValueError(f"--calibration-prompts {args.calibration_prompts} must be at least 1")
    if args.repeats < MIN_REPEATS:
        raise ValueError(f"--repeats {args.repeats} must be at least {MIN_REPEATS}: the median of fewer says little")
    common.check_output(args.output, args.force)
    pipe, recipe, call = common.load_with_call(args)
    prompt = args.prompt or scenes_of("test", recipe.kind == "video")[0].caption
    fields = {
        "predictor": args.predictor,
        "start_fraction": args.start,
        "error_budget": args.budget,
        "max_consecutive": args.max_consecutive,
        "weigh_by_step": args.weigh_by_step,
        "calibration": args.calibration,
    }
    config = TaoCacheConfig(auto_calibrate=False, **{k: v for k, v in fields.items() if v is not None})
    print(f"model {recipe.name} ({recipe.pipeline}), call {call}")
    print(f"prompt {prompt!r}, seed {args.seed}")

    if not has_calibration(pipe, config):
        prompts = [s.caption for s in scenes_of("tune", recipe.kind == "video")[: args.calibration_prompts]]
        print(f"no calibration for this model yet: calibrating on {len(prompts)} tune captions")
        calibration = api.calibrate(pipe, prompts, call_kwargs=call, seed=args.seed + 1000)
        print(f"calibration written to {calibration.source}")

    def cached_run():
        api.enable(pipe, config)
        try:
            frames, seconds = _generate(pipe, prompt, args.seed, call)
            return frames, seconds, api.stats(pipe)
        finally:
            api.disable(pipe)

    _generate(pipe, prompt, args.seed, call)  # warm-up: the first calls of a process are slower, untimed
    cached_run()
    full_times, cached_times = [], []
    quiet = logging.getLogger("taocache")
    level = quiet.level
    quiet.setLevel(max(level, logging.WARNING))  # the warm-up said it all once
    try:
        for _ in range(args.repeats):  # alternated, so a change in the machine's load falls on both alike
            full, seconds = _generate(pipe, prompt, args.seed, call)
            full_times.append(seconds)
            cached, seconds, record = cached_run()
            cached_times.append(seconds)
    finally:
        quiet.setLevel(level)
    full_s, cached_s = statistics.median(full_times), statistics.median(cached_times)

    print(record)
    print(
        f"wall time, median of {args.repeats} runs after a warm-up: full {full_s:.2f} s, TaoCache {cached_s:.2f} s, "
        f"speed-up {full_s / cached_s:.2f}x (ideal from calls saved {record.ideal_speedup:.2f}x)"
    )
    print(f"fidelity against the full run: PSNR {psnr(cached, full):.2f} dB, SSIM {ssim(cached, full):.4f}")
    common.check_output(args.output, args.force)  # a file may have appeared during the runs
    path = write_video(args.output, side_by_side(full, cached, panel=256), args.fps)
    print(f"full run (left) and TaoCache (right) written to {path}")
    return 0


def calibrate_command(args) -> int:
    from .. import api
    from ..core import parallel
    from ..taocache.calibration import default_directory
    from ..world import scenes_of

    prompts = common.read_prompt_lines(args.prompts_file)
    if args.num_prompts < 1:
        raise ValueError(f"--num-prompts {args.num_prompts} must be at least 1")
    if not 1 <= args.horizon <= 8:
        raise ValueError(f"--horizon {args.horizon} must be between 1 and 8")
    if args.ulysses_degree < 1 or args.ring_degree < 1:
        raise ValueError("--ulysses-degree and --ring-degree must be at least 1")
    if args.output is not None:
        common.check_output(args.output, args.force)
    parallel_run = args.ulysses_degree * args.ring_degree > 1 or parallel.launched()
    device = parallel.start_from_environment() if parallel_run else "cpu"
    try:
        if parallel_run:
            parallel.check_degrees(args.ulysses_degree, args.ring_degree)  # before the model loads
        pipe, recipe, call = common.load_with_call(args, device=device)
        if parallel_run:
            parallel.enable_context_parallel(pipe, args.ulysses_degree, args.ring_degree)
        say = print if parallel.is_first_rank() else (lambda *_: None)
        if prompts is None:
            prompts = [s.caption for s in scenes_of("tune", recipe.kind == "video")]
        prompts = prompts[: args.num_prompts]
        ranks = f", Ulysses {args.ulysses_degree} x ring {args.ring_degree} on {device}" if parallel_run else ""
        say(f"calibrating {recipe.name} on {len(prompts)} prompts, call {call}{ranks}")
        calibration = api.calibrate(
            pipe, prompts, call_kwargs=call, seed=args.seed, horizon=args.horizon, path=args.output,
            overwrite=args.force, progress=parallel.is_first_rank(),
        )
        where = args.output or default_directory() / calibration.file_name()
        say(f"calibration of {calibration.describe()} ({calibration.samples} samples) written to {where}")
    finally:
        if parallel_run:
            parallel.leave()
    return 0
