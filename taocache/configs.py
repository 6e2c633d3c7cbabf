"""A cache configuration as a JSON file: what ``taocache tune`` writes and ``taocache.enable(pipe, path)`` reads.

The file lists the caches to stack, innermost first, each with its fields (see each backend's ``to_json``
in :mod:`taocache.registry`):

    {"format": "taocache.cache-config", "version": 1,
     "caches": [{"type": "TeaCacheConfig", "rel_l1_thresh": 0.1, "coefficients": [...], ...},
                {"type": "TaoCacheConfig", "error_budget": 0.2, "calibration": "tuned.calibration.json"}],
     "tuned": {...what the search measured...}}
"""

from __future__ import annotations

import json
from pathlib import Path

from . import registry
from .core.parallel import on_first_rank
from .results import refuse_overwrite, write_json

FORMAT = "taocache.cache-config"
VERSION = 1


def save_configs(path: str | Path, configs, tuned: dict | None = None, overwrite: bool = False) -> Path:
    """Write cache configs to a file :func:`taocache.enable` takes.

    Args:
        path: The JSON file to write.
        configs: One cache config or a list, innermost first (TaoCache last).
        tuned: What a search measured, stored with them (as :func:`taocache.tune` does).
        overwrite: Replace an existing file (and the calibration saved beside it).

    Returns:
        ``path``.

    Example::

        taocache.save_configs("mine.json", [TeaCacheConfig(rel_l1_thresh=0.1), TaoCacheConfig()])
        taocache.enable(pipe, "mine.json")
    """
    path = Path(path)
    configs = list(configs) if isinstance(configs, (list, tuple)) else [configs]
    for config in configs:
        if type(config).__name__ not in registry.saveable():
            raise TypeError(f"cannot save a {type(config).__name__}; supported: {registry.saveable()}")

    def write() -> Path:
        # checked by the writing rank only: another rank checking after rank 0 wrote would see the new file
        refuse_overwrite(path, overwrite)
        caches = [registry.entry(c, path, overwrite) for c in configs]  # a calibration held in memory: beside it
        data = {"format": FORMAT, "version": VERSION, "caches": caches}
        if tuned is not None:
            data["tuned"] = tuned
        return write_json(path, data)

    # under context parallelism every rank tuned alike (its timings aside): rank 0 writes, the others wait
    on_first_rank(write, f"write the configuration {path}")
    return path


def load_configs(path: str | Path) -> list:
    """The cache configs stored in ``path`` (innermost first), ready for :func:`taocache.enable`.

    Args:
        path: A file written by :func:`save_configs`, ``taocache tune`` or :meth:`TuneResult.save`.

    Returns:
        The configs, innermost first.

    Example::

        configs = taocache.load_configs("tuned.json")
        taocache.enable(pipe, configs)   # the same as taocache.enable(pipe, "tuned.json")
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cache configuration {path} does not exist (write one with `taocache tune`)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); expected a file written by `taocache tune`") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a taocache cache configuration (format {FORMAT!r})")
    if data.get("version") != VERSION:
        raise ValueError(f"{path} has version {data.get('version')!r}; this taocache reads version {VERSION}")
    configs = []
    for n, entry in enumerate(data.get("caches") or []):
        fields = dict(entry)
        kind = fields.pop("type", None)
        backend = registry.backend_named(kind) if isinstance(kind, str) else None
        if backend is None or backend.from_json is None:
            raise ValueError(f"{path}: cache {n} has type {kind!r}; supported: {registry.saveable()}")
        try:
            configs.append(backend.from_json(fields, path))
        except TypeError as err:
            raise ValueError(f"{path}: cache {n} ({kind}): {err}") from err
    if not configs:
        raise ValueError(f"{path} lists no caches")
    return configs
