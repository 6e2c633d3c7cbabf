"""TaoCache on tiny random diffusers pipelines: Wan (separate guidance calls), Latte and CogVideoX (batched
guidance), Stable Diffusion (a UNet without cache reset), Wan2.2's two transformers, CPU offload, PAB."""

import logging

import numpy as np
import pytest
import torch

import taocache
from taocache import TaoCacheConfig
from taocache.metrics import psnr

CAPTION = "a large red circle moves left on a dark background"
STEPS = 12
CALLS = {
    "wan": {"height": 32, "width": 32, "num_frames": 9, "guidance_scale": 5.0, "max_sequence_length": 16},
    "latte": {"height": 32, "width": 32, "video_length": 4, "guidance_scale": 5.0, "clean_caption": False, "mask_feature": False},
    "cogvideox": {"height": 32, "width": 32, "num_frames": 5, "guidance_scale": 5.0, "max_sequence_length": 16},
    "sd": {"guidance_scale": 5.0},
}
LOOSE = TaoCacheConfig(error_budget=1.0, start_fraction=0.2, max_consecutive=2)


@pytest.fixture(autouse=True)
def isolated_calibrations(tmp_path, monkeypatch):
    monkeypatch.setenv("TAOCACHE_CALIBRATION_DIR", str(tmp_path / "calibrations"))


pytestmark = pytest.mark.usefixtures("one_thread")


def build(kind, seed=0):
    from taocache import testing

    builders = {"wan": testing.tiny_wan_pipeline, "latte": testing.tiny_latte_pipeline,
                "cogvideox": testing.tiny_cogvideox_pipeline, "sd": testing.tiny_sd_pipeline}
    pipe = builders[kind](seed=seed)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, kind, prompt=CAPTION, seed=0, **overrides):
    kwargs = {**CALLS[kind], "num_inference_steps": STEPS, "output_type": "np", **overrides}
    out = pipe(prompt, generator=torch.Generator().manual_seed(seed), **kwargs)
    return out.frames if hasattr(out, "frames") else out.images


@pytest.fixture(scope="module")
def wan():
    return build("wan")


@pytest.mark.parametrize("kind, branches", [
    ("wan", {"cond", "uncond"}),
    ("latte", {"uncond+cond"}),
    ("cogvideox", {"uncond+cond"}),
    ("sd", {"uncond+cond"}),
])
def test_pipeline_predicts_repeats_and_disables_exactly(kind, branches):
    pipe = build(kind)
    reference = run(pipe, kind)
    taocache.enable(pipe, LOOSE)
    run(pipe, kind)  # records the calibration
    cached = run(pipe, kind)
    record = taocache.stats(pipe)
    assert set(record.branches) == branches
    assert record.predicted > 0 and record.calls == STEPS * (2 if kind == "wan" else 1)
    assert all(b.decisions[-1] == "C" for b in record.branches.values())
    assert np.isfinite(cached).all() and psnr(cached[0], reference[0]) > 20
    assert np.array_equal(run(pipe, kind), cached)  # a second identical call gives the identical output
    taocache.disable(pipe)
    assert np.array_equal(run(pipe, kind), reference)


@pytest.mark.parametrize("kind", ["latte", "sd"])
def test_batched_guidance_is_calibrated_per_half_and_guidance_one_uses_cond(kind):
    pipe = build(kind)
    calibration = taocache.calibrate(pipe, [CAPTION], call_kwargs={**CALLS[kind], "num_inference_steps": STEPS},
                                     save=False, progress=False)
    entry = next(iter(calibration.denoisers.values()))
    estimates = {"estimate:cond", "estimate:uncond"} if kind == "sd" else set()  # Latte's outputs carry variances
    assert set(entry.branches) == {"cond", "uncond"} | estimates
    assert calibration.samples == 1 and calibration.steps == STEPS
    config = TaoCacheConfig(calibration=calibration, error_budget=1.0)
    taocache.enable(pipe, config)
    run(pipe, kind, guidance_scale=1.0)  # one pass per step, the conditional branch
    record = taocache.stats(pipe)
    assert set(record.branches) == {"cond"} and record.predicted > 0
    taocache.disable(pipe)


def test_guidance_one_batch_and_videos_per_prompt(wan):
    taocache.enable(wan, LOOSE)
    run(wan, "wan")
    single = run(wan, "wan", guidance_scale=1.0)
    assert set(taocache.stats(wan).branches) == {"cond"} and taocache.stats(wan).predicted > 0
    many = run(wan, "wan", prompt=[CAPTION, "a small blue square moves up on a light background"],
               num_videos_per_prompt=2)
    assert many.shape[0] == 4 and np.isfinite(many).all()
    assert taocache.stats(wan).calls == 2 * STEPS
    assert single.shape[0] == 1
    taocache.disable(wan)


def test_another_step_count_works(wan):
    taocache.enable(wan, LOOSE)
    run(wan, "wan")
    out = run(wan, "wan", num_inference_steps=8)
    record = taocache.stats(wan)
    assert out.shape[1] == 9 and record.calls == 16 and record.predicted > 0
    taocache.disable(wan)


def test_one_step_runs_back_to_back_are_separate_calls():
    pipe = build("sd")  # a UNet pipeline: no cache reset at the end of its call, no step index
    taocache.enable(pipe, LOOSE)
    try:
        for _ in range(3):
            run(pipe, "sd", num_inference_steps=1, guidance_scale=1.0)
            record = taocache.stats(pipe)
            assert record.calls == 1 and not any("same timestep" in note for note in record.notes)
    finally:
        taocache.disable(pipe)


def test_two_pipelines_do_not_interfere():
    a, b = build("wan", seed=0), build("wan", seed=1)
    taocache.enable(a, LOOSE)
    taocache.enable(b, LOOSE)
    run(a, "wan"), run(b, "wan")
    alone_a, alone_b = run(a, "wan"), run(b, "wan", seed=3)
    interleaved = []
    for _ in range(2):
        interleaved += [run(a, "wan"), run(b, "wan", seed=3)]
    assert all(np.array_equal(x, alone_a) for x in interleaved[::2])
    assert all(np.array_equal(x, alone_b) for x in interleaved[1::2])


def test_wan22_two_transformers_keep_a_state_each():
    from diffusers import WanPipeline

    from taocache.testing import wan_components
    from taocache.world import vocabulary

    high, low = wan_components(vocabulary(), seed=0), wan_components(vocabulary(), seed=1)
    pipe = WanPipeline(**high, transformer_2=low["transformer"], boundary_ratio=0.5)
    pipe.set_progress_bar_config(disable=True)
    reference = run(pipe, "wan", num_inference_steps=20)
    taocache.enable(pipe, LOOSE)
    run(pipe, "wan", num_inference_steps=20)
    cached = run(pipe, "wan", num_inference_steps=20)
    record = taocache.stats(pipe)
    assert {"transformer/cond", "transformer_2/uncond"} <= set(record.branches)
    first, second = record.branches["transformer/cond"].decisions, record.branches["transformer_2/cond"].decisions
    handover = second.index("C")
    assert handover > 0 and set(second[:handover]) == {"."} and len(first) == handover
    assert record.predicted > 0 and np.array_equal(run(pipe, "wan", num_inference_steps=20), cached)
    taocache.disable(pipe)
    assert np.array_equal(run(pipe, "wan", num_inference_steps=20), reference)


@pytest.mark.parametrize("offload_first", [True, False])
def test_model_cpu_offload_keeps_working(offload_first):
    pipe = build("wan")
    reference = run(pipe, "wan")
    if offload_first:
        pipe.enable_model_cpu_offload(device="cpu")
    taocache.enable(pipe, LOOSE)
    if not offload_first:
        pipe.enable_model_cpu_offload(device="cpu")
    run(pipe, "wan")
    cached = run(pipe, "wan")
    assert taocache.stats(pipe).predicted > 0  # the hook survived the offload hooks' re-application
    assert np.array_equal(run(pipe, "wan"), cached)
    taocache.disable(pipe)
    assert hasattr(pipe.transformer, "_hf_hook")  # offload still in place
    assert np.array_equal(run(pipe, "wan"), reference)


def test_stacks_on_pyramid_attention_broadcast(wan):
    from diffusers import PyramidAttentionBroadcastConfig

    wan.transformer.enable_cache(PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(100, 950),
        current_timestep_callback=lambda: wan.current_timestep))
    try:
        pab_only = run(wan, "wan")
        taocache.enable(wan, LOOSE)
        run(wan, "wan")
        both = run(wan, "wan")
        assert taocache.stats(wan).predicted > 0 and not np.array_equal(both, pab_only)
        assert np.array_equal(run(wan, "wan"), both)
        taocache.disable(wan)
        assert np.array_equal(run(wan, "wan"), pab_only)  # PAB left in place
    finally:
        wan.transformer.disable_cache()


def test_stacking_a_cache_that_counts_its_own_calls_warns(wan, caplog):
    from diffusers import MagCacheConfig

    with caplog.at_level(logging.WARNING, logger="taocache"):
        taocache.enable(wan, [MagCacheConfig(num_inference_steps=10, mag_ratios=[1.0] * 10), LOOSE])
    try:
        assert "MagCache counts denoising steps by the calls it sees" in caplog.text
    finally:
        taocache.disable(wan)
    assert not getattr(wan.transformer, "is_cache_enabled", False)


@pytest.mark.slow  # dynamo tracing of the transformer takes ~15 s here; the toy test in test_cache_hook is fast
def test_compiled_transformer_in_a_pipeline(wan):
    taocache.enable(wan, LOOSE)
    run(wan, "wan")
    eager = run(wan, "wan")
    decisions = taocache.stats(wan).branches["cond"].decisions
    original = wan.transformer
    wan.transformer = torch.compile(original, backend="eager")
    try:
        compiled = run(wan, "wan")
        assert taocache.stats(wan).branches["cond"].decisions == decisions
        assert np.allclose(compiled, eager, atol=1e-5)
    finally:
        wan.transformer = original
        taocache.disable(wan)


@pytest.mark.parametrize("kind", ["wan", "sd"])
def test_estimate_space_predicts_from_the_estimate_and_disables_exactly(kind):
    pipe = build(kind)
    reference = run(pipe, kind)
    taocache.enable(pipe, TaoCacheConfig(error_budget=1.0, start_fraction=0.2, max_consecutive=2, space="estimate"))
    run(pipe, kind)  # records the calibration, with both spaces' statistics
    cached = run(pipe, kind)
    record = taocache.stats(pipe)
    assert record.predicted > 0 and not record.notes
    assert np.isfinite(cached).all() and psnr(cached[0], reference[0]) > 20
    assert np.array_equal(run(pipe, kind), cached)
    taocache.disable(pipe)
    assert np.array_equal(run(pipe, kind), reference)


def test_estimate_space_falls_back_to_outputs_with_a_note_where_outputs_carry_variances():
    pipe = build("latte")  # Latte's output has twice the sample's channels (learned variances)
    taocache.enable(pipe, TaoCacheConfig(error_budget=1.0, start_fraction=0.2, max_consecutive=2, space="estimate"))
    run(pipe, "latte")
    run(pipe, "latte")
    record = taocache.stats(pipe)
    assert record.predicted > 0
    assert any("space='estimate'" in note for note in record.notes)
    taocache.disable(pipe)
