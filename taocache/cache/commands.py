"""``taocache run`` (full run against TaoCache on one prompt) and ``taocache calibrate``."""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np

from ..io import check_writable_folder

_FRAME_KEYS = ("num_frames", "video_length")
_OUTPUT_SUFFIXES = (".gif", ".mp4", ".png")


def register(sub) -> None:
    run_parser = sub.add_parser(
        "run", help="run a model in full and with TaoCache; compare speed and fidelity"
    )
    _add_model_arguments(run_parser)
    run_parser.add_argument(
        "--prompt", default=None, help="prompt (default: the first test caption of the sample world)"
    )
    run_parser.add_argument("--seed", type=int, default=0)
    run_parser.add_argument(
        "--predictor", default=None, help="geometric, linear or reuse (default: the config's)"
    )
    run_parser.add_argument(
        "--start", type=float, default=None, help="start_fraction (default: the config's)"
    )
    run_parser.add_argument("--budget", type=float, default=None, help="error_budget (default: the config's)")
    run_parser.add_argument("--max-consecutive", type=int, default=None, help="(default: the config's)")
    run_parser.add_argument(
        "--weigh-by-step",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="weigh each call's predicted error by its step size (default: the config's)",
    )
    run_parser.add_argument(
        "--calibration",
        type=Path,
        default=None,
        help="calibration JSON (default: look one up, else calibrate and save one)",
    )
    run_parser.add_argument(
        "--calibration-prompts",
        type=int,
        default=4,
        help="tune captions to calibrate on when no calibration exists (default 4)",
    )
    run_parser.add_argument(
        "--output",
        type=Path,
        default=Path("runs/taocache-run.gif"),
        help="side-by-side video, .gif or .mp4 (.png for image models); default runs/taocache-run.gif",
    )
    run_parser.add_argument("--fps", type=float, default=8.0, help="frames per second of the video (default 8)")
    run_parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    run_parser.set_defaults(func=run_command)

    cal = sub.add_parser("calibrate", help="measure TaoCache's delta statistics for a model from full runs")
    _add_model_arguments(cal)
    cal.add_argument(
        "--prompts-file",
        type=Path,
        default=None,
        help="calibration prompts, one a line (default: the sample world's tune captions)",
    )
    cal.add_argument("--num-prompts", type=int, default=8, help="use the first N prompts (default 8)")
    cal.add_argument("--seed", type=int, default=0)
    cal.add_argument("--horizon", type=int, default=3, help="longest run of predicted steps calibrated (1-8)")
    cal.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON file (default: the calibration folder, ~/.cache/taocache/calibration or "
        "$TAOCACHE_CALIBRATION_DIR, under the calibration's key)",
    )
    cal.add_argument("--force", action="store_true", help="overwrite the output file if it exists")
    cal.set_defaults(func=calibrate_command)


def _add_model_arguments(parser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="recipe name, recipe file, pipeline folder or hub id (default: the embedded video model)",
    )
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the recipe's)")
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--frames", type=int, default=None, help="video length (default: the recipe's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the recipe's)")


def check_model_arguments(args) -> None:
    """Clear errors for sizes and counts out of range, before anything loads."""
    for name in ("steps", "height", "width", "frames"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name} {value} must be at least 1")
    if args.guidance is not None and not args.guidance >= 0:
        raise ValueError(f"--guidance {args.guidance} must be a number >= 0")


def _load(args):
    """(pipeline, recipe, call kwargs): the recipe's call arguments with the command-line overrides."""
    from ..recipes import load_pipeline

    check_model_arguments(args)
    pipe, recipe = load_pipeline(args.model, kind="video")
    call = recipe.call_kwargs(
        num_inference_steps=args.steps, height=args.height, width=args.width, guidance_scale=args.guidance
    )
    if args.frames is not None and recipe.kind == "video":
        key = next(
            (k for k in _FRAME_KEYS if k in call),
            "video_length" if recipe.pipeline == "LattePipeline" else "num_frames",
        )
        call[key] = args.frames
    if (
        not recipe.call
        and recipe.kind == "video"
        and (args.height is None or args.width is None or args.frames is None or args.steps is None)
    ):
        raise ValueError(
            f"no recipe for {recipe.model}: pass --height, --width, --frames and --steps (the pipeline's own "
            "defaults can be very large, e.g. WanPipeline renders 480x832x81), or add a recipe under pipelines/"
        )
    return pipe, recipe, call


def _frames(output) -> np.ndarray:
    if hasattr(output, "frames"):
        return np.asarray(output.frames[0])
    return np.asarray(output.images[0])[None]


def _generate(pipe, prompt, seed, call) -> tuple[np.ndarray, float]:
    import torch

    start = time.perf_counter()
    output = pipe(prompt, generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **call)
    return _frames(output), time.perf_counter() - start


def _check_mp4_writer() -> None:
    """MP4 needs imageio's ffmpeg or PyAV plugin; say so before the runs, not after."""
    import importlib.util

    if not any(importlib.util.find_spec(name) for name in ("imageio_ffmpeg", "av")):
        raise ValueError(
            "writing .mp4 needs imageio's ffmpeg plugin (pip install imageio-ffmpeg) or PyAV (pip install av); "
            "or write a .gif"
        )


def write_side_by_side(path: Path, left: np.ndarray, right: np.ndarray, fps: float) -> Path:
    """Write two (F, H, W, 3) videos in [0, 1] next to each other (GIF, MP4, or PNG for one frame), atomically."""
    import imageio.v3 as iio

    movie = np.concatenate([left, np.ones_like(left[:, :, :4]), right], axis=2)
    scale = max(1, 256 // movie.shape[1])  # small videos are enlarged, nearest neighbour
    movie = (np.clip(movie, 0, 1) * 255 + 0.5).astype(np.uint8).repeat(scale, axis=1).repeat(scale, axis=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        if path.suffix == ".png":
            iio.imwrite(tmp, movie[0])
        elif path.suffix == ".gif":
            iio.imwrite(tmp, movie, duration=1000.0 / fps, loop=0)
        else:
            iio.imwrite(tmp, movie, fps=fps, codec="libx264", macro_block_size=1)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def run_command(args) -> int:
    import taocache

    from ..metrics import psnr, ssim
    from ..world import scenes_of
    from .api import has_calibration
    from .config import TaoCacheConfig

    if args.output.suffix not in _OUTPUT_SUFFIXES:
        raise ValueError(f"--output {args.output} must end in one of {_OUTPUT_SUFFIXES}")
    if not math.isfinite(args.fps) or args.fps <= 0:
        raise ValueError(f"--fps {args.fps:g} must be a number > 0")
    if args.calibration_prompts < 1:
        raise ValueError(f"--calibration-prompts {args.calibration_prompts} must be at least 1")
    if args.output.exists() and not args.force:
        raise FileExistsError(f"{args.output} exists; pass --force to overwrite it")
    check_writable_folder(args.output)
    if args.output.suffix == ".mp4":
        _check_mp4_writer()
    pipe, recipe, call = _load(args)
    prompt = args.prompt or scenes_of("test", recipe.kind == "video")[0].caption
    fields = {
        k: v
        for k, v in {
            "predictor": args.predictor,
            "start_fraction": args.start,
            "error_budget": args.budget,
            "max_consecutive": args.max_consecutive,
            "weigh_by_step": args.weigh_by_step,
            "calibration": args.calibration,
        }.items()
        if v is not None
    }
    config = TaoCacheConfig(auto_calibrate=False, **fields)
    print(f"model {recipe.name} ({recipe.pipeline}), call {call}")
    print(f"prompt {prompt!r}, seed {args.seed}")

    _generate(pipe, prompt, args.seed, {**call, "num_inference_steps": 2})  # warm-up, not timed
    full, full_time = _generate(pipe, prompt, args.seed, call)

    if not has_calibration(pipe, config):
        prompts = [s.caption for s in scenes_of("tune", recipe.kind == "video")[: args.calibration_prompts]]
        print(f"no calibration for this model yet: calibrating on {len(prompts)} tune captions")
        calibration = taocache.calibrate(pipe, prompts, call_kwargs=call, seed=args.seed + 1000)
        print(f"calibration written to {calibration.source}")
    taocache.enable(pipe, config)
    cached, cached_time = _generate(pipe, prompt, args.seed, call)
    record = taocache.stats(pipe)
    taocache.disable(pipe)

    print(record)
    print(
        f"wall time: full {full_time:.2f} s, TaoCache {cached_time:.2f} s, speed-up {full_time / cached_time:.2f}x "
        f"(ideal from calls saved {record.ideal_speedup:.2f}x)"
    )
    print(f"fidelity against the full run: PSNR {psnr(cached, full):.2f} dB, SSIM {ssim(cached, full):.4f}")
    if args.output.exists() and not args.force:
        raise FileExistsError(f"{args.output} appeared during the run; pass --force to overwrite it")
    path = write_side_by_side(args.output, full, cached, args.fps)
    print(f"full run (left) and TaoCache (right) written to {path}")
    return 0


def calibrate_command(args) -> int:
    import taocache

    from ..world import scenes_of
    from .calibration import default_directory

    if args.prompts_file is not None:
        if not args.prompts_file.is_file():
            raise FileNotFoundError(f"--prompts-file {args.prompts_file} does not exist")
        prompts = [line.strip() for line in args.prompts_file.read_text().splitlines() if line.strip()]
    else:
        prompts = None
    if args.num_prompts < 1:
        raise ValueError(f"--num-prompts {args.num_prompts} must be at least 1")
    if prompts == []:
        raise ValueError(f"--prompts-file {args.prompts_file} holds no prompt")
    if args.output is not None and args.output.exists() and not args.force:
        raise FileExistsError(f"{args.output} exists; pass --force to overwrite it")
    if not 1 <= args.horizon <= 8:
        raise ValueError(f"--horizon {args.horizon} must be between 1 and 8")
    if args.output is not None:
        check_writable_folder(args.output)
    pipe, recipe, call = _load(args)
    if prompts is None:
        prompts = [s.caption for s in scenes_of("tune", recipe.kind == "video")]
    prompts = prompts[: args.num_prompts]
    print(f"calibrating {recipe.name} on {len(prompts)} prompts, call {call}")
    calibration = taocache.calibrate(
        pipe,
        prompts,
        call_kwargs=call,
        seed=args.seed,
        horizon=args.horizon,
        path=args.output,
        overwrite=args.force,
    )
    where = args.output or default_directory() / calibration.file_name()
    print(f"calibration of {calibration.describe()} ({calibration.samples} samples) written to {where}")
    return 0
