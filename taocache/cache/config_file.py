"""A cache configuration as a JSON file: what ``taocache tune`` writes and ``taocache.enable(pipe, path)`` reads.

The file lists the caches to stack, innermost first, each with its fields:

    {"format": "taocache.cache-config", "version": 1,
     "caches": [{"type": "TeaCacheConfig", "rel_l1_thresh": 0.1, "coefficients": [...], ...},
                {"type": "TaoCacheConfig", "error_budget": 0.2, "calibration": "tuned.calibration.json"}],
     "tuned": {...what the search measured...}}

A calibration held in memory is written beside the file and named by a path relative to it, so the pair can be
moved together.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from ..io import atomic_write_text, refuse_overwrite
from .calibration import Calibration
from .config import TaoCacheConfig

FORMAT = "taocache.cache-config"
VERSION = 1


def _config_types() -> dict[str, type]:
    from .teacache import TeaCacheConfig

    return {"TaoCacheConfig": TaoCacheConfig, "TeaCacheConfig": TeaCacheConfig}


def _entry(config, path: Path, overwrite: bool) -> dict:
    """One cache's JSON entry; an in-memory calibration is saved beside ``path``."""
    from .teacache import ModelMatch

    entry = {"type": type(config).__name__}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if item.name == "recorder":
            continue  # a callable for fitting, not a setting
        if isinstance(value, Calibration):
            target = calibration_path(path)
            value.save(target, overwrite=overwrite)
            value = target.name
        elif isinstance(value, ModelMatch):
            value = dataclasses.asdict(value)
        elif item.name == "calibration" and isinstance(value, (str, os.PathLike)):
            # read back relative to the configuration file, wherever the loading process runs
            value = os.path.relpath(Path(value).resolve(), path.resolve().parent)
        elif isinstance(value, os.PathLike):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        entry[item.name] = value
    return entry


def calibration_path(path: str | Path) -> Path:
    """Where a configuration file written to ``path`` keeps the calibration it was tuned with."""
    path = Path(path)
    return path.with_name(path.stem + ".calibration.json")


def save_configs(path: str | Path, configs, tuned: dict | None = None, overwrite: bool = False) -> Path:
    """Write ``configs`` (one cache config or a list, innermost first) to ``path``; returns the path."""
    path = Path(path)
    configs = list(configs) if isinstance(configs, (list, tuple)) else [configs]
    types = _config_types()
    for config in configs:
        if type(config).__name__ not in types:
            raise TypeError(f"cannot save a {type(config).__name__}; supported: {sorted(types)}")
    refuse_overwrite(path, overwrite)
    data = {"format": FORMAT, "version": VERSION, "caches": [_entry(c, path, overwrite) for c in configs]}
    if tuned is not None:
        data["tuned"] = tuned
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def load_configs(path: str | Path) -> list:
    """The cache configs stored in ``path`` (innermost first), ready for ``taocache.enable``."""
    from .teacache import ModelMatch

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
    types, configs = _config_types(), []
    for n, entry in enumerate(data.get("caches") or []):
        fields = dict(entry)
        kind = fields.pop("type", None)
        if kind not in types:
            raise ValueError(f"{path}: cache {n} has type {kind!r}; supported: {sorted(types)}")
        if kind == "TaoCacheConfig":
            fields.setdefault("weigh_by_step", False)  # written before the field existed: tuned without it
            if isinstance(fields.get("calibration"), str):
                calibration = Path(fields["calibration"])
                fields["calibration"] = str(calibration if calibration.is_absolute() else path.parent / calibration)
        if isinstance(fields.get("model_match"), dict):
            fields["model_match"] = ModelMatch(**fields["model_match"])
        try:
            configs.append(types[kind](**fields))
        except TypeError as err:
            raise ValueError(f"{path}: cache {n} ({kind}): {err}") from err
    if not configs:
        raise ValueError(f"{path} lists no caches")
    return configs

