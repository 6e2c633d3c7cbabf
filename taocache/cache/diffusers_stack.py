"""diffusers' own caches (Pyramid Attention Broadcast, FirstBlockCache, ...) stackable under TaoCache.

``taocache.enable(pipe, [PyramidAttentionBroadcastConfig(...), TaoCacheConfig()])`` calls the denoiser's
``enable_cache`` with the diffusers config, then hooks TaoCache outside it; ``taocache.disable(pipe)`` takes off
only the diffusers caches it put on (a cache the user enabled by hand stays).
"""

from __future__ import annotations

import logging

from .api import _denoisers, register_cache

logger = logging.getLogger(__name__)

_MARK = "_taocache_enabled_diffusers_cache"
#: Caches that count denoising steps by the calls they see: under TaoCache, which skips calls, they fall behind.
_COUNT_CALLS = ("MagCacheConfig", "TaylorSeerCacheConfig")


def _modules(target):
    return [module for _, module in _denoisers(target)[1] if hasattr(module, "enable_cache")]


def enable_diffusers_cache(target, config) -> None:
    modules = _modules(target)
    if not modules:
        raise TypeError(f"{type(config).__name__} needs a diffusers denoiser with enable_cache(); none found")
    if type(config).__name__ in _COUNT_CALLS:
        logger.warning(
            "%s counts denoising steps by the calls it sees; under TaoCache, which predicts some calls instead of "
            "making them, its step count falls behind the run's. Stack TeaCache, Pyramid Attention Broadcast or "
            "FirstBlockCache instead, or use it alone.",
            type(config).__name__.removesuffix("Config"),
        )
    for module in modules:
        module.enable_cache(config)
        setattr(module, _MARK, True)


def disable_diffusers_cache(target) -> None:
    try:
        modules = _modules(target)
    except TypeError:
        return
    for module in modules:
        if getattr(module, _MARK, False):
            module.disable_cache()
            delattr(module, _MARK)


def _stats_for(config_type):
    """A stats function naming the denoisers on which TaoCache put a ``config_type`` cache."""

    def stats(target) -> dict | None:
        try:
            modules = _denoisers(target)[1]
        except TypeError:
            return None
        found = {
            name: "on"
            for name, module in modules
            if getattr(module, _MARK, False) and isinstance(getattr(module, "_cache_config", None), config_type)
        }
        return found or None

    return stats


def _register() -> None:
    import diffusers

    for name in (
        "PyramidAttentionBroadcastConfig",
        "FirstBlockCacheConfig",
        "FasterCacheConfig",
        "MagCacheConfig",
        "TaylorSeerCacheConfig",
    ):
        config_type = getattr(diffusers, name, None)
        if config_type is not None:
            register_cache(config_type, enable_diffusers_cache, disable_diffusers_cache, _stats_for(config_type))


_register()
