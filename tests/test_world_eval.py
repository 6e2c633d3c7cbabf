import json

import numpy as np

from taocache.cli import main
from taocache.recipes import Recipe
from taocache.testing import tiny_sd_pipeline, tiny_wan_pipeline
from taocache.world import scenes_of
from taocache.world.evaluate import autoencoder_psnr, caption_agreement, evaluate_model, scored_scenes
from taocache.world.scenes import render


def test_caption_agreement_counts_per_attribute():
    held = scenes_of("test", video=False)
    scenes = held[:4]
    pixels = np.stack([render(s, 0) for s in scenes])
    pixels[0] = render(held[10], 0)  # a wrong picture for the first caption
    result = caption_agreement(scenes, pixels)
    assert result["rates"]["background"] >= 0.75
    assert len(result["samples"]) == 4 and all(result["samples"][1].values())
    assert min(result["rates"].values()) < 1.0
    low, high = result["intervals"]["colour"]  # 3 of 4: its interval holds the rate and is wide
    assert result["rates"]["colour"] == 0.75 and low < 0.75 < high and high - low > 0.4
    assert result["rates"]["all"] == 0.75  # every attribute right at once
    for name, chance in result["chance"].items():  # the majority-class rate of each asked attribute
        values = [getattr(s, name) for s in scenes]
        assert chance == max(values.count(v) for v in values) / 4
    wrong, asked = result["samples"][0]["read"], held[0]  # what was read is kept, to see what a miss drew
    assert (wrong["colour"], wrong["shape"], wrong["position"]) == (held[10].colour, held[10].shape,
                                                                   held[10].position)
    assert (wrong["colour"], wrong["shape"], wrong["position"]) != (asked.colour, asked.shape, asked.position)


def test_evaluate_model_on_tiny_random_pipelines():
    video = Recipe(name="t", model="-", pipeline="WanPipeline", kind="video",
                   call=dict(height=32, width=32, num_frames=5, num_inference_steps=2, max_sequence_length=16))
    result = evaluate_model(tiny_wan_pipeline(), video, max_samples=2)
    assert set(result["rates"]) == {"colour", "shape", "size", "direction", "background", "all"}
    assert result["settings"]["split"] == "test" and result["settings"]["samples"] == 2
    assert np.isfinite(result["autoencoder_psnr_db"])
    image = Recipe(name="i", model="-", pipeline="StableDiffusionPipeline", kind="image",
                   call=dict(height=64, width=64, num_inference_steps=2))
    pipe = tiny_sd_pipeline()
    assert set(evaluate_model(pipe, image, max_samples=2)["rates"]) >= {"position", "size"}
    assert autoencoder_psnr(pipe.vae, scenes_of("test", False)[:1]) < 30  # an untrained one reconstructs badly


def test_world_eval_cli_refuses_to_overwrite_and_checks_input(tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("{}")
    assert main(["world-eval", "--model", "latte-1", "--seeds", "0"]) == 2
    assert "--seeds=0" in capsys.readouterr().err
    for bad, message in ((["--steps", "0"], "--steps=0"), (["--device", "bogus"], "not a device")):
        assert main(["world-eval", "--model", "latte-1", *bad]) == 2
        assert message in capsys.readouterr().err
    folder = tmp_path / "wan"
    tiny_wan_pipeline().save_pretrained(folder)
    assert main(["world-eval", "--model", str(folder), "--max-samples", "1", "--output", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and json.loads(out.read_text()) == {}


def test_each_split_scores_its_own_captions_with_several_seeds():
    image = Recipe(name="i", model="-", pipeline="StableDiffusionPipeline", kind="image",
                   call={"height": 64, "width": 64, "num_inference_steps": 1})
    scenes, seeds = scored_scenes(False, "test", seeds_per_caption=2)
    assert len(scenes) == 2 * len(scenes_of("test", False)) and sorted(set(seeds)) == [0, 1]
    assert scenes[:48] == scenes[48:] == scenes_of("test", False)
    pipe = tiny_sd_pipeline()
    result = evaluate_model(pipe, image, "tune", max_samples=3)
    captions = [s["caption"] for s in result["samples"]]
    assert result["settings"]["split"] == "tune" and len(captions) == 3
    assert set(captions) <= {s.caption for s in scenes_of("tune", False)}
