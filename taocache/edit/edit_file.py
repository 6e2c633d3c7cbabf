"""Editing one image file into output files: what the ``edit`` command and each batch item do.

Reads and adapts the input, checks that nothing would be overwritten before any expensive work, prepares the
image (cached), reports how well the inversion reconstructs it, samples the requested edit and the sweep,
and writes the edit and a grid beside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .config import EditConfig
from .editor import NonRigidEditor
from .inputs import check_prompt, fit_to_model, load_image, model_size, restore_to_input
from .outputs import check_writable, grid_path, make_grid, save_image
from .scoring import fidelity

logger = logging.getLogger(__name__)


@dataclass
class FileEditReport:
    """What one edit wrote and measured."""

    output: Path
    grid: Path
    reconstruction: dict
    seconds: dict
    from_cache: dict
    settings: list = field(default_factory=list)


def parse_list(text: str | None, kind=float, name: str = "list") -> list | None:
    """``"0,0.2,0.4"`` -> ``[0.0, 0.2, 0.4]``; None stays None; a clear error for anything else."""
    if text is None:
        return None
    if isinstance(text, (list, tuple)):
        items = list(text)
    else:
        items = [part for part in str(text).split(",") if part.strip()]
    try:
        values = [kind(item) for item in items]
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name}={text!r} must be comma-separated {kind.__name__} values, e.g. 0,0.2,0.4"
        ) from err
    if not values:
        raise ValueError(f"{name} is empty; give at least one value")
    return values


def edit_file(
    pipe,
    image_path: str | Path,
    source: str,
    target: str,
    output: str | Path,
    config: EditConfig,
    sweep_alpha: list[float] | None = None,
    sweep_steps_source: list[int] | None = None,
    overwrite: bool = False,
    **options,
) -> FileEditReport:
    """Edit ``image_path`` and write the result to ``output`` and the grid beside it (``options``: those of
    :func:`run_request`)."""
    request = check_request(image_path, source, target, output, config, sweep_alpha, sweep_steps_source, overwrite)
    return run_request(pipe, request, config, overwrite=overwrite, **options)


def run_request(
    pipe,
    request: EditRequest,
    config: EditConfig,
    recipe=None,
    cache_dir="default",
    overwrite: bool = False,
    cache_config=None,
    editor: NonRigidEditor | None = None,
) -> FileEditReport:
    """Make the edit of a request :func:`check_request` has read and checked, and write its files."""
    source, target, output, grid = request.source, request.target, request.output, request.grid
    alphas, steps_sources = request.alphas, request.steps_sources

    height, width = model_size(pipe, recipe)
    image = fit_to_model(request.image, height, width, name=str(request.image_path))
    editor = editor or NonRigidEditor(pipe, config, cache_dir=cache_dir)
    prepared = editor.prepare(image, source, target, config)
    reconstruction = editor.reconstruct(prepared)
    recon = fidelity(reconstruction, image)
    logger.info(
        "reconstruction (%s): PSNR %.2f dB, SSIM %.4f", config.inversion, recon["psnr"], recon["ssim"]
    )

    edits = [[editor.edit(prepared, a, s, cache_config) for a in alphas] for s in steps_sources]
    chosen = edits[steps_sources.index(config.steps_source)][alphas.index(config.alpha)]
    save_image(restore_to_input(chosen.image, request.image), output, overwrite=overwrite)  # at the input's size
    grid_image = make_grid(
        image, reconstruction, [[e.image for e in row] for row in edits], steps_sources, alphas
    )
    save_image(grid_image, grid, overwrite=overwrite)
    seconds = dict(prepared.seconds, sampling=sum(e.seconds for row in edits for e in row))
    settings = [
        {"alpha": e.alpha, "steps_source": e.steps_source, "seconds": e.seconds, **e.cache}
        for row in edits
        for e in row
    ]
    return FileEditReport(output, grid, recon, seconds, dict(prepared.from_cache), settings)


@dataclass
class EditRequest:
    """An edit's inputs, read and checked: what can fail does so before any model work."""

    image_path: Path
    image: object  # the input as an RGB PIL image
    source: str
    target: str
    output: Path
    grid: Path
    alphas: list
    steps_sources: list


def check_request(image_path, source, target, output, config: EditConfig, sweep_alpha=None,
                  sweep_steps_source=None, overwrite: bool = False) -> EditRequest:
    """Read the image and check the prompts, the output files and every sweep setting against ``config``."""
    source, target = check_prompt("source", source), check_prompt("target", target)
    output = check_writable(output, overwrite)
    grid = check_writable(grid_path(output), overwrite)
    alphas = _with(sweep_alpha, config.alpha)
    steps_sources = _with(sweep_steps_source, config.steps_source)
    for alpha in alphas:
        config.with_values(alpha=alpha)
    for steps in steps_sources:
        config.with_values(steps_source=steps)
    image_path = Path(image_path)
    return EditRequest(image_path, load_image(image_path), source, target, output, grid, alphas, steps_sources)


def _with(values, value) -> list:
    values = list(values) if values else []
    if value not in values:
        values.append(value)
    return sorted(values)
