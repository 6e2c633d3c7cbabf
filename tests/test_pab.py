"""Pyramid Attention Broadcast per guidance branch: diffusers' PAB shares one state between Wan's guidance
calls; the per-branch variant gives each branch the schedule diffusers' PAB gives a model seeing only it."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import PyramidAttentionBroadcastConfig

import taocache
from taocache import pab
from taocache.core import compat
from taocache.pab import PABPerBranchConfig, PerBranchPABHook, apply_pab_per_branch, pab_per_branch_stats

STEPS = 4  # tiny Wan's timesteps at 4 steps all lie inside (0, 1000)
RANGE = (0, 1000)


@pytest.fixture
def wan_pipe(one_thread):
    from taocache.testing import tiny_wan_pipeline

    pipe = tiny_wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_wan(pipe, steps: int = STEPS) -> torch.Tensor:
    return pipe(
        "a red ball", num_frames=9, height=32, width=32, num_inference_steps=steps, guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0), output_type="latent",
    ).frames


def _diffusers_config(callback):
    return PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=RANGE,
        current_timestep_callback=callback,
    )


def _per_branch_config():
    return PABPerBranchConfig(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=RANGE)


def _record_attention(pipe, layer: str = "blocks.1.attn1"):
    """Per transformer call: (guidance branch, output of ``layer``). Block 1's self-attention already sees
    the branch's text through block 0's cross-attention, so the branches' outputs differ there."""
    transformer = pipe.transformer
    records, branch = [], {}
    original = transformer.cache_context

    def cache_context(name, **kwargs):
        branch["name"] = name
        return original(name, **kwargs)

    transformer.cache_context = cache_context
    module = transformer.get_submodule(layer)
    handle = module.register_forward_hook(lambda m, args, output: records.append((branch["name"], output)))
    return records, handle


def _by_step(records):
    cond = [out for name, out in records if name == "cond"]
    uncond = [out for name, out in records if name == "uncond"]
    assert len(cond) == len(uncond) == STEPS
    return cond, uncond


def test_diffusers_pab_gives_the_uncond_call_the_cond_attention(wan_pipe):
    records, handle = _record_attention(wan_pipe)
    wan_pipe.transformer.enable_cache(_diffusers_config(lambda: wan_pipe.current_timestep))
    run_wan(wan_pipe)
    handle.remove()
    cond, uncond = _by_step(records)
    # one state for both calls: the uncond call at each step returns the very tensor the cond call made
    assert all(u is c for c, u in zip(cond, uncond, strict=True))


def test_per_branch_pab_keeps_each_branch_apart(wan_pipe):
    records, handle = _record_attention(wan_pipe)
    taocache.enable(wan_pipe, _per_branch_config())
    run_wan(wan_pipe)
    handle.remove()
    cond, uncond = _by_step(records)
    assert all(not torch.equal(c, u) for c, u in zip(cond, uncond, strict=True))
    for outputs in (cond, uncond):  # each branch computes at its steps 0 and 2 and rebroadcasts at 1 and 3
        assert outputs[1] is outputs[0] and outputs[3] is outputs[2] and outputs[2] is not outputs[0]
    # 2 hooked layers (blocks.*.attn1) x 4 steps per branch, half of them rebroadcast
    expected = {"cond": {"computed": 4, "reused": 4}, "uncond": {"computed": 4, "reused": 4}}
    assert pab.stats(wan_pipe) == {"transformer": expected}
    assert taocache.stats(wan_pipe).stacked["PABPerBranch"] == {"transformer": expected}


def test_per_branch_pab_equals_diffusers_pab_on_a_model_per_branch(wan_pipe):
    """Replay each branch's calls on its own copy of the model under diffusers' PAB: bit-identical."""
    copies = {name: copy.deepcopy(wan_pipe.transformer) for name in ("cond", "uncond")}
    calls, branch = [], {}
    original = wan_pipe.transformer.cache_context

    def cache_context(name, **kwargs):
        branch["name"] = name
        return original(name, **kwargs)

    wan_pipe.transformer.cache_context = cache_context
    handle = wan_pipe.transformer.register_forward_hook(
        lambda m, args, kwargs, output: calls.append((branch["name"], dict(kwargs), output[0])), with_kwargs=True
    )
    apply_pab_per_branch(wan_pipe.transformer, _diffusers_config(lambda: wan_pipe.current_timestep))
    per_branch = run_wan(wan_pipe)
    handle.remove()

    now = {}
    for model in copies.values():
        model.enable_cache(_diffusers_config(lambda: now["t"]))
    assert len(calls) == 2 * STEPS
    for name, kwargs, output in calls:
        now["t"] = kwargs["timestep"][0]
        assert torch.equal(copies[name](**kwargs)[0], output)

    wan_pipe.transformer.cache_context = original
    assert pab.remove(wan_pipe)
    wan_pipe.transformer.enable_cache(_diffusers_config(lambda: wan_pipe.current_timestep))
    shared = run_wan(wan_pipe)
    assert not torch.equal(per_branch, shared)  # the shared state changes the result


def test_state_resets_between_calls_and_removal_is_exact(wan_pipe):
    transformer = wan_pipe.transformer
    attention = transformer.blocks[0].attn1
    reference = run_wan(wan_pipe)
    taocache.enable(wan_pipe, _per_branch_config())
    first = run_wan(wan_pipe)
    hook = compat.hook_on(attention, compat.PAB_HOOK)
    assert isinstance(hook, PerBranchPABHook) and compat.states_of(hook.state_manager) == {}
    second = run_wan(wan_pipe)
    assert torch.equal(first, second) and not torch.equal(first, reference)
    taocache.disable(wan_pipe)
    assert attention.forward.__func__ is type(attention).forward
    assert pab_per_branch_stats(transformer) is None
    assert torch.equal(run_wan(wan_pipe), reference)


def test_batched_guidance_shares_one_state_as_diffusers_does(one_thread):
    from taocache.testing import tiny_latte_pipeline

    def run(pipe):
        return pipe(
            prompt="a red ball", video_length=4, height=32, width=32, num_inference_steps=6,
            generator=torch.Generator().manual_seed(0), output_type="latent", clean_caption=False,
            mask_feature=False,
        ).frames

    config = _per_branch_config()
    pipe = tiny_latte_pipeline()
    plain = run(pipe)
    pipe.transformer.enable_cache(config.to_diffusers(lambda: pipe.current_timestep))
    expected = run(pipe)
    pipe.transformer.disable_cache()
    taocache.enable(pipe, config)
    got = run(pipe)
    assert torch.equal(got, expected) and not torch.equal(got, plain)
    assert set(pab_per_branch_stats(pipe.transformer)) == {"inference"}


def test_already_applied_and_no_matching_layer_are_refused(wan_pipe):
    wan_pipe.transformer.enable_cache(_diffusers_config(lambda: 0))
    with pytest.raises(ValueError, match="already on this module"):
        apply_pab_per_branch(wan_pipe.transformer, _diffusers_config(lambda: 0))
    wan_pipe.transformer.disable_cache()
    config = PABPerBranchConfig(spatial_attention_block_skip_range=2, spatial_attention_block_identifiers=("nothing",))
    with pytest.raises(ValueError, match="matched no attention layer"):
        taocache.enable(wan_pipe, config)
    with pytest.raises(ValueError, match="current_timestep_callback"):
        apply_pab_per_branch(wan_pipe.transformer, _per_branch_config())


@pytest.mark.parametrize(
    "fields, match",
    [
        ({}, "set spatial_attention_block_skip_range"),
        ({"spatial_attention_block_skip_range": 0}, r"spatial_attention_block_skip_range=0"),
        ({"cross_attention_block_skip_range": 1.5}, r"cross_attention_block_skip_range=1.5"),
        (
            {"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": (800, 100)},
            r"spatial_attention_timestep_skip_range=\(800, 100\)",
        ),
    ],
)
def test_invalid_config_names_the_field(fields, match):
    with pytest.raises(ValueError, match=match):
        PABPerBranchConfig(**fields)


def test_benchmark_pab_is_per_branch_and_pab_shared_is_diffusers():
    from taocache.bench.methods import make_method

    class Pipe:
        current_timestep = 500

    per_branch = make_method("pab", {"spatial": 2}).config(Pipe(), {})
    shared = make_method("pab-shared", {"spatial": 2}).config(Pipe(), {})
    assert type(per_branch) is PABPerBranchConfig and type(shared) is PyramidAttentionBroadcastConfig
    assert make_method("pab").caveats(2) == [] and make_method("pab-shared").caveats(2)
