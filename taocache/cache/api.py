"""The public entry points: enable, disable, stats and calibrate, on a pipeline or a bare denoiser."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers.utils.torch_utils import unwrap_module

from .calibration import (
    DEFAULT_HORIZON,
    MIN_CALIBRATION_STEPS,
    Calibration,
    CalibrationRecorder,
    default_directory,
    find_calibrations,
    fingerprint,
)
from .config import TaoCacheConfig
from .hook import TAOCACHE_HOOK, TaoCacheHook, apply_taocache, remove_taocache
from .stats import CacheStats, merge

logger = logging.getLogger(__name__)

DENOISER_COMPONENTS = ("transformer", "transformer_2", "unet")
SHIPPED_CALIBRATIONS = Path(__file__).resolve().parent / "calibrations"
_SUPPORTED = (
    "a diffusers DiffusionPipeline (its transformer, transformer_2 and unet are hooked) or a torch.nn.Module "
    "denoiser whose forward returns a tensor, a tuple or an output with .sample"
)

# Other caches that enable() can stack: config type -> (enable(target, config), disable(target), stats(target)).
_STACKABLE: dict[type, tuple[Callable, Callable, Callable | None]] = {}


def register_cache(
    config_type: type, enable_fn: Callable, disable_fn: Callable, stats_fn: Callable | None = None
) -> None:
    """Let ``enable(target, [..., config_type(...)])`` apply another cache and ``disable(target)`` remove it.

    ``stats_fn(target)`` returns what that cache did (a JSON-like dict, or None when it is not on
    ``target``); :func:`stats` reports it beside TaoCache's record.
    """
    _STACKABLE[config_type] = (enable_fn, disable_fn, stats_fn)


def _denoisers(target) -> tuple[object | None, list[tuple[str, torch.nn.Module]]]:
    """(pipeline or None, [(component name, unwrapped denoiser)]) of ``target``; TypeError if unsupported."""
    from diffusers import DiffusionPipeline

    if isinstance(target, DiffusionPipeline):
        found = [(name, getattr(target, name, None)) for name in DENOISER_COMPONENTS]
        found = [(name, unwrap_module(m)) for name, m in found if isinstance(m, torch.nn.Module)]
        if not found:
            raise TypeError(
                f"{type(target).__name__} has no denoiser component ({', '.join(DENOISER_COMPONENTS)}); "
                f"pass the denoiser module itself to taocache.enable()"
            )
        return target, found
    if isinstance(target, torch.nn.Module):
        return None, [("denoiser", unwrap_module(target))]
    raise TypeError(f"TaoCache supports {_SUPPORTED}; got {type(target).__name__}")


def _scheduler_name(pipe) -> str | None:
    scheduler = getattr(pipe, "scheduler", None)
    return type(scheduler).__name__ if scheduler is not None else None


def _hooks(target) -> dict[str, TaoCacheHook]:
    _, denoisers = _denoisers(target)
    found = {}
    for name, module in denoisers:
        registry = getattr(module, "_diffusers_hook", None)
        hook = registry.get_hook(TAOCACHE_HOOK) if registry is not None else None
        if hook is not None:
            found[name] = hook
    return found


def _explicit_calibration(config: TaoCacheConfig) -> Calibration | None:
    if config.calibration is None or isinstance(config.calibration, Calibration):
        return config.calibration
    return Calibration.load(config.calibration)


def enable(target, config=None) -> None:
    """Hook TaoCache onto every denoiser of ``target`` (a pipeline) or onto ``target`` (a denoiser module).

    ``config`` is a :class:`TaoCacheConfig` (default: ``TaoCacheConfig()``), a list of configs to stack
    several caches, applied in order (the last is outermost; see ``taocache/cache/__init__.py``), or the
    path of a configuration file written by ``taocache tune`` / :func:`taocache.tune`.
    Enabling again replaces the earlier TaoCache hook. If any config cannot be applied, the error is raised
    with every cache taken off again, so a corrected call starts from the plain pipeline.
    """
    from . import diffusers_stack, teacache  # noqa: F401  (make TeaCache's and diffusers' configs stackable)
    from .config_file import load_configs

    if isinstance(config, (str, os.PathLike)):
        configs = load_configs(config)
    elif isinstance(config, (list, tuple)):
        configs = list(config)
    else:
        configs = [config if config is not None else TaoCacheConfig()]
    _denoisers(target)  # type check before anything is applied
    unsupported = [item for item in configs if not isinstance(item, TaoCacheConfig) and type(item) not in _STACKABLE]
    if unsupported:
        known = ", ".join(["TaoCacheConfig"] + [t.__name__ for t in _STACKABLE])
        raise TypeError(f"unsupported cache config {type(unsupported[0]).__name__}; supported: {known}")
    try:
        for item in configs:
            if isinstance(item, TaoCacheConfig):
                _enable_taocache(target, item, stacked=len(configs) > 1)
            else:
                _STACKABLE[type(item)][0](target, item)
    except BaseException:
        _remove_all(target)
        raise


def _calibrations_for(config: TaoCacheConfig, name: str, module, scheduler: str | None) -> list[Calibration]:
    """The calibrations a hook on ``module`` may use: the config's own (checked), else those found on disk."""
    explicit = _explicit_calibration(config)
    denoiser, fp = type(module).__name__, fingerprint(module)
    if explicit is None:
        return find_calibrations(_directories(config), denoiser, fp, scheduler)
    if explicit.entry_for(name, denoiser, fp) is None or (
        scheduler is not None and explicit.scheduler not in (scheduler, "unknown")
    ):
        raise ValueError(
            f"calibration {explicit.source} was made for {explicit.describe()}, but {name} is {denoiser} "
            f"(config {fp}) with {scheduler or 'an unknown scheduler'}; calibrate this model with "
            "taocache.calibrate(pipe, prompts) or `taocache calibrate`, or pass its own file"
        )
    return [explicit]


def _directories(config: TaoCacheConfig) -> list[Path]:
    return [
        Path(config.calibration_dir) if config.calibration_dir else default_directory(),
        SHIPPED_CALIBRATIONS,
    ]


def has_calibration(target, config: TaoCacheConfig | None = None) -> bool:
    """Whether every denoiser of ``target`` has a calibration (the config's, or one on disk)."""
    config = config or TaoCacheConfig()
    pipe, denoisers = _denoisers(target)
    scheduler = _scheduler_name(pipe)
    return all(_calibrations_for(config, name, module, scheduler) for name, module in denoisers)


def _enable_taocache(target, config: TaoCacheConfig, stacked: bool = False) -> None:
    pipe, denoisers = _denoisers(target)
    scheduler = _scheduler_name(pipe)
    for name, module in denoisers:
        calibrations = _calibrations_for(config, name, module, scheduler)
        apply_taocache(module, config, name, pipe, calibrations, scheduler)
        denoiser = type(module).__name__
        if calibrations:
            logger.info("TaoCache on %s (%s): calibration %s", name, denoiser, calibrations[0].source)
        elif config.auto_calibrate and stacked:
            logger.warning(
                "TaoCache on %s (%s): no calibration found, and the first call would record one from outputs "
                "the stacked caches approximate; calibrate the plain pipeline first (taocache.calibrate or "
                "`taocache calibrate`), then enable the stack",
                name,
                denoiser,
            )
        elif config.auto_calibrate:
            logger.info(
                "TaoCache on %s (%s): no calibration found in %s; the first call will run in full "
                "and record one",
                name,
                denoiser,
                _directories(config)[0],
            )
        else:
            logger.warning(
                "TaoCache on %s (%s): no calibration found and auto_calibrate=False, so nothing "
                "will be skipped",
                name,
                denoiser,
            )


def disable(target) -> None:
    """Remove TaoCache and the caches stacked through :func:`enable` (TeaCache also when applied by hand; a
    diffusers cache enabled by hand stays): the original forward is restored exactly."""
    if not _remove_all(target):
        logger.warning("no cache was enabled on %s through taocache; nothing to disable", type(target).__name__)


def _remove_all(target) -> bool:
    """Take TaoCache and the caches stacked through :func:`enable` off; whether any was on."""
    _, denoisers = _denoisers(target)
    stacked = bool(_stacked_stats(target))
    removed = [remove_taocache(module) for _, module in denoisers]
    for _, disable_fn, _ in _STACKABLE.values():
        disable_fn(target)
    return any(removed) or stacked


def _stacked_stats(target) -> dict[str, dict]:
    """What each cache enabled beside TaoCache reports, by name."""
    found = {}
    for config_type, (_, _, stats_fn) in _STACKABLE.items():
        report = stats_fn(target) if stats_fn is not None else None
        if report:
            found[config_type.__name__.removesuffix("Config")] = report
    return found


def _active_caches(target) -> list[str]:
    """The caches other than TaoCache that change the denoiser's outputs on ``target`` now."""
    found = list(_stacked_stats(target))
    if not found:  # one enabled by hand with the denoiser's own enable_cache()
        found = [f"a diffusers cache on {name}" for name, module in _denoisers(target)[1]
                 if getattr(module, "is_cache_enabled", False)]
    return found


def stats(target) -> CacheStats:
    """The record of the most recent call: calls, computed, predicted, per branch, and the decisions."""
    hooks, stacked = _hooks(target), _stacked_stats(target)
    if not hooks and not stacked:
        raise ValueError(f"TaoCache is not enabled on {type(target).__name__}; call taocache.enable() first")
    record = merge({name: hook.current_stats() for name, hook in hooks.items()}) if hooks else CacheStats()
    record.stacked.update(stacked)
    return record


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

    ``call_kwargs`` are the pipeline call's arguments (use the same size and guidance as later runs; the
    calibration is keyed by the step count, and runs of other step counts use it resampled: calibrate on at
    least ``MIN_CALIBRATION_STEPS`` (50) steps, also for shorter runs, see docs/algorithm.md section 6.1).
    Prompt ``n`` uses a CPU generator seeded ``seed + n``.
    The result is written to ``path`` (default: the calibration folder, under its key's file name) unless
    ``save`` is False, and is used at once by TaoCache hooks already enabled on ``pipe``.
    """
    from diffusers import DiffusionPipeline
    from tqdm.auto import tqdm

    if not isinstance(pipe, DiffusionPipeline):
        raise TypeError(
            f"taocache.calibrate() needs a diffusers DiffusionPipeline, got {type(pipe).__name__}"
        )
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings")
    CalibrationRecorder(horizon)  # checks the horizon before any hook goes on
    kwargs = dict(call_kwargs or {})
    kwargs.setdefault("output_type", "latent")
    if save and path is not None and Path(path).exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --force) to replace it")
    _, denoisers = _denoisers(pipe)
    stacked = _active_caches(pipe)
    if stacked:
        raise ValueError(
            f"calibration measures full runs, but {', '.join(stacked)} is enabled on this pipeline and would "
            "approximate them; call taocache.disable(pipe) (or the cache's own disable) first, calibrate, then "
            "enable the caches again"
        )
    scheduler = _scheduler_name(pipe) or "unknown"
    if save and path is None and "num_inference_steps" in kwargs:
        name, module = denoisers[0]
        expected = default_directory() / (
            f"{type(module).__name__}-{fingerprint(module)}-{scheduler}-{kwargs['num_inference_steps']}.json"
        )
        if expected.exists() and not overwrite:
            raise FileExistsError(f"{expected} exists; pass overwrite=True (CLI: --force) to replace it")
    existing, temporary = _hooks(pipe), []
    hooks = {}
    for name, module in denoisers:
        hook = existing.get(name)
        if hook is None:
            hook = apply_taocache(module, TaoCacheConfig(auto_calibrate=False), name, pipe, [], scheduler)
            temporary.append(module)
        hook.start_recording(CalibrationRecorder(horizon))
        hooks[name] = hook
    try:
        for n, prompt in enumerate(tqdm(prompts, desc="TaoCache calibration", disable=not progress)):
            pipe(prompt, generator=torch.Generator("cpu").manual_seed(seed + n), **kwargs)
            for hook in hooks.values():
                hook._end_call()  # pipelines whose denoiser has no cache reset (e.g. UNet) end the call here
    finally:
        recorders = {name: hook.stop_recording() for name, hook in hooks.items()}
        for module in temporary:
            remove_taocache(module)
    steps = max(r.num_steps() for r in recorders.values())
    scheduled = getattr(pipe.scheduler, "timesteps", None)
    if scheduled is not None and len(scheduled) == steps:
        timesteps = [float(t) for t in scheduled]
    else:
        seen = {s: t for r in recorders.values() for s, t in r.timesteps.items()}
        timesteps = [seen.get(s, float(steps - s)) for s in range(steps)]
    entries = {}
    for (name, module), recorder in zip(denoisers, recorders.values()):
        if recorder.has_data:
            entries[name] = recorder.build(type(module).__name__, fingerprint(module), steps)
    if not entries:
        raise ValueError(
            f"the denoiser was called too few times to calibrate ({steps} steps); use more steps"
        )
    if steps < MIN_CALIBRATION_STEPS:
        logger.info(
            "TaoCache calibration on %d steps: runs of fewer than %d steps predict better from a calibration "
            "on %d steps, which TaoCache resamples for them (docs/algorithm.md, section 6.1)",
            steps,
            MIN_CALIBRATION_STEPS,
            MIN_CALIBRATION_STEPS,
        )
    samples = max(r.samples for r in recorders.values())
    calibration = Calibration(scheduler, steps, timesteps, horizon, samples, entries)
    if save:
        target = Path(path) if path is not None else default_directory() / calibration.file_name()
        calibration.save(target, overwrite=overwrite)
        logger.info("TaoCache calibration (%d samples, %d steps) written to %s", samples, steps, target)
    for hook in existing.values():
        hook.add_calibration(calibration)
    return calibration
