"""The cache backends taocache knows, in one explicit list: what ``taocache.enable`` can apply, ``disable``
takes off, ``stats`` reports, configuration files store, and the benchmark runs as methods.

A backend is its config type and five functions. Adding a cache is one entry in :func:`backends`; nothing
registers itself on import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CacheBackend:
    """One cache, as the rest of the package uses it.

    Args:
        name: Short name, as the benchmark's method of this cache is called (``"taocache"``, ``"pab"``).
        config_type: The class of its config; ``enable`` picks the backend by a config's type.
        apply: ``apply(target, config, stacked)`` puts the cache on a pipeline or denoiser (``stacked``: other
            caches are enabled with it); raises TypeError when the target cannot carry it.
        remove: ``remove(target)`` takes it off again, returning whether it was on.
        stats: ``stats(target)`` says what it did (None when it is not on ``target``).
        to_json: ``to_json(config, file_path, overwrite)`` gives the config's entry in a configuration file
            (None: it cannot be saved).
        from_json: ``from_json(fields, file_path)`` makes the config back from that entry.
    """

    name: str
    config_type: type
    apply: Callable
    remove: Callable[[object], bool]
    stats: Callable[[object], object]
    to_json: Callable | None = None
    from_json: Callable | None = None

    @property
    def label(self) -> str:
        """How ``stats`` and messages name it: the config's class without ``Config``."""
        return self.config_type.__name__.removesuffix("Config")


_DIFFUSERS_NAMES = {
    "PyramidAttentionBroadcastConfig": "pab-shared",  # one state for both guidance branches; "pab" has one each
    "FirstBlockCacheConfig": "fbcache",
    "FasterCacheConfig": "fastercache",
    "MagCacheConfig": "magcache",
    "TaylorSeerCacheConfig": "taylorseer",
}


def backends() -> tuple[CacheBackend, ...]:
    """Every backend: TaoCache, TeaCache, EasyCache, Pyramid Attention Broadcast per guidance branch, and
    diffusers' caches as far as the installed diffusers has them."""
    from . import diffusers_caches, pab
    from .easycache import backend as easy
    from .easycache.config import EasyCacheConfig
    from .taocache import backend as tao
    from .taocache.config import TaoCacheConfig
    from .teacache import backend as tea
    from .teacache.config import TeaCacheConfig

    return (
        CacheBackend("taocache", TaoCacheConfig, tao.apply, tao.remove, tao.stats, tao.to_json, tao.from_json),
        CacheBackend("teacache", TeaCacheConfig, tea.apply, tea.remove, tea.stats, tea.to_json, tea.from_json),
        CacheBackend("easycache", EasyCacheConfig, easy.apply, easy.remove, easy.stats, easy.to_json,
                     easy.from_json),
        CacheBackend("pab", pab.PABPerBranchConfig, pab.apply, pab.remove, pab.stats),
        *(
            CacheBackend(_DIFFUSERS_NAMES[t.__name__], t, diffusers_caches.apply, diffusers_caches.remove,
                         diffusers_caches.stats_for(t))
            for t in diffusers_caches.config_types()
        ),
    )


def backend_for(config) -> CacheBackend:
    """The backend of ``config``; TypeError naming the supported configs otherwise."""
    for backend in backends():
        if type(config) is backend.config_type:
            return backend
    known = ", ".join(b.config_type.__name__ for b in backends())
    raise TypeError(f"unsupported cache config {type(config).__name__}; supported: {known}")


def backend_named(type_name: str) -> CacheBackend | None:
    """The backend whose config class is called ``type_name`` (as configuration files name it)."""
    return next((b for b in backends() if b.config_type.__name__ == type_name), None)


def saveable() -> list[str]:
    """The config class names a configuration file can hold."""
    return sorted(b.config_type.__name__ for b in backends() if b.to_json is not None)


def entry(config, path: Path, overwrite: bool) -> dict:
    """``config`` as a configuration file entry: its type and fields."""
    backend = backend_for(config)
    if backend.to_json is None:
        raise TypeError(f"cannot save a {type(config).__name__}; supported: {saveable()}")
    return {"type": type(config).__name__, **backend.to_json(config, path, overwrite)}
