"""diffusers' own caches as peers, each switched on with ``taocache.enable`` (the denoisers' ``enable_cache``).

Each adapter builds the library's config from a few settings and is configured so that it really acts on
the models benchmarked here (the harness checks that too: a run whose output equals the full run, or whose
denoiser did all the work of the full run, is flagged in its record).
"""

from __future__ import annotations

import ast
import contextlib
import io
import itertools
from typing import ClassVar

import torch

from ... import api
from .base import BenchContext, CacheMethod, Unsupported, enable_caches


def _current_timestep(pipe):
    if not hasattr(type(pipe), "current_timestep"):
        raise Unsupported(f"{type(pipe).__name__} does not expose current_timestep, which this cache needs")
    return lambda: pipe.current_timestep


def _positive_int(method: str, name: str, value, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"method {method!r}: {name}={value!r} must be an integer >= 1")


def _range(method: str, name: str, value) -> tuple[float, float]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and value[0] < value[1]):
        raise ValueError(
            f"method {method!r}: {name}={value!r} must be a [low, high] timestep range with low < high"
        )
    return (value[0], value[1])


class FirstBlockCache(CacheMethod):
    name = "fbcache"
    description = (
        "diffusers FirstBlockCache: skips the remaining blocks when the first block's residual changed less "
        "than a threshold (relative mean absolute change), reusing their cached residual"
    )
    defaults: ClassVar[dict] = {"threshold": 0.1}

    def validate(self):
        if not self.settings["threshold"] > 0:
            raise ValueError(f"method 'fbcache': threshold={self.settings['threshold']!r} must be > 0")

    def config(self, pipe, call):
        from diffusers import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=float(self.settings["threshold"]))


class PyramidAttentionBroadcast(CacheMethod):
    name = "pab"
    description = (
        "Pyramid Attention Broadcast (diffusers' hooks, one state per guidance branch): inside a timestep range, "
        "attention outputs are computed every k-th call of a branch and rebroadcast in between (spatial "
        "self-attention and, optionally, cross-attention)"
    )
    defaults: ClassVar[dict] = {"spatial": 2, "cross": None, "timestep_range": [100, 800]}

    def validate(self):
        _positive_int(self.name, "spatial", self.settings["spatial"], allow_none=True)
        _positive_int(self.name, "cross", self.settings["cross"], allow_none=True)
        if self.settings["spatial"] is None and self.settings["cross"] is None:
            raise ValueError(f"method {self.name!r}: set spatial and/or cross (the block skip ranges)")
        self.timestep_range = _range(self.name, "timestep_range", self.settings["timestep_range"])

    def _fields(self, pipe) -> dict:
        return {
            "spatial_attention_block_skip_range": self.settings["spatial"],
            "spatial_attention_timestep_skip_range": self.timestep_range,
            "cross_attention_block_skip_range": self.settings["cross"],
            "cross_attention_timestep_skip_range": self.timestep_range,
            "current_timestep_callback": _current_timestep(pipe),
        }

    def config(self, pipe, call):
        from ...pab import PABPerBranchConfig

        return PABPerBranchConfig(**self._fields(pipe))


class SharedPyramidAttentionBroadcast(PyramidAttentionBroadcast):
    name = "pab-shared"
    description = (
        "diffusers' Pyramid Attention Broadcast as it is: one state per attention layer for both guidance "
        "branches (kept to show what the per-branch state of `pab` changes)"
    )

    def config(self, pipe, call):
        from diffusers import PyramidAttentionBroadcastConfig

        return PyramidAttentionBroadcastConfig(**self._fields(pipe))

    def caveats(self, calls_per_step: int) -> list[str]:
        if calls_per_step > 1:
            return [
                (
                    "diffusers' PAB keeps one state per attention layer, not one per guidance branch: with "
                    "the conditional and unconditional passes as separate denoiser calls, a skipped call "
                    "reuses the attention of the other branch"
                )
            ]
        return []


class FasterCache(CacheMethod):
    name = "fastercache"
    description = (
        "diffusers FasterCache: spatial attention reused every k-th call inside a timestep range, and the "
        "unconditional branch rebuilt from the conditional one by frequency-split deltas"
    )
    defaults: ClassVar[dict] = {
        "spatial": 2,
        "spatial_range": [-1, 681],
        "uncond_skip": 5,
        "uncond_range": [-1, 641],
        "attention_weight": 0.5,
    }

    def validate(self):
        _positive_int(self.name, "spatial", self.settings["spatial"])
        _positive_int(self.name, "uncond_skip", self.settings["uncond_skip"])
        self.spatial_range = _range(self.name, "spatial_range", self.settings["spatial_range"])
        self.uncond_range = _range(self.name, "uncond_range", self.settings["uncond_range"])
        if not 0 <= self.settings["attention_weight"] <= 1:
            raise ValueError(
                f"method 'fastercache': attention_weight={self.settings['attention_weight']!r} must be in "
                "[0, 1]"
            )

    def refuse(self, calls_per_step: int) -> str | None:
        if calls_per_step > 1:
            return (
                "diffusers' FasterCache (arXiv 2410.19355) needs the unconditional and conditional guidance "
                "passes batched into one denoiser call; this pipeline makes them as separate calls, so its "
                "hooks fail (IndexError), and the one setting that runs (is_guidance_distilled) switches "
                "CFG-Cache off and mixes the branches' attention, which is not FasterCache"
            )
        return None

    def config(self, pipe, call):
        from diffusers import FasterCacheConfig

        weight = float(self.settings["attention_weight"])
        return FasterCacheConfig(
            spatial_attention_block_skip_range=self.settings["spatial"],
            spatial_attention_timestep_skip_range=self.spatial_range,
            unconditional_batch_skip_range=self.settings["uncond_skip"],
            unconditional_batch_timestep_skip_range=self.uncond_range,
            attention_weight_callback=lambda _: weight,
            current_timestep_callback=_current_timestep(pipe),
            tensor_format="BCFHW" if "num_frames" in call else "BCHW",
        )


class TaylorSeer(CacheMethod):
    name = "taylorseer"
    description = (
        "diffusers TaylorSeer: between full computations every `interval` calls, features are predicted by "
        "a Taylor expansion from finite differences. `lite` predicts the output projection and skips every "
        "block (with diffusers' default identifiers nothing matches a Wan transformer's attention names, so "
        "the default here is lite)"
    )
    defaults: ClassVar[dict] = {
        "interval": 3,
        "start": 3,
        "stop": None,
        "order": 1,
        "lite": True,
        "identifiers": None,
    }

    def validate(self):
        _positive_int(self.name, "interval", self.settings["interval"])
        _positive_int(self.name, "order", self.settings["order"])
        _positive_int(self.name, "stop", self.settings["stop"], allow_none=True)
        if not isinstance(self.settings["start"], int) or self.settings["start"] < 0:
            raise ValueError(f"method 'taylorseer': start={self.settings['start']!r} must be an integer >= 0")
        if not self.settings["lite"] and not self.settings["identifiers"]:
            raise ValueError(
                "method 'taylorseer': with lite=false give identifiers (regular expressions of module names "
                "to predict, e.g. ['blocks\\\\.\\\\d+']); diffusers' defaults match no Wan module"
            )

    def config(self, pipe, call):
        from diffusers import TaylorSeerCacheConfig

        return TaylorSeerCacheConfig(
            cache_interval=self.settings["interval"],
            disable_cache_before_step=self.settings["start"],
            disable_cache_after_step=self.settings["stop"],
            max_order=self.settings["order"],
            taylor_factors_dtype=torch.float32,
            cache_identifiers=self.settings["identifiers"],
            use_lite_mode=bool(self.settings["lite"]),
        )


def _printed_ratios(printed: str) -> list[list[float]]:
    """The ratio lists diffusers' MagCache prints at the end of each calibration run: the line after each
    "Calibration Complete" line. Printed, unlike its log message, on every process whatever the logging setup
    (its log did not reach the capture on the other processes of a multi-process run)."""
    lines = [line.strip() for line in printed.splitlines() if line.strip()]
    return [[float(x) for x in ast.literal_eval(after)]
            for line, after in itertools.pairwise(lines) if "Calibration Complete" in line]


class MagCache(CacheMethod):
    name = "magcache"
    description = (
        "diffusers MagCache: skips the blocks while the accumulated error estimated from calibrated "
        "magnitude ratios of consecutive residuals stays under a threshold, at most K steps in a row, never "
        "in the first retention_ratio of the steps; calibrated (calibrate=True) by full runs of the "
        "calibration prompts, outside the benchmark set, ratios averaged over prompts and guidance branches"
    )
    defaults: ClassVar[dict] = {"threshold": 0.06, "max_skip_steps": 3, "retention_ratio": 0.2}

    def validate(self):
        if not self.settings["threshold"] > 0:
            raise ValueError(f"method 'magcache': threshold={self.settings['threshold']!r} must be > 0")
        _positive_int(self.name, "max_skip_steps", self.settings["max_skip_steps"])
        if not 0 <= self.settings["retention_ratio"] < 1:
            raise ValueError(
                f"method 'magcache': retention_ratio={self.settings['retention_ratio']!r} must be in [0, 1)"
            )
        self.ratios = None

    def prepare(self, bench: BenchContext) -> dict:
        steps = int(bench.call["num_inference_steps"])
        key = ("magcache-calibration", steps, tuple(bench.calibration_prompts), bench.calibration_seed)
        if key not in bench.shared:
            bench.shared[key] = self._calibrate(bench, steps)
        calibration = bench.shared[key]
        self.ratios = calibration["ratios"]
        return calibration

    def _calibrate(self, bench: BenchContext, steps: int) -> dict:
        from diffusers import MagCacheConfig

        printed = io.StringIO()
        try:
            enable_caches(bench.pipe, [MagCacheConfig(calibrate=True, num_inference_steps=steps)])
            with contextlib.redirect_stdout(printed):  # the ratios go into the record, not onto the console
                for n, prompt in enumerate(bench.calibration_prompts):
                    bench.run(prompt, bench.calibration_seed + n, bench.call)
        finally:
            api.disable(bench.pipe)
        per_branch = _printed_ratios(printed.getvalue())  # one list per prompt and guidance branch
        if not per_branch:
            raise Unsupported("MagCache calibration produced no ratios (no transformer blocks were hooked)")
        ratios = [sum(values) / len(values) for values in zip(*per_branch)]
        return {
            "prompts": list(bench.calibration_prompts),
            "seed": bench.calibration_seed,
            "steps": steps,
            "ratios_per_run": [[round(x, 5) for x in r] for r in per_branch],
            "ratios": [round(x, 5) for x in ratios],
        }

    def config(self, pipe, call):
        from diffusers import MagCacheConfig

        if self.ratios is None:
            raise Unsupported("MagCache was not calibrated (prepare() did not run)")
        return MagCacheConfig(
            threshold=float(self.settings["threshold"]),
            max_skip_steps=self.settings["max_skip_steps"],
            retention_ratio=float(self.settings["retention_ratio"]),
            num_inference_steps=int(call["num_inference_steps"]),
            mag_ratios=list(self.ratios),
        )
