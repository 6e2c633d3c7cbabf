"""TeaCache: skip the transformer's block stack while a cheap indicator at its entrance barely changes.

Modules: ``config`` (the settings, published presets and coefficient files), ``indicators`` (what is
watched), ``coefficients`` (which coefficients a model gets), ``hooks`` (the diffusers hooks and
``apply_teacache``), ``backend`` (what ``taocache.enable`` uses), ``fit`` (fitting coefficients for a model).
See docs/teacache.md.
"""

from .config import PUBLISHED_PRESETS, ModelMatch, TeaCacheConfig
from .hooks import TeaCacheRecord, apply_teacache, remove_teacache, teacache_stats

__all__ = [
    "PUBLISHED_PRESETS",
    "ModelMatch",
    "TeaCacheConfig",
    "TeaCacheRecord",
    "apply_teacache",
    "remove_teacache",
    "teacache_stats",
]
