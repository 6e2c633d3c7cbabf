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
from pathlib import Path

from .. import api
from ..core import compat
from ..taocache.config import TaoCacheConfig

logger = logging.getLogger(__name__)


def calibrated_cache_config(pipe, prompts: list[str], call_kwargs: dict, path=None) -> TaoCacheConfig:
    """A TaoCacheConfig whose calibration is read from ``path``, or measured by ``taocache.calibrate`` first.

    Editing samples with the same denoiser, DDIM schedule and guidance as the pipeline's own generation, so
    full text-to-image runs of ``prompts`` at those settings (``call_kwargs``) give the delta statistics
    TaoCache predicts with. Without a calibration each enabled run would record its own and skip nothing.
    The measured calibration is saved to ``path`` when given (and reused by later runs), else kept in memory.
    """
    if path is not None and Path(path).is_file():
        return TaoCacheConfig(calibration=str(path))
    calibration = api.calibrate(
        pipe, list(prompts), call_kwargs=call_kwargs, path=path, save=path is not None, overwrite=True,
        progress=False,
    )
    return TaoCacheConfig(calibration=str(path) if path is not None else calibration)


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
    saved_scheduler = pipe.scheduler
    if sampler is not None:
        pipe.scheduler = sampler
    try:
        with compat.temporary_guidance_scale(pipe, guidance_scale):
            api.enable(pipe, cache_config)
            try:
                yield report
                pipe.maybe_free_model_hooks()  # what a pipeline call does at its end: hooks close the call
                found = api.stats(pipe)
                report["stats"] = found.as_dict() if hasattr(found, "as_dict") else found
            finally:
                api.disable(pipe)
    finally:
        pipe.scheduler = saved_scheduler
