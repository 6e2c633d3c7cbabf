"""The hook point for TaoCache on the editing sampler.

Editing spends its sampling time in ``pipe.unet``, the same place ``taocache.enable(pipe, cache_config)``
hooks. :func:`sampling_cache` enables the cache around one sampling run and disables it afterwards, so that
inversion and optimisation (which need exact model outputs and gradients) never run cached, and no cached
state leaks from one run into the next. With ``cache_config=None`` it does nothing.

For the duration of a cached run the pipeline looks as it does inside its own ``__call__``: its scheduler is
the editing sampler (so a hook reading ``pipe.scheduler.timesteps`` sees this run's schedule) and its
guidance scale is set (so a hook knows the batch holds an unconditional and a conditional half).
"""

from __future__ import annotations

import contextlib
import logging

logger = logging.getLogger(__name__)


def _taocache():
    import taocache

    return taocache


def cache_api():
    """``(enable, disable, stats)`` from the taocache package; RuntimeError saying what is missing."""
    try:
        package = _taocache()
        enable, disable = getattr(package, "enable", None), getattr(package, "disable", None)
        stats = getattr(package, "stats", None)
    except ImportError as err:
        raise RuntimeError(
            f"the TaoCache API cannot be imported ({err}); edit without a cache_config"
        ) from err
    if enable is None or disable is None:
        raise RuntimeError(
            "this taocache installation has no taocache.enable/disable; edit without a cache_config "
            "(or install a version that provides the cache)"
        )
    return enable, disable, stats


def cache_available() -> bool:
    try:
        cache_api()
    except RuntimeError:
        return False
    return True


def default_cache_config(**fields):
    """``taocache.TaoCacheConfig(**fields)``; RuntimeError when the package does not provide it."""
    try:
        config_class = getattr(_taocache(), "TaoCacheConfig", None)
    except ImportError as err:
        raise RuntimeError(f"the TaoCache API cannot be imported ({err}); edit without the cache") from err
    if config_class is None:
        raise RuntimeError("this taocache installation has no TaoCacheConfig; edit without the cache")
    return config_class(**fields)


def calibrated_cache_config(pipe, prompts: list[str], call_kwargs: dict, path=None):
    """A TaoCacheConfig whose calibration is read from ``path``, or measured by ``taocache.calibrate`` first.

    Editing samples with the same denoiser, DDIM schedule and guidance as the pipeline's own generation, so
    full text-to-image runs of ``prompts`` at those settings (``call_kwargs``) give the delta statistics
    TaoCache predicts with. Without a calibration each enabled run would record its own and skip nothing.
    The measured calibration is saved to ``path`` when given (and reused by later runs), else kept in memory.
    """
    from pathlib import Path

    if path is not None and Path(path).is_file():
        return default_cache_config(calibration=str(path))
    calibrate = getattr(_taocache(), "calibrate", None)
    if calibrate is None:
        raise RuntimeError("this taocache installation has no taocache.calibrate")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    calibration = calibrate(
        pipe, list(prompts), call_kwargs=call_kwargs, path=path, save=path is not None, overwrite=True, progress=False
    )
    return default_cache_config(calibration=str(path) if path is not None else calibration)


@contextlib.contextmanager
def sampling_cache(pipe, cache_config, sampler=None, guidance_scale: float | None = None):
    """Run the body with TaoCache enabled on ``pipe`` (if ``cache_config`` is not None).

    Yields a dict that holds the cache's statistics (``taocache.stats(pipe)``, as a dict) under ``"stats"``
    once the body has finished.
    """
    report: dict = {}
    if cache_config is None:
        yield report
        return
    enable, disable, stats = cache_api()
    saved_scheduler = pipe.scheduler
    saved_guidance = getattr(pipe, "_guidance_scale", None)
    if sampler is not None:
        pipe.scheduler = sampler
    if guidance_scale is not None:
        pipe._guidance_scale = guidance_scale
    enable(pipe, cache_config)
    try:
        yield report
        pipe.maybe_free_model_hooks()  # what a pipeline call does at its end: hooks close the call
        if stats is not None:
            found = stats(pipe)
            report["stats"] = found.as_dict() if hasattr(found, "as_dict") else found
    finally:
        disable(pipe)
        if sampler is not None:
            pipe.scheduler = saved_scheduler
        if guidance_scale is not None:
            if saved_guidance is None:
                del pipe._guidance_scale
            else:
                pipe._guidance_scale = saved_guidance
