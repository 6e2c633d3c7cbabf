"""TaoCache: training-free caching that predicts a denoiser's output on late denoising steps.

Modules, each one idea: ``config`` (what a user tunes), ``calibration`` (delta statistics from full runs and
their JSON file), ``recorder`` (recording them), ``calibrate`` (full runs that record one), ``decision``
(which calls to predict and how, as pure functions), ``hook`` (the diffusers hook that keeps the state and
asks the decision), ``stats`` (what a call did), ``backend`` (what ``taocache.enable`` uses). The method and
the evidence behind its defaults are in docs/algorithm.md.

Stacking another cache
----------------------
TaoCache registers one hook, named ``"taocache"``, on the denoiser module's diffusers ``HookRegistry``, and
acts only on the denoiser's output. Anything that changes how the output is computed can sit inside it:
diffusers' own caches (Pyramid Attention Broadcast, FirstBlockCache, ...) and TeaCache hook blocks or
attention layers below the denoiser's forward. List them before TaoCache in the configs given to
``taocache.enable`` (a hook registered later on the same module wraps the earlier ones, so TaoCache stays
outermost). On a step TaoCache predicts, the denoiser does not run, so the inner cache sees no call for that
step; where the pipeline's cache context gives no step index, TaoCache tells the hooks below it the step
(``taocache.core.compat.step_for_inner_caches``). MagCache and TaylorSeer count steps by their own calls and
fall behind (a warning says so). A new cache becomes stackable by one entry in ``taocache/registry.py``.
"""

from .calibration import Calibration, StepStats
from .config import PREDICTORS, TaoCacheConfig
from .hook import TAOCACHE_HOOK, TaoCacheHook, apply_taocache, remove_taocache
from .recorder import CalibrationRecorder
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
    "remove_taocache",
]
