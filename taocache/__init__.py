"""taocache: training-free output caching for diffusers pipelines (TaoCache), non-rigid editing, benchmarks.

    import taocache
    taocache.enable(pipe)            # or taocache.enable(pipe, taocache.TaoCacheConfig(...))
    video = pipe(prompt).frames[0]
    print(taocache.stats(pipe))      # denoiser calls computed / predicted, per guidance branch
    taocache.disable(pipe)           # the exact original behaviour again

The cache API is imported on first use, so ``import taocache.world`` stays light.
"""

__version__ = "0.1.0"

_API = {
    "enable": "taocache.cache.api",
    "disable": "taocache.cache.api",
    "stats": "taocache.cache.api",
    "calibrate": "taocache.cache.api",
    "TaoCacheConfig": "taocache.cache.config",
    "Calibration": "taocache.cache.calibration",
    "CacheStats": "taocache.cache.stats",
    "TeaCacheConfig": "taocache.cache.teacache",
    "tune": "taocache.cache.tune",
    "load_configs": "taocache.cache.config_file",
    "save_configs": "taocache.cache.config_file",
}

__all__ = list(_API)


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'taocache' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
