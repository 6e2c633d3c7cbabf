"""Methods that need no cache: the full run, the shorter run of equal cost, and static step skipping."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from ...core.denoisers import denoisers_of
from ..static_skip import StaticSkipConfig, apply_static_skip, remove_static_skip
from .base import Method


class FullRun(Method):
    name = "full"
    description = (
        "the pipeline as it is, every step computed: the reference every other run is scored against"
    )
    changes_call_only = True


class FewerSteps(Method):
    name = "steps"
    description = (
        "the same pipeline with fewer denoising steps: the cost a cache must beat, since it saves calls too "
        "and needs no cache at all"
    )
    defaults: ClassVar[dict] = {"steps": None}
    changes_call_only = True

    def validate(self):
        steps = self.settings["steps"]
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(
                f"method 'steps': steps={steps!r} must be an integer >= 1 (the denoising steps to run)"
            )

    def call_overrides(self, call):
        return {"num_inference_steps": self.settings["steps"]}


class StaticSkip(Method):
    name = "static"
    description = "compute every interval-th step from a start step on and reuse the last output in between"
    defaults: ClassVar[dict] = {"interval": 2, "start": 0, "compute_last": True}

    def validate(self):
        self.config = StaticSkipConfig(
            interval=self.settings["interval"],
            start_step=self.settings["start"],
            compute_last=self.settings["compute_last"],
        )

    def enable(self, pipe, call):
        config = replace(self.config, num_inference_steps=int(call["num_inference_steps"]))
        for _, denoiser in denoisers_of(pipe):
            apply_static_skip(denoiser, config)

    def disable(self, pipe):
        for _, denoiser in denoisers_of(pipe):
            remove_static_skip(denoiser)
