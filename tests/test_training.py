"""Pieces of the embedded models' training scripts: caption encoding as the pipelines do it, stop and resume."""

import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "samples"))

import trainlib  # noqa: E402

CAPTION = "a small red circle on the left on a dark background"


def test_image_captions_are_encoded_as_stable_diffusion_encodes_them():
    from taocache.builders import tiny_sd_pipeline

    pipe = tiny_sd_pipeline()
    ours = trainlib.encode_captions(pipe.tokenizer, pipe.text_encoder, [CAPTION], 16, masked=False)
    theirs = pipe.encode_prompt(CAPTION, "cpu", 1, False)[0]
    torch.testing.assert_close(ours, theirs)


def test_video_captions_are_encoded_as_wan_encodes_them(wan):
    ours = trainlib.encode_captions(wan.tokenizer, wan.text_encoder, [CAPTION], 16, masked=True)
    theirs = wan.encode_prompt(CAPTION, do_classifier_free_guidance=False, max_sequence_length=16)[0]
    torch.testing.assert_close(ours, theirs)
    assert (ours[0, 12:] == 0).all()  # padding zeroed, as the pipeline does


def test_a_stop_request_saves_a_checkpoint_and_the_rerun_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(trainlib.STOP, "requested", False)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 2), torch.randn(8, 1)

    def loss_fn(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return torch.nn.functional.mse_loss(model(x), y)

    assert trainlib.train_loop("t", {"m": model}, opt, loss_fn, 10, tmp_path, every=100) == 4
    assert (tmp_path / "t.pt").is_file()
    monkeypatch.setattr(trainlib.STOP, "requested", False)
    resumed = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(resumed.parameters(), lr=0.1)
    assert trainlib.train_loop("t", {"m": resumed}, opt, lambda s: resumed(x).pow(2).mean(), 10, tmp_path) == 10
    assert torch.load(tmp_path / "t.pt", weights_only=False)["step"] == 10


def test_image_script_builds_a_v_prediction_pipeline_end_to_end(tmp_path, monkeypatch, one_thread):
    import train_t2i
    from diffusers import StableDiffusionPipeline

    monkeypatch.setattr(trainlib.STOP, "requested", False)
    out = tmp_path / "model"
    train_t2i.main([
        "--out", str(out), "--checkpoints", str(tmp_path / "ckpt"), "--device", "cpu",
        "--vae-steps", "2", "--vae-batch", "2", "--unet-steps", "2", "--unet-batch", "4", "--dataset-size", "64",
    ])
    pipe = StableDiffusionPipeline.from_pretrained(out, torch_dtype=torch.float32)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    image = pipe("a large red circle on the left on a dark background", num_inference_steps=2, height=64,
                 width=64, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 64, 64, 3) and (out / "training.json").is_file()
