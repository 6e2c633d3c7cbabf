"""EasyCache as a backend of ``taocache.enable``: on every denoiser of a pipeline (Wan2.2 has two), or on a
denoiser module, and as an entry of a configuration file."""

from __future__ import annotations

from pathlib import Path

from ..core import compat
from ..core.denoisers import denoisers_of
from .config import EasyCacheConfig
from .hooks import EASYCACHE_HOOK, apply_easycache, easycache_stats, remove_easycache


def apply(target, config: EasyCacheConfig, stacked: bool = False) -> None:
    """``apply_easycache`` on every denoiser of ``target``."""
    for _, module in denoisers_of(target):
        apply_easycache(module, config)


def _carrying(target) -> list[tuple[str, object]]:
    try:
        modules = denoisers_of(target)
    except TypeError:
        return []
    return [(name, module) for name, module in modules if compat.hook_on(module, EASYCACHE_HOOK) is not None]


def remove(target) -> bool:
    """Take EasyCache off every denoiser of ``target``; whether it was on any."""
    return any([remove_easycache(module) for _, module in _carrying(target)])  # noqa: C419 - every one


def stats(target) -> dict | None:
    """Computed and reused calls per guidance branch, by component; None when EasyCache is not on."""
    found = {name: easycache_stats(module) for name, module in _carrying(target)}
    return found or None


def to_json(config: EasyCacheConfig, path: Path, overwrite: bool) -> dict:
    return config.to_dict()


def from_json(fields: dict, path: Path) -> EasyCacheConfig:
    return EasyCacheConfig.from_dict(dict(fields))
