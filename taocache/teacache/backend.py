"""TeaCache as a backend of ``taocache.enable``: on every transformer of a pipeline (Wan2.2 has two), or on a
transformer module, and as an entry of a configuration file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..core.denoisers import transformers_of
from .config import ModelMatch, TeaCacheConfig
from .hooks import ROOT_HOOK, apply_teacache, remove_teacache, teacache_stats


def apply(target, config: TeaCacheConfig, stacked: bool = False) -> None:
    """``apply_teacache`` on every transformer of ``target``; TypeError for a pipeline without one."""
    for _, module in transformers_of(target):
        apply_teacache(module, config)


def _carrying(target) -> list[tuple[str, object]]:
    try:
        modules = transformers_of(target)
    except TypeError:  # a UNet pipeline cannot carry TeaCache
        return []
    from ..core import compat

    return [(name, module) for name, module in modules if compat.hook_on(module, ROOT_HOOK) is not None]


def remove(target) -> bool:
    """Take TeaCache off every transformer of ``target``; whether it was on any."""
    carrying = _carrying(target)
    for _, module in carrying:
        remove_teacache(module)
    return bool(carrying)


def stats(target) -> dict | None:
    """Computed and skipped calls per guidance branch since TeaCache was applied, by component."""
    found = {name: teacache_stats(module) for name, module in _carrying(target)}
    return found or None


def to_json(config: TeaCacheConfig, path: Path, overwrite: bool) -> dict:
    """The config's fields for a configuration file (the recorder, a callable, is no setting)."""
    entry = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if item.name == "recorder":
            continue
        if isinstance(value, ModelMatch):
            value = dataclasses.asdict(value)
        elif isinstance(value, tuple):
            value = list(value)
        entry[item.name] = value
    return entry


def from_json(fields: dict, path: Path) -> TeaCacheConfig:
    fields = dict(fields)
    if isinstance(fields.get("model_match"), dict):
        fields["model_match"] = ModelMatch(**fields["model_match"])
    return TeaCacheConfig(**fields)
