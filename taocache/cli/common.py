"""What several commands share: the model and call arguments, reading a prompt file, and checking an output
path before any work."""

from __future__ import annotations

from pathlib import Path

from ..results import check_writable_folder, refuse_overwrite

FRAME_KEYS = ("num_frames", "video_length")
CALL_ARGUMENTS = ("steps", "height", "width", "frames", "guidance")


def add_model_argument(parser, default: str = "the embedded video model") -> None:
    parser.add_argument(
        "--model", default=None, help=f"recipe name, recipe file, pipeline folder or hub id (default: {default})"
    )


def add_call_arguments(parser, names=CALL_ARGUMENTS) -> None:
    """Options that change the recipe's call arguments (each defaults to the recipe's)."""
    helps = {
        "steps": ("--steps", int, "denoising steps (default: the recipe's)"),
        "height": ("--height", int, "height in pixels (default: the recipe's)"),
        "width": ("--width", int, "width in pixels (default: the recipe's)"),
        "frames": ("--frames", int, "video length (default: the recipe's)"),
        "guidance": ("--guidance", float, "guidance scale (default: the recipe's)"),
    }
    for name in names:
        flag, kind, text = helps[name]
        parser.add_argument(flag, type=kind, default=None, help=text)


def add_output_arguments(parser, default: Path | None, help: str) -> None:
    """``--output`` (a file; ``default`` is relative to the current folder) and ``--force`` to replace it."""
    parser.add_argument("--output", type=Path, default=default, help=help)
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")


def check_call_arguments(args) -> None:
    """Clear errors for sizes and counts out of range, before anything loads."""
    for name in ("steps", "height", "width", "frames"):
        value = getattr(args, name, None)
        if isinstance(value, int) and value < 1:
            raise ValueError(f"--{name} {value} must be at least 1")
    guidance = getattr(args, "guidance", None)
    if guidance is not None and not guidance >= 0:
        raise ValueError(f"--guidance {guidance} must be a number >= 0")


def load_with_call(args, kind: str = "video", device: str = "cpu"):
    """(pipeline, recipe, call kwargs): ``--model`` loaded, its recipe's call with the command-line changes."""
    from ..recipes import load_pipeline

    check_call_arguments(args)
    pipe, recipe = load_pipeline(args.model, kind=kind, device=device)
    call = recipe.call_kwargs(
        num_inference_steps=args.steps, height=args.height, width=args.width, guidance_scale=args.guidance
    )
    if args.frames is not None and recipe.kind == "video":
        key = next((k for k in FRAME_KEYS if k in call), "video_length" if recipe.pipeline == "LattePipeline" else "num_frames")
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


def read_prompt_lines(path: Path | None, name: str = "--prompts-file") -> list[str] | None:
    """The non-blank lines of a prompt file (None when no file is given); errors name the option."""
    if path is None:
        return None
    if not path.is_file():
        raise FileNotFoundError(f"{name} {path} does not exist")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{name} {path} holds no prompt")
    return prompts


def check_output(path: Path, force: bool) -> Path:
    """``path`` if a file can be written there: not there yet (or ``--force``), in a writable folder."""
    refuse_overwrite(path, force)
    check_writable_folder(path)
    return path
