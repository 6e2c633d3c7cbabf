"""The registry of benchmarked methods; importing this package registers every built-in adapter."""

from . import diffusers_caches, schedules, stacked, taocache_method  # noqa: F401  (registration)
from .base import METHODS, BenchContext, Method, Unsupported, make_method, register_method

__all__ = ["METHODS", "BenchContext", "Method", "Unsupported", "make_method", "register_method"]
