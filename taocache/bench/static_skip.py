"""Static step skipping: the simplest cache, a baseline every adaptive cache should beat.

From a start step on, the denoiser is computed on every ``interval``-th step only; on the steps between, its
last computed output is returned unchanged. The schedule is fixed in advance, so it costs nothing to decide
and shows what plain reuse of the output is worth at a given number of saved calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core import compat

STATIC_SKIP_HOOK = "taocache_bench_static_skip"


@dataclass
class StaticSkipConfig:
    """Which steps to compute.

    Attributes:
        interval: from ``start_step`` on, compute one step in every ``interval`` (an integer >= 1; 1 computes
            every step, 2 every other one) and reuse the last output on the others.
        start_step: the steps before this index are all computed (an integer >= 0).
        compute_last: always compute the final step, whose output differs most from the one before.
        num_inference_steps: the number of steps, for pipelines whose cache context does not carry it
            (``None``, or an integer >= 1); without either, ``compute_last`` cannot apply.
    """

    interval: int = 2
    start_step: int = 0
    compute_last: bool = True
    num_inference_steps: int | None = None

    def __post_init__(self):
        if not isinstance(self.interval, int) or self.interval < 1:
            raise ValueError(f"StaticSkipConfig.interval={self.interval!r} must be an integer >= 1")
        if not isinstance(self.start_step, int) or self.start_step < 0:
            raise ValueError(f"StaticSkipConfig.start_step={self.start_step!r} must be an integer >= 0")
        steps = self.num_inference_steps
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise ValueError(
                f"StaticSkipConfig.num_inference_steps={steps!r} must be None or an integer >= 1"
            )

    def computes(self, step: int, num_steps: int | None) -> bool:
        """Whether ``step`` (0-based) is computed."""
        if step < self.start_step:
            return True
        if self.compute_last and num_steps is not None and step == num_steps - 1:
            return True
        return (step - self.start_step) % self.interval == 0


class StaticSkipState(compat.BaseState):
    """Per guidance branch: calls seen and the last computed output."""

    def __init__(self):
        self.calls = 0
        self.last_output = None

    def reset(self):
        self.calls = 0
        self.last_output = None


class StaticSkipHook(compat.ModelHook):
    """Returns the branch's last computed output on the steps the schedule leaves out."""

    _is_stateful = True

    def __init__(self, config: StaticSkipConfig):
        super().__init__()
        self.config = config
        self.state_manager = compat.StateManager(StaticSkipState)

    @torch.compiler.disable
    def _step_and_state(self) -> tuple[int, int | None, StaticSkipState]:
        context = compat.ensure_context(self.state_manager, "default")  # pipelines that name no denoiser call
        state = self.state_manager.get_state()
        step = context.step_index if context.step_index is not None else state.calls
        state.calls += 1
        return step, context.num_inference_steps or self.config.num_inference_steps, state

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        step, num_steps, state = self._step_and_state()
        if state.last_output is not None and not self.config.computes(step, num_steps):
            return state.last_output
        state.last_output = self.fn_ref.original_forward(*args, **kwargs)
        return state.last_output

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.state_manager.reset()
        return module


def apply_static_skip(denoiser: torch.nn.Module, config: StaticSkipConfig) -> StaticSkipHook:
    """Attach static step skipping to ``denoiser``; remove it with :func:`remove_static_skip`."""
    hook = StaticSkipHook(config)
    compat.HookRegistry.check_if_exists_or_initialize(denoiser).register_hook(hook, STATIC_SKIP_HOOK)
    return hook


def remove_static_skip(denoiser: torch.nn.Module) -> None:
    """Take static step skipping off ``denoiser``."""
    compat.remove_registered(denoiser, [STATIC_SKIP_HOOK])
