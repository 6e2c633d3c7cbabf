"""The files taocache reads at run time (recipes, TeaCache coefficients, the embedded models, sweeps and prompt
sets) and the folder where it keeps what it makes for the user.

In a source checkout they are the project's top-level folders (``pipelines/``, ``samples/models/``,
``eval/sweeps/``, ``eval/prompts/``); an installed wheel carries the same folders as package data under
``taocache/data/`` (see ``[tool.setuptools]`` in ``pyproject.toml``). Either way they are read from
:func:`data_root`, through ``importlib.resources``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

#: The folders the wheel carries, relative to the data root.
PACKAGED = ("pipelines", "samples/models", "eval/sweeps", "eval/prompts")


def data_root() -> Path:
    """The folder holding ``pipelines/``, ``samples/models/`` and ``eval/``: the package's data in a wheel,
    the project root in a source checkout."""
    package = Path(str(resources.files("taocache")))
    packaged = package / "data"
    return packaged if (packaged / "pipelines").is_dir() else package.parent


def data_path(*parts: str) -> Path:
    """A path under :func:`data_root`, e.g. ``data_path("pipelines", "tiny-t2v.toml")``."""
    return data_root().joinpath(*parts)


def user_cache_dir(*parts: str) -> Path:
    """``$TAOCACHE_CACHE_DIR`` or ``~/.cache/taocache``, with ``parts`` below it: where files taocache makes
    for later runs (calibrations, fitted coefficients, editing artefacts) go by default."""
    root = os.environ.get("TAOCACHE_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "taocache"
    return base.joinpath(*parts)
