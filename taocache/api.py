"""The public entry points: enable, disable, stats and calibrate, on a pipeline or a bare denoiser.

Every cache goes through the one list of backends in :mod:`taocache.registry`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from . import registry
from .core.denoisers import denoisers_of
from .core.parallel import is_first_rank, on_first_rank
from .diffusers_caches import enabled_by_hand
from .results import refuse_overwrite
from .taocache.calibrate import record_calibration
from .taocache.calibration import DEFAULT_HORIZON, Calibration, default_directory
from .taocache.config import TaoCacheConfig
from .taocache.recorder import CalibrationRecorder
from .taocache.stats import CacheStats

logger = logging.getLogger(__name__)


def enable(target, config=None) -> None:
    """Put TaoCache, or several caches stacked, on a pipeline's denoisers or on a denoiser module.

    Args:
        target: A diffusers ``DiffusionPipeline`` (its ``transformer``, ``transformer_2`` and ``unet`` are
            hooked) or a ``torch.nn.Module`` denoiser whose forward returns a tensor, a tuple or an output with
            ``.sample``.
        config: A :class:`TaoCacheConfig` (default ``TaoCacheConfig()``); a list of configs to stack, applied
            in order, innermost first (``[TeaCacheConfig(...), TaoCacheConfig()]``; diffusers' cache configs
            such as ``PyramidAttentionBroadcastConfig`` stack too); or the path of a configuration file written
            by ``taocache tune`` / :func:`taocache.tune` / :func:`taocache.save_configs`.

    Returns:
        None. Enabling again replaces the earlier TaoCache hook. If any config cannot be applied, the error is
        raised with every cache taken off again, so a corrected call starts from the plain pipeline.

    Example::

        taocache.enable(pipe)
        video = pipe(prompt, num_inference_steps=50).frames[0]
        print(taocache.stats(pipe))
        taocache.disable(pipe)
    """
    from .configs import load_configs

    if isinstance(config, (str, os.PathLike)):
        configs = load_configs(config)
    elif isinstance(config, (list, tuple)):
        configs = list(config)
    else:
        configs = [config if config is not None else TaoCacheConfig()]
    denoisers_of(target)  # the target's type is checked before anything is applied
    chosen = [registry.backend_for(item) for item in configs]
    try:
        for backend, item in zip(chosen, configs):
            backend.apply(target, item, len(configs) > 1)
    except BaseException:
        _remove_all(target)
        raise


def disable(target) -> None:
    """Take off TaoCache and every cache stacked through :func:`enable`; the original forward is restored
    exactly. (TeaCache applied by hand comes off too; a diffusers cache enabled by hand with the denoiser's
    ``enable_cache`` stays.)

    Args:
        target: The pipeline or denoiser given to :func:`enable`.

    Returns:
        None; a warning is logged when no cache was on.

    Example::

        taocache.disable(pipe)   # pipe(...) is the plain pipeline again
    """
    if not _remove_all(target):
        logger.warning("no cache was enabled on %s through taocache; nothing to disable", type(target).__name__)


def _remove_all(target) -> bool:
    """Take every backend's cache off ``target``; whether any was on."""
    return any([backend.remove(target) for backend in registry.backends()])  # noqa: C419 - remove from every one


def _stacked_stats(target) -> dict[str, object]:
    """What each cache other than TaoCache reports, by label."""
    found = {}
    for backend in registry.backends():
        if backend.config_type is not TaoCacheConfig:
            report = backend.stats(target)
            if report:
                found[backend.label] = report
    return found


def stats(target) -> CacheStats:
    """What the caches did in the most recent call (or the call in progress).

    Args:
        target: The pipeline or denoiser given to :func:`enable`.

    Returns:
        A :class:`CacheStats`: TaoCache's denoiser calls, computed and predicted, per guidance branch with the
        decision at each step (``str()`` prints them), notes on anything unusual, and under ``stacked`` what
        each cache stacked with it reports. ValueError when no cache is enabled on ``target``.

    Example::

        record = taocache.stats(pipe)
        print(record.computed, "of", record.calls, "calls computed;", record.ideal_speedup, "x fewer")
    """
    tao = registry.backend_for(TaoCacheConfig())
    record, stacked = tao.stats(target), _stacked_stats(target)
    if record is None and not stacked:
        raise ValueError(f"TaoCache is not enabled on {type(target).__name__}; call taocache.enable() first")
    record = record if record is not None else CacheStats()
    record.stacked.update(stacked)
    return record


def active_caches(target) -> list[str]:
    """The caches on ``target`` that change its denoiser's outputs now, by label."""
    found = list(_stacked_stats(target))
    if registry.backend_for(TaoCacheConfig()).stats(target) is not None:
        found.insert(0, "TaoCache")
    return found + [f"a diffusers cache on {name}" for name in enabled_by_hand(target)]


def calibrate(
    pipe,
    prompts: list[str],
    *,
    call_kwargs: dict | None = None,
    seed: int = 0,
    horizon: int = DEFAULT_HORIZON,
    path: str | Path | None = None,
    save: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> Calibration:
    """Run ``pipe`` in full on ``prompts`` and measure the delta statistics TaoCache predicts with.

    Args:
        pipe: A diffusers ``DiffusionPipeline`` with no cache enabled (it would approximate the full runs),
            except TaoCache itself, which then uses the new calibration at once.
        prompts: A few prompts, never those the results will be judged on.
        call_kwargs: The pipeline call's arguments: the size and guidance of later runs, and at least 50 steps
            (``MIN_CALIBRATION_STEPS``), also for shorter runs, which use it resampled (docs/algorithm.md,
            section 6.1).
        seed: Prompt ``n`` runs with a CPU generator seeded ``seed + n``.
        horizon: The longest run of predicted steps calibrated (1 to 8).
        path: The JSON file to write (default: the calibration folder, ``$TAOCACHE_CALIBRATION_DIR`` or
            ``~/.cache/taocache/calibration``, under the calibration's key, where :func:`enable` finds it).
        save: Write the file (False keeps the calibration in memory only).
        overwrite: Replace an existing file.
        progress: Show a progress bar.

    Returns:
        The :class:`Calibration`; pass it as ``TaoCacheConfig(calibration=...)`` or let :func:`enable` find
        the saved file.

    Example::

        taocache.calibrate(pipe, ["a red circle moves left", "a blue square"], call_kwargs={"num_inference_steps": 50})
        taocache.enable(pipe)
    """
    from diffusers import DiffusionPipeline

    if not isinstance(pipe, DiffusionPipeline):
        raise TypeError(f"taocache.calibrate() needs a diffusers DiffusionPipeline, got {type(pipe).__name__}")
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings")
    CalibrationRecorder(horizon)  # checks the horizon before any hook goes on
    kwargs = dict(call_kwargs or {})
    kwargs.setdefault("output_type", "latent")
    if save and path is not None:
        refuse_overwrite(path, overwrite)
    others = [name for name in active_caches(pipe) if name != "TaoCache"]
    if others:
        raise ValueError(
            f"calibration measures full runs, but {', '.join(others)} is enabled on this pipeline and would "
            "approximate them; call taocache.disable(pipe) (or the cache's own disable) first, calibrate, then "
            "enable the caches again"
        )
    if save and path is None and "num_inference_steps" in kwargs:
        from .core.denoisers import scheduler_name
        from .core.fingerprint import fingerprint

        _, module = denoisers_of(pipe)[0]
        expected = default_directory() / (
            f"{type(module).__name__}-{fingerprint(module)}-{scheduler_name(pipe) or 'unknown'}-"
            f"{kwargs['num_inference_steps']}.json"
        )
        refuse_overwrite(expected, overwrite)
    calibration = record_calibration(pipe, list(prompts), kwargs, seed, horizon, progress)
    if save:
        target = Path(path) if path is not None else default_directory() / calibration.file_name()
        # every rank holds the same calibration (record_calibration checks it); one writes it
        on_first_rank(lambda: calibration.save(target, overwrite=overwrite), f"write the calibration {target}")
        calibration.source = str(target)
        if is_first_rank():
            logger.info("TaoCache calibration (%d samples, %d steps) written to %s", calibration.samples,
                        calibration.steps, target)
    return calibration
