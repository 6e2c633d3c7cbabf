"""Measuring a pipeline call from the outside: denoiser calls, the work they did, step times, peak memory.

Every method is measured the same way, with plain PyTorch forward hooks on the pipeline's denoisers, so no
method reports on itself:

- a pre- and post-hook on each denoiser count its calls and time the denoising loop (first denoiser call
  to the end of the last step, so text encoding and decoding are excluded);
- in the *instrumented* run, each denoiser call runs under ``torch.utils.flop_counter.FlopCounterMode``,
  which counts the floating-point operations of what actually runs, attention included (on CPU, PyTorch's
  fused attention kernel gets the same formula as the GPU ones). A cache that skips blocks or whole calls
  leaves that work undone, so the FLOPs of a call divided by those of a full call tell how much of it was
  computed.

Step boundaries come from the pipeline's ``callback_on_step_end`` when it has one, else from a change of
the timestep argument between denoiser calls.
"""

from __future__ import annotations

import inspect
import itertools
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from ..core.denoisers import denoisers_of
from ..core.steps import CallSignature


def supports_step_callback(pipe) -> bool:
    return "callback_on_step_end" in inspect.signature(type(pipe).__call__).parameters


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of PyTorch's fused attention on CPU, by the formula ``FlopCounterMode`` uses for the others."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


#: Operations ``FlopCounterMode`` has no formula for in every PyTorch release, and the formula to use.
_EXTRA_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that prints nothing and counts attention on every device."""
    return FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)


@dataclass
class CallTrace:
    """What one pipeline call did inside its denoising loop."""

    loop_start: float | None = None
    loop_end: float | None = None
    step_ends: list[float] = field(default_factory=list)
    #: per step, the floating-point operations of each denoiser call in that step (instrumented runs only)
    step_flops: list[list[int]] = field(default_factory=list)
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
    """Hooks that fill a :class:`CallTrace` for each pipeline call; ``count_work`` counts each call's FLOPs."""

    def __init__(self, pipe, count_work: bool = False, synchronize: bool = False):
        self.pipe = pipe
        self.denoisers = [module for _, module in denoisers_of(pipe)]
        self._signatures = {id(m): CallSignature.of(m) for m in self.denoisers}
        self.count_work = count_work
        self.synchronize = synchronize and torch.cuda.is_available()
        self.use_callback = supports_step_callback(pipe)
        self.trace = CallTrace()
        self._counter: FlopCounterMode | None = None
        self._call_flops: list[int] = []
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
            timestep = self._signatures[id(module)].timestep_of(args, kwargs)
            if trace.calls and timestep != self._last_timestep:
                self._close_step(self._now())
            self._last_timestep = timestep
        trace.calls += 1
        if self.count_work:
            self._counter = flop_counter()
            self._counter.__enter__()

    def _after_call(self, module, args, kwargs, output):
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self._call_flops.append(int(self._counter.get_total_flops()))
            self._counter = None
        elif not self.count_work:
            self._call_flops.append(0)
        self.trace.loop_end = self._now() if not self.use_callback else None

    def _close_step(self, when: float) -> None:
        self.trace.step_ends.append(when)
        self.trace.step_flops.append(self._call_flops)
        self._call_flops = []

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
        self._call_flops = []
        self._last_timestep = None
        return self.trace

    def finish(self) -> CallTrace:
        """Close the last step of a pipeline without a step callback; returns the trace."""
        if not self.use_callback and self._call_flops:
            self._close_step(self.trace.loop_end)
        return self.trace

    @contextmanager
    def attached(self):
        """Hooks on while inside; removed on exit whatever happens (a failed call still ends its count)."""
        for denoiser in self.denoisers:
            self._handles.append(denoiser.register_forward_pre_hook(self._before_call, with_kwargs=True))
            self._handles.append(denoiser.register_forward_hook(self._after_call, with_kwargs=True, always_call=True))
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
