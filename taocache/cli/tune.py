"""``taocache tune``: the fastest cache configuration that keeps a quality target, written to a file."""

from __future__ import annotations

from pathlib import Path

from . import common


def register(sub) -> None:
    p = sub.add_parser(
        "tune", help="find the fastest TaoCache configuration (alone or on TeaCache) that meets a quality target"
    )
    common.add_model_argument(p)
    common.add_call_arguments(p)
    p.add_argument("--target-psnr", type=float, default=None, help="least PSNR against the full run, dB")
    p.add_argument("--target-ssim", type=float, default=None, help="least SSIM against the full run (0-1)")
    p.add_argument(
        "--target-lpips", type=float, default=None, help="largest LPIPS against the full run (needs AlexNet weights)"
    )
    p.add_argument("--search-prompts", type=int, default=4, help="prompts the search runs on (default 4)")
    p.add_argument("--check-prompts", type=int, default=10, help="prompts checked after, apart from the search prompts (default 10)")
    p.add_argument(
        "--prompts-file",
        type=Path,
        default=None,
        help="prompts, one a line: the first --search-prompts search, the next --check-prompts check "
        "(default: alternate tune captions of the sample world for the search and the check)",
    )
    p.add_argument("--margin", type=float, default=0.5, help="PSNR margin the search demands above the target, dB")
    p.add_argument("--no-stack", action="store_true", help="tune TaoCache alone (no TeaCache candidates)")
    p.add_argument("--seed", type=int, default=0)
    common.add_output_arguments(p, Path("runs/taocache-tuned.json"), "configuration file to write (default: "
                         "runs/taocache-tuned.json under the current folder)")
    p.set_defaults(func=tune_command)


def _spread(items: list, count: int) -> list:
    """``count`` items spread evenly over ``items`` (the sample world's lists are ordered by attribute)."""
    if count >= len(items):
        return list(items)
    return [items[round(i * len(items) / count)] for i in range(count)]


def _prompts(args, kind: str) -> tuple[list[str], list[str]]:
    if args.search_prompts < 1 or args.check_prompts < 0:
        raise ValueError("--search-prompts must be at least 1 and --check-prompts at least 0")
    lines = common.read_prompt_lines(args.prompts_file)
    if lines is not None:
        needed = args.search_prompts + args.check_prompts
        if len(lines) < needed:
            raise ValueError(f"--prompts-file {args.prompts_file} holds {len(lines)} prompts; {needed} are needed")
        return lines[: args.search_prompts], lines[args.search_prompts : needed]
    from ..world import scenes_of

    tune = [s.caption for s in scenes_of("tune", kind == "video")]
    return _spread(tune[::2], args.search_prompts), _spread(tune[1::2], args.check_prompts)


def tune_command(args) -> int:
    from ..taocache.backend import calibration_path
    from ..tuning import Targets, check_margin, tune

    Targets(args.target_psnr, args.target_ssim, args.target_lpips)  # checks the targets before any work
    check_margin(args.margin, "--margin")
    common.check_output(args.output, args.force)
    common.check_output(calibration_path(args.output), args.force)  # the calibration written beside it
    lpips_model = None
    if args.target_lpips is not None:
        from ..metrics import load_lpips

        lpips_model = load_lpips("alex")
    if args.prompts_file is not None:  # read now, so a short file fails before the model loads
        _prompts(args, "video")
    pipe, recipe, call = common.load_with_call(args)
    search, check = _prompts(args, recipe.kind)
    print(f"tuning {recipe.name} on {len(search)} search prompts, checking on {len(check)} held-out prompts")
    result = tune(
        pipe,
        search,
        check,
        target_psnr=args.target_psnr,
        target_ssim=args.target_ssim,
        target_lpips=args.target_lpips,
        call_kwargs=call,
        seed=args.seed,
        stack=not args.no_stack,
        margin_db=args.margin,
        lpips_model=lpips_model,
    )
    if result.chosen is None:
        best = max(result.candidates, key=lambda c: c.worst["psnr"])
        print(f"no configuration met the targets; the closest was {best.name} (worst PSNR {best.worst['psnr']:.2f} dB)")
        return 1
    path = result.save(args.output, overwrite=args.force)
    chosen = result.chosen
    print(f"chosen: {chosen.name}, {chosen.speedup:.2f}x fewer full denoiser passes")
    print("  worst on the search prompts: " + ", ".join(f"{k} {v:.4g}" for k, v in chosen.worst.items()))
    if result.check:
        met = sum(row["met"] for row in result.check)
        print(f"  held-out check: target met on {met} of {len(result.check)} prompts")
    print(f"written {path}; use it with taocache.enable(pipe, {str(path)!r})")
    return 0
