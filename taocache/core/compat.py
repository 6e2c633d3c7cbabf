"""diffusers' hook internals, named in this one module and nowhere else.

taocache builds its caches on diffusers' hook system (``HookRegistry``, ``ModelHook``, per-context state
managers). Part of what they need is not public API and has moved between diffusers releases before: a state
manager's current context and per-context states, a registry's hook order and child registries, the transformer
block names and block metadata, a pipeline's guidance scale and a denoiser's cache config. Every such name is
used here only, so a diffusers release that moves one breaks this module, and ``tests/test_compat.py`` says
which. The supported diffusers releases are the range declared in ``pyproject.toml``.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.hooks.context_parallel import (
    _CONTEXT_PARALLEL_INPUT_HOOK_TEMPLATE,
    _CONTEXT_PARALLEL_OUTPUT_HOOK_TEMPLATE,
)
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager
from diffusers.hooks.pyramid_attention_broadcast import (
    _PYRAMID_ATTENTION_BROADCAST_HOOK,
    PyramidAttentionBroadcastHook,
    PyramidAttentionBroadcastState,
)
from diffusers.utils.torch_utils import unwrap_module

__all__ = [
    "PAB_HOOK",
    "TRANSFORMER_BLOCK_LISTS",
    "BaseState",
    "CacheContext",
    "HookRegistry",
    "ModelHook",
    "PyramidAttentionBroadcastHook",
    "PyramidAttentionBroadcastState",
    "StateManager",
    "all_hook_names",
    "beneath_context_parallel",
    "beneath_offload_hook",
    "block_argument",
    "block_metadata",
    "cache_config_of",
    "context_of",
    "context_parallel_mesh",
    "ensure_context",
    "guidance_scale_of",
    "hook_names",
    "hook_on",
    "registry_of",
    "remove_registered",
    "states_of",
    "step_for_inner_caches",
    "strip_hooks",
    "temporary_guidance_scale",
    "unwrap_module",
]

#: Attribute names under which diffusers transformers keep their repeated blocks.
TRANSFORMER_BLOCK_LISTS: tuple[str, ...] = tuple(_ALL_TRANSFORMER_BLOCK_IDENTIFIERS)
#: The name under which diffusers registers its Pyramid Attention Broadcast hook on an attention layer.
PAB_HOOK: str = _PYRAMID_ATTENTION_BROADCAST_HOOK


# ------------------------------------------------------------------------------------------- registries


def registry_of(module: torch.nn.Module) -> HookRegistry | None:
    """The module's hook registry, or None when no hook was ever registered on it."""
    return getattr(module, "_diffusers_hook", None)


def hook_on(module: torch.nn.Module, name: str) -> ModelHook | None:
    """The hook registered on ``module`` under ``name``, if any."""
    registry = registry_of(module)
    return registry.get_hook(name) if registry is not None else None


def hook_names(module: torch.nn.Module) -> list[str]:
    """The names of the hooks on ``module`` itself, innermost first."""
    registry = registry_of(module)
    return list(registry._hook_order) if registry is not None else []


def remove_registered(module: torch.nn.Module, names) -> None:
    """Take the hooks ``names`` off ``module`` itself (not its children), if they are there."""
    registry = registry_of(module)
    for name in names:
        if registry is not None and registry.get_hook(name) is not None:
            registry.remove_hook(name, recurse=False)


def all_hook_names(module: torch.nn.Module) -> list[str]:
    """Every hook on ``module`` and the modules below it, as ``"submodule:hook"`` (``<root>`` for itself)."""
    return [f"{name or '<root>'}:{hook}" for name, sub in module.named_modules() for hook in hook_names(sub)]


def strip_hooks(module: torch.nn.Module, keep: set[str]) -> None:
    """Take every hook off ``module`` and the modules below it except those named in ``keep`` (as
    :func:`all_hook_names` names them), and its diffusers cache: the clean-up after a cache failed midway."""
    if cache_config_of(module) is not None:
        try:
            module.disable_cache()
        except Exception:  # noqa: BLE001 - best effort; the hooks it left are removed below
            module._cache_config = None
    for name, sub in module.named_modules():
        remove_registered(sub, [h for h in hook_names(sub) if f"{name or '<root>'}:{h}" not in keep])


def cache_config_of(module: torch.nn.Module):
    """The config of the diffusers cache enabled on ``module`` with ``enable_cache``, or None."""
    return getattr(module, "_cache_config", None)


# ------------------------------------------------------------------------------------------- contexts


def context_of(manager: StateManager) -> CacheContext | None:
    """The cache context the manager's hook runs in now (None outside any ``cache_context``)."""
    return manager._context


def ensure_context(manager: StateManager, name: str) -> CacheContext:
    """The current context, after setting one named ``name`` for callers that set none (bare modules,
    pipelines without ``cache_context``)."""
    if manager._context is None:
        manager.set_context(CacheContext(name))
    return manager._context


def states_of(manager: StateManager) -> dict[str, BaseState]:
    """The manager's per-context states, by context name (the guidance branches seen in this call)."""
    return dict(manager._state_cache)


def _stateful_managers(module: torch.nn.Module, exclude: ModelHook) -> list[StateManager]:
    registry = registry_of(module)
    if registry is None:
        return []
    managers = []
    for child in (registry, *registry._get_child_registries()):
        for hook in child.hooks.values():
            if hook is not exclude and hook._is_stateful:
                managers += [m for m in vars(hook).values() if isinstance(m, StateManager)]
    return managers


@contextlib.contextmanager
def step_for_inner_caches(module: torch.nn.Module, exclude: ModelHook, step: int, num_steps: int):
    """Tell the stateful hooks on ``module`` and below it (all but ``exclude``) which step this call is.

    For pipelines whose ``cache_context`` carries no step index: a cache stacked under one that skips whole
    calls would otherwise count steps by the calls it sees and fall behind. Only managers that have a context
    without a step index are told; each gets its own context back afterwards.
    """
    told = []
    for manager in _stateful_managers(module, exclude):
        theirs = manager._context
        if theirs is not None and theirs.step_index is None:
            told.append((manager, theirs))
            manager.set_context(dataclasses.replace(theirs, step_index=step, num_inference_steps=num_steps))
    try:
        yield
    finally:
        for manager, theirs in told:
            manager.set_context(theirs)


# ----------------------------------------------------------------------------------------------- blocks


def block_metadata(block: torch.nn.Module) -> TransformerBlockMetadata:
    """How a transformer block takes and returns its hidden states (diffusers' block registry); for an
    unregistered block, the hidden states are taken and returned first."""
    try:
        return TransformerBlockRegistry.get(type(block))
    except ValueError:
        return TransformerBlockMetadata(return_hidden_states_index=0, _cls=type(block))


def block_argument(metadata: TransformerBlockMetadata, name: str, args, kwargs):
    """The block call's argument ``name`` (positional or keyword)."""
    return metadata._get_parameter_from_args_kwargs(name, args, kwargs)


@contextlib.contextmanager
def beneath_offload_hook(module: torch.nn.Module):
    """Rewrite ``module.forward`` underneath accelerate's offload hook (what diffusers' model offloading
    puts on), if there is one, and keep that on top.

    accelerate's wrapper calls ``module._old_forward`` and restores it when the pipeline re-applies
    ``enable_model_cpu_offload`` after each call; a hook placed outside it would be dropped then.
    """
    if not (hasattr(module, "_hf_hook") and hasattr(module, "_old_forward")):
        yield
        return
    outer = module.forward
    module.forward = module._old_forward
    try:
        yield
    finally:
        module._old_forward = module.forward
        module.forward = outer


# -------------------------------------------------------------------------------------------- pipelines


def guidance_scale_of(pipe) -> float | None:
    """The guidance scale the pipeline's call set (None before any call, or for pipelines without one)."""
    return getattr(pipe, "_guidance_scale", None)


@contextlib.contextmanager
def temporary_guidance_scale(pipe, value: float | None):
    """Set the pipeline's guidance scale as its own ``__call__`` does, for denoiser calls made outside it."""
    if value is None:
        yield
        return
    saved = guidance_scale_of(pipe)
    pipe._guidance_scale = value
    try:
        yield
    finally:
        if saved is None:
            del pipe._guidance_scale
        else:
            pipe._guidance_scale = saved


# ---------------------------------------------------------------------------------- context parallelism

#: The names diffusers gives the hooks that split the sequence over the ranks and gather it again.
CONTEXT_PARALLEL_HOOK_PREFIXES = tuple(
    template.format("") for template in (_CONTEXT_PARALLEL_INPUT_HOOK_TEMPLATE, _CONTEXT_PARALLEL_OUTPUT_HOOK_TEMPLATE)
)


def context_parallel_mesh(module: torch.nn.Module):
    """The device mesh ``module``'s sequence is split over by ``enable_parallelism``, or None.

    It is the flattened ring x Ulysses mesh: exactly the ranks that share one sequence (not the world, which
    may hold replicas running other prompts).
    """
    parallel = getattr(unwrap_module(module), "_parallel_config", None)
    config = getattr(parallel, "context_parallel_config", None)
    return getattr(config, "_flattened_mesh", None)


@contextlib.contextmanager
def beneath_context_parallel(module: torch.nn.Module):
    """Hooks registered on ``module`` inside this block run beneath its context-parallel hooks.

    A registry wraps each new hook around the earlier ones, so a cache hook added to the first block after
    ``enable_parallelism`` would see the whole sequence before the split while the rest of the cache sees a
    shard. diffusers' hooks are lifted off and put back on top, the same objects in the same order.
    """
    registry = registry_of(unwrap_module(module))
    lifted = []
    if registry is not None:
        names = [n for n in registry._hook_order if n.startswith(CONTEXT_PARALLEL_HOOK_PREFIXES)]
        lifted = [(n, registry.hooks[n]) for n in names]
        for name, _ in lifted:
            registry.remove_hook(name, recurse=False)
    try:
        yield
    finally:
        for name, hook in lifted:
            registry.register_hook(hook, name)
