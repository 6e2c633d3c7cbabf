"""TaoCache: training-free caching that predicts a denoiser's output on late denoising steps.

Modules, each one idea: ``config`` (what a user tunes), ``calibration`` (delta statistics from full runs and
their JSON file), ``hook`` (the diffusers hook that decides and predicts), ``stats`` (what a call did),
``api`` (enable / disable / stats / calibrate), ``commands`` (the ``taocache run`` and ``taocache calibrate``
commands). The method and the evidence behind its defaults are in docs/algorithm.md.

Stacking another cache
----------------------
TaoCache registers one hook, named ``"taocache"``, on the denoiser module's diffusers ``HookRegistry``, and
acts only on the denoiser's output. Anything that changes how the output is computed can sit inside it:

* diffusers' own caches (``transformer.enable_cache(PyramidAttentionBroadcastConfig(...))``, FirstBlockCache,
  ...) hook blocks or attention layers below the denoiser's forward; enable them in either order, or pass
  their config in the list given to :func:`enable` (``diffusers_stack.py``), which then also removes them. On a step
  TaoCache predicts, the denoiser does not run, so the inner cache sees no call for that step; where the
  pipeline's cache context gives no step index, TaoCache fills it in for the hooks below it. MagCache and
  TaylorSeer count steps by their own calls and fall behind (a warning says so).
* Another project cache (for example a TeaCache hook in ``taocache/cache/teacache.py``) registers its hooks
  under its own name on the same registries, so that ``disable`` of one leaves the other in place, and makes
  itself known to :func:`enable` with::

      from taocache.cache.api import register_cache
      register_cache(TeaCacheConfig, enable_fn=apply_to_target, disable_fn=remove_from_target,
                     stats_fn=stats_of_target)

  after which ``taocache.enable(pipe, [TeaCacheConfig(...), TaoCacheConfig(...)])`` applies the configs in
  order (a hook registered later on the same module wraps the earlier ones, so list TaoCache last to keep
  it outermost), ``taocache.stats(pipe).stacked`` carries what ``stats_fn`` reports, and
  ``taocache.disable(pipe)`` removes them all. A stacked hook must keep its state per
  cache context and reset it in ``reset_state`` like TaoCache does, and must not hold TaoCache's state.
"""

from .api import calibrate, disable, enable, register_cache, stats
from .calibration import Calibration, CalibrationRecorder, StepStats
from .config import PREDICTORS, TaoCacheConfig
from .hook import TAOCACHE_HOOK, TaoCacheHook, apply_taocache, remove_taocache
from .stats import BranchStats, CacheStats

__all__ = [
    "PREDICTORS",
    "TAOCACHE_HOOK",
    "BranchStats",
    "CacheStats",
    "Calibration",
    "CalibrationRecorder",
    "StepStats",
    "TaoCacheConfig",
    "TaoCacheHook",
    "apply_taocache",
    "calibrate",
    "disable",
    "enable",
    "register_cache",
    "remove_taocache",
    "stats",
]
