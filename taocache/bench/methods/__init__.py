"""The benchmarked methods, by name: the baselines that need no cache, one adapter per cache backend of
:mod:`taocache.registry` (its own where its settings differ from its config's fields, else one derived from
the backend), and TaoCache stacked on other caches."""

from __future__ import annotations

from ... import registry
from .base import BenchContext, CacheMethod, Method, Unsupported, backend_method
from .diffusers_caches import (
    FasterCache,
    FirstBlockCache,
    MagCache,
    PyramidAttentionBroadcast,
    SharedPyramidAttentionBroadcast,
    TaylorSeer,
)
from .schedules import FewerSteps, FullRun, StaticSkip
from .stacked import EasyCache, TaoCacheOnPAB, TaoCacheOnTeaCache, TeaCache
from .taocache_method import TaoCache

#: Adapters with settings of their own, by the name of the backend they run.
ADAPTERS = {cls.name: cls for cls in (TaoCache, TeaCache, EasyCache, PyramidAttentionBroadcast,
                                      SharedPyramidAttentionBroadcast, FirstBlockCache, FasterCache, MagCache,
                                      TaylorSeer)}


def _methods() -> dict[str, type[Method]]:
    methods = {cls.name: cls for cls in (FullRun, FewerSteps, StaticSkip)}
    for backend in registry.backends():
        methods[backend.name] = ADAPTERS.get(backend.name) or backend_method(backend)
    methods.update({cls.name: cls for cls in (TaoCacheOnTeaCache, TaoCacheOnPAB)})
    return methods


METHODS: dict[str, type[Method]] = _methods()


def make_method(name: str, settings: dict | None = None, series: str | None = None) -> Method:
    """An adapter instance for ``name`` with ``settings``; ``series`` groups settings into one frontier."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; the methods are {sorted(METHODS)}")
    method = METHODS[name](**(settings or {}))
    method.series = series or name
    return method


__all__ = ["METHODS", "BenchContext", "CacheMethod", "Method", "Unsupported", "make_method"]
