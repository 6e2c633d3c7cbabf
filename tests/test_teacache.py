"""TeaCache hook on tiny random Wan, Latte and CogVideoX transformers: skipping, state, exactness, errors."""

import json
import logging
import math

import numpy as np
import pytest
import torch

from taocache.core.fingerprint import fingerprint as config_fingerprint
from taocache.teacache.config import ModelMatch, TeaCacheConfig
from taocache.teacache.hooks import HOOK_NAMES, ROOT_HOOK, apply_teacache, remove_teacache, teacache_stats
from taocache.teacache.indicators import per_sample_rel_l1

CAPTION = "a large red circle moves left on a dark background"
WAN_CALL = {
    "height": 32,
    "width": 32,
    "num_frames": 9,
    "guidance_scale": 5.0,
    "max_sequence_length": 16,
    "output_type": "np",
}


pytestmark = pytest.mark.usefixtures("one_thread")


def run_wan(pipe, steps=12, prompt=CAPTION, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return pipe(prompt, generator=generator, num_inference_steps=steps, **WAN_CALL).frames


@pytest.fixture(scope="module")
def latte():
    from taocache.testing import tiny_latte_pipeline

    return tiny_latte_pipeline(num_layers=2, vae_levels=2)  # 16x16 frames; a block stack of two


def run_latte(pipe, steps=12):
    generator = torch.Generator().manual_seed(0)
    return pipe(
        CAPTION,
        generator=generator,
        num_inference_steps=steps,
        height=16,
        width=16,
        video_length=4,
        guidance_scale=5.0,
        clean_caption=False,
        mask_feature=False,
        output_type="np",
    ).frames


def tiny_cogvideox_transformer():
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(0)
    return CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=16,
        text_embed_dim=16,
        num_layers=2,
        sample_width=8,
        sample_height=8,
        sample_frames=5,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=8,
    ).eval()


@pytest.fixture
def cleanup():
    """Modules TeaCache was applied to in a test, detached again whatever the test's outcome."""
    modules = []
    yield modules
    for module in modules:
        remove_teacache(module)


def attach(module, cleanup, **settings):
    cleanup.append(module)
    return apply_teacache(module, TeaCacheConfig(**settings))


# ------------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "field, value",
    [
        ("rel_l1_thresh", -0.1),
        ("rel_l1_thresh", math.nan),
        ("rel_l1_thresh", "0.1"),
        ("coefficients", []),
        ("coefficients", [1.0, math.inf]),
        ("coefficients", ["a", "b"]),
        ("indicator", "first_block"),
        ("warmup_steps", 0),
        ("warmup_steps", 1.5),
        ("final_steps", 0),
        ("max_skip_steps", 0),
        ("num_inference_steps", 0),
        ("recorder", 3),
    ],
)
def test_bad_config_values_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TeaCacheConfig(**{field: value})


def test_numpy_scalars_are_numbers_in_the_config():
    config = TeaCacheConfig(rel_l1_thresh=np.float32(0.25), warmup_steps=np.int64(2))
    assert (config.rel_l1_thresh, config.warmup_steps) == (0.25, 2) and type(config.warmup_steps) is int


def test_unknown_preset_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="latte-1"):
        TeaCacheConfig.from_preset("latte-2")


def test_preset_coefficients_are_refused_on_another_model(wan, cleanup):
    cleanup.append(wan.transformer)
    with pytest.raises(ValueError, match="wan2.1-t2v-1.3b"):
        apply_teacache(wan.transformer, TeaCacheConfig.from_preset("wan2.1-t2v-1.3b"))
    with pytest.raises(ValueError, match="LatteTransformer3DModel"):
        apply_teacache(wan.transformer, TeaCacheConfig.from_preset("latte-1"))


def test_preset_matches_a_model_with_its_architecture():
    match = TeaCacheConfig.from_preset("wan2.1-t2v-1.3b").model_match

    class WanTransformer3DModel(torch.nn.Module):  # stands in for the 1.3B model: only the config is read
        def __init__(self, num_layers):
            super().__init__()
            self.config = {
                "num_layers": num_layers,
                "num_attention_heads": 12,
                "attention_head_dim": 128,
                "image_dim": None,
            }

    assert match.mismatch(WanTransformer3DModel(30)) is None
    assert "num_layers" in match.mismatch(WanTransformer3DModel(40))


def test_uncalibrated_model_warns_and_uses_the_raw_change(wan, cleanup, caplog):
    with caplog.at_level("WARNING"):
        resolved = attach(wan.transformer, cleanup, rel_l1_thresh=0.1)
    assert resolved.coefficients == (1.0, 0.0) and resolved.indicator == "modulated_input"
    assert "fit-teacache" in caplog.text


def test_applying_twice_is_refused(wan, cleanup):
    attach(wan.transformer, cleanup)
    with pytest.raises(ValueError, match="already applied"):
        apply_teacache(wan.transformer, TeaCacheConfig())


# ------------------------------------------------------------------------------------------------ skipping


def test_threshold_zero_never_skips_and_changes_nothing(wan, cleanup):
    reference = run_wan(wan)
    attach(wan.transformer, cleanup, rel_l1_thresh=0.0, coefficients=[1.0, 0.0])
    result = run_wan(wan)
    stats = teacache_stats(wan.transformer)
    assert all(counts["skipped"] == 0 and counts["computed"] == 12 for counts in stats.values())
    np.testing.assert_array_equal(result, reference)


def test_loose_threshold_skips_and_stays_finite_and_close(wan, cleanup):
    reference = run_wan(wan)
    attach(wan.transformer, cleanup, rel_l1_thresh=0.3, coefficients=[1.0, 0.0])
    result = run_wan(wan)
    stats = teacache_stats(wan.transformer)
    assert set(stats) == {"cond", "uncond"}
    assert all(counts["skipped"] > 0 and counts["computed"] >= 2 for counts in stats.values())
    assert np.isfinite(result).all()
    assert 0 < np.abs(result - reference).max() < 0.2


def test_first_and_final_steps_are_computed(wan, cleanup):
    records = []
    attach(
        wan.transformer,
        cleanup,
        rel_l1_thresh=10.0,
        coefficients=[1.0, 0.0],
        warmup_steps=2,
        final_steps=2,
        recorder=records.append,
    )
    run_wan(wan, steps=10)
    computed = {(r.context, r.step) for r in records if r.computed}
    for context in ("cond", "uncond"):
        assert {(context, s) for s in (0, 1, 8, 9)} <= computed
        assert not any((context, s) in computed for s in range(2, 8))  # everything else skipped at 10.0


def test_max_skip_steps_bounds_consecutive_skips(wan, cleanup):
    records = []
    attach(
        wan.transformer,
        cleanup,
        rel_l1_thresh=10.0,
        coefficients=[1.0, 0.0],
        max_skip_steps=2,
        recorder=records.append,
    )
    run_wan(wan, steps=12)
    run_length = longest = 0
    for record in (r for r in records if r.context == "cond"):
        run_length = 0 if record.computed else run_length + 1
        longest = max(longest, run_length)
    assert longest == 2


def test_guidance_branches_keep_separate_state(wan, cleanup):
    records = []
    attach(wan.transformer, cleanup, rel_l1_thresh=0.0, coefficients=[1.0, 0.0], recorder=records.append)
    run_wan(wan, steps=6)
    by_branch = {c: [r for r in records if r.context == c] for c in ("cond", "uncond")}
    assert [r.step for r in by_branch["cond"]] == [r.step for r in by_branch["uncond"]] == list(range(6))
    # A shared state would compare the unconditional pass with the conditional one of the same step.
    assert by_branch["uncond"][0].indicator_change is None
    assert by_branch["cond"][2].residual_change != by_branch["uncond"][2].residual_change


def test_two_identical_calls_give_identical_results(wan, cleanup):
    attach(wan.transformer, cleanup, rel_l1_thresh=0.3, coefficients=[1.0, 0.0])
    first = run_wan(wan)
    after_first = teacache_stats(wan.transformer)
    second = run_wan(wan)
    after_second = teacache_stats(wan.transformer)
    np.testing.assert_array_equal(first, second)
    for context, counts in after_second.items():
        assert counts == {k: 2 * v for k, v in after_first[context].items()}


def test_state_is_released_at_the_end_of_a_call(wan, cleanup):
    attach(wan.transformer, cleanup, rel_l1_thresh=0.3, coefficients=[1.0, 0.0])
    run_wan(wan)
    manager = wan.transformer._diffusers_hook.get_hook(ROOT_HOOK).state_manager
    assert manager._state_cache == {} and manager._context is None  # no tensor outlives the call


def test_remove_restores_the_exact_original(wan):
    reference = run_wan(wan)
    apply_teacache(wan.transformer, TeaCacheConfig(rel_l1_thresh=0.3, coefficients=[1.0, 0.0]))
    assert not np.array_equal(run_wan(wan), reference)
    remove_teacache(wan.transformer)
    np.testing.assert_array_equal(run_wan(wan), reference)
    for module in wan.transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        assert registry is None or not set(registry.hooks) & set(HOOK_NAMES)


def direct_wan_call(transformer, hidden, timestep, text):
    return transformer(
        hidden_states=hidden,
        timestep=torch.tensor([timestep] * hidden.shape[0]),
        encoder_hidden_states=text,
        return_dict=False,
    )[0]


def model_and_call(name, request):
    """A tiny transformer of each supported family, an input batch of two, and a call at timestep 500."""
    t = torch.tensor([500, 500])
    if name == "wan":
        transformer, text = request.getfixturevalue("wan").transformer, torch.randn(2, 16, 32)
        return transformer, torch.randn(2, 4, 3, 8, 8), lambda x: direct_wan_call(transformer, x, 500, text)
    if name == "latte":
        transformer, text = request.getfixturevalue("latte").transformer, torch.randn(2, 16, 32)
        return (
            transformer,
            torch.randn(2, 4, 4, 8, 8),
            lambda x: transformer(x, t, text, return_dict=False)[0],
        )
    transformer, text = tiny_cogvideox_transformer(), torch.randn(2, 8, 16)
    return transformer, torch.randn(2, 2, 4, 8, 8), lambda x: transformer(x, text, t, return_dict=False)[0]


@pytest.mark.parametrize("name", ["wan", "latte", "cogvideox"])
def test_a_skipped_step_adds_the_last_residual_to_the_new_stack_input(name, request, cleanup):
    torch.manual_seed(1)
    transformer, hidden, call = model_and_call(name, request)
    nearby = hidden + 1e-4 * torch.randn_like(hidden)
    with torch.no_grad():
        exact, exact_nearby = call(hidden), call(nearby)
        resolved = attach(transformer, cleanup, rel_l1_thresh=0.1, coefficients=[1.0, 0.0])
        with transformer.cache_context("test"):
            computed, reused = call(hidden), call(nearby)
        stats = teacache_stats(transformer)
        remove_teacache(transformer)
        restored = call(hidden)
    assert resolved.indicator == "modulated_input"
    assert stats["test"] == {"computed": 1, "skipped": 1}
    assert torch.equal(computed, exact) and torch.equal(restored, exact)
    # Reusing the residual errs by about the input's move, far less than the output's own scale.
    torch.testing.assert_close(reused, exact_nearby, rtol=0, atol=1e-3)
    assert not torch.equal(reused, computed)


def test_worst_sample_decides_for_the_batch(wan, cleanup):
    transformer = wan.transformer
    attach(transformer, cleanup, rel_l1_thresh=0.05, coefficients=[1.0, 0.0], indicator="block_input")
    text = torch.randn(2, 16, 32)
    still = torch.randn(1, 4, 3, 8, 8)
    with torch.no_grad(), transformer.cache_context("still"):
        for t in (900, 800, 700):
            direct_wan_call(transformer, torch.cat([still, still]), t, text)
    with torch.no_grad(), transformer.cache_context("one_moves"):
        for t in (900, 800, 700):
            direct_wan_call(transformer, torch.cat([still, torch.randn(1, 4, 3, 8, 8)]), t, text)
    stats = teacache_stats(transformer)
    assert stats["still"] == {"computed": 1, "skipped": 2}
    assert stats["one_moves"] == {"computed": 3, "skipped": 0}


def test_a_new_call_is_detected_from_the_timesteps(wan, cleanup):
    records = []
    transformer = wan.transformer
    attach(transformer, cleanup, rel_l1_thresh=0.0, coefficients=[1.0, 0.0], recorder=records.append)
    hidden, text = torch.randn(1, 4, 3, 8, 8), torch.randn(1, 16, 32)
    with torch.no_grad(), transformer.cache_context("cond"):
        for t in (900, 500, 100, 900, 500):
            direct_wan_call(transformer, hidden, t, text)
    assert [r.step for r in records] == [0, 1, 2, 0, 1]
    assert records[3].indicator_change is None


def test_indicator_variants_run_on_wan(wan, cleanup):
    for indicator in ("timestep_conditioning", "time_embedding", "block_input"):
        records = []
        apply_teacache(
            wan.transformer,
            TeaCacheConfig(
                rel_l1_thresh=0.0, coefficients=[1.0, 0.0], indicator=indicator, recorder=records.append
            ),
        )
        try:
            run_wan(wan, steps=4)
        finally:
            remove_teacache(wan.transformer)
        changes = [r.indicator_change[0] for r in records if r.indicator_change is not None]
        assert len(changes) == 6 and all(c > 0 and math.isfinite(c) for c in changes)


def test_per_sample_change_groups_rows_by_sample():
    previous = torch.ones(4, 3)  # 2 samples x 2 frames folded into the batch, as Latte does
    current = previous.clone()
    current[2:] *= 1.5
    np.testing.assert_allclose(per_sample_rel_l1(current, previous, 2), [0.0, 0.5])


# -------------------------------------------------------------------------------------- Latte, CogVideoX


def test_latte_batched_guidance_skips_and_removes_exactly(latte, cleanup):
    reference = run_latte(latte)
    records = []
    attach(
        latte.transformer,
        cleanup,
        rel_l1_thresh=0.3,
        coefficients=[1.0, 0.0],
        num_inference_steps=12,
        recorder=records.append,
    )
    result = run_latte(latte)
    stats = teacache_stats(latte.transformer)
    assert list(stats) == ["inference"] and stats["inference"]["skipped"] > 0
    assert np.isfinite(result).all() and 0 < np.abs(result - reference).max() < 0.2
    assert all(r.num_samples == 2 for r in records)  # [uncond; cond] in one call, each its own sample
    assert records[0].computed and records[-1].computed  # first and last step
    remove_teacache(latte.transformer)
    np.testing.assert_array_equal(run_latte(latte), reference)


def test_works_under_torch_compile(cleanup):
    from taocache.testing import tiny_wan_pipeline

    pipe = tiny_wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    attach(pipe.transformer, cleanup, rel_l1_thresh=0.3, coefficients=[1.0, 0.0])
    eager = run_wan(pipe, steps=6)
    eager_stats = teacache_stats(pipe.transformer)
    pipe.transformer.compile(backend="eager")  # dynamo traces the hooks; decisions stay outside the graph
    compiled = run_wan(pipe, steps=6)
    np.testing.assert_array_equal(compiled, eager)
    assert teacache_stats(pipe.transformer)["cond"]["skipped"] == 2 * eager_stats["cond"]["skipped"] > 0


# ------------------------------------------------------------------------------------------ coefficient files


def write(path, content):
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def valid_file_content(transformer):
    return {
        "format": "taocache.teacache-coefficients",
        "version": 1,
        "transformer_class": type(transformer).__name__,
        "config_fingerprint": config_fingerprint(transformer),
        "indicator": "modulated_input",
        "coefficients": [0.5, 0.0],
        "warmup_steps": 2,
    }


def test_coefficient_file_loads_and_binds_to_its_model(wan, tmp_path, cleanup):
    path = write(tmp_path / "c.json", valid_file_content(wan.transformer))
    config = TeaCacheConfig.from_file(path, rel_l1_thresh=0.2)
    assert config.coefficients == (0.5, 0.0) and config.warmup_steps == 2 and config.rel_l1_thresh == 0.2
    assert config.model_match == ModelMatch(
        "WanTransformer3DModel", fingerprint=config_fingerprint(wan.transformer), source=str(path)
    )
    attach(wan.transformer, cleanup, **vars(config))


def test_coefficient_file_of_another_model_is_refused_naming_the_file(wan, latte, tmp_path, cleanup):
    path = write(tmp_path / "latte.json", valid_file_content(latte.transformer))
    cleanup.append(wan.transformer)
    with pytest.raises(ValueError, match="latte.json"):
        apply_teacache(wan.transformer, TeaCacheConfig.from_file(path))
    other = {**valid_file_content(wan.transformer), "config_fingerprint": "sha256:0000000000000000"}
    with pytest.raises(ValueError, match="fingerprint"):
        apply_teacache(wan.transformer, TeaCacheConfig.from_file(write(tmp_path / "other.json", other)))


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not readable JSON"),
        ({"format": "something-else"}, "not a TeaCache coefficient file"),
        ({"format": "taocache.teacache-coefficients", "version": 99}, "version"),
        ({"format": "taocache.teacache-coefficients", "version": 1}, "lacks"),
    ],
)
def test_corrupt_coefficient_files_raise_naming_the_file(tmp_path, content, message):
    path = write(tmp_path / "bad.json", content)
    with pytest.raises(ValueError, match=message) as error:
        TeaCacheConfig.from_file(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    "field, value", [("coefficients", [1.0, None]), ("indicator", "elsewhere"), ("warmup_steps", "two")]
)
def test_bad_fields_in_coefficient_files_raise_naming_file_and_field(wan, tmp_path, field, value):
    path = write(tmp_path / "bad.json", {**valid_file_content(wan.transformer), field: value})
    with pytest.raises(ValueError, match=field) as error:
        TeaCacheConfig.from_file(path)
    assert str(path) in str(error.value)


def test_missing_coefficient_file_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        TeaCacheConfig.from_file(tmp_path / "nothing.json")


def test_stacks_under_taocache_through_enable_and_disable(wan):
    import taocache
    from taocache import TaoCacheConfig

    reference = run_wan(wan)
    taocache.enable(wan, [TeaCacheConfig(rel_l1_thresh=0.3, coefficients=[1.0, 0.0]), TaoCacheConfig()])
    try:
        assert wan.transformer._diffusers_hook._hook_order[-2:] == [ROOT_HOOK, "taocache"]
        result = run_wan(wan)
        assert np.isfinite(result).all() and teacache_stats(wan.transformer)["cond"]["skipped"] > 0
    finally:
        taocache.disable(wan)
    np.testing.assert_array_equal(run_wan(wan), reference)


def test_a_failing_stack_leaves_the_plain_pipeline_and_calibration_refuses_a_stack(wan, tmp_path):
    import taocache
    from taocache import TaoCacheConfig

    reference = run_wan(wan)
    missing = tmp_path / "no-such-calibration.json"
    with pytest.raises(FileNotFoundError):
        taocache.enable(wan, [TeaCacheConfig(coefficients=[1.0, 0.0]), TaoCacheConfig(calibration=missing)])
    assert getattr(wan.transformer, "_diffusers_hook", None) is None or not wan.transformer._diffusers_hook.hooks
    with pytest.raises(TypeError, match="unsupported cache config"):
        taocache.enable(wan, [TaoCacheConfig(), object()])
    np.testing.assert_array_equal(run_wan(wan), reference)

    taocache.enable(wan, [TeaCacheConfig(coefficients=[1.0, 0.0]), TaoCacheConfig()])  # a corrected retry works
    try:
        with pytest.raises(ValueError, match="TeaCache is enabled"):
            taocache.calibrate(wan, ["a red circle"], call_kwargs={"num_inference_steps": 4}, save=False)
    finally:
        taocache.disable(wan)
    np.testing.assert_array_equal(run_wan(wan), reference)


def test_teacache_alone_through_enable_reports_and_disables(wan, caplog):
    import taocache

    taocache.enable(wan, [TeaCacheConfig(rel_l1_thresh=0.3, coefficients=[1.0, 0.0])])
    run_wan(wan)
    record = taocache.stats(wan)
    assert record.calls == 0 and record.stacked["TeaCache"]["transformer"]["cond"]["skipped"] > 0
    assert "TeaCache" in str(record)
    with caplog.at_level(logging.WARNING, logger="taocache"):
        taocache.disable(wan)
    assert "nothing to disable" not in caplog.text
    with pytest.raises(ValueError, match="not enabled"):
        taocache.stats(wan)


def test_under_taocache_teacache_knows_the_step_where_the_pipeline_does_not_say(latte):
    import taocache
    from taocache import TaoCacheConfig

    call = {"height": 16, "width": 16, "video_length": 4, "guidance_scale": 5.0, "clean_caption": False,
            "mask_feature": False, "num_inference_steps": 12}
    calibration = taocache.calibrate(latte, [CAPTION], call_kwargs=call, save=False, progress=False)
    seen = []  # Latte passes no step index, and TaoCache predicts steps TeaCache then never sees
    tea = TeaCacheConfig(rel_l1_thresh=10.0, coefficients=[1.0, 0.0], num_inference_steps=12, recorder=seen.append)
    taocache.enable(latte, [tea, TaoCacheConfig(calibration=calibration, error_budget=1.0, max_consecutive=2)])
    try:
        run_latte(latte)
        decisions = next(iter(taocache.stats(latte).branches.values())).decisions
    finally:
        taocache.disable(latte)
    assert "P" in decisions
    assert [r.step for r in seen] == [i for i, d in enumerate(decisions) if d == "C"]
    assert seen[-1].step == 11 and seen[-1].computed  # TeaCache's final step is the run's


def test_coefficients_fitted_for_the_model_are_found_with_their_warmup(wan, tmp_path, monkeypatch, cleanup):
    from taocache.teacache import coefficients

    write(tmp_path / "a-broken.json", "{not json")  # skipped with a warning, not fatal
    write(tmp_path / "tiny.json", valid_file_content(wan.transformer))
    monkeypatch.setattr(coefficients, "coefficient_directories", lambda: [tmp_path])
    resolved = attach(wan.transformer, cleanup, rel_l1_thresh=0.1)
    assert resolved.coefficients == (0.5, 0.0) and resolved.warmup_steps == 2
    assert resolved.model_match.source == str(tmp_path / "tiny.json")


def test_shipped_coefficients_belong_to_the_embedded_model():
    from diffusers import WanTransformer3DModel

    from taocache.core.data import data_path

    config = TeaCacheConfig.from_file(data_path("pipelines", "coefficients", "tiny-t2v-teacache.json"))
    embedded = WanTransformer3DModel.from_config(
        WanTransformer3DModel.load_config(data_path("samples", "models", "tiny-t2v", "transformer"))
    )
    assert config.model_match.mismatch(embedded) is None
