"""taocache: training-free output caching for diffusers pipelines (TaoCache), non-rigid editing, benchmarks.

    import taocache
    taocache.enable(pipe)            # or taocache.enable(pipe, taocache.TaoCacheConfig(...))
    video = pipe(prompt).frames[0]
    print(taocache.stats(pipe))      # denoiser calls computed / predicted, per guidance branch
    taocache.disable(pipe)           # the exact original behaviour again

The entry points (each documented with its arguments, result and an example): :func:`enable`,
:func:`disable`, :func:`stats`, :func:`calibrate` (``taocache.api``), :func:`tune` (``taocache.tuning``),
:class:`TaoCacheConfig`, :class:`TeaCacheConfig`, :class:`EasyCacheConfig`, :func:`load_configs` / :func:`save_configs`
(``taocache.configs``); editing is ``taocache.edit``. They are imported on first use, so
``import taocache.world`` stays light.
"""

__version__ = "0.1.0"

_API = {
    "enable": "taocache.api",
    "disable": "taocache.api",
    "stats": "taocache.api",
    "calibrate": "taocache.api",
    "TaoCacheConfig": "taocache.taocache.config",
    "Calibration": "taocache.taocache.calibration",
    "CacheStats": "taocache.taocache.stats",
    "TeaCacheConfig": "taocache.teacache.config",
    "EasyCacheConfig": "taocache.easycache.config",
    "tune": "taocache.tuning",
    "load_configs": "taocache.configs",
    "save_configs": "taocache.configs",
}

__all__ = list(_API)


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'taocache' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
