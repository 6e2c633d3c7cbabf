"""EasyCache (Zhou et al., arXiv 2507.02860): runtime-adaptive reuse of the denoiser's input-to-output
transformation, with no calibration. Modules: ``config`` (the settings), ``hooks`` (the diffusers hook and
``apply_easycache``), ``backend`` (what ``taocache.enable`` uses). See docs/benchmark.md."""

from .config import EasyCacheConfig
from .hooks import apply_easycache, easycache_stats, remove_easycache

__all__ = ["EasyCacheConfig", "apply_easycache", "easycache_stats", "remove_easycache"]
