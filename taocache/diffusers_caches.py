"""diffusers' own caches (Pyramid Attention Broadcast, FirstBlockCache, ...) as backends of ``taocache.enable``.

``taocache.enable(pipe, [PyramidAttentionBroadcastConfig(...), TaoCacheConfig()])`` calls each denoiser's
``enable_cache`` with the diffusers config, then hooks TaoCache outside it; ``taocache.disable(pipe)`` takes off
only the diffusers caches it put on (a cache the user enabled by hand stays).
"""

from __future__ import annotations

import logging

from .core import compat
from .core.denoisers import denoisers_of

logger = logging.getLogger(__name__)

#: The diffusers cache configs taocache can stack, where the installed diffusers has them.
CONFIG_NAMES = (
    "PyramidAttentionBroadcastConfig",
    "FirstBlockCacheConfig",
    "FasterCacheConfig",
    "MagCacheConfig",
    "TaylorSeerCacheConfig",
)
#: Caches that count denoising steps by the calls they see: under TaoCache, which skips calls, they fall behind.
COUNT_CALLS = ("MagCacheConfig", "TaylorSeerCacheConfig")
_MARK = "_taocache_enabled_diffusers_cache"


def config_types() -> list[type]:
    import diffusers

    return [t for t in (getattr(diffusers, name, None) for name in CONFIG_NAMES) if t is not None]


def _modules(target) -> list[tuple[str, object]]:
    try:
        return [(name, m) for name, m in denoisers_of(target) if hasattr(m, "enable_cache")]
    except TypeError:
        return []


def apply(target, config, stacked: bool = False) -> None:
    """``enable_cache(config)`` on every denoiser of ``target`` that has it; TypeError when none has."""
    modules = _modules(target)
    if not modules:
        raise TypeError(f"{type(config).__name__} needs a diffusers denoiser with enable_cache(); none found")
    if stacked and type(config).__name__ in COUNT_CALLS:
        logger.warning(
            "%s counts denoising steps by the calls it sees; under TaoCache, which predicts some calls instead of "
            "making them, its step count falls behind the run's. Stack TeaCache, Pyramid Attention Broadcast or "
            "FirstBlockCache instead, or use it alone.",
            type(config).__name__.removesuffix("Config"),
        )
    if any(compat.context_parallel_mesh(module) is not None for _, module in modules):
        logger.warning(
            "%s under context parallelism is not supported by taocache: it may decide from a rank's shard of the "
            "sequence (FirstBlockCache does), and ranks that decide differently hang or corrupt the video. TaoCache "
            "and TeaCache decide alike on every rank (docs/several-gpus.md).",
            type(config).__name__.removesuffix("Config"),
        )
    for _, module in modules:
        module.enable_cache(config)
        setattr(module, _MARK, True)


def remove(target) -> bool:
    """``disable_cache`` on the denoisers taocache enabled a diffusers cache on; whether there were any."""
    marked = [module for _, module in _modules(target) if getattr(module, _MARK, False)]
    for module in marked:
        module.disable_cache()
        delattr(module, _MARK)
    return bool(marked)


def stats_for(config_type: type):
    """A stats function naming the denoisers on which taocache put a ``config_type`` cache."""

    def stats(target) -> dict | None:
        found = {
            name: "on"
            for name, module in _modules(target)
            if getattr(module, _MARK, False) and isinstance(compat.cache_config_of(module), config_type)
        }
        return found or None

    return stats


def enabled_by_hand(target) -> list[str]:
    """The denoisers of ``target`` with a diffusers cache that taocache did not put on."""
    return [name for name, module in _modules(target)
            if getattr(module, "is_cache_enabled", False) and not getattr(module, _MARK, False)]
