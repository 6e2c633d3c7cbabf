"""EasyCache: its rule on a hand-computed toy, its behaviour on tiny Wan and Latte pipelines, and its place
among the backends of ``taocache.enable`` and the benchmark's methods."""

from __future__ import annotations

import json
import math

import pytest
import torch
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.modeling_outputs import Transformer2DModelOutput

import taocache
from taocache.core import compat
from taocache.easycache import EasyCacheConfig, apply_easycache, easycache_stats, remove_easycache
from taocache.easycache.hooks import EASYCACHE_HOOK


@pytest.fixture
def wan_pipe(one_thread):
    from taocache.testing import tiny_wan_pipeline

    pipe = tiny_wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_wan(pipe, steps: int = 10, seed: int = 0, guidance_scale: float = 5.0) -> torch.Tensor:
    """One seeded tiny Wan call, returning the final latents (the VAE adds nothing to these tests)."""
    return pipe(
        "a red ball", num_frames=9, height=32, width=32, num_inference_steps=steps, guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(seed), output_type="latent",
    ).frames


class Toy(torch.nn.Module, CacheMixin):
    """v = 2 x + e * cos(pi t / 100): with e = 0 the output follows the input at rate 2; with e != 0 it
    flips sign every 100 timesteps, a change the input does not explain."""

    def __init__(self, kind: str = "tuple"):
        super().__init__()
        self.kind = kind
        self.calls = 0

    def forward(self, hidden_states, timestep, encoder_hidden_states=None, return_dict=False):
        self.calls += 1
        v = 2 * hidden_states
        if encoder_hidden_states is not None:
            v = v + encoder_hidden_states * torch.cos(math.pi * timestep / 100)
        if self.kind == "tensor":
            return v
        if self.kind == "sample":
            return Transformer2DModelOutput(sample=v)
        return (v,)


def _value(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    return output.sample if hasattr(output, "sample") else output[0]


def toy_run(model, steps=8, order=("cond",), embeddings=None, seed_steps=None):
    """Drive ``model`` like a pipeline: x_s = 1 - 0.1 s, timestep 1000 - 100 s, one call per branch."""
    embeddings = embeddings or {"cond": 0.0}
    outputs = {name: [] for name in order}
    for s in range(steps):
        x = torch.full((1, 2, 3, 4), 1.0 - 0.1 * s)
        t = torch.tensor([1000.0 - 100.0 * s])
        for name in order:
            with model.cache_context(name, step_index=s, num_inference_steps=steps):
                e = torch.full_like(x, embeddings[name])
                outputs[name].append(model(x, t, encoder_hidden_states=e))
    return outputs


# ------------------------------------------------------------------------------------------------ the rule


@pytest.mark.parametrize("kind", ["tuple", "tensor", "sample"])
def test_rule_matches_hand_computation(kind):
    # warm-up 2, tau 0.25, last step computed. k = 2, eps_s = 2 * 0.1 / mean|v_i|:
    # s2: 0.111 (S), s3: 0.222 (S), s4: 0.333 -> C (k=2, v=1.2), s5: 0.167 (S), s6: 0.333 -> C, s7: final C.
    model = Toy(kind)
    apply_easycache(model, EasyCacheConfig(threshold=0.25, warmup_steps=2, final_steps=1))
    outputs = toy_run(model)["cond"]
    assert easycache_stats(model)["last_call"]["cond"]["pattern"] == "CCSSCSCC"
    assert model.calls == 5
    expected = [2.0, 1.8, 1.7, 1.6, 1.2, 1.1, 0.8, 0.6]  # a reused step returns x_s + (v_i - x_i)
    for output, value in zip(outputs, expected, strict=True):
        assert type(output) is type(outputs[0])
        torch.testing.assert_close(_value(output), torch.full((1, 2, 3, 4), value))


def test_threshold_zero_never_reuses():
    model = Toy()
    apply_easycache(model, EasyCacheConfig(threshold=0.0, warmup_steps=0, final_steps=0))
    toy_run(model)
    assert easycache_stats(model)["last_call"]["cond"]["pattern"] == "C" * 8


def test_first_branch_to_reach_a_step_decides_for_both():
    # cond alone would reuse (CCSSCSCC); uncond's output flips sign each step, so alone it never reuses.
    embeddings = {"cond": 0.0, "uncond": 1.0}
    patterns = {}
    for order in (("cond", "uncond"), ("uncond", "cond")):
        model = Toy()
        apply_easycache(model, EasyCacheConfig(threshold=0.25, warmup_steps=2, final_steps=1))
        outputs = toy_run(model, order=order, embeddings=embeddings)
        last = easycache_stats(model)["last_call"]
        assert last["cond"]["pattern"] == last["uncond"]["pattern"]
        patterns[order[0]] = last["cond"]["pattern"]
        if order[0] == "cond":  # the follower reused its own transformation, not the leader's
            s2 = _value(outputs["uncond"][2])
            delta_uncond_s1 = 2 * 0.9 + 1.0 * math.cos(math.pi * 900 / 100) - 0.9
            torch.testing.assert_close(s2, torch.full_like(s2, 0.8 + delta_uncond_s1))
    assert patterns == {"cond": "CCSSCSCC", "uncond": "C" * 8}


def test_new_call_is_recognised_without_reset_state():
    model = Toy()
    apply_easycache(model, EasyCacheConfig(threshold=0.25, warmup_steps=2, final_steps=1))
    first = toy_run(model)["cond"]
    second = toy_run(model)["cond"]  # no reset_state in between: the step index falls back to 0
    stats = easycache_stats(model)
    assert stats["calls"] == 2
    assert stats["last_call"]["cond"]["pattern"] == "CCSSCSCC"
    assert stats["total"]["cond"] == {"computed": 10, "skipped": 6}
    for a, b in zip(first, second, strict=True):
        assert torch.equal(_value(a), _value(b))


def test_output_that_cannot_be_related_to_the_input_is_refused():
    class Shrinks(torch.nn.Module):
        def forward(self, hidden_states, timestep):
            return hidden_states[:, :1]

    model = Shrinks()
    apply_easycache(model, EasyCacheConfig(warmup_steps=0, final_steps=0))
    with pytest.raises(ValueError, match=r"output \(1, 1, 3\) cannot be related to its input \(1, 2, 3\)"):
        model(torch.zeros(1, 2, 3), torch.tensor([1.0]))


def test_forward_without_a_latent_first_is_refused():
    class KeywordOnly(torch.nn.Module):
        def forward(self, *, hidden_states):
            return hidden_states

    with pytest.raises(TypeError, match="latent as its first argument"):
        apply_easycache(KeywordOnly())


# ------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "field, value",
    [
        ("threshold", -0.1),
        ("threshold", float("nan")),
        ("threshold", "0.1"),
        ("threshold", True),
        ("warmup_ratio", 1.5),
        ("warmup_ratio", -0.1),
        ("warmup_steps", -1),
        ("warmup_steps", 2.0),
        ("final_steps", -1),
        ("num_inference_steps", 0),
    ],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"EasyCacheConfig\.{field}="):
        EasyCacheConfig(**{field: value})


def test_config_json_round_trip_and_unknown_fields():
    config = EasyCacheConfig(threshold=0.1, warmup_steps=5, num_inference_steps=30)
    assert EasyCacheConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"no field\(s\) \['thresh'\]"):
        EasyCacheConfig.from_dict({"thresh": 0.1})


def test_defaults_are_the_published_wan_settings():
    config = EasyCacheConfig()
    assert (config.threshold, config.final_steps) == (0.05, 1)
    assert config.warmup_for(50) == 10


# --------------------------------------------------------------------------------------------- tiny Wan


def test_wan_loose_threshold_skips_and_threshold_zero_is_exact(wan_pipe):
    reference = run_wan(wan_pipe)
    apply_easycache(wan_pipe.transformer, EasyCacheConfig(threshold=0.5))
    loose = run_wan(wan_pipe)
    last = easycache_stats(wan_pipe.transformer)["last_call"]
    assert last["cond"]["skipped"] > 0 and last["uncond"]["skipped"] > 0
    assert not torch.equal(loose, reference)
    apply_easycache(wan_pipe.transformer, EasyCacheConfig(threshold=0.0))  # replaces the earlier hook
    exact = run_wan(wan_pipe)
    last = easycache_stats(wan_pipe.transformer)["last_call"]
    assert last["cond"]["skipped"] == last["uncond"]["skipped"] == 0
    assert torch.equal(exact, reference)


def test_wan_branches_agree_and_respect_warmup_and_last_step(wan_pipe):
    apply_easycache(wan_pipe.transformer, EasyCacheConfig(threshold=0.5, warmup_ratio=0.3))
    run_wan(wan_pipe, steps=10)
    last = easycache_stats(wan_pipe.transformer)["last_call"]
    assert last["cond"]["pattern"] == last["uncond"]["pattern"]
    pattern = last["cond"]["pattern"]
    assert len(pattern) == 10 and pattern.startswith("CCC") and pattern.endswith("C") and "S" in pattern


def test_wan_state_resets_between_calls(wan_pipe):
    apply_easycache(wan_pipe.transformer, EasyCacheConfig(threshold=0.5))
    first = run_wan(wan_pipe)
    first_pattern = easycache_stats(wan_pipe.transformer)["last_call"]
    hook = compat.hook_on(wan_pipe.transformer, EASYCACHE_HOOK)
    assert compat.states_of(hook.state_manager) == {} and hook.decision is None  # reset by the pipeline's end
    second = run_wan(wan_pipe)
    stats = easycache_stats(wan_pipe.transformer)
    assert torch.equal(first, second)
    assert stats["last_call"] == first_pattern and stats["calls"] == 2
    assert stats["total"]["cond"]["skipped"] == 2 * first_pattern["cond"]["skipped"]


def test_wan_through_enable_and_disable_restores_the_exact_forward(wan_pipe):
    transformer = wan_pipe.transformer
    reference = run_wan(wan_pipe)
    taocache.enable(wan_pipe, EasyCacheConfig(threshold=0.5))
    assert not torch.equal(run_wan(wan_pipe), reference)
    assert set(taocache.stats(wan_pipe).stacked["EasyCache"]) == {"transformer"}
    taocache.disable(wan_pipe)
    assert transformer.forward.__func__ is type(transformer).forward
    assert compat.hook_on(transformer, EASYCACHE_HOOK) is None
    assert torch.equal(run_wan(wan_pipe), reference)
    assert remove_easycache(transformer) is False  # removing twice is harmless


def test_wan_without_guidance_has_one_branch(wan_pipe):
    apply_easycache(wan_pipe.transformer, EasyCacheConfig(threshold=0.5))
    run_wan(wan_pipe, guidance_scale=1.0)
    assert set(easycache_stats(wan_pipe.transformer)["last_call"]) == {"cond"}


# ------------------------------------------------------------------------------- tiny Latte (batched CFG)


def _run_latte(pipe, steps=8):
    return pipe(
        prompt="a red ball",
        video_length=4,
        height=32,
        width=32,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
        clean_caption=False,
        mask_feature=False,
    ).frames


def test_latte_batched_guidance_needs_the_step_count_then_works():
    from taocache.testing import tiny_latte_pipeline

    pipe = tiny_latte_pipeline()
    reference = _run_latte(pipe)
    apply_easycache(pipe.transformer, EasyCacheConfig(threshold=0.5))
    with pytest.raises(ValueError, match="set EasyCacheConfig.num_inference_steps"):
        _run_latte(pipe)
    apply_easycache(pipe.transformer, EasyCacheConfig(threshold=0.5, num_inference_steps=8))
    cached = _run_latte(pipe)
    last = easycache_stats(pipe.transformer)["last_call"]
    assert set(last) == {"inference"}  # one call per step carries both guidance halves
    assert last["inference"]["skipped"] > 0 and last["inference"]["pattern"].endswith("C")
    assert cached.shape == reference.shape and not torch.equal(cached, reference)


# ------------------------------------------------------------------------------ registry and benchmark


def test_saved_in_a_configuration_file_and_read_back(tmp_path):
    config = EasyCacheConfig(threshold=0.1, warmup_steps=4)
    path = tmp_path / "caches.json"
    taocache.save_configs(path, [config])
    assert taocache.load_configs(path) == [config]


def test_benchmark_method_takes_the_step_count_from_the_call():
    from taocache.bench.methods import make_method

    method = make_method("easycache", {"threshold": 0.1})
    assert method.config(None, {"num_inference_steps": 30}) == EasyCacheConfig(threshold=0.1, num_inference_steps=30)
    with pytest.raises(ValueError, match="EasyCacheConfig.threshold"):
        make_method("easycache", {"threshold": -1})
