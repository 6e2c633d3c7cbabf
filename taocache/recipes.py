"""Recipes: one TOML file per supported model under ``pipelines/`` (package data in a wheel), and the one place
that loads pipelines.

A recipe records what a model needs to run as intended (its native size, frames, steps, guidance and
scheduler settings) and the published evaluation setting. Commands take ``--model`` as a recipe name, a
recipe file, a local diffusers pipeline folder or a hub id; with none they use the embedded models.
"""

from __future__ import annotations

import json
import logging
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from .core.data import data_path, data_root

logger = logging.getLogger(__name__)

DEFAULT_MODELS = {"video": "tiny-t2v", "image": "tiny-t2i"}
_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Recipe:
    """How to load and call one model. ``call`` holds the keyword arguments of the pipeline call."""

    name: str
    model: str
    pipeline: str
    kind: str = "video"
    dtype: str = "float32"
    description: str = ""
    call: dict = field(default_factory=dict)
    scheduler: dict = field(default_factory=dict)
    published: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in ("video", "image"):
            raise ValueError(f"recipe {self.name!r}: kind={self.kind!r} must be 'video' or 'image'")
        if self.dtype not in _DTYPES:
            raise ValueError(f"recipe {self.name!r}: dtype={self.dtype!r} must be one of {_DTYPES}")

    @property
    def steps(self) -> int:
        return int(self.call.get("num_inference_steps", 50))

    def call_kwargs(self, **overrides) -> dict:
        """The pipeline call's keyword arguments: the recipe's, then ``overrides`` (None values ignored)."""
        kwargs = dict(self.call)
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return kwargs

    def model_location(self) -> str:
        """A local path (a relative one is read against the package's data, where the embedded models are)
        or a hub id."""
        path = Path(self.model)
        if not path.is_absolute() and (data_root() / path).exists():
            return str(data_root() / path)
        return self.model


def _from_toml(path: Path) -> Recipe:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"cannot read recipe {path}: {err}") from err
    missing = [k for k in ("name", "model", "pipeline") if k not in data]
    if missing:
        raise ValueError(f"recipe {path} lacks the field(s) {missing}")
    unknown = sorted(set(data) - set(Recipe.__dataclass_fields__))
    if unknown:
        raise ValueError(f"recipe {path}: unknown key(s) {unknown}; known: {sorted(Recipe.__dataclass_fields__)}")
    for table in ("call", "scheduler", "published"):
        if not isinstance(data.get(table, {}), dict):
            raise ValueError(f"recipe {path}: [{table}] must be a table")  # noqa: TRY004
    known = {k: data[k] for k in Recipe.__dataclass_fields__ if k in data}
    return Recipe(**known)


def recipes_dir() -> Path:
    """The folder of the recipes that ship with taocache."""
    return data_path("pipelines")


def list_recipes() -> list[Recipe]:
    """Every recipe under ``pipelines/``, sorted by name."""
    return sorted((_from_toml(p) for p in recipes_dir().glob("*.toml")), key=lambda r: r.name)


def find_recipe(model: str | None = None, kind: str = "video") -> Recipe:
    """Turn ``--model`` into a Recipe: None (embedded default), a recipe name or file, a folder or a hub id."""
    if model is None:
        model = DEFAULT_MODELS[kind]
    path = Path(model)
    if path.suffix == ".toml":
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {path} does not exist")
        return _from_toml(path)
    named = recipes_dir() / f"{model}.toml"
    if path.name == model and named.is_file():  # a bare name; a path is never read as a recipe name
        return _from_toml(named)
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise FileNotFoundError(
                f"{path} is not a diffusers pipeline folder (no model_index.json); pass a recipe name "
                f"({', '.join(r.name for r in list_recipes())}), a pipeline folder or a hub id"
            )
        pipeline = json.loads(index.read_text()).get("_class_name", "DiffusionPipeline")
        for recipe in list_recipes():  # a copy of a known model keeps its recipe's settings
            if Path(recipe.model_location()).resolve() == path.resolve():
                return recipe
        kind = "image" if "Video" not in pipeline and pipeline not in ("WanPipeline", "LattePipeline") else "video"
        logger.warning("no recipe for %s: using the pipeline's own call defaults", path)
        return Recipe(name=path.name, model=str(path.resolve()), pipeline=pipeline, kind=kind)
    if "/" in model and not path.exists():
        logger.warning("no recipe for hub id %s: using the pipeline's own call defaults", model)
        return Recipe(name=model, model=model, pipeline="DiffusionPipeline", kind=kind)
    raise FileNotFoundError(
        f"unknown model {model!r}: not a recipe in {recipes_dir()} "
        f"({', '.join(r.name for r in list_recipes())}), not a pipeline folder, not a hub id (owner/name)"
    )


def load_pipeline(model: str | Recipe | None = None, kind: str = "video", device: str = "cpu", dtype=None):
    """Load a pipeline for ``model`` (see :func:`find_recipe`); returns ``(pipeline, recipe)``."""
    import diffusers
    import torch

    recipe = model if isinstance(model, Recipe) else find_recipe(model, kind)
    if recipe.pipeline == "external":
        raise ValueError(
            f"{recipe.name} runs in its own code base, not in diffusers: build its denoiser there and hook it "
            "with taocache.enable(module) (see the comment in its recipe file)"
        )
    location = recipe.model_location()
    if recipe.name in DEFAULT_MODELS.values() and not Path(location).is_dir():
        raise FileNotFoundError(
            f"the embedded model {recipe.name} is missing at {location}; rebuild it with "
            f"`python samples/train_{recipe.name.split('-')[1]}.py`"
        )
    torch_dtype = dtype or getattr(torch, recipe.dtype)
    cls = getattr(diffusers, recipe.pipeline, diffusers.DiffusionPipeline)
    pipe = cls.from_pretrained(location, dtype=torch_dtype)
    settings = dict(recipe.scheduler)
    scheduler_class = settings.pop("class", None)
    if scheduler_class and not hasattr(diffusers, scheduler_class):
        raise ValueError(
            f"recipe {recipe.name}: [scheduler] class = {scheduler_class!r} is not a diffusers scheduler (for "
            "example UniPCMultistepScheduler, DDIMScheduler, FlowMatchEulerDiscreteScheduler)"
        )
    if scheduler_class and type(pipe.scheduler).__name__ != scheduler_class or settings:
        target = getattr(diffusers, scheduler_class) if scheduler_class else type(pipe.scheduler)
        pipe.scheduler = target.from_config(pipe.scheduler.config, **settings)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, recipe


def check_device(device: str | None) -> None:
    """A clear error for a device string torch does not know (before any model loads)."""
    if device is None:
        return
    import torch

    try:
        torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"--device {device!r} is not a device torch knows (cpu, cuda, cuda:1, mps ...)") from err


def with_call(recipe: Recipe, **overrides) -> Recipe:
    """A copy of ``recipe`` whose call arguments are updated by ``overrides``."""
    return replace(recipe, call=recipe.call_kwargs(**overrides))
