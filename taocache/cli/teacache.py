"""``taocache fit-teacache``: fit TeaCache's rescaling polynomial for a model from full pipeline runs."""

from __future__ import annotations

import re
from pathlib import Path

from .common import (
    add_call_arguments,
    add_model_argument,
    add_output_arguments,
    check_output,
    read_prompt_lines,
)


def register(sub) -> None:
    p = sub.add_parser(
        "fit-teacache", help="fit TeaCache's rescaling coefficients for a model from full runs"
    )
    add_model_argument(p)
    p.add_argument(
        "--prompts-file",
        type=Path,
        default=None,
        help="calibration prompts, one a line (default: the sample world's tune captions)",
    )
    p.add_argument("--num-prompts", type=int, default=32, help="use the first N prompts (default 32)")
    p.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=None,
        help="sampling steps; several values pool their runs into one fit (default: the recipe's)",
    )
    add_call_arguments(p, ["guidance"])
    p.add_argument("--degree", type=int, default=4, help="degree of the fitted polynomial (default 4)")
    p.add_argument(
        "--indicator",
        default="auto",
        choices=("auto", "modulated_input", "timestep_conditioning", "time_embedding", "block_input"),
        help="what TeaCache watches (default: the model's modulated input where known)",
    )
    p.add_argument(
        "--target",
        choices=("output", "residual"),
        default="residual",
        help="change the indicator is mapped to: the stack residual (default; what a skip reuses) or the "
        "model output (as published)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=5,
        help="first steps that are always computed, left out of the fit and stored with the coefficients "
        "(default 5)",
    )
    p.add_argument("--batch", type=int, default=4, help="prompts per pipeline call")
    p.add_argument("--seed", type=int, default=0)
    add_output_arguments(p, None, "JSON file (default: <model>-teacache.json in ~/.cache/taocache/teacache, where "
                         "TeaCache looks for fitted coefficients)")
    p.set_defaults(func=run)


def _prompts(args) -> list[str]:
    prompts = read_prompt_lines(args.prompts_file)
    if prompts is None:
        from ..world import scenes_of

        prompts = [scene.caption for scene in scenes_of("tune", video=True)]
    if args.num_prompts is not None:
        if args.num_prompts < 1:
            raise ValueError(f"--num-prompts={args.num_prompts} must be >= 1")
        prompts = prompts[: args.num_prompts]
    return prompts


def run(args) -> int:
    from ..recipes import find_recipe, load_pipeline
    from ..teacache.coefficients import coefficient_directories
    from ..teacache.fit import coefficient_file_content, fit_teacache, write_coefficient_file

    if args.warmup < 1:
        raise ValueError(f"--warmup={args.warmup} must be >= 1 (the first step has nothing to compare with)")
    for name, value in (("--degree", args.degree), ("--batch", args.batch)):
        if value < 1:
            raise ValueError(f"{name}={value} must be >= 1")
    if args.steps is not None and min(args.steps) <= args.warmup:
        raise ValueError(f"--steps {args.steps} must each be more than --warmup {args.warmup}: nothing to fit")
    prompts = _prompts(args)
    recipe = find_recipe(args.model, kind="video")
    if not recipe.call:
        raise ValueError(
            f"no recipe for {recipe.model}: the fit would run at the pipeline's own default size (480x832x81 for "
            "Wan); give --model a recipe file (pipelines/*.toml) that records the size, frames and steps"
        )
    safe_name = re.sub(r"[^\w.-]+", "-", recipe.name)
    output = check_output(args.output or coefficient_directories()[0] / f"{safe_name}-teacache.json", args.force)
    pipe, recipe = load_pipeline(recipe, kind="video")
    if getattr(pipe, "transformer", None) is None:
        raise ValueError(f"{recipe.name} has no transformer: TeaCache caches a transformer's block stack")
    call_kwargs = recipe.call_kwargs(guidance_scale=args.guidance)
    fit = fit_teacache(
        pipe,
        prompts,
        call_kwargs,
        degree=args.degree,
        indicator=args.indicator,
        target=args.target,
        warmup_steps=args.warmup,
        step_counts=args.steps,
        seed=args.seed,
        batch_size=args.batch,
    )
    content = coefficient_file_content(fit, pipe, call_kwargs, model=recipe.name, num_prompts=len(prompts))
    write_coefficient_file(output, content, overwrite=args.force)
    steps = " and ".join(str(s or "default") for s in fit.step_counts)
    print(f"{recipe.name}: {fit.num_points} step pairs from {len(prompts)} prompts at {steps} steps")
    print(
        f"  indicator {fit.indicator} -> {fit.target} change, degree {fit.degree}: "
        f"R^2 {fit.r2:.3f}, RMSE {fit.rmse:.4g}"
    )
    print(f"  coefficients {fit.coefficients}")
    print(f"written {output}  (use: TeaCacheConfig.from_file({str(output)!r}))")
    return 0
