"""TeaCache, and TaoCache stacked on TeaCache or on Pyramid Attention Broadcast, as benchmarked methods.

A stacked method holds one adapter per cache and applies them innermost first, so TaoCache stays outermost:
on a step it predicts, nothing below it runs; on a step it computes, TeaCache (or PAB) may still save work
inside the transformer. Its settings are one table per part, e.g.
``settings = [{ teacache = { rel_l1_thresh = 0.1 }, taocache = { error_budget = 0.4 } }]``.
"""

from __future__ import annotations

from typing import ClassVar

from .base import BenchContext, Method, Unsupported, register_method  # noqa: F401
from .diffusers_caches import PyramidAttentionBroadcast
from .taocache_method import TaoCache


@register_method
class TeaCache(Method):
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
        self.config = self._config()

    def _config(self):
        from taocache.cache.teacache import TeaCacheConfig

        fields = {k: v for k, v in self.settings.items() if k != "coefficients_file" and v is not None}
        try:
            if self.settings["coefficients_file"]:
                return TeaCacheConfig.from_file(self.settings["coefficients_file"], **fields)
            return TeaCacheConfig(**fields)
        except (OSError, ValueError) as err:
            raise ValueError(f"method 'teacache': {err}") from err

    def enable(self, pipe, call):
        from taocache.cache.teacache import apply_to_target

        config = self.config
        if config.num_inference_steps is None and "num_inference_steps" in call:
            from dataclasses import replace

            config = replace(config, num_inference_steps=int(call["num_inference_steps"]))
        try:
            apply_to_target(pipe, config)
        except TypeError as err:
            raise Unsupported(str(err)) from err

    def disable(self, pipe):
        from taocache.cache.teacache import remove_from_target

        remove_from_target(pipe)

    def stats(self, pipe):
        from taocache.cache.teacache import _transformers, teacache_stats

        return {"teacache": [teacache_stats(m) for m in _transformers(pipe)]}


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
        enabled = []
        try:
            for part in self.parts:
                part.enable(pipe, call)
                enabled.append(part)
        except Exception:
            for part in reversed(enabled):
                part.disable(pipe)
            raise

    def disable(self, pipe):
        for part in reversed(self.parts):
            part.disable(pipe)

    def stats(self, pipe):
        return {part.name: part.stats(pipe) for part in self.parts}

    def caveats(self, calls_per_step: int) -> list[str]:
        return [note for part in self.parts if hasattr(part, "caveats") for note in part.caveats(calls_per_step)]


@register_method
class TaoCacheOnTeaCache(_Stacked):
    name = "taocache+teacache"
    description = "TaoCache on the late steps over TeaCache on the early and middle ones, one stacked run"
    inner = TeaCache


@register_method
class TaoCacheOnPAB(_Stacked):
    name = "taocache+pab"
    description = "TaoCache over diffusers' Pyramid Attention Broadcast, one stacked run"
    inner = PyramidAttentionBroadcast

