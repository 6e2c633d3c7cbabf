"""The benchmark harness: runs the full pipeline and each method over prompts and seeds, streams records."""

from .methods import METHODS, Method, Unsupported, make_method
from .runner import Benchmark, BenchPlan
from .sweep import Sweep, load_sweep, read_prompts

__all__ = [
    "METHODS",
    "BenchPlan",
    "Benchmark",
    "Method",
    "Sweep",
    "Unsupported",
    "load_sweep",
    "make_method",
    "read_prompts",
]
