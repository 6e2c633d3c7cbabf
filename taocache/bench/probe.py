"""Measuring a pipeline call from the outside: denoiser calls, the work they did, step times, peak memory.

Every method is measured the same way, with plain PyTorch forward hooks, so no method reports on itself:

- a pre- and post-hook on the denoiser count its calls and time the denoising loop (first denoiser call
  to the end of the last step, so text encoding and decoding are excluded);
- in the *instrumented* run, hooks on every ``nn.Linear`` / ``nn.Conv*`` inside the denoiser add up the
  multiply-accumulates each call really executed. A cache that skips blocks or whole calls leaves those
  layers unrun, so the work of a call divided by the work of a full call tells how much of it was computed.
  (Attention score products are not layers and are not counted; for the transformers benchmarked they
  scale with the same blocks, so the fraction stays a fair proxy.)

Step boundaries come from the pipeline's ``callback_on_step_end`` when it has one, else from a change of
the ``timestep`` argument between denoiser calls.
"""

from __future__ import annotations

import inspect
import itertools
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

_COUNTED_LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def denoiser_of(pipe) -> torch.nn.Module:
    """The pipeline's denoiser: its ``transformer`` or ``unet``."""
    for name in ("transformer", "unet"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise ValueError(
        f"{type(pipe).__name__} has neither a transformer nor a unet component; the benchmark times and "
        "counts the denoiser and needs one of them"
    )


def supports_step_callback(pipe) -> bool:
    return "callback_on_step_end" in inspect.signature(type(pipe).__call__).parameters


def _layer_macs(module, inputs, output) -> int:
    if isinstance(module, torch.nn.Linear):
        return module.weight.numel() * (inputs[0].numel() // module.in_features)
    return output.numel() * (module.weight.numel() // module.weight.shape[0])


def _timestep_of(args, kwargs):
    value = kwargs.get("timestep", args[1] if len(args) > 1 else None)
    if isinstance(value, torch.Tensor):
        return tuple(value.flatten()[:1].tolist())
    return value


@dataclass
class CallTrace:
    """What one pipeline call did inside its denoising loop."""

    loop_start: float | None = None
    loop_end: float | None = None
    step_ends: list[float] = field(default_factory=list)
    #: per step, the multiply-accumulates of each denoiser call in that step (instrumented runs only)
    step_macs: list[list[int]] = field(default_factory=list)
    calls: int = 0

    @property
    def loop_seconds(self) -> float | None:
        end = self.step_ends[-1] if self.step_ends else self.loop_end
        if self.loop_start is None or end is None:
            return None
        return end - self.loop_start

    @property
    def step_seconds(self) -> list[float]:
        if self.loop_start is None:
            return []
        marks = [self.loop_start] + self.step_ends
        return [b - a for a, b in itertools.pairwise(marks)]


class DenoiserProbe:
    """Hooks that fill a :class:`CallTrace` for each pipeline call; ``count_work`` adds the layer hooks."""

    def __init__(self, pipe, count_work: bool = False, synchronize: bool = False):
        self.pipe = pipe
        self.denoiser = denoiser_of(pipe)
        self.count_work = count_work
        self.synchronize = synchronize and torch.cuda.is_available()
        self.use_callback = supports_step_callback(pipe)
        self.trace = CallTrace()
        self._macs = 0
        self._call_macs: list[int] = []
        self._last_timestep = None
        self._handles = []

    def _now(self) -> float:
        if self.synchronize:
            torch.cuda.synchronize()
        return time.perf_counter()

    # -- hooks
    def _before_call(self, module, args, kwargs):
        trace = self.trace
        if trace.loop_start is None:
            trace.loop_start = self._now()
        if not self.use_callback:
            timestep = _timestep_of(args, kwargs)
            if trace.calls and timestep != self._last_timestep:
                self._close_step(self._now())
            self._last_timestep = timestep
        trace.calls += 1
        self._macs = 0

    def _after_call(self, module, args, kwargs, output):
        self._call_macs.append(self._macs)
        self.trace.loop_end = self._now() if not self.use_callback else None

    def _count(self, module, inputs, output):
        self._macs += _layer_macs(module, inputs, output)

    def _close_step(self, when: float) -> None:
        self.trace.step_ends.append(when)
        self.trace.step_macs.append(self._call_macs)
        self._call_macs = []

    def step_callback(self, pipe, step, timestep, callback_kwargs):
        """For ``callback_on_step_end``: marks the end of a step."""
        self._close_step(self._now())
        return {}

    # -- use
    def call_kwargs(self) -> dict:
        """Extra keyword arguments for the pipeline call (the step callback, when supported)."""
        return {"callback_on_step_end": self.step_callback} if self.use_callback else {}

    def new_trace(self) -> CallTrace:
        """Start a fresh trace (one per pipeline call)."""
        self.trace = CallTrace()
        self._call_macs = []
        self._last_timestep = None
        return self.trace

    def finish(self) -> CallTrace:
        """Close the last step of a pipeline without a step callback; returns the trace."""
        if not self.use_callback and self._call_macs:
            self._close_step(self.trace.loop_end)
        return self.trace

    @contextmanager
    def attached(self):
        """Hooks on while inside; removed on exit whatever happens."""
        self._handles.append(self.denoiser.register_forward_pre_hook(self._before_call, with_kwargs=True))
        self._handles.append(self.denoiser.register_forward_hook(self._after_call, with_kwargs=True))
        if self.count_work:
            for module in self.denoiser.modules():
                if isinstance(module, _COUNTED_LAYERS):
                    self._handles.append(module.register_forward_hook(self._count))
        try:
            yield self
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles = []


# ------------------------------------------------------------------------------------------------ memory


class PeakMemory:
    """Peak memory during a block: CUDA's allocator peak, or the process's resident set sampled on CPU."""

    def __init__(self, device: str, interval: float = 0.005):
        self.cuda = str(device).startswith("cuda")
        self.interval = interval
        self.peak_bytes: int | None = None
        self.baseline_bytes: int | None = None
        self.kind = (
            "torch.cuda.max_memory_allocated"
            if self.cuda
            else f"peak resident set size of the process (psutil, sampled every {interval * 1000:.0f} ms)"
        )

    @contextmanager
    def watch(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.baseline_bytes = torch.cuda.memory_allocated()
            try:
                yield self
            finally:
                torch.cuda.synchronize()
                self.peak_bytes = torch.cuda.max_memory_allocated()
            return
        import psutil

        process = psutil.Process()
        self.baseline_bytes = process.memory_info().rss
        peak = [self.baseline_bytes]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], process.memory_info().rss)
                stop.wait(self.interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            yield self
        finally:
            stop.set()
            sampler.join()
            self.peak_bytes = max(peak[0], process.memory_info().rss)
