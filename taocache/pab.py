"""Pyramid Attention Broadcast (Zhao et al., arXiv 2408.12588) with one state per guidance branch.

Why: diffusers' PAB gives each hooked attention layer a single state (a plain attribute, not a
``StateManager``), so it never sees the pipeline's ``cache_context("cond" / "uncond")``. On pipelines that run
the guidance branches as separate denoiser calls (Wan) both calls of a step advance the same counter and share
the same cache: with a skip range of 2 the conditional call computes and the unconditional call of the same
step gets the conditional call's attention back, at every step inside the timestep range, and the schedule
counts calls rather than steps.

What this does: diffusers selects the layers and installs its hooks (``apply_pyramid_attention_broadcast``);
each hook is then replaced by a subclass whose ``state`` is looked up per cache context. diffusers' own skip
rule runs unchanged, so each branch is treated exactly as diffusers' PAB treats a model that sees only that
branch. Calls outside any cache context (Latte and CogVideoX batch both branches in one call) share one state,
which is diffusers' behaviour and right there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from diffusers import PyramidAttentionBroadcastConfig
from diffusers.hooks import apply_pyramid_attention_broadcast

from .core import compat
from .core.denoisers import transformers_of

#: Hooked attention calls are counted under this name when no cache context is set.
DEFAULT_CONTEXT = "inference"
_KINDS = ("spatial", "temporal", "cross")


@dataclass
class PABPerBranchConfig(PyramidAttentionBroadcastConfig):
    """diffusers' ``PyramidAttentionBroadcastConfig`` (same fields, same meaning), applied with one state per
    guidance branch. ``current_timestep_callback`` may stay None on a pipeline: ``pipe.current_timestep`` is
    used. At least one ``*_attention_block_skip_range`` must be set (diffusers would quietly pick 2)."""

    def __post_init__(self):
        for kind in _KINDS:
            value = getattr(self, f"{kind}_attention_block_skip_range")
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(
                    f"PABPerBranchConfig.{kind}_attention_block_skip_range={value!r} is invalid: expected an "
                    "integer >= 1 or None"
                )
        if all(getattr(self, f"{kind}_attention_block_skip_range") is None for kind in _KINDS):
            raise ValueError(
                "PABPerBranchConfig: set spatial_attention_block_skip_range, temporal_attention_block_skip_range "
                "and/or cross_attention_block_skip_range; with none set nothing is cached"
            )
        for kind in _KINDS:
            low, high = getattr(self, f"{kind}_attention_timestep_skip_range")
            if not low < high:
                raise ValueError(
                    f"PABPerBranchConfig.{kind}_attention_timestep_skip_range=({low}, {high}) is invalid: "
                    "expected (low, high) with low < high"
                )

    def to_diffusers(self, current_timestep_callback=None) -> PyramidAttentionBroadcastConfig:
        """The same settings as diffusers' config, which selects the layers."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if current_timestep_callback is not None:
            fields["current_timestep_callback"] = current_timestep_callback
        return PyramidAttentionBroadcastConfig(**fields)


class PerBranchPABHook(compat.PyramidAttentionBroadcastHook):
    """diffusers' PAB hook with its state looked up per cache context instead of held once."""

    _is_stateful = True

    def __init__(self, timestep_skip_range, block_skip_range, current_timestep_callback, counts: dict):
        super().__init__(timestep_skip_range, block_skip_range, current_timestep_callback)
        self.counts = counts

    def initialize_hook(self, module):
        self.state_manager = compat.StateManager(compat.PyramidAttentionBroadcastState)
        self.shared_state = compat.PyramidAttentionBroadcastState()  # for calls outside any cache context
        return module

    @property
    def state(self):
        """The state of the branch being called (diffusers' ``new_forward`` reads and writes it)."""
        if compat.context_of(self.state_manager) is None:
            return self.shared_state
        return self.state_manager.get_state()

    def new_forward(self, module, *args, **kwargs):
        cached = self.state.cache
        output = super().new_forward(module, *args, **kwargs)
        self._count(cached is not None and output is cached)  # a rebroadcast returns the cache itself
        return output

    @torch.compiler.disable
    def _count(self, reused: bool) -> None:
        context = compat.context_of(self.state_manager)
        counts = self.counts.setdefault(context.name if context else DEFAULT_CONTEXT, {"computed": 0, "reused": 0})
        counts["reused" if reused else "computed"] += 1

    def reset_state(self, module):
        self.state_manager.reset()
        self.shared_state.reset()
        return module


def _pab_hooks(module: torch.nn.Module) -> list:
    return [hook for sub in module.modules() if (hook := compat.hook_on(sub, compat.PAB_HOOK)) is not None]


def apply_pab_per_branch(module: torch.nn.Module, config: PABPerBranchConfig) -> int:
    """Put PAB on ``module`` with one state per cache context; returns the number of hooked layers."""
    if not isinstance(config, PyramidAttentionBroadcastConfig):
        raise TypeError(f"apply_pab_per_branch needs a PABPerBranchConfig, not {type(config).__name__}")
    if config.current_timestep_callback is None:
        raise ValueError("PAB needs current_timestep_callback (e.g. lambda: pipe.current_timestep)")
    module = compat.unwrap_module(module)
    if _pab_hooks(module):
        raise ValueError("Pyramid Attention Broadcast is already on this module; take it off first")
    diffusers_config = (
        config.to_diffusers() if isinstance(config, PABPerBranchConfig) else dataclasses.replace(config)
    )
    apply_pyramid_attention_broadcast(module, diffusers_config)
    counts: dict = {}
    hooked = 0
    for sub in module.modules():
        hook = compat.hook_on(sub, compat.PAB_HOOK)
        if hook is None:
            continue
        # PAB's hook was the last one registered on this layer, so replacing it keeps the hook order
        compat.remove_registered(sub, [compat.PAB_HOOK])
        replacement = PerBranchPABHook(
            hook.timestep_skip_range, hook.block_skip_range, hook.current_timestep_callback, counts
        )
        compat.registry_of(sub).register_hook(replacement, compat.PAB_HOOK)
        hooked += 1
    compat.HookRegistry.check_if_exists_or_initialize(module).invalidate_child_registries_cache()
    if not hooked:
        raise ValueError(f"PAB matched no attention layer of {type(module).__name__}: check the identifiers")
    return hooked


def remove_pab_per_branch(module: torch.nn.Module) -> bool:
    """Take the per-branch PAB hooks off ``module``; whether there were any."""
    module = compat.unwrap_module(module)
    hooked = [sub for sub in module.modules() if isinstance(compat.hook_on(sub, compat.PAB_HOOK), PerBranchPABHook)]
    for sub in hooked:
        compat.remove_registered(sub, [compat.PAB_HOOK])
    if hooked:
        compat.registry_of(module).invalidate_child_registries_cache()
    return bool(hooked)


def pab_per_branch_stats(module: torch.nn.Module) -> dict[str, dict[str, int]] | None:
    """Hooked attention calls computed and rebroadcast ("reused") per guidance branch since PAB was put on;
    None when per-branch PAB is not on ``module``."""
    hooks = [h for h in _pab_hooks(compat.unwrap_module(module)) if isinstance(h, PerBranchPABHook)]
    return {name: dict(counts) for name, counts in hooks[0].counts.items()} if hooks else None


# ----------------------------------------------------------------------------- the backend of taocache.enable


def apply(target, config: PABPerBranchConfig, stacked: bool = False) -> None:
    """``apply_pab_per_branch`` on every transformer of ``target``; a config without a timestep callback reads
    the pipeline's ``current_timestep``."""
    callback = config.current_timestep_callback
    if callback is None:
        if not hasattr(type(target), "current_timestep"):
            raise TypeError(
                f"{type(target).__name__} does not expose current_timestep; give PABPerBranchConfig a "
                "current_timestep_callback"
            )
        callback = lambda: target.current_timestep
    for _, module in transformers_of(target):
        apply_pab_per_branch(module, dataclasses.replace(config, current_timestep_callback=callback))


def _transformers(target) -> list:
    try:
        return transformers_of(target)
    except TypeError:
        return []


def remove(target) -> bool:
    """Take per-branch PAB off every transformer of ``target``; whether it was on any."""
    return any([remove_pab_per_branch(module) for _, module in _transformers(target)])  # noqa: C419


def stats(target) -> dict | None:
    """Attention calls computed and reused per guidance branch, by component."""
    found = {name: pab_per_branch_stats(module) for name, module in _transformers(target)}
    return {name: counts for name, counts in found.items() if counts is not None} or None
