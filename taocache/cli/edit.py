"""``taocache edit``, ``taocache edit-batch`` and ``taocache edit-eval``: parse, call the library, print."""

from __future__ import annotations

import json
import sys

from ..edit.config import INVERSIONS, EditConfig, default_config
from ..world.scenes import SPLITS
from .common import add_model_argument


def register(subparsers) -> None:
    edit = subparsers.add_parser(
        "edit",
        help="non-rigid edit of one image (text optimisation, inversion, timestep-aware injection)",
        description="Edit IMAGE from what --source describes to what --target asks; writes the edit to "
        "--output and a grid (input, reconstruction, the sweep) beside it as <name>_grid.png.",
    )
    edit.add_argument("image", help="input image (any format Pillow reads)")
    edit.add_argument("--source", required=True, help="a prompt describing the input image")
    edit.add_argument("--target", required=True, help="a prompt describing the wanted result")
    edit.add_argument("--output", required=True, help="where to write the edited image (e.g. out.png)")
    edit.add_argument("--sweep-alpha", help="comma-separated alphas to show in the grid, e.g. 0,0.2,0.4")
    edit.add_argument(
        "--sweep-steps-source", help="comma-separated S values to show in the grid, e.g. 5,10,20"
    )
    _edit_arguments(edit)
    edit.set_defaults(func=run_edit)

    batch = subparsers.add_parser(
        "edit-batch",
        help="run the edits of a TOML spec (see samples/edits/world.toml)",
        description="Run every [[edit]] of SPEC; a failing item is reported and the others still run. The exit "
        "status is 1 when any item failed.",
    )
    batch.add_argument("spec", help="TOML batch spec")
    batch.add_argument(
        "--output-dir", help="folder for the outputs (default: the spec's output_dir, relative to it)"
    )
    _edit_arguments(batch)
    batch.set_defaults(func=run_batch_command)

    evaluate = subparsers.add_parser(
        "edit-eval",
        help="evaluate editing on move/resize edits of the sample world's test scenes",
        description="Score the method against DDIM inversion + target prompt and SDEdit on test edits of "
        "the sample world; records stream to OUTPUT_DIR/records.jsonl (a rerun resumes), a summary "
        "is written to summary.json and summary.md.",
    )
    evaluate.add_argument("--cases", type=int, default=48, help="number of edits (half moves, half resizes; default 48)")
    evaluate.add_argument(
        "--output-dir", default="eval/results/edit", help="where records and summaries go (under the current folder)"
    )
    evaluate.add_argument(
        "--sweep-alpha", default="", help="alphas of the method also scored, e.g. 0,1 (default: none)"
    )
    evaluate.add_argument(
        "--sweep-steps-source", default="", help="S values of the alpha sweep (default: the method's S only)"
    )
    evaluate.add_argument(
        "--settings-file",
        help="each method's setting as chosen on tune edits (the choice.json `taocache edit-tune` writes)",
    )
    _methods_argument(evaluate)
    evaluate.add_argument("--restart", action="store_true", help="discard earlier records in --output-dir")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the case selection")
    evaluate.add_argument(
        "--split", choices=[n for n in SPLITS if n != "train"], default="test",
        help="scenes to edit: test (the evaluation) or tune (for choosing settings)",
    )
    evaluate.add_argument("--kinds", default="move,resize", help="edit kinds to alternate over (move, resize)")
    _model_arguments(evaluate)
    _setting_arguments(evaluate)
    evaluate.set_defaults(func=run_eval_command)

    tune = subparsers.add_parser(
        "edit-tune",
        help="choose each editing method's setting on tune edits, trying as many settings of each",
        description="Try --size settings of each method on --cases move/resize edits of the sample world's tune "
        "scenes and write the best of each (by the rate of edits that keep everything) to OUTPUT_DIR/choice.json, "
        "which `taocache edit-eval --settings-file` reads.",
    )
    tune.add_argument("--cases", type=int, default=32, help="number of tune edits (default 32)")
    tune.add_argument("--size", type=int, default=4, help="settings tried per method (default 4)")
    tune.add_argument("--output-dir", default="eval/results/edit-tune", help="where records and choice.json go")
    tune.add_argument("--restart", action="store_true", help="discard earlier records in --output-dir")
    tune.add_argument("--seed", type=int, default=0, help="seed of the case selection")
    _methods_argument(tune)
    _model_arguments(tune)
    _setting_arguments(tune)
    tune.set_defaults(func=run_tune_command)


def _methods_argument(parser) -> None:
    from ..edit.methods import METHODS

    parser.add_argument(
        "--methods", default=",".join(METHODS),
        help=f"comma-separated methods to run (default: all of {', '.join(METHODS)})",
    )


def _parse_methods(text: str) -> tuple:
    from ..edit.methods import METHODS

    methods = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise ValueError(f"--methods={text!r} must name some of {', '.join(METHODS)}")
    return methods


def _edit_arguments(parser) -> None:
    """What the commands that write edited images share."""
    _model_arguments(parser)
    _setting_arguments(parser)
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def _model_arguments(parser) -> None:
    add_model_argument(parser, "tiny-t2i")
    parser.add_argument(
        "--device", default=None,
        help="where the model runs (default: cuda in float16 when available, else cpu in float32)",
    )
    parser.add_argument("--cache-dir", help="artefact cache folder (default: ~/.cache/taocache/edit)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or keep cached artefacts")
    parser.add_argument(
        "--taocache",
        action="store_true",
        help="run the sampling stage with TaoCache (taocache.enable with its default config)",
    )


def _setting_arguments(parser) -> None:
    published = EditConfig()
    note = "default: the model's measured setting, else the published"
    parser.add_argument(
        "--alpha", type=float, help=f"weight of the target text in the injected text ({note}: {published.alpha})"
    )
    parser.add_argument(
        "--steps-source", type=int, help=f"S, steps on the source prompt ({note}: {published.steps_source})"
    )
    parser.add_argument("--inversion", choices=INVERSIONS, help=f"inversion method ({published.inversion})")
    parser.add_argument("--num-steps", type=int, help=f"DDIM steps ({published.num_steps})")
    parser.add_argument(
        "--guidance-scale", type=float, help=f"guidance scale ({note}: {published.guidance_scale})"
    )
    parser.add_argument("--text-steps", type=int, help=f"text optimisation steps ({note}: {published.text_steps})")
    parser.add_argument("--text-lr", type=float, help=f"text optimisation learning rate ({published.text_lr})")
    parser.add_argument(
        "--null-inner-steps", type=int, help=f"null-text steps per step ({note}: {published.null_inner_steps})"
    )
    parser.add_argument("--null-lr", type=float, help=f"null-text base learning rate ({note}: {published.null_lr})")
    parser.add_argument("--edit-seed", type=int, help=f"seed of text optimisation ({published.seed})")


def _recipe(args):
    """The recipe ``--model`` names (cheap: nothing is loaded), so settings can be checked before loading."""
    from ..recipes import find_recipe

    recipe = find_recipe(args.model, kind="image")
    if recipe.kind != "image":
        raise ValueError(
            f"--model {args.model} is a {recipe.kind} model; editing needs a text-to-image Stable Diffusion "
            "pipeline (default: tiny-t2i)"
        )
    return recipe


def _config(args, recipe) -> EditConfig:
    return default_config(recipe.name).with_values(**_cli_settings(args))


def _cli_settings(args) -> dict:
    """The edit settings given on the command line (None where not given, which keeps the default)."""
    return {
        "alpha": args.alpha,
        "steps_source": args.steps_source,
        "inversion": args.inversion,
        "num_steps": args.num_steps,
        "guidance_scale": args.guidance_scale,
        "text_steps": args.text_steps,
        "text_lr": args.text_lr,
        "null_inner_steps": args.null_inner_steps,
        "null_lr": args.null_lr,
        "seed": args.edit_seed,
    }


def _cache_dir(args):
    if args.no_cache:
        return None
    return args.cache_dir or "default"


def device_and_dtype(device: str | None):
    """The device the model runs on and its dtype: float16 on CUDA (half the memory, the usual way SD runs),
    float32 elsewhere (CPU kernels in float16 are slow or missing)."""
    import torch

    from ..recipes import check_device

    check_device(device)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return device, torch.float16 if torch.device(device).type == "cuda" else torch.float32


def _load(recipe, device: str | None = None):
    from ..recipes import load_pipeline

    device, dtype = device_and_dtype(device)
    pipe, recipe = load_pipeline(recipe, kind="image", device=device, dtype=dtype)
    if getattr(pipe, "unet", None) is None or not hasattr(pipe, "encode_prompt"):
        raise ValueError(
            f"{recipe.model} loads as {type(pipe).__name__}; editing needs a Stable Diffusion pipeline (a UNet "
            "and a text encoder)"
        )
    return pipe, recipe


def _taocache_config(args, pipe, config: EditConfig, prompts: list[str]):
    """None, or TaoCache calibrated for this model and these settings (kept in the artefact cache)."""
    if not args.taocache:
        return None
    from ..edit.acceleration import calibrated_cache_config
    from ..edit.artefacts import ArtefactCache, model_identity
    from ..edit.inputs import model_size

    height, width = model_size(pipe)
    call = {"num_inference_steps": config.num_steps, "guidance_scale": config.guidance_scale,
            "height": height, "width": width}
    cache = ArtefactCache(_cache_dir(args))
    path = None
    if cache.enabled:
        name = f"taocache-{model_identity(pipe)[:16]}-{config.num_steps}-{config.guidance_scale:g}.json"
        path = cache.directory / name
    return calibrated_cache_config(pipe, prompts, call, path)


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def run_edit(args) -> int:
    from ..edit.edit_file import check_request, parse_list, run_request

    recipe = _recipe(args)
    config = _config(args, recipe)
    alphas = parse_list(args.sweep_alpha, float, "--sweep-alpha")
    steps = parse_list(args.sweep_steps_source, int, "--sweep-steps-source")
    # everything that can fail on the user's input does so before the model loads (or TaoCache calibrates)
    request = check_request(args.image, args.source, args.target, args.output, config, alphas, steps, args.force)
    pipe, recipe = _load(recipe, args.device)
    cache_config = _taocache_config(args, pipe, config, [args.source, args.target])
    report = run_request(pipe, request, config, recipe, _cache_dir(args), args.force, cache_config)
    r = report.reconstruction
    print(f"edit written to {report.output}")
    print(f"grid written to {report.grid}")
    print(
        f"reconstruction ({config.inversion}): PSNR {_number(r['psnr'])} dB, SSIM {_number(r['ssim'])}, "
        f"LPIPS {_number(r['lpips'])}"
    )
    cached = ", ".join(f"{k} {'cached' if v else 'computed'}" for k, v in report.from_cache.items())
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()) + f" ({cached})")
    for setting in report.settings:
        if "stats" in setting:
            stats = setting["stats"]
            print(
                f"TaoCache at S={setting['steps_source']} alpha={setting['alpha']:g}: "
                f"{stats.get('computed')} of {stats.get('calls')} denoiser calls computed"
            )
    return 0


def run_batch_command(args) -> int:
    from ..edit.batch import load_spec, run_batch

    spec = load_spec(args.spec, args.output_dir)
    if args.model is None:
        args.model = spec.model
    recipe = _recipe(args)
    # the model's defaults, then the spec's [defaults], then the command line; each item's own settings last
    given = {k: v for k, v in _cli_settings(args).items() if v is not None}
    config = spec.configure(lambda defaults: default_config(recipe.name).with_values(**{**defaults, **given}))
    pipe, recipe = _load(recipe, args.device)
    prompts = [p for item in spec.items for p in (item.source, item.target) if p.strip()] or ["a shape"]
    cache_config = _taocache_config(args, pipe, config, prompts)
    result = run_batch(
        spec, pipe, recipe, cache_dir=_cache_dir(args), overwrite=args.force, cache_config=cache_config
    )
    for item, report in result.done:
        print(
            f"[{item.index}] {item.image} -> {report.output} (reconstruction PSNR "
            f"{_number(report.reconstruction['psnr'])} dB)"
        )
    if result.failed:
        print(
            f"{len(result.failed)} of {len(result.done) + len(result.failed)} edit(s) failed:",
            file=sys.stderr,
        )
        for index, message in result.failed:
            print(f"  [{index}] {message}", file=sys.stderr)
        return 1
    print(f"all {len(result.done)} edit(s) done")
    return 0


def run_eval_command(args) -> int:
    from ..edit.edit_file import parse_list
    from ..edit.evaluation import EvalSettings, run_evaluation, summary_markdown

    if args.cases < 1:
        raise ValueError(f"--cases={args.cases} must be at least 1")
    recipe = _recipe(args)
    config, methods = _config(args, recipe), None
    if args.settings_file:
        from ..edit.tuning import load_choice

        if args.split == "tune":
            raise ValueError("--settings-file holds settings chosen on tune edits; evaluate them on --split test")
        chosen_config, methods = load_choice(args.settings_file)
        config = chosen_config.with_values(**_cli_settings(args))
    selected = _parse_methods(args.methods)
    if methods is None:
        from ..edit.methods import default_settings

        methods = {m: [s] for m, s in default_settings(config).items()}
    missing = [m for m in selected if m not in methods]
    if missing:
        raise ValueError(f"--settings-file {args.settings_file} chose no setting for {', '.join(missing)}")
    settings = EvalSettings(
        cases=args.cases,
        config=config,
        methods={m: methods[m] for m in selected},
        sweep_alpha=tuple(parse_list(args.sweep_alpha, float, "--sweep-alpha") or ())
        if args.sweep_alpha
        else (),
        sweep_steps_source=tuple(parse_list(args.sweep_steps_source, int, "--sweep-steps-source") or ())
        if args.sweep_steps_source
        else (),
        taocache=args.taocache,
        seed=args.seed,
        split=args.split,
        kinds=tuple(k.strip() for k in args.kinds.split(",") if k.strip()),
    )
    settings.cases_to_run()  # checks the split and kinds before the model is loaded
    pipe, recipe = _load(recipe, args.device)
    summary = run_evaluation(
        pipe, recipe.name, args.output_dir, settings, _cache_dir(args), restart=args.restart
    )
    print(summary_markdown(summary))
    print(json.dumps(summary["targets"], indent=2))
    return 0


def run_tune_command(args) -> int:
    from ..edit.tuning import run_tuning

    if args.cases < 1:
        raise ValueError(f"--cases={args.cases} must be at least 1")
    if args.taocache:
        raise ValueError("--taocache times the method's sampling stage in edit-eval; settings are tuned uncached")
    recipe = _recipe(args)
    config = _config(args, recipe)
    methods = _parse_methods(args.methods)
    from ..edit.methods import tune_grid

    tune_grid(config, args.size)  # checks the size before the model loads
    pipe, recipe = _load(recipe, args.device)
    choice = run_tuning(pipe, recipe.name, args.output_dir, config, args.cases, args.size, args.seed, methods,
                        _cache_dir(args), restart=args.restart)
    for method, setting in choice["chosen"].items():
        print(f"{method}: {setting}")
    print(f"choice written to {args.output_dir}/choice.json")
    return 0
