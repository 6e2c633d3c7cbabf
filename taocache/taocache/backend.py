"""TaoCache as a backend of ``taocache.enable``: one hook on every denoiser of a target, each with the
calibrations it may use, and TaoCache's entry in a configuration file."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from ..core.denoisers import denoisers_of, pipeline_of, scheduler_name
from ..core.fingerprint import fingerprint
from .calibration import Calibration, default_directory, find_calibrations, shipped_directory
from .config import TaoCacheConfig
from .hook import TaoCacheHook, apply_taocache, hook_of, remove_taocache
from .stats import CacheStats, merge

logger = logging.getLogger(__name__)


def directories(config: TaoCacheConfig) -> list[Path]:
    """Where calibrations are looked up: the config's folder (else the user's), then the shipped ones."""
    return [Path(config.calibration_dir) if config.calibration_dir else default_directory(), shipped_directory()]


def calibrations_for(config: TaoCacheConfig, name: str, module, scheduler: str | None) -> list[Calibration]:
    """The calibrations a hook on ``module`` may use: the config's own (checked), else those found on disk."""
    explicit = config.calibration
    if explicit is not None and not isinstance(explicit, Calibration):
        explicit = Calibration.load(explicit)
    denoiser, fp = type(module).__name__, fingerprint(module)
    if explicit is None:
        return find_calibrations(directories(config), denoiser, fp, scheduler)
    if explicit.entry_for(name, denoiser, fp) is None or (
        scheduler is not None and explicit.scheduler not in (scheduler, "unknown")
    ):
        raise ValueError(
            f"calibration {explicit.source} was made for {explicit.describe()}, but {name} is {denoiser} "
            f"(config {fp}) with {scheduler or 'an unknown scheduler'}; calibrate this model with "
            "taocache.calibrate(pipe, prompts) or `taocache calibrate`, or pass its own file"
        )
    return [explicit]


def has_calibration(target, config: TaoCacheConfig | None = None) -> bool:
    """Whether every denoiser of ``target`` has a calibration (the config's, or one on disk)."""
    config = config or TaoCacheConfig()
    scheduler = scheduler_name(pipeline_of(target))
    return all(calibrations_for(config, name, module, scheduler) for name, module in denoisers_of(target))


def apply(target, config: TaoCacheConfig, stacked: bool = False) -> None:
    """Hook TaoCache onto every denoiser of ``target`` (replacing an earlier TaoCache hook)."""
    pipe = pipeline_of(target)
    scheduler = scheduler_name(pipe)
    for name, module in denoisers_of(target):
        calibrations = calibrations_for(config, name, module, scheduler)
        apply_taocache(module, config, name, pipe, calibrations, scheduler)
        denoiser = type(module).__name__
        if calibrations:
            logger.info("TaoCache on %s (%s): calibration %s", name, denoiser, calibrations[0].source)
        elif config.auto_calibrate and stacked:
            logger.warning(
                "TaoCache on %s (%s): no calibration found, and the first call would record one from outputs "
                "the stacked caches approximate; calibrate the plain pipeline first (taocache.calibrate or "
                "`taocache calibrate`), then enable the stack", name, denoiser)
        elif config.auto_calibrate:
            logger.info("TaoCache on %s (%s): no calibration found in %s; the first call will run in full and "
                        "record one", name, denoiser, directories(config)[0])
        else:
            logger.warning("TaoCache on %s (%s): no calibration found and auto_calibrate=False, so nothing will "
                           "be skipped", name, denoiser)


def hooks_of(target) -> dict[str, TaoCacheHook]:
    """The TaoCache hooks on ``target``'s denoisers, by component name."""
    found = {name: hook_of(module) for name, module in denoisers_of(target)}
    return {name: hook for name, hook in found.items() if hook is not None}


def remove(target) -> bool:
    """Take TaoCache off every denoiser of ``target``; whether it was on any."""
    return any([remove_taocache(module) for _, module in denoisers_of(target)])  # noqa: C419 - from every one


def stats(target) -> CacheStats | None:
    """The record of the most recent call, merged over the denoisers (None when TaoCache is not on)."""
    hooks = hooks_of(target)
    return merge({name: hook.current_stats() for name, hook in hooks.items()}) if hooks else None


def calibration_path(path: str | os.PathLike) -> Path:
    """Where a configuration file written to ``path`` keeps the calibration it was tuned with."""
    path = Path(path)
    return path.with_name(path.stem + ".calibration.json")


def to_json(config: TaoCacheConfig, path: Path, overwrite: bool) -> dict:
    """The config's fields for a configuration file at ``path``: a calibration held in memory is saved beside
    it, and a calibration file is named relative to it, so the two can be moved together."""
    entry = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if isinstance(value, Calibration):
            target = calibration_path(path)
            value.save(target, overwrite=overwrite)
            value = target.name
        elif item.name == "calibration" and isinstance(value, (str, os.PathLike)):
            value = os.path.relpath(Path(value).resolve(), path.resolve().parent)
        elif isinstance(value, os.PathLike):
            value = str(value)
        entry[item.name] = value
    return entry


def from_json(fields: dict, path: Path) -> TaoCacheConfig:
    fields = dict(fields)
    fields.setdefault("weigh_by_step", False)  # written before the field existed: tuned without it
    if isinstance(fields.get("calibration"), str):
        calibration = Path(fields["calibration"])
        fields["calibration"] = str(calibration if calibration.is_absolute() else path.parent / calibration)
    return TaoCacheConfig(**fields)
