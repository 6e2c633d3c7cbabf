"""Where a denoiser call is in its run: the sample and timestep among its arguments, and the timestep's
place in the pipeline's schedule.

Pipelines pass the step index through ``cache_context`` only in part (Wan does, Latte and a bare UNet loop
do not), so hooks also read the timestep a call receives and find it in the schedule.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from .compat import unwrap_module

TIMESTEP_NAMES = ("timestep", "timesteps", "t")
#: Two timesteps closer than this, relative to their size, are the same step.
TOLERANCE = 1e-4


def as_timestep(value) -> float | None:
    """A timestep argument as one float (the largest of a per-sample tensor), None when absent."""
    if value is None:
        return None
    if torch.is_tensor(value):
        return float(value.detach().float().max()) if value.numel() else None
    return float(value)


def same_timestep(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * max(1.0, abs(b))


@dataclass(frozen=True)
class CallSignature:
    """Where a module's forward takes its sample (the first parameter) and its timestep."""

    sample: str | None
    timestep: tuple[str, int] | None

    @classmethod
    def of(cls, module: torch.nn.Module) -> CallSignature:
        parameters = list(inspect.signature(type(unwrap_module(module)).forward).parameters.values())[1:]
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names = [p.name for p in parameters if p.kind in kinds]
        timestep = next(((n, names.index(n)) for n in TIMESTEP_NAMES if n in names), None)
        return cls(names[0] if names else None, timestep)

    def sample_of(self, args, kwargs):
        return kwargs.get(self.sample, args[0] if args else None)

    def timestep_of(self, args, kwargs) -> float | None:
        if self.timestep is None:
            return None
        name, index = self.timestep
        return as_timestep(kwargs.get(name, args[index] if index < len(args) else None))

    def batch_size(self, args, kwargs) -> int | None:
        sample = self.sample_of(args, kwargs)
        return int(sample.shape[0]) if torch.is_tensor(sample) and sample.ndim else None


def scheduler_timesteps(pipe) -> list[float] | None:
    """The schedule the pipeline's scheduler holds for the run in progress (None when it has none)."""
    timesteps = getattr(getattr(pipe, "scheduler", None), "timesteps", None)
    if timesteps is None or not len(timesteps):
        return None
    return [float(t) for t in timesteps]


def index_in_schedule(schedule: list[float], timestep: float, start: int = 0) -> int | None:
    """The first step from ``start`` on whose timestep is ``timestep``, else None."""
    for k in range(start, len(schedule)):
        if same_timestep(timestep, schedule[k]):
            return k
    return None
