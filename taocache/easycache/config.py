"""The settings of EasyCache (Zhou et al., "Less is Enough: Training-Free Video Diffusion Acceleration via
Runtime-Adaptive Caching", arXiv 2507.02860, 2025); defaults are those the authors publish for Wan2.1."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass


def _check_int(name: str, value, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        accepted = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"EasyCacheConfig.{name}={value!r} is invalid: expected {accepted}")


@dataclass
class EasyCacheConfig:
    """Settings of EasyCache. Invalid values raise ``ValueError`` naming the field and the accepted range.

    Args:
        threshold: budget tau for the accumulated estimate of the relative output change since the last
            computed step; a step is reused while every sample's sum stays under it, and 0 never reuses.
            The authors' Wan2.1 code defaults to 0.05 and quotes 0.1 for about 2x, 0.2 for about 3x.
        warmup_ratio: fraction of the steps, from the start, that are always computed (the transformation
            rate is unstable there); 0.2 is 10 of 50 steps, as published. Needs the step count.
        warmup_steps: number of first steps always computed; overrides ``warmup_ratio`` when set. Whatever
            the warm-up, a branch computes its first two steps, because the rate needs two of them.
        final_steps: number of last steps always computed (the authors compute the last one).
        num_inference_steps: the step count, for pipelines that do not pass it through ``cache_context``
            (Latte, CogVideoX).
    """

    threshold: float = 0.05
    warmup_ratio: float = 0.2
    warmup_steps: int | None = None
    final_steps: int = 1
    num_inference_steps: int | None = None

    def __post_init__(self):
        for name in ("threshold", "warmup_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"EasyCacheConfig.{name}={value!r} is invalid: expected a finite number")
            setattr(self, name, float(value))
        for name in ("warmup_steps", "final_steps", "num_inference_steps"):
            value = getattr(self, name)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                setattr(self, name, int(value))
        if self.threshold < 0:
            raise ValueError(f"EasyCacheConfig.threshold={self.threshold!r} is invalid: expected a float >= 0")
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(
                f"EasyCacheConfig.warmup_ratio={self.warmup_ratio!r} is invalid: expected a float in [0, 1]"
            )
        _check_int("warmup_steps", self.warmup_steps, 0, allow_none=True)
        _check_int("final_steps", self.final_steps, 0)
        _check_int("num_inference_steps", self.num_inference_steps, 1, allow_none=True)

    def needs_step_count(self) -> bool:
        """Whether the warm-up or the final steps depend on the number of denoising steps."""
        return self.warmup_steps is None or self.final_steps > 0

    def warmup_for(self, num_steps: int | None) -> int:
        """The number of first steps always computed in a run of ``num_steps``."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return math.ceil(self.warmup_ratio * num_steps - 1e-9)

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict (``from_dict`` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EasyCacheConfig:
        if not isinstance(data, dict):
            raise TypeError(f"an EasyCacheConfig is read from a dict, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"EasyCacheConfig has no field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)
