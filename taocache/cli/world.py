"""``taocache world-eval``: hold a sample-world model to its quality bar on held-out captions."""

from __future__ import annotations

from pathlib import Path

from ..world.scenes import SPLITS
from .common import add_call_arguments, add_model_argument, add_output_arguments, check_output


def register(sub) -> None:
    p = sub.add_parser("world-eval", help="score a sample-world model on its captions with the analytic scorer")
    add_model_argument(p, "the embedded model of --kind")
    p.add_argument("--kind", choices=("video", "image"), default="video")
    p.add_argument("--seeds", type=int, default=2, help="samples (seeds 0, 1, ...) per caption of the split")
    p.add_argument("--max-samples", type=int, default=None, help="score only the first N samples (a quick look)")
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="test",
        help="test captions (the quality bar, default), tune captions (for choosing a recipe's settings) or "
        "train captions",
    )
    add_call_arguments(p, ["steps", "guidance"])
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default: cpu)")
    add_output_arguments(p, None, "JSON file (default: eval/results/model-<name>.json under the current folder; "
                         "model-<name>-<split>.json for another split)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..metrics import format_rate
    from ..recipes import check_device, load_pipeline
    from ..results import write_json
    from ..world.evaluate import evaluate_model

    if args.seeds < 1:
        raise ValueError(f"--seeds={args.seeds} must be at least 1")
    if args.max_samples is not None and args.max_samples < 1:
        raise ValueError(f"--max-samples={args.max_samples} must be at least 1")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps={args.steps} must be at least 1")
    if args.guidance is not None and not args.guidance >= 0:
        raise ValueError(f"--guidance={args.guidance} must be a number >= 0")
    check_device(args.device)
    pipe, recipe = load_pipeline(args.model, kind=args.kind, device=args.device)
    suffix = "" if args.split == "test" else f"-{args.split}"
    output = check_output(args.output or Path("eval", "results", f"model-{recipe.name}{suffix}.json"), args.force)
    result = evaluate_model(pipe, recipe, args.split, args.seeds, args.max_samples, num_inference_steps=args.steps,
                            guidance_scale=args.guidance)
    write_json(output, result)
    settings = result["settings"]
    print(f"{recipe.name}: {settings['samples']} samples of {args.split} captions, guidance "
          f"{settings.get('guidance_scale')}")
    print("  attribute   agreement (95% interval)   chance")
    for name, rate in result["rates"].items():
        chance = result["chance"].get(name)
        print(f"  {name:<11} {format_rate(rate, result['intervals'][name]):<24} "
              f"{'' if chance is None else f'{100 * chance:.0f}%'}")
    print(f"  autoencoder reconstruction PSNR {result['autoencoder_psnr_db']:.2f} dB")
    print(f"written {output}")
    return 0
