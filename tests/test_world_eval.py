import json

import numpy as np

from taocache.builders import tiny_sd_pipeline, tiny_wan_pipeline
from taocache.cli import main
from taocache.recipes import Recipe
from taocache.world import split
from taocache.world.evaluate import autoencoder_psnr, caption_agreement, evaluate_model
from taocache.world.scenes import render


def test_caption_agreement_counts_per_attribute():
    _, held = split(video=False)
    scenes = held[:4]
    pixels = np.stack([render(s, 0) for s in scenes])
    pixels[0] = render(held[10], 0)  # a wrong picture for the first caption
    result = caption_agreement(scenes, pixels)
    assert result["rates"]["background"] >= 0.75
    assert len(result["samples"]) == 4 and all(result["samples"][1].values())
    assert min(result["rates"].values()) < 1.0
    low, high = result["intervals"]["colour"]  # 3 of 4: its interval holds the rate and is wide
    assert result["rates"]["colour"] == 0.75 and low < 0.75 < high and high - low > 0.4
    wrong, asked = result["samples"][0]["read"], held[0]  # what was read is kept, to see what a miss drew
    assert (wrong["colour"], wrong["shape"], wrong["position"]) == (held[10].colour, held[10].shape,
                                                                   held[10].position)
    assert (wrong["colour"], wrong["shape"], wrong["position"]) != (asked.colour, asked.shape, asked.position)


def test_evaluate_model_on_tiny_random_pipelines():
    video = Recipe(name="t", model="-", pipeline="WanPipeline", kind="video",
                   call=dict(height=32, width=32, num_frames=5, num_inference_steps=2, max_sequence_length=16))
    result = evaluate_model(tiny_wan_pipeline(), video, num_captions=2)
    assert set(result["rates"]) == {"colour", "shape", "size", "direction", "background"}
    assert np.isfinite(result["autoencoder_psnr_db"])
    image = Recipe(name="i", model="-", pipeline="StableDiffusionPipeline", kind="image",
                   call=dict(height=64, width=64, num_inference_steps=2))
    pipe = tiny_sd_pipeline()
    assert set(evaluate_model(pipe, image, num_captions=2)["rates"]) >= {"position", "size"}
    assert autoencoder_psnr(pipe.vae, split(False)[1][:1]) < 30  # an untrained autoencoder reconstructs badly


def test_world_eval_cli_refuses_to_overwrite_and_checks_input(tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("{}")
    assert main(["world-eval", "--model", "latte-1", "--captions", "0"]) == 2
    assert "--captions=0" in capsys.readouterr().err
    for bad, message in ((["--steps", "0"], "--steps=0"), (["--device", "bogus"], "not a device")):
        assert main(["world-eval", "--model", "latte-1", *bad]) == 2
        assert message in capsys.readouterr().err
    folder = tmp_path / "wan"
    tiny_wan_pipeline().save_pretrained(folder)
    assert main(["world-eval", "--model", str(folder), "--captions", "1", "--output", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and json.loads(out.read_text()) == {}


def test_the_train_split_scores_training_captions_only():
    image = Recipe(name="i", model="-", pipeline="StableDiffusionPipeline", kind="image",
                   call={"height": 64, "width": 64, "num_inference_steps": 1})
    pipe = tiny_sd_pipeline()
    train, held = split(video=False)
    result = evaluate_model(pipe, image, num_captions=3, split_name="train")
    captions = [s["caption"] for s in result["samples"]]
    assert result["settings"]["split"] == "train" and len(captions) == 3
    assert set(captions) <= {s.caption for s in train} and not set(captions) & {s.caption for s in held}
    assert captions == [s["caption"] for s in evaluate_model(pipe, image, 3, "train")["samples"]]  # a fixed draw
    assert evaluate_model(pipe, image, 1)["settings"]["split"] == "held-out"
