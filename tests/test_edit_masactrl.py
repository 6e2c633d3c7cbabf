"""MasaCtrl baseline on tiny random-weight pipelines: the attention it computes, where and when it applies it,
what it leaves alone, and that the pipeline comes back as it was."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from taocache.edit import masactrl as M
from taocache.edit.baselines import ddim_target_edit
from taocache.edit.inversion import ddim_pivots
from taocache.edit.latents import encode_image, encode_text
from taocache.edit.schedulers import editing_schedulers
from taocache.testing import tiny_sd_pipeline

STEPS = 5
SOURCE = "a small red circle on the left on a dark background"
TARGET = "a large blue square on the right on a light background"
TINY_T2I_UNET = Path(__file__).resolve().parents[1] / "samples/models/tiny-t2i/unet/config.json"


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd_pipeline()


@pytest.fixture(scope="module")
def image():
    """A blocky random image: structure at the latent's scale, so the VAE and UNet see more than noise."""
    coarse = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    return coarse.repeat(8, axis=0).repeat(8, axis=1)


def plain_call(pipe) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    return pipe(
        SOURCE, num_inference_steps=3, guidance_scale=3.0, generator=generator, output_type="np"
    ).images


def controlled_processors(pipe) -> list[str]:
    return [k for k, p in pipe.unet.attn_processors.items() if isinstance(p, M.MutualSelfAttentionProcessor)]


def sd15_shaped_unet():
    """A UNet with Stable Diffusion 1.x's block layout (16 self-attention layers) and tiny channels."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        layers_per_block=2,
        cross_attention_dim=8,
        attention_head_dim=4,
        norm_num_groups=4,
    )


# ---------------------------------------------------------------------------------------------- layers


def test_layers_are_counted_in_the_order_the_forward_pass_runs_them():
    unet = tiny_sd_pipeline(unet_channels=(16, 32, 32)).unet  # tiny-t2i's block layout
    modules = dict(unet.named_modules())
    ran = []
    hooks = [
        modules[name].register_forward_pre_hook(lambda module, args, name=name: ran.append(name))
        for name in modules
        if name.endswith("attn1")
    ]
    try:
        with torch.no_grad():
            unet(torch.randn(1, 4, 16, 16), 10, encoder_hidden_states=torch.randn(1, 16, 32))
    finally:
        for hook in hooks:
            hook.remove()
    layers = M.self_attention_layers(unet)
    assert layers == ran
    assert [name.split(".")[0] for name in layers] == ["down_blocks"] * 2 + ["mid_block"] + ["up_blocks"] * 4


def test_the_papers_start_layer_is_the_decoders_two_finest_resolutions_on_an_sd_shaped_unet():
    layers = M.self_attention_layers(sd15_shaped_unet())
    assert len(layers) == 16 and M.first_controlled_layer(16, M.PAPER_START_LAYER) == 10
    controlled = layers[10:]
    assert {
        name.split(".")[:2] == ["up_blocks", "2"] or name.split(".")[:2] == ["up_blocks", "3"]
        for name in controlled
    } == {True}
    assert len(controlled) == 6 and not any(name.startswith("up_blocks.1.") for name in controlled)


@pytest.mark.skipif(not TINY_T2I_UNET.is_file(), reason="the embedded tiny-t2i model is not there")
def test_the_default_start_layer_on_tiny_t2i_controls_its_finest_decoder_layers():
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(TINY_T2I_UNET.parent))
    layers = M.self_attention_layers(unet)
    controlled = layers[M.first_controlled_layer(len(layers), M.PAPER_START_LAYER) :]
    assert len(layers) == 7
    assert controlled == [f"up_blocks.1.attentions.{i}.transformer_blocks.0.attn1" for i in (0, 1)]


@pytest.mark.parametrize(
    "num_layers, fraction, first",
    [(16, 10 / 16, 10), (7, 10 / 16, 5), (7, 5 / 7, 5), (7, 3 / 7, 3), (4, 0.0, 0), (4, 1.0, 4), (4, 0.3, 2)],
)
def test_first_controlled_layer(num_layers, fraction, first):
    assert M.first_controlled_layer(num_layers, fraction) == first


# ------------------------------------------------------------------------------------------- processor


def reference_attention(attn, queries_from: torch.Tensor, keys_from: torch.Tensor) -> torch.Tensor:
    """Multi-head softmax attention written out: queries of one input, keys and values of another."""
    q, k, v = attn.to_q(queries_from), attn.to_k(keys_from), attn.to_v(keys_from)
    b, n, inner = q.shape
    h = attn.heads
    q, k, v = (x.view(b, -1, h, inner // h).transpose(1, 2) for x in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(inner // h), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, inner)
    return attn.to_out[0](out)


def test_under_control_each_target_row_attends_to_its_own_guidance_halfs_source(pipe):
    name = M.self_attention_layers(pipe.unet)[-1]
    attn = dict(pipe.unet.named_modules())[name]
    control = M._Control(start_step=1)
    processor = M.MutualSelfAttentionProcessor(attn.processor, control, name)
    hidden = torch.randn(4, 64, attn.to_q.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # rows: source uncond, target uncond, source cond, target cond
        plain = attn.processor(attn, hidden)
        control.step = 0
        before_start = processor(attn, hidden)
        control.step = 1
        mutual = processor(attn, hidden)
        expected = reference_attention(attn, hidden, hidden[[0, 0, 2, 2]])
    assert torch.equal(before_start, plain)
    torch.testing.assert_close(mutual, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mutual[[0, 2]], plain[[0, 2]], atol=1e-6, rtol=0)  # sources untouched
    assert (mutual[[1, 3]] - plain[[1, 3]]).abs().max() > 1e-2  # targets changed
    with pytest.raises(RuntimeError, match="pairs"), torch.no_grad():
        processor(attn, hidden[:3])


def test_plain_self_attention_is_required(pipe, monkeypatch):
    name = M.self_attention_layers(pipe.unet)[-1]
    monkeypatch.setattr(dict(pipe.unet.named_modules())[name], "spatial_norm", torch.nn.Identity())
    before = pipe.unet.attn_processors
    with pytest.raises(ValueError, match=f"{name}.*spatial_norm"), M.mutual_self_attention(pipe.unet, 0, 0.0):
        pass
    assert pipe.unet.attn_processors == before


# ------------------------------------------------------------------------------------ state and errors


def test_processors_are_restored_and_the_pipeline_is_unchanged(pipe, image):
    before, processors = plain_call(pipe), pipe.unet.attn_processors
    M.masactrl_edit(pipe, image, SOURCE, TARGET, STEPS, start_step=1, start_layer=0.5)
    after = pipe.unet.attn_processors
    assert after.keys() == processors.keys() and all(after[k] is processors[k] for k in processors)
    np.testing.assert_array_equal(plain_call(pipe), before)


def test_processors_are_restored_when_sampling_fails(pipe, image, monkeypatch):
    processors, seen = pipe.unet.attn_processors, []
    real = M.unet_noise

    def failing(p, latents, t, embeddings):
        seen.append(controlled_processors(p))
        if len(seen) == 2:
            raise RuntimeError("denoiser failed")
        return real(p, latents, t, embeddings)

    monkeypatch.setattr(M, "unet_noise", failing)
    with pytest.raises(RuntimeError, match="denoiser failed"):
        M.masactrl_edit(pipe, image, SOURCE, TARGET, STEPS, start_step=0, start_layer=0.5)
    assert len(seen[0]) == 2  # installed while sampling (the last 2 of 4 layers)...
    after = pipe.unet.attn_processors  # ...and gone after the failure
    assert not controlled_processors(pipe) and all(after[k] is processors[k] for k in processors)


BAD_ARGUMENTS = [
    ({"num_steps": 0}, "num_steps=0 must be an integer >= 1"),
    ({"num_steps": 2.5}, "num_steps"),
    ({"num_steps": True}, "num_steps"),
    ({"num_steps": 5000}, "num_steps=5000 exceeds"),
    ({"guidance_scale": 0.5}, r"guidance_scale=0.5 must be a finite number >= 1"),
    ({"guidance_scale": float("nan")}, "guidance_scale"),
    ({"source_guidance_scale": 0.0}, "source_guidance_scale"),
    ({"start_step": -1}, r"start_step=-1 must be an integer in 0-5"),
    ({"start_step": STEPS + 1}, "start_step=6"),
    ({"start_step": 1.0}, "start_step"),
    ({"start_layer": -0.1}, r"start_layer=-0.1 must be a fraction .* in \[0, 1\]"),
    ({"start_layer": 10}, "start_layer=10"),
    ({"start_layer": "0.5"}, "start_layer"),
    ({"source": None}, "source=None must be a string"),
    ({"target": " "}, "target=' ' must be a non-empty string"),
    ({"target": None}, "target"),
    ({"image": np.zeros((64, 64))}, r"\(H, W, 3\)"),
    ({"image": np.zeros((62, 62, 3))}, "62x62 must be a multiple of the VAE.s factor 4"),
    ({"image": np.full((64, 64, 3), 2.0)}, r"in \[0, 1\]"),
    ({"image": np.full((64, 64, 3), np.nan)}, r"in \[0, 1\]"),
]


@pytest.mark.parametrize("override, message", BAD_ARGUMENTS)
def test_bad_arguments_raise_naming_the_parameter_and_range(pipe, image, override, message):
    arguments = {"image": image, "source": SOURCE, "target": TARGET, "num_steps": STEPS} | override
    processors = pipe.unet.attn_processors
    with pytest.raises(ValueError, match=message):
        M.masactrl_edit(pipe, **arguments)
    assert pipe.unet.attn_processors == processors


def test_sampling_checks_its_control_settings_against_the_schedule(pipe, image):
    with pytest.raises(ValueError, match="start_step=6 must be an integer in 0-5"):
        sample(pipe, image, start_step=STEPS + 1, start_layer=0.5)
    with pytest.raises(ValueError, match="start_layer=2"):
        sample(pipe, image, start_step=0, start_layer=2)


# ------------------------------------------------------------------------------------- against baselines


@pytest.mark.parametrize("start_step, start_layer", [(STEPS, 0.0), (0, 1.0)])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_without_control_the_target_is_ddim_inversion_plus_target_prompt(
    image, start_step, start_layer, prediction_type
):
    pipe = tiny_sd_pipeline(prediction_type=prediction_type)
    edit = M.masactrl_edit(pipe, image, SOURCE, TARGET, STEPS, 7.5, start_step, start_layer)
    reference = ddim_target_edit(pipe, image, SOURCE, TARGET, STEPS, 7.5)
    np.testing.assert_allclose(edit, reference, atol=1e-4)


def test_the_source_branch_is_the_ddim_reconstruction_and_the_control_does_not_touch_it(pipe, image):
    reconstruction = ddim_target_edit(pipe, image, SOURCE, SOURCE, STEPS, guidance_scale=1.0)
    off, source_off = M.masactrl_edit(pipe, image, SOURCE, TARGET, STEPS, 7.5, STEPS, return_source=True)
    on, source_on = M.masactrl_edit(pipe, image, SOURCE, TARGET, STEPS, 7.5, 0, 0.0, return_source=True)
    np.testing.assert_allclose(source_off, reconstruction, atol=1e-4)
    np.testing.assert_allclose(source_on, source_off, atol=1e-6)
    assert np.abs(on - off).max() > 1e-2  # while the target does change


def test_with_the_source_prompt_as_target_the_edit_is_the_reconstruction(pipe, image):
    reconstruction = ddim_target_edit(pipe, image, SOURCE, SOURCE, STEPS, guidance_scale=1.0)
    edit = M.masactrl_edit(pipe, image, SOURCE, SOURCE, STEPS, 1.0, start_step=0, start_layer=0.0)
    np.testing.assert_allclose(edit, reconstruction, atol=1e-4)


def test_with_both_branches_guided_alike_the_same_prompt_gives_the_source_branch(pipe, image):
    """The reference code's batch (source guided like the target): identical branches stay identical."""
    edit, source = M.masactrl_edit(
        pipe, image, SOURCE, SOURCE, STEPS, 7.5, 0, 0.0, source_guidance_scale=7.5, return_source=True
    )
    np.testing.assert_allclose(edit, source, atol=1e-5)
    guided_ddim = ddim_target_edit(pipe, image, SOURCE, SOURCE, STEPS, 7.5)
    np.testing.assert_allclose(source, guided_ddim, atol=1e-4)


# --------------------------------------------------------------------------------------- when and where


def sample(pipe, image, start_step, start_layer, **kwargs):
    sampler, inverter = editing_schedulers(pipe, STEPS)
    source = encode_text(pipe, SOURCE)
    noise = ddim_pivots(pipe, inverter, encode_image(pipe, image), source)[-1]
    return M.masactrl_sample(
        pipe,
        sampler,
        noise,
        source,
        encode_text(pipe, TARGET),
        encode_text(pipe, ""),
        7.5,
        start_step,
        start_layer,
        **kwargs,
    )


def spy_on_control(monkeypatch, skip_calls=()):
    """Record (layer, real step) of every call under control; the real step is read from the timestep the
    denoiser was given, independently of the control's own bookkeeping. Calls in ``skip_calls`` return the
    previous output without running the denoiser, as a cache does."""
    state = {"step": None, "calls": 0, "last": None, "timesteps": None}
    active = []
    real_call, real_processor = M.unet_noise, M.MutualSelfAttentionProcessor.__call__

    def unet_noise(p, latents, t, embeddings):
        state["step"] = state["timesteps"].index(int(t))
        state["calls"] += 1
        if state["calls"] - 1 in skip_calls:
            return state["last"]
        state["last"] = real_call(p, latents, t, embeddings)
        return state["last"]

    def processor(self, attn, hidden_states, *args, **kwargs):
        if self.control.active:
            active.append((self.name, state["step"]))
        return real_processor(self, attn, hidden_states, *args, **kwargs)

    monkeypatch.setattr(M, "unet_noise", unet_noise)
    monkeypatch.setattr(M.MutualSelfAttentionProcessor, "__call__", processor)
    return state, active


def test_control_runs_from_the_start_step_in_the_layers_from_the_start_layer(pipe, image, monkeypatch):
    state, active = spy_on_control(monkeypatch)
    state["timesteps"] = editing_schedulers(pipe, STEPS)[0].timesteps.tolist()
    sample(pipe, image, start_step=2, start_layer=0.5)
    layers = M.self_attention_layers(pipe.unet)
    assert sorted(active) == sorted((name, step) for name in layers[2:] for step in range(2, STEPS))


def test_denoiser_calls_skipped_by_a_cache_do_not_shift_the_controlled_steps(pipe, image, monkeypatch):
    state, active = spy_on_control(monkeypatch, skip_calls={1, 3})
    state["timesteps"] = editing_schedulers(pipe, STEPS)[0].timesteps.tolist()
    sample(pipe, image, start_step=2, start_layer=0.5)
    assert sorted({step for _, step in active}) == [2, 4]  # steps 1 and 3 skipped; 2 and 4 still controlled


def test_runs_under_taocache_and_takes_it_off_again(pipe, image, tmp_path):
    import taocache
    from taocache.taocache.hook import TAOCACHE_HOOK

    scheduler, processors = pipe.scheduler, pipe.unet.attn_processors
    plain = M.masactrl_edit(pipe, image, SOURCE, TARGET, STEPS, start_step=1, start_layer=0.5)
    cached = M.masactrl_edit(
        pipe,
        image,
        SOURCE,
        TARGET,
        STEPS,
        start_step=1,
        start_layer=0.5,
        cache_config=taocache.TaoCacheConfig(calibration_dir=str(tmp_path)),
    )
    np.testing.assert_allclose(cached, plain, atol=1e-5)  # without a calibration nothing is predicted
    registry = getattr(pipe.unet, "_diffusers_hook", None)
    assert registry is None or registry.get_hook(TAOCACHE_HOOK) is None
    assert pipe.scheduler is scheduler and pipe.unet.attn_processors == processors
