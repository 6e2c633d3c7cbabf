"""diffusers' own caches (Pyramid Attention Broadcast, FirstBlockCache, ...) stackable under TaoCache.

``taocache.enable(pipe, [PyramidAttentionBroadcastConfig(...), TaoCacheConfig()])`` calls the denoiser's
``enable_cache`` with the diffusers config, then hooks TaoCache outside it; ``taocache.disable(pipe)`` takes off
only the diffusers caches it put on (a cache the user enabled by hand stays).
"""

from __future__ import annotations

from .api import _denoisers, register_cache

_MARK = "_taocache_enabled_diffusers_cache"


def _modules(target):
    return [module for _, module in _denoisers(target)[1] if hasattr(module, "enable_cache")]


def enable_diffusers_cache(target, config) -> None:
    modules = _modules(target)
    if not modules:
        raise TypeError(f"{type(config).__name__} needs a diffusers denoiser with enable_cache(); none found")
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
