"""TeaCache as diffusers hooks: reuse the block stack's last residual while its input has barely moved.

TeaCache (Liu et al., "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model", 2024) watches
a cheap *indicator* at the entrance of the transformer's block stack, usually the timestep-modulated input of
the first block. Per denoising step it measures the relative L1 change of that indicator against the previous
step, maps it through a polynomial fitted per model (``numpy.polyval``) to an estimate of how much the model
output (or the stack residual) changes, and adds the estimate to an accumulator. While the accumulator stays
under ``rel_l1_thresh`` the blocks are not run: the stack's output is rebuilt as its input plus the residual
(stack output minus stack input) of the last computed step. Otherwise the blocks run and the accumulator
starts again from zero.

How it sits in the model (four hooks, registered in diffusers' ``HookRegistry`` under their own names):

- the root hook on the transformer keeps the step count, notices a new pipeline call, counts computed and
  skipped calls, and (for fitting) reports per-step measurements to ``TeaCacheConfig.recorder``;
- the head hook on the first block computes the indicator and makes the decision;
- every other block passes its input through unchanged on a skipped step;
- the stack-output hook on the module that consumes the stack's output (``norm_final``, else ``norm_out``)
  records the residual on computed steps and substitutes ``input + residual`` on skipped steps. Working at
  that boundary keeps the model's own code between blocks (Latte's reshapes and temporal position embedding)
  out of the residual's way.

State is kept per ``cache_context`` (``"cond"`` / ``"uncond"``), so an output-level hook on the same
transformer composes with it. Within one call every sample has its own accumulator and the stack is skipped
only when all of them are under the threshold, so one sample (or the conditional half of a batched
classifier-free-guidance call) never decides for the others. Decisions run outside compiled graphs.

Under diffusers' context parallelism the hooks below the transformer sit beneath its split and gather, and
the indicator's change is summed over the ranks sharing the sequence, so every rank decides alike
(docs/several-gpus.md).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core import compat
from ..core.outputs import sample_of
from ..core.parallel import context_parallel_group
from ..core.steps import as_timestep
from .coefficients import resolve_config
from .config import TeaCacheConfig
from .indicators import INDICATOR_FUNCTIONS, per_sample_rel_l1

logger = logging.getLogger(__name__)

ROOT_HOOK = "teacache_root"
HEAD_HOOK = "teacache_head_block"
BLOCK_HOOK = "teacache_block"
STACK_OUTPUT_HOOK = "teacache_stack_output"
HOOK_NAMES = (ROOT_HOOK, HEAD_HOOK, BLOCK_HOOK, STACK_OUTPUT_HOOK)

_STACK_OUTPUT_MODULES = ("norm_final", "norm_out")  # the first that the stack output enters


@dataclass
class TeaCacheRecord:
    """What the hook measured in one denoiser call (per sample), reported to ``TeaCacheConfig.recorder``."""

    context: str
    step: int
    num_samples: int
    computed: bool
    indicator_change: list[float] | None
    output_change: list[float] | None
    residual_change: list[float] | None


class TeaCacheState(compat.BaseState):
    """Per guidance branch: where the pipeline call is, the accumulator, and the tensors reused on a skip."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.step = -1
        self.step_index = None  # the pipeline's own step index, when its cache_context gives one
        self.timestep = None
        self.num_samples = None
        self.num_steps = None
        self.call_args = {}
        self.decided = False
        self.skip = False
        self.previous_indicator = None
        self.indicator_change = None
        self.accumulated = None
        self.consecutive_skips = 0
        self.stack_input = None
        self.residual = None
        self.residual_change = None
        self.previous_output = None
        self.previous_residual = None
        self.boundary_failed = False


@dataclass
class _Settings:
    """What the hooks share once ``apply_teacache`` has resolved the config against the model."""

    config: TeaCacheConfig
    coefficients: np.ndarray
    indicator_fn: Callable
    model: torch.nn.Module
    counts: dict = field(default_factory=dict)
    warned: set = field(default_factory=set)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            logger.warning(message)


def _bind(signature: inspect.Signature, args, kwargs) -> dict:
    return dict(signature.bind_partial(*args, **kwargs).arguments)


def _forward_signature(module: torch.nn.Module) -> inspect.Signature:
    signature = inspect.signature(type(module).forward)
    return signature.replace(parameters=list(signature.parameters.values())[1:])


def _pass_through(metadata, args, kwargs):
    """What a block returns on a skipped step: its inputs, unchanged, in the shape of its usual output."""
    hidden = compat.block_argument(metadata, metadata.hidden_states_argument_name, args, kwargs)
    if metadata.return_encoder_hidden_states_index is None:
        return hidden
    encoder = compat.block_argument(metadata, metadata.encoder_hidden_states_argument_name, args, kwargs)
    output = [None] * (max(metadata.return_hidden_states_index, metadata.return_encoder_hidden_states_index) + 1)
    output[metadata.return_hidden_states_index] = hidden
    output[metadata.return_encoder_hidden_states_index] = encoder
    return tuple(output)


class _SignatureHook(compat.ModelHook):
    """A TeaCache hook that shares the state manager and settings and binds its module's call arguments."""

    def __init__(self, state_manager: compat.StateManager, settings: _Settings):
        super().__init__()
        self.state_manager = state_manager
        self.settings = settings
        self._signature = None

    def initialize_hook(self, module):
        self._signature = _forward_signature(compat.unwrap_module(module))
        return module


class TeaCacheRootHook(_SignatureHook):
    """On the transformer: tracks the step, detects a new pipeline call, counts, and reports records."""

    _is_stateful = True

    def pre_forward(self, module, *args, **kwargs):
        self._begin_call(args, kwargs)
        return args, kwargs

    def post_forward(self, module, output):
        self._end_call(output)
        return output

    @torch.compiler.disable
    def _begin_call(self, args, kwargs) -> None:
        context = compat.ensure_context(self.state_manager, "inference")  # Latte sets none: one branch
        state: TeaCacheState = self.state_manager.get_state()
        bound = _bind(self._signature, args, kwargs)
        hidden = bound.get("hidden_states", args[0] if args else None)
        timestep = bound.get("timestep")
        num_samples = int(hidden.shape[0]) if isinstance(hidden, torch.Tensor) else 1
        t = as_timestep(timestep)
        if state.step >= 0 and self._is_new_call(state, context, t, num_samples):
            state.reset()
        state.step = context.step_index if context.step_index is not None else state.step + 1
        state.step_index = context.step_index
        state.timestep = t
        state.num_samples = num_samples
        state.num_steps = context.num_inference_steps or self.settings.config.num_inference_steps
        state.call_args = {"timestep": timestep}
        state.decided = state.skip = False
        state.indicator_change = state.residual_change = None

    @staticmethod
    def _is_new_call(state: TeaCacheState, context, t, num_samples: int) -> bool:
        """Step indices only grow and diffusion timesteps only fall within one pipeline call."""
        if num_samples != state.num_samples:
            return True
        if context.step_index is not None and state.step_index is not None:
            return context.step_index <= state.step_index
        return isinstance(t, (int, float)) and isinstance(state.timestep, (int, float)) and t > state.timestep

    @torch.compiler.disable
    def _end_call(self, output) -> None:
        state: TeaCacheState = self.state_manager.get_state()
        name = self.state_manager.context.name
        if state.decided:
            counts = self.settings.counts.setdefault(name, {"computed": 0, "skipped": 0})
            counts["skipped" if state.skip else "computed"] += 1
        recorder = self.settings.config.recorder
        if recorder is not None:
            result = sample_of(output)
            output_change = None
            if (
                result is not None
                and state.previous_output is not None
                and state.previous_output.shape == result.shape
            ):
                output_change = per_sample_rel_l1(result, state.previous_output, state.num_samples).tolist()
            state.previous_output = None if result is None else result.detach().clone()
            recorder(
                TeaCacheRecord(
                    context=name,
                    step=state.step,
                    num_samples=state.num_samples,
                    computed=not state.skip,
                    indicator_change=None
                    if state.indicator_change is None
                    else state.indicator_change.tolist(),
                    output_change=output_change,
                    residual_change=None if state.residual_change is None else state.residual_change.tolist(),
                )
            )
        state.call_args = {}
        state.stack_input = None

    def reset_state(self, module):
        self.state_manager.reset()
        return module


class TeaCacheHeadHook(_SignatureHook):
    """On the first block: measures the indicator, updates the accumulator and decides compute or skip."""

    def __init__(self, state_manager: compat.StateManager, settings: _Settings):
        super().__init__(state_manager, settings)
        self._metadata = None

    def initialize_hook(self, module):
        self._metadata = compat.block_metadata(compat.unwrap_module(module))
        return super().initialize_hook(module)

    def new_forward(self, module, *args, **kwargs):
        if self._decide(module, args, kwargs):
            return _pass_through(self._metadata, args, kwargs)
        return self.fn_ref.original_forward(*args, **kwargs)

    @torch.compiler.disable
    @torch.no_grad()
    def _decide(self, module, args, kwargs) -> bool:
        if compat.context_of(self.state_manager) is None:  # called outside the transformer's forward
            return False
        state: TeaCacheState = self.state_manager.get_state()
        config = self.settings.config
        bound = _bind(self._signature, args, kwargs)
        bound.setdefault("hidden_states", bound.get(self._metadata.hidden_states_argument_name))
        state.stack_input = bound["hidden_states"]
        indicator = self.settings.indicator_fn(
            self.settings.model, compat.unwrap_module(module), bound, state.call_args
        )
        indicator = indicator.detach().float()
        previous, state.previous_indicator = state.previous_indicator, indicator
        change = None
        if previous is not None and previous.shape == indicator.shape:  # the same on every rank: all sum
            group = context_parallel_group(self.settings.model)  # the indicator may be a shard of the sequence
            change = per_sample_rel_l1(indicator, previous, state.num_samples or 1, group)
        state.indicator_change = change

        num_steps = state.num_steps
        if num_steps is None:
            self.settings.warn_once(
                "steps",
                "TeaCache: the pipeline does not pass num_inference_steps through "
                "cache_context; set TeaCacheConfig.num_inference_steps so the final steps "
                "are always computed",
            )
        forced = (
            change is None
            or state.residual is None
            or state.boundary_failed
            or config.rel_l1_thresh == 0
            or state.step < config.warmup_steps
            or (num_steps is not None and state.step >= num_steps - config.final_steps)
        )
        skip = False
        if not forced:
            estimate = np.maximum(np.polyval(self.settings.coefficients, change), 0.0)
            accumulated = (
                estimate
                if state.accumulated is None or state.accumulated.shape != estimate.shape
                else state.accumulated + estimate
            )
            state.accumulated = accumulated
            within_run = config.max_skip_steps is None or state.consecutive_skips < config.max_skip_steps
            skip = bool(accumulated.max() < config.rel_l1_thresh) and within_run
        if skip:
            state.consecutive_skips += 1
        else:
            state.accumulated = None
            state.consecutive_skips = 0
        state.skip = skip
        state.decided = True
        return skip


class TeaCacheBlockHook(compat.ModelHook):
    """On every other block: passes its input through on a skipped step."""

    def __init__(self, state_manager: compat.StateManager):
        super().__init__()
        self.state_manager = state_manager
        self._metadata = None

    def initialize_hook(self, module):
        self._metadata = compat.block_metadata(compat.unwrap_module(module))
        return module

    def new_forward(self, module, *args, **kwargs):
        if self._skipping():
            return _pass_through(self._metadata, args, kwargs)
        return self.fn_ref.original_forward(*args, **kwargs)

    @torch.compiler.disable
    def _skipping(self) -> bool:
        return compat.context_of(self.state_manager) is not None and self.state_manager.get_state().skip


class TeaCacheStackOutputHook(_SignatureHook):
    """On the module after the stack: keeps the residual on computed steps, adds it back on skipped ones."""

    def new_forward(self, module, *args, **kwargs):
        args, kwargs = self._rebuild(args, kwargs)
        return self.fn_ref.original_forward(*args, **kwargs)

    @torch.compiler.disable
    @torch.no_grad()
    def _rebuild(self, args, kwargs):
        if compat.context_of(self.state_manager) is None:
            return args, kwargs
        state: TeaCacheState = self.state_manager.get_state()
        stack_input, state.stack_input = state.stack_input, None
        if not state.decided or stack_input is None:
            return args, kwargs
        first = next(iter(self._signature.parameters))
        stack_output = args[0] if args else kwargs[first]
        if state.skip:
            rebuilt = (stack_input.to(state.residual.dtype) + state.residual).to(stack_output.dtype)
            return ((rebuilt, *args[1:]), kwargs) if args else ((), {**kwargs, first: rebuilt})
        if stack_output.shape != stack_input.shape:
            state.boundary_failed = True
            self.settings.warn_once(
                "shape",
                (
                    f"TeaCache: the block stack's output {tuple(stack_output.shape)} and input "
                    f"{tuple(stack_input.shape)} differ in shape on this model; caching is off, "
                    "every step is computed"
                ),
            )
            return args, kwargs
        residual = stack_output.detach() - stack_input.detach().to(stack_output.dtype)
        if self.settings.config.recorder is not None:
            if state.previous_residual is not None:
                group = context_parallel_group(self.settings.model)
                state.residual_change = per_sample_rel_l1(residual, state.previous_residual, state.num_samples, group)
            state.previous_residual = residual
        state.residual = residual
        return args, kwargs


# --------------------------------------------------------------------------------------------- apply/remove


def _block_stack(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Every repeated block, the one that runs first (the first of the first block list) at the head."""
    blocks = []
    for name, child in model.named_children():
        if name in compat.TRANSFORMER_BLOCK_LISTS and isinstance(child, torch.nn.ModuleList):
            blocks.extend((f"{name}.{i}", block) for i, block in enumerate(child))
    return blocks


def apply_teacache(module: torch.nn.Module, config: TeaCacheConfig | None = None) -> TeaCacheConfig:
    """Register TeaCache's hooks on a transformer; returns the config as resolved for this model.

    Example::

        apply_teacache(pipe.transformer, TeaCacheConfig(rel_l1_thresh=0.1))
        video = pipe(prompt).frames[0]
        remove_teacache(pipe.transformer)  # back to the exact original forward
    """
    config = TeaCacheConfig() if config is None else config
    model = compat.unwrap_module(module)
    if compat.hook_on(module, ROOT_HOOK) is not None:
        raise ValueError("TeaCache is already applied to this module; call remove_teacache(module) first")
    blocks = _block_stack(model)
    if not blocks:
        raise ValueError(
            f"TeaCache found no block list ({', '.join(compat.TRANSFORMER_BLOCK_LISTS)}) on "
            f"{type(model).__name__}; it supports diffusers-style transformers"
        )
    boundary = next(
        (
            getattr(model, n)
            for n in _STACK_OUTPUT_MODULES
            if isinstance(getattr(model, n, None), torch.nn.Module)
        ),
        None,
    )
    if boundary is None:
        raise ValueError(
            f"TeaCache found no module after the block stack ({' or '.join(_STACK_OUTPUT_MODULES)}) "
            f"on {type(model).__name__}"
        )
    config = resolve_config(model, config)
    settings = _Settings(
        config,
        np.asarray(config.coefficients, dtype=np.float64),
        INDICATOR_FUNCTIONS[config.indicator],
        model,
    )
    manager = compat.StateManager(TeaCacheState)
    plan = [
        (module, TeaCacheRootHook(manager, settings), ROOT_HOOK),
        (blocks[0][1], TeaCacheHeadHook(manager, settings), HEAD_HOOK),
    ]
    plan += [(block, TeaCacheBlockHook(manager), BLOCK_HOOK) for _, block in blocks[1:]]
    plan.append((boundary, TeaCacheStackOutputHook(manager, settings), STACK_OUTPUT_HOOK))
    registered = []
    try:
        for target, hook, name in plan:
            # below the root, beneath diffusers' context-parallel split and gather: every TeaCache hook then
            # sees the same shard whether enable_parallelism ran before taocache.enable or after
            placement = contextlib.nullcontext() if target is module else compat.beneath_context_parallel(target)
            with placement:
                compat.HookRegistry.check_if_exists_or_initialize(target).register_hook(hook, name)
            registered.append((target, name))
    except Exception:
        for target, name in reversed(registered):
            compat.remove_registered(target, [name])
        raise
    finally:
        compat.HookRegistry.check_if_exists_or_initialize(module).invalidate_child_registries_cache()
    logger.debug(
        "TeaCache on %s: indicator %s, %d blocks, threshold %g",
        type(model).__name__,
        config.indicator,
        len(blocks),
        config.rel_l1_thresh,
    )
    return config


def remove_teacache(module: torch.nn.Module) -> None:
    """Remove every TeaCache hook from ``module``; its forward is then the original one again."""
    registry = compat.HookRegistry.check_if_exists_or_initialize(module)
    for name in HOOK_NAMES:
        registry.remove_hook(name, recurse=True)
    registry.invalidate_child_registries_cache()


def teacache_stats(module: torch.nn.Module) -> dict[str, dict[str, int]]:
    """Computed and skipped denoiser calls per guidance branch since TeaCache was applied."""
    hook = compat.hook_on(module, ROOT_HOOK)
    if hook is None:
        raise ValueError("TeaCache is not applied to this module")
    return {name: dict(counts) for name, counts in hook.settings.counts.items()}
