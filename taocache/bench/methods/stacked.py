"""TeaCache, EasyCache, and TaoCache stacked on TeaCache or on Pyramid Attention Broadcast, as benchmarked methods.

A stacked method holds one adapter per cache and applies them innermost first, so TaoCache stays outermost:
on a step it predicts, nothing below it runs; on a step it computes, TeaCache (or PAB) may still save work
inside the transformer. Its settings are one table per part, e.g.
``settings = [{ teacache = { rel_l1_thresh = 0.1 }, taocache = { error_budget = 0.4 } }]``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from ... import api
from ...easycache.config import EasyCacheConfig
from ...teacache.config import TeaCacheConfig
from .base import BenchContext, CacheMethod, Method, enable_caches
from .diffusers_caches import PyramidAttentionBroadcast
from .taocache_method import TaoCache


class TeaCache(CacheMethod):
    name = "teacache"
    description = (
        "TeaCache (this package's hook): reuses the transformer block stack's last residual while the "
        "rescaled change of its timestep-modulated input stays under a threshold; coefficients fitted for "
        "the model (taocache fit-teacache) or published for it"
    )
    defaults: ClassVar[dict] = {
        "rel_l1_thresh": 0.1,
        "coefficients": None,
        "coefficients_file": None,
        "warmup_steps": None,
        "max_skip_steps": None,
    }

    def validate(self):
        fields = {k: v for k, v in self.settings.items() if k != "coefficients_file" and v is not None}
        try:
            if self.settings["coefficients_file"]:
                self._config = TeaCacheConfig.from_file(self.settings["coefficients_file"], **fields)
            else:
                self._config = TeaCacheConfig(**fields)
        except (OSError, ValueError) as err:
            raise ValueError(f"method 'teacache': {err}") from err

    def config(self, pipe, call):
        if self._config.num_inference_steps is None and "num_inference_steps" in call:
            return replace(self._config, num_inference_steps=int(call["num_inference_steps"]))
        return self._config


class EasyCache(CacheMethod):
    name = "easycache"
    description = (
        "EasyCache (arXiv 2507.02860, this package's hook): reuses the denoiser's last output-minus-input "
        "while the output change estimated at run time from the input change, summed since the last "
        "computed step, stays under a threshold; no calibration"
    )
    defaults: ClassVar[dict] = {"threshold": 0.05, "warmup_ratio": 0.2, "warmup_steps": None, "final_steps": 1}

    def validate(self):
        try:
            self._config = EasyCacheConfig(**self.settings)
        except ValueError as err:
            raise ValueError(f"method 'easycache': {err}") from err

    def config(self, pipe, call):
        if "num_inference_steps" in call:
            return replace(self._config, num_inference_steps=int(call["num_inference_steps"]))
        return self._config


class _Stacked(Method):
    """TaoCache outermost over ``inner`` (another method's adapter); settings are one table per part."""

    inner: ClassVar[type[Method]]

    def __init__(self, **settings):
        parts = (self.inner.name, "taocache")
        unknown = sorted(set(settings) - set(parts))
        if unknown:
            raise ValueError(f"method {self.name!r} has parts {list(parts)}, not {unknown}")
        for part, value in settings.items():
            if not isinstance(value, dict):
                raise ValueError(f"method {self.name!r}: {part} must be a table of that method's settings")
        self.settings = {part: dict(settings.get(part) or {}) for part in parts}
        self.given = dict(settings)
        self.series = self.name
        self.parts = [self.inner(**self.settings[self.inner.name]), TaoCache(**self.settings["taocache"])]

    @property
    def label(self) -> str:
        return " + ".join(part.label for part in self.parts)

    def identity(self) -> dict:
        return {"method": self.name, "settings": self.settings}

    def prepare(self, bench: BenchContext) -> dict:
        return {part.name: part.prepare(bench) for part in self.parts}

    def call_overrides(self, call: dict) -> dict:
        merged = {}
        for part in self.parts:
            merged.update(part.call_overrides(call))
        return merged

    def enable(self, pipe, call):
        """Every part in one ``taocache.enable`` call, innermost first (which takes them all off on failure)."""
        for part in self.parts:
            part.enabled_config = part.config(pipe, call)
        enable_caches(pipe, [part.enabled_config for part in self.parts])

    def disable(self, pipe):
        api.disable(pipe)

    def stats(self, pipe):
        return {part.name: part.stats(pipe) for part in self.parts}

    def caveats(self, calls_per_step: int) -> list[str]:
        return [note for part in self.parts if hasattr(part, "caveats") for note in part.caveats(calls_per_step)]


class TaoCacheOnTeaCache(_Stacked):
    name = "taocache+teacache"
    description = "TaoCache on the late steps over TeaCache on the early and middle ones, one stacked run"
    inner = TeaCache


class TaoCacheOnPAB(_Stacked):
    name = "taocache+pab"
    description = "TaoCache over Pyramid Attention Broadcast (one state per guidance branch), one stacked run"
    inner = PyramidAttentionBroadcast

