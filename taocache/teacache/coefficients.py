"""Which rescaling coefficients TeaCache uses on a model: fitted ones for this exact model (the user's, then
those that ship with the package), else the published preset of its architecture, else none."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from ..core.compat import unwrap_module
from ..core.data import data_path, user_cache_dir
from .config import PUBLISHED_PRESETS, TeaCacheConfig
from .indicators import MODULATED_INPUT_MODELS

logger = logging.getLogger(__name__)


def coefficient_directories() -> list[Path]:
    """Where fitted coefficient files are looked up: the user's (``taocache fit-teacache`` writes there by
    default), then the package's."""
    return [user_cache_dir("teacache"), data_path("pipelines", "coefficients")]


def find_coefficients(model: torch.nn.Module) -> TeaCacheConfig | None:
    """A config with the coefficients fitted for this exact model, else a matching preset's, else None."""
    for directory in coefficient_directories():
        for path in sorted(directory.glob("*.json")):
            try:
                candidate = TeaCacheConfig.from_file(path)
            except (OSError, ValueError) as err:
                logger.warning("skipping %s: %s", path, err)
                continue
            if candidate.model_match.mismatch(model) is None:
                return candidate
    for name in PUBLISHED_PRESETS:
        candidate = TeaCacheConfig.from_preset(name)
        if candidate.model_match.mismatch(model) is None:
            return candidate
    return None


def resolve_config(model: torch.nn.Module, config: TeaCacheConfig) -> TeaCacheConfig:
    """``config`` with coefficients and indicator settled for ``model``; errors if they belong elsewhere."""
    model = unwrap_module(model)
    if config.model_match is not None:
        reason = config.model_match.mismatch(model)
        if reason is not None:
            raise ValueError(
                f"TeaCache coefficients from {config.model_match.source} do not fit this model: "
                f"{reason}. Fit coefficients for it with `taocache fit-teacache`"
            )
    if config.coefficients is None:
        found = find_coefficients(model)
        if found is not None:
            logger.info("TeaCache: using coefficients from %s", found.model_match.source)
            config = replace(
                config,
                coefficients=found.coefficients,
                indicator=found.indicator if config.indicator == "auto" else config.indicator,
                warmup_steps=found.warmup_steps if config.warmup_steps is None else config.warmup_steps,
                model_match=found.model_match,
            )
        else:
            logger.warning(
                "TeaCache: no fitted coefficients for %s; the threshold applies to the raw change of "
                "the indicator. Fit coefficients with `taocache fit-teacache`",
                type(model).__name__,
            )
            config = replace(config, coefficients=(1.0, 0.0))
    if config.indicator == "auto":
        indicator = "modulated_input" if type(model).__name__ in MODULATED_INPUT_MODELS else "block_input"
        config = replace(config, indicator=indicator)
    if config.warmup_steps is None:
        config = replace(config, warmup_steps=1)
    return config
