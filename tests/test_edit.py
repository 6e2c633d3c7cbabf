"""Non-rigid editing, stage by stage, on tiny random Stable Diffusion pipelines built in code.

Random weights say nothing about edit quality; these tests check the mechanics each stage promises (exact
inversion where the maths says so, optimisation that lowers its own objective, the prompt switch at step S,
the cache and input handling).
"""

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from edit_settings import SOURCE, TARGET

from taocache.edit import EditConfig, NonRigidEditor
from taocache.edit import editor as editor_module
from taocache.edit.acceleration import sampling_cache
from taocache.edit.inputs import check_prompt, fit_to_model, load_image
from taocache.edit.inversion import Inversion, ddim_pivots, invert
from taocache.edit.latents import encode_image, encode_text, unet_noise
from taocache.edit.null_text import optimize_null_embeddings
from taocache.edit.outputs import check_writable
from taocache.edit.sampling import blend, inject_and_sample
from taocache.edit.schedulers import editing_schedulers
from taocache.edit.text_optimization import optimize_text_embedding
from taocache.testing import tiny_sd_pipeline
from taocache.world import Scene, render

torch.set_num_threads(1)

FAST = {"num_steps": 6, "steps_source": 2, "text_steps": 3, "null_inner_steps": 3}


@pytest.fixture(scope="module")
def image():
    return render(Scene("circle", "red", "small", "dark", position="left"), seed=0)


@pytest.fixture(scope="module")
def pipe():
    return tiny_sd_pipeline()


def damped_pipeline(prediction_type="epsilon", factor=0.1):
    """A tiny pipeline whose denoiser output is scaled down, so that its trajectories are smooth enough for
    inversion errors to be measurable rather than chaotic."""
    pipe = tiny_sd_pipeline(prediction_type=prediction_type)
    with torch.no_grad():
        pipe.unet.conv_out.weight.mul_(factor)
        pipe.unet.conv_out.bias.mul_(factor)
    return pipe


def sd_ddim_scheduler(prediction_type="epsilon"):
    """DDIM on Stable Diffusion's noise schedule."""
    return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
                         set_alpha_to_one=False, prediction_type=prediction_type)


# ------------------------------------------------------------------------------------------------ settings

def test_config_rejects_out_of_range_values_naming_the_field():
    for field, value in [("alpha", 1.5), ("alpha", -0.1), ("num_steps", 0), ("guidance_scale", 0.5),
                         ("inversion", "exact"), ("text_lr", 0.0), ("null_inner_steps", -1), ("seed", -3)]:
        with pytest.raises(ValueError, match=field):
            EditConfig(**{field: value})
    with pytest.raises(ValueError, match="steps_source"):
        EditConfig(num_steps=10, steps_source=11)
    with pytest.raises(ValueError, match="unknown edit setting"):
        EditConfig().with_values(strength=0.5)
    assert EditConfig().with_values(alpha=0.2, steps_source=None).alpha == 0.2


# ------------------------------------------------------------------------------------------------ DDIM maths

@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_inverse_step_undoes_the_sampler_step_when_the_noise_is_constant(prediction_type):
    """The DDIM inversion assumption: with a model whose noise prediction does not change, inversion is exact
    for both prediction types (v must be read at the level the model was asked about)."""
    sampler, inverter = editing_schedulers(SimpleNamespace(scheduler=sd_ddim_scheduler(prediction_type)), 10)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def model(x, t):  # a model that always predicts ``noise``, in its own parametrisation
        a = sampler.alphas_cumprod[int(t)]
        if prediction_type == "epsilon":
            return noise
        clean = (x - (1 - a).sqrt() * noise) / a.sqrt()
        return a.sqrt() * noise - (1 - a).sqrt() * clean

    for t in sampler.timesteps[[0, 4, 9]]:
        x_t = torch.randn(1, 4, 8, 8, dtype=torch.float64)
        x_lower = sampler.step(model(x_t, t), t, x_t).prev_sample
        back = inverter.step(model(x_lower, t), t, x_lower)
        assert torch.allclose(back, x_t, atol=1e-6), (prediction_type, int(t))


def test_unsupported_schedulers_are_refused():
    with pytest.raises(ValueError, match="prediction_type"):
        editing_schedulers(SimpleNamespace(scheduler=DDIMScheduler(prediction_type="sample")), 10)
    with pytest.raises(ValueError, match="exceeds"):
        editing_schedulers(SimpleNamespace(scheduler=DDIMScheduler()), 2000)


# ------------------------------------------------------------------------------------------------ stages

def test_text_optimisation_lowers_the_denoising_loss(pipe, image):
    latent = encode_image(pipe, image)
    target = encode_text(pipe, TARGET)
    optimised = optimize_text_embedding(pipe, latent, target, steps=15, lr=5e-2, seed=0, progress=False)
    assert all(not p.requires_grad or p.grad is None for p in pipe.unet.parameters())

    def loss(embedding):  # the same noise and timesteps for both embeddings
        generator, alphas, total = torch.Generator().manual_seed(123), pipe.scheduler.alphas_cumprod, 0.0
        for t in (100, 300, 500, 700, 900):
            noise = torch.randn(latent.shape, generator=generator)
            noisy = alphas[t].sqrt() * latent + (1 - alphas[t]).sqrt() * noise
            with torch.no_grad():
                total += torch.mean((unet_noise(pipe, noisy, t, embedding) - noise) ** 2).item()
        return total

    assert loss(optimised) < loss(target)


def test_text_optimisation_runs_in_float32_on_a_float16_pipeline(image):
    pipe = tiny_sd_pipeline().to(torch.float16)
    target = encode_text(pipe, TARGET)
    optimised = optimize_text_embedding(pipe, encode_image(pipe, image), target, steps=2, lr=1e-2, progress=False)
    assert target.dtype == optimised.dtype == torch.float32 and torch.isfinite(optimised).all()
    assert not torch.equal(optimised, target)


def test_zero_text_steps_keep_the_target_embedding(pipe, image):
    target = encode_text(pipe, TARGET)
    assert torch.equal(optimize_text_embedding(pipe, encode_image(pipe, image), target, 0, progress=False), target)


def test_inversion_is_exact_for_a_model_with_constant_noise(image):
    pipe = tiny_sd_pipeline()
    with torch.no_grad():
        pipe.unet.conv_out.weight.zero_()
    sampler, inverter = editing_schedulers(pipe, 8)
    latent = encode_image(pipe, image)
    source, empty = encode_text(pipe, SOURCE), encode_text(pipe, "")
    for method in ("negative-prompt", "ddim"):
        inversion = invert(pipe, sampler, inverter, latent, source, empty, method, 7.5, progress=False)
        back = inject_and_sample(pipe, sampler, inversion, source, source, 8, 7.5)
        assert torch.allclose(back, latent, atol=1e-5), method


class TextControlledDenoiser(torch.nn.Module):
    """A stand-in denoiser whose output the text embedding fully controls: ``0.3 * x + embedding``, so that a
    null embedding exists for every wanted step and null-text inversion can be held to retracing the path."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.3))

    dtype = property(lambda self: self.scale.dtype)
    device = property(lambda self: self.scale.device)

    def forward(self, sample, timestep, encoder_hidden_states, return_dict=False):
        return (self.scale * sample + encoder_hidden_states.reshape(sample.shape),)


def text_controlled_setup(prediction_type="epsilon"):
    """A pipeline around :class:`TextControlledDenoiser`, an input latent and a source embedding (seeded)."""
    pipe = SimpleNamespace(unet=TextControlledDenoiser(), scheduler=sd_ddim_scheduler(prediction_type))
    generator = torch.Generator().manual_seed(0)
    return pipe, torch.randn(1, 4, 4, 4, generator=generator), torch.randn(1, 4, 16, generator=generator)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_null_text_inversion_retraces_the_inversion_at_full_guidance(prediction_type):
    pipe, latent, source = text_controlled_setup(prediction_type)
    sampler, inverter = editing_schedulers(pipe, 5)
    errors = {}
    for method in ("ddim", "null-text"):
        inversion = invert(pipe, sampler, inverter, latent, source, torch.zeros(1, 4, 16), method, 7.5,
                           inner_steps=100, lr=0.1, progress=False)
        back = inject_and_sample(pipe, sampler, inversion, source, source, 5, 7.5)
        errors[method] = torch.mean((back - latent) ** 2).item()
    assert errors["null-text"] < 0.01 * errors["ddim"], errors


def test_null_text_inversion_keeps_one_embedding_per_step():
    """Each step's embedding is the one optimised for that step (later steps must not overwrite it)."""
    pipe, latent, source = text_controlled_setup()
    start = torch.zeros(1, 4, 16)
    sampler, inverter = editing_schedulers(pipe, 4)
    pivots = ddim_pivots(pipe, inverter, latent, source)
    found = optimize_null_embeddings(pipe, sampler, pivots, source, start, 7.5, inner_steps=20, lr=0.1,
                                     progress=False)

    def first_step_loss(null):
        t, x = sampler.timesteps[0], pivots[-1]
        uncond, cond = unet_noise(pipe, x, t, null[None]), unet_noise(pipe, x, t, source)
        previous = sampler.step(uncond + 7.5 * (cond - uncond), t, x).prev_sample
        return torch.mean((previous - pivots[-2]) ** 2).item()

    assert not torch.equal(found[0], found[-1])
    assert first_step_loss(found[0]) < 0.5 * first_step_loss(start[0])
    assert first_step_loss(found[0]) < first_step_loss(found[-1])


def test_null_text_inversion_improves_reconstruction_on_a_unet(image):
    pipe = damped_pipeline()
    sampler, inverter = editing_schedulers(pipe, 6)
    latent = encode_image(pipe, image)
    source, empty = encode_text(pipe, SOURCE), encode_text(pipe, "")
    errors = {}
    for method in ("ddim", "null-text"):
        # a random text encoder gives the null embedding little hold on the output: a larger step than published
        inversion = invert(pipe, sampler, inverter, latent, source, empty, method, 7.5, lr=0.1, progress=False)
        assert inversion.null_embeddings.shape == (6, *empty.shape[1:])
        back = inject_and_sample(pipe, sampler, inversion, source, source, 6, 7.5)
        errors[method] = torch.mean((back - latent) ** 2).item()
    assert errors["null-text"] < 0.5 * errors["ddim"], errors


def test_negative_prompt_inversion_uses_the_source_as_null_embedding(pipe, image):
    sampler, inverter = editing_schedulers(pipe, 4)
    source, empty = encode_text(pipe, SOURCE), encode_text(pipe, "")
    inversion = invert(pipe, sampler, inverter, encode_image(pipe, image), source, empty, "negative-prompt", 7.5)
    assert all(torch.equal(inversion.null_at(i), source) for i in range(4))
    pivots = ddim_pivots(pipe, inverter, encode_image(pipe, image), source)
    assert len(pivots) == 5 and torch.equal(pivots[-1], inversion.noise)


def test_injection_switches_prompt_after_s_steps_through_pipe_unet(pipe, image):
    steps, switch = 5, 2
    sampler, _ = editing_schedulers(pipe, steps)
    source, target = encode_text(pipe, SOURCE), encode_text(pipe, TARGET)
    nulls = torch.randn(steps, *source.shape[1:], generator=torch.Generator().manual_seed(1))
    inversion = Inversion("test", torch.randn(1, 4, 16, 16), nulls)
    edit = blend(target, torch.zeros_like(target), 0.25)
    seen = []
    handle = pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["encoder_hidden_states"].clone()), with_kwargs=True
    )
    try:
        inject_and_sample(pipe, sampler, inversion, source, edit, switch, 7.5)
    finally:
        handle.remove()
    assert len(seen) == steps
    for i, batch in enumerate(seen):
        assert torch.allclose(batch[0], nulls[i]), f"step {i}: unconditional branch is not its null embedding"
        expected = source[0] if i < switch else 0.25 * target[0]
        assert torch.allclose(batch[1], expected), f"step {i}: wrong conditional embedding"


def test_s_equal_to_the_step_count_ignores_the_edit(pipe, image):
    sampler, inverter = editing_schedulers(pipe, 4)
    source, empty = encode_text(pipe, SOURCE), encode_text(pipe, "")
    inversion = invert(pipe, sampler, inverter, encode_image(pipe, image), source, empty, "ddim", 7.5)
    a = inject_and_sample(pipe, sampler, inversion, source, encode_text(pipe, TARGET), 4, 7.5)
    b = inject_and_sample(pipe, sampler, inversion, source, torch.randn_like(source), 4, 7.5)
    c = inject_and_sample(pipe, sampler, inversion, source, encode_text(pipe, TARGET), 1, 7.5)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError, match="steps_source"):
        inject_and_sample(pipe, sampler, inversion, source, source, 5, 7.5)


# ------------------------------------------------------------------------------------------------ cache hook

def test_sampling_cache_enables_and_disables_taocache_around_one_run(pipe, image, monkeypatch):
    from taocache import api

    original_scheduler = pipe.scheduler
    calls = []

    def enable(p, c):  # what a hook sees while enabled: this run's schedule and a guided batch
        calls.append(("enable", p, c, list(p.scheduler.timesteps), p.do_classifier_free_guidance))

    monkeypatch.setattr(api, "enable", enable)
    monkeypatch.setattr(api, "disable", lambda p: calls.append(("disable", p)))
    monkeypatch.setattr(api, "stats", lambda p: {"computed": 3})
    editor = NonRigidEditor(pipe, EditConfig(**FAST), cache_dir=None, progress=False)
    prepared = editor.prepare(image, SOURCE, TARGET)
    calls.clear()
    edit = editor.edit(prepared, cache_config="cfg")
    assert [c[0] for c in calls] == ["enable", "disable"] and calls[0][1] is pipe and calls[0][2] == "cfg"
    assert len(calls[0][3]) == FAST["num_steps"] and calls[0][4] is True
    assert edit.cache == {"stats": {"computed": 3}}
    assert pipe.scheduler is original_scheduler and not hasattr(pipe, "_guidance_scale")


def test_sampling_cache_without_a_config_changes_nothing(pipe):
    with sampling_cache(pipe, None) as report:
        assert report == {}
    assert not hasattr(pipe, "_guidance_scale")


# ------------------------------------------------------------------------------------------------ artefacts

def test_artefacts_are_cached_and_a_second_run_does_no_optimisation(pipe, image, tmp_path, monkeypatch):
    config = EditConfig(**FAST)
    first = NonRigidEditor(pipe, config, cache_dir=tmp_path, progress=False)
    prepared = first.prepare(image, SOURCE, TARGET)
    assert prepared.from_cache == {"text": False, "inversion": False}
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == ["inversion", "text"]
    assert not list(tmp_path.glob(".*tmp"))
    slow = prepared.seconds["text_optimisation"] + prepared.seconds["inversion"]

    def forbidden(*args, **kwargs):
        raise AssertionError("optimisation ran although its artefact was cached")

    monkeypatch.setattr(editor_module, "optimize_text_embedding", forbidden)
    monkeypatch.setattr(editor_module, "invert", forbidden)
    second = NonRigidEditor(pipe, config, cache_dir=tmp_path, progress=False)
    again = second.prepare(image.copy(), SOURCE, TARGET)
    assert again.from_cache == {"text": True, "inversion": True}
    assert again.seconds["text_optimisation"] + again.seconds["inversion"] < slow
    assert torch.equal(again.optimised_embedding, prepared.optimised_embedding)
    assert np.array_equal(second.edit(again).image, first.edit(prepared).image)

    # a damaged entry is recomputed, not fatal
    damaged = next(tmp_path.glob("text-*"))
    damaged.write_bytes(b"garbage")
    monkeypatch.setattr(editor_module, "optimize_text_embedding", lambda *a, **k: prepared.optimised_embedding)
    assert second.prepare(image, SOURCE, TARGET).from_cache == {"text": False, "inversion": True}
    from safetensors.torch import save_file  # readable, but not what the stage stored: also recomputed

    save_file({"other": torch.zeros(1)}, damaged)
    assert second.prepare(image, SOURCE, TARGET).from_cache["text"] is False
    save_file({"optimised_embedding": torch.full(prepared.optimised_embedding.shape, float("nan"))}, damaged)
    assert second.prepare(image, SOURCE, TARGET).from_cache["text"] is False
    monkeypatch.setattr(editor_module, "optimize_text_embedding", forbidden)

    # a cache folder that cannot be written only costs the caching
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setattr(editor_module, "optimize_text_embedding", lambda *a, **k: prepared.optimised_embedding)
    monkeypatch.setattr(editor_module, "invert", lambda *a, **k: prepared.inversion)
    unwritable = NonRigidEditor(pipe, config, cache_dir=blocked / "cache", progress=False)
    assert unwritable.prepare(image, SOURCE, TARGET).from_cache == {"text": False, "inversion": False}
    monkeypatch.setattr(editor_module, "optimize_text_embedding", forbidden)
    monkeypatch.setattr(editor_module, "invert", forbidden)

    # a sweep over alpha and S reuses the same artefacts; another image, prompt or model does not
    assert len(second.sweep(again, [0.0, 1.0], [1, 2])) == 4
    with pytest.raises(AssertionError, match="cached"):
        second.prepare(image, SOURCE, "a small red circle at the top on a dark background")
    with pytest.raises(AssertionError, match="cached"):
        NonRigidEditor(tiny_sd_pipeline(seed=1), config, cache_dir=tmp_path, progress=False).prepare(
            image, SOURCE, TARGET)


# ------------------------------------------------------------------------------------------------ inputs

def test_images_of_any_mode_and_size_are_adapted(tmp_path, caplog):
    from PIL import Image

    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    rgba.save(tmp_path / "clear.png")
    assert np.asarray(load_image(tmp_path / "clear.png")).min() == 255  # transparent -> white
    Image.new("L", (30, 50), 128).save(tmp_path / "grey.jpg")
    grey = load_image(tmp_path / "grey.jpg")
    assert grey.mode == "RGB"
    Image.new("I;16", (20, 20), 300).save(tmp_path / "deep.png")
    assert load_image(tmp_path / "deep.png").mode == "RGB"
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "white16.png")
    assert np.asarray(load_image(tmp_path / "white16.png")).min() == 255  # scaled by the depth, not stretched
    Image.fromarray(np.full((8, 8), 4000, np.uint16)).save(tmp_path / "dark16.png")
    assert np.asarray(load_image(tmp_path / "dark16.png")).max() == round(4000 / 65535 * 255)
    tall = Image.new("RGB", (20, 40), (0, 0, 0))
    exif = tall.getexif()
    exif[0x0112] = 6  # stored turned: shown a quarter turn round, so 40 wide and 20 high
    tall.save(tmp_path / "turned.jpg", exif=exif)
    assert load_image(tmp_path / "turned.jpg").size == (40, 20)
    wide = Image.new("RGB", (128, 64), (0, 0, 0))
    wide.paste((255, 255, 255), (32, 0, 96, 64))  # a white centre square between black bands
    with caplog.at_level(logging.INFO, logger="taocache.edit.inputs"):
        fitted = fit_to_model(wide, 64, 64, name="wide")
    assert fitted.shape == (64, 64, 3) and fitted.dtype == np.float32 and fitted.min() == 1.0
    assert "centre-cropped" in caplog.text


def test_bad_inputs_give_clear_errors(tmp_path, pipe, image):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read"):
        load_image(tmp_path / "text.png")
    with pytest.raises(ValueError, match="not a file"):
        load_image(tmp_path)
    from PIL import Image

    Image.new("L", (20000, 10000)).save(tmp_path / "huge.png")
    with pytest.raises(ValueError, match="downscale"):
        load_image(tmp_path / "huge.png")
    (tmp_path / "a-file").write_text("")
    for bad, message in ((tmp_path / "x.psd", "cannot write"), (tmp_path / "x.xbm", "cannot write"),
                         (tmp_path / "a-file" / "x.png", "not a folder")):
        with pytest.raises(ValueError, match=message):
            check_writable(bad, overwrite=False)
    for blank in ("", "   ", None):
        with pytest.raises(ValueError, match="prompt is empty"):
            check_prompt("target", blank)
    editor = NonRigidEditor(pipe, EditConfig(**FAST), cache_dir=None, progress=False)
    with pytest.raises(ValueError, match="source prompt is empty"):
        editor.prepare(image, "", TARGET)
    with pytest.raises(ValueError, match="multiple"):
        editor.prepare(image[:62, :62], SOURCE, TARGET)
    with pytest.raises(ValueError, match="alpha"):
        editor.edit(editor.prepare(image, SOURCE, TARGET), alpha=2.0)
