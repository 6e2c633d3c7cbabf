"""Everything taocache needs from diffusers' hook internals, checked on the installed diffusers: a release
that moves one of them fails here, by name. The installed release must be in the range pyproject.toml
declares."""

import re
import tomllib
from pathlib import Path

import torch
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from taocache.core import compat

ROOT = Path(__file__).resolve().parents[1]


class Counting(compat.ModelHook):
    """A stateful hook whose state remembers the step its context says."""

    _is_stateful = True

    class State(compat.BaseState):
        def __init__(self):
            self.steps = []

        def reset(self):
            self.steps = []

    def __init__(self):
        super().__init__()
        self.state_manager = compat.StateManager(Counting.State)

    def new_forward(self, module, *args, **kwargs):
        context = compat.ensure_context(self.state_manager, "default")
        self.state_manager.get_state().steps.append(context.step_index)
        return self.fn_ref.original_forward(*args, **kwargs)


def test_the_installed_diffusers_is_in_the_declared_range():
    import diffusers

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = next(d for d in dependencies if re.match(r"diffusers\b", d))
    assert Version(diffusers.__version__) in SpecifierSet(declared.removeprefix("diffusers")), declared


def test_registries_hooks_and_their_names():
    outer = torch.nn.Sequential(torch.nn.Linear(2, 2))
    assert compat.registry_of(outer) is None and compat.hook_names(outer) == []
    hook = Counting()
    compat.HookRegistry.check_if_exists_or_initialize(outer[0]).register_hook(hook, "counting")
    assert compat.hook_on(outer[0], "counting") is hook and compat.hook_names(outer[0]) == ["counting"]
    assert compat.all_hook_names(outer) == ["0:counting"]
    compat.strip_hooks(outer, keep=set())
    assert compat.all_hook_names(outer) == [] and compat.hook_on(outer[0], "counting") is None


def test_contexts_and_states():
    manager = compat.StateManager(Counting.State)
    assert compat.context_of(manager) is None
    context = compat.ensure_context(manager, "mine")
    assert context.name == "mine" and compat.context_of(manager) is context
    manager.get_state()
    assert list(compat.states_of(manager)) == ["mine"]
    assert compat.ensure_context(manager, "other") is context  # an existing context stays


def test_inner_caches_are_told_the_step_and_get_their_context_back():
    module = torch.nn.Linear(2, 2)
    inner, outer = Counting(), Counting()
    registry = compat.HookRegistry.check_if_exists_or_initialize(module)
    registry.register_hook(inner, "inner")
    registry.register_hook(outer, "outer")
    module(torch.zeros(1, 2))  # each hook names its own context on the first call
    own = compat.context_of(inner.state_manager)
    with compat.step_for_inner_caches(module, outer, step=7, num_steps=9):
        told = compat.context_of(inner.state_manager)
        assert (told.step_index, told.num_inference_steps, told.name) == (7, 9, own.name)
        assert compat.context_of(outer.state_manager).step_index is None  # the excluded hook is not told
    assert compat.context_of(inner.state_manager) is own


def test_transformer_blocks_and_their_arguments():
    from taocache.testing import tiny_wan_pipeline

    transformer = tiny_wan_pipeline().transformer
    assert "blocks" in compat.TRANSFORMER_BLOCK_LISTS
    metadata = compat.block_metadata(transformer.blocks[0])
    hidden, encoder = torch.zeros(1), torch.ones(1)
    assert compat.block_argument(metadata, metadata.hidden_states_argument_name, (hidden, encoder), {}) is hidden
    unknown = compat.block_metadata(torch.nn.Linear(2, 2))  # unregistered: hidden states first, returned first
    assert unknown.return_hidden_states_index == 0


def test_a_denoisers_cache_config_is_found_and_stripped():
    from diffusers import FirstBlockCacheConfig

    from taocache.testing import tiny_wan_pipeline

    transformer = tiny_wan_pipeline().transformer
    assert compat.cache_config_of(transformer) is None
    config = FirstBlockCacheConfig(threshold=0.1)
    transformer.enable_cache(config)
    assert compat.cache_config_of(transformer) is config and compat.all_hook_names(transformer)
    compat.strip_hooks(transformer, keep=set())
    assert compat.cache_config_of(transformer) is None and not compat.all_hook_names(transformer)


def test_a_pipelines_guidance_scale_is_set_for_calls_made_outside_it():
    from taocache.testing import tiny_sd_pipeline

    pipe = tiny_sd_pipeline()
    assert compat.guidance_scale_of(pipe) is None
    with compat.temporary_guidance_scale(pipe, 7.5):
        assert compat.guidance_scale_of(pipe) == 7.5 and pipe.do_classifier_free_guidance
    assert compat.guidance_scale_of(pipe) is None


def test_a_hook_goes_beneath_an_offload_wrapper():
    module = torch.nn.Linear(2, 2)
    original = module.forward
    module._hf_hook, module._old_forward = object(), original
    module.forward = lambda *a, **k: ("wrapped", module._old_forward(*a, **k))
    wrapper = module.forward
    with compat.beneath_offload_hook(module):
        assert module.forward == original
        module.forward = lambda x: x * 0  # what registering a hook does to forward
    assert module.forward is wrapper and module._old_forward(torch.ones(1, 2)).abs().sum() == 0


class Calling(compat.ModelHook):
    """Notes its name in ``order`` when its module is called."""

    def __init__(self, name: str, order: list):
        super().__init__()
        self.name, self.order = name, order

    def new_forward(self, module, *args, **kwargs):
        self.order.append(self.name)
        return self.fn_ref.original_forward(*args, **kwargs)


def test_a_hook_goes_beneath_the_context_parallel_split():
    """diffusers' split runs first (outermost) even when a cache registers its hook after it."""
    module, order = torch.nn.Linear(2, 2), []
    assert compat.context_parallel_mesh(module) is None  # no enable_parallelism on it
    registry = compat.HookRegistry.check_if_exists_or_initialize(module)
    split = compat.CONTEXT_PARALLEL_HOOK_PREFIXES[0] + "blocks.0"
    registry.register_hook(Calling(split, order), split)
    with compat.beneath_context_parallel(module):
        registry.register_hook(Calling("cache", order), "cache")
    module(torch.zeros(1, 2))
    assert order == [split, "cache"] and compat.hook_names(module) == ["cache", split]
    registry.register_hook(Calling("outside", order), "outside")  # the usual placement, for contrast
    order.clear()
    module(torch.zeros(1, 2))
    assert order == ["outside", split, "cache"]


def test_the_context_parallel_mesh_is_where_compat_reads_it():
    """compat reads it with getattr (None outside context parallelism): a rename would silently switch the
    sum over the ranks off, so the names are checked here."""
    import dataclasses

    from diffusers import ContextParallelConfig, ModelMixin, ParallelConfig

    assert "_parallel_config" in vars(ModelMixin)
    assert "context_parallel_config" in {f.name for f in dataclasses.fields(ParallelConfig)}
    assert "_flattened_mesh" in {f.name for f in dataclasses.fields(ContextParallelConfig)}
