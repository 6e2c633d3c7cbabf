"""Pieces of the embedded models' training scripts: caption encoding as the pipelines do it, stop and resume."""

import os
import signal
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "samples"))

import trainlib

CAPTION = "a small red circle on the left on a dark background"


def test_image_captions_are_encoded_as_stable_diffusion_encodes_them():
    from taocache.testing import tiny_sd_pipeline

    pipe = tiny_sd_pipeline()
    ours = trainlib.encode_captions(pipe.tokenizer, pipe.text_encoder, [CAPTION], 16, masked=False)
    theirs = pipe.encode_prompt(CAPTION, "cpu", 1, False)[0]
    torch.testing.assert_close(ours, theirs)


def test_video_captions_are_encoded_as_wan_encodes_them_by_default(wan):
    import inspect

    default = inspect.signature(type(wan).__call__).parameters["max_sequence_length"].default
    assert default == 512  # what a plain call encodes to, and so what the training script uses
    captions = [CAPTION, "", "a large blue square moves up on a light background"]
    ours = trainlib.encode_captions(wan.tokenizer, wan.text_encoder, captions, default, masked=True)
    theirs = wan.encode_prompt(captions, do_classifier_free_guidance=False, max_sequence_length=default)[0]
    assert ours.shape == theirs.shape == (3, 512, wan.text_encoder.config.d_model)
    torch.testing.assert_close(ours, theirs)
    assert (ours[0, 12:] == 0).all() and (ours[1, 1:] == 0).all()  # padding zeroed, as the pipeline does


def test_a_stop_request_saves_a_checkpoint_and_the_rerun_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(trainlib.STOP, "requested", False)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 2), torch.randn(8, 1)

    def loss_fn(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return torch.nn.functional.mse_loss(model(x), y)

    assert trainlib.train_loop("t", {"m": model}, opt, loss_fn, 10, tmp_path, every=100)[0] == 4
    assert (tmp_path / "t.pt").is_file()
    monkeypatch.setattr(trainlib.STOP, "requested", False)
    resumed = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(resumed.parameters(), lr=0.1)
    done, seconds = trainlib.train_loop("t", {"m": resumed}, opt, lambda s: resumed(x).pow(2).mean(), 10, tmp_path)
    state = torch.load(tmp_path / "t.pt", weights_only=False)
    assert done == 10 and state["step"] == 10
    assert seconds >= state["seconds"] > 0  # the wall time of both runs, kept for training.json


def _train(tmp_path, stop_at=None, steps=8, settings=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = torch.Generator().manual_seed(1)
    data = torch.randn(64, 3)

    def loss_fn(step):
        if step == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
        rows = data[torch.randint(0, 64, (4,), generator=batches)]
        return torch.nn.functional.mse_loss(model(rows[:, :2]), rows[:, 2:])

    done = trainlib.train_loop("t", {"m": model}, opt, loss_fn, steps, tmp_path, every=100,
                               generators={"batches": batches}, settings=settings or {"lr": 0.1})
    return done[0], model.weight.detach().clone()


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, monkeypatch):
    monkeypatch.setattr(trainlib.STOP, "requested", False)
    _, whole = _train(tmp_path / "whole")
    assert _train(tmp_path / "cut", stop_at=3)[0] == 4
    monkeypatch.setattr(trainlib.STOP, "requested", False)
    done, resumed = _train(tmp_path / "cut")  # the batches continue where they stopped, not from the seed
    assert done == 8 and torch.equal(resumed, whole)


def test_a_checkpoint_made_with_other_settings_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(trainlib.STOP, "requested", False)
    _train(tmp_path, stop_at=2)
    monkeypatch.setattr(trainlib.STOP, "requested", False)
    with pytest.raises(SystemExit, match="other settings"):
        _train(tmp_path, settings={"lr": 0.5})


def test_scripts_refuse_bad_arguments_before_any_work(tmp_path, capsys):
    import train_t2i
    import train_t2v

    base = ["--out", str(tmp_path / "o"), "--checkpoints", str(tmp_path / "c"), "--device", "cpu"]
    for script, bad, message in [
        (train_t2i, ["--unet-steps", "0"], "--unet-steps 0"),
        (train_t2i, ["--vae-batch", "-1"], "--vae-batch -1"),
        (train_t2i, ["--vae-steps", "0"], "--vae-from"),
        (train_t2i, ["--arch", "{bad"], "not JSON"),
        (train_t2i, ["--arch", '{"layers": 8}'], "some of these keys"),
        (train_t2i, ["--vae-from", str(tmp_path)], "with a vae/"),
        (train_t2v, ["--dit-batch", "0"], "--dit-batch 0"),
        (train_t2v, ["--device", "cdua"], "--device cdua"),
    ]:
        with pytest.raises(SystemExit) as stopped:
            script.main(base + bad)
        assert stopped.value.code == 2 and message in capsys.readouterr().err, bad
    assert not (tmp_path / "c").exists()


def test_a_stop_in_the_denoiser_stage_writes_no_model(tmp_path, monkeypatch, one_thread):
    import train_t2i

    monkeypatch.setattr(trainlib.STOP, "requested", False)
    monkeypatch.setattr(train_t2i, "train_unet", lambda *args: (1, 0.1))  # stopped after 1 of its 2 steps
    with pytest.raises(SystemExit, match="run the same command again"):
        train_t2i.main(["--out", str(tmp_path / "model"), "--checkpoints", str(tmp_path / "ckpt"), "--device", "cpu",
                        "--vae-steps", "1", "--vae-batch", "2", "--unet-steps", "2", "--dataset-size", "64"])
    assert not (tmp_path / "model").exists()


def _drawn_from(module, monkeypatch) -> list:
    """Every scene the script's batches and datasets are drawn from, recorded as they are drawn."""
    seen = []
    original = module.sample_batch

    def recording(scenes, *args, **kwargs):
        seen.extend(scenes)
        return original(scenes, *args, **kwargs)

    monkeypatch.setattr(module, "sample_batch", recording)
    return seen


def test_image_script_builds_a_pipeline_a_plain_diffusers_user_can_call(tmp_path, monkeypatch, one_thread):
    import json

    import train_t2i
    from diffusers import DiffusionPipeline

    from taocache.world import split

    monkeypatch.setattr(trainlib.STOP, "requested", False)
    seen = _drawn_from(train_t2i, monkeypatch)
    out = tmp_path / "model"
    train_t2i.main([
        "--out", str(out), "--checkpoints", str(tmp_path / "ckpt"), "--device", "cpu",
        "--vae-steps", "2", "--vae-batch", "2", "--unet-steps", "2", "--unet-batch", "4", "--dataset-size", "64",
    ])
    assert seen and set(seen) <= set(split(video=False)["train"])  # the tune and test splits stay unseen
    pipe = DiffusionPipeline.from_pretrained(out)  # no dtype: every component loads in float32
    assert {m.dtype for m in (pipe.text_encoder, pipe.vae, pipe.unet)} == {torch.float32}
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    image = pipe("a large red circle on the left on a dark background", num_inference_steps=2, height=64,
                 width=64, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 64, 64, 3)
    cost = json.loads((out / "training.json").read_text())["cost"]
    assert cost["steps"] == {"vae": 2, "unet": 2} and set(cost["wall_seconds"]) == {"vae", "unet"}
    assert cost["device"].startswith("CPU")


def test_video_script_builds_a_pipeline_called_with_wan_defaults(tmp_path, monkeypatch, one_thread):
    import train_t2v
    from diffusers import DiffusionPipeline

    from taocache.world import split

    monkeypatch.setattr(trainlib.STOP, "requested", False)
    seen = _drawn_from(train_t2v, monkeypatch)
    out = tmp_path / "model"
    tiny = '{"text_dim": 16, "vae_base_dim": 8, "z_dim": 4, "heads": 2, "head_dim": 8, "layers": 1, "ffn_dim": 16}'
    train_t2v.main([
        "--out", str(out), "--checkpoints", str(tmp_path / "ckpt"), "--device", "cpu", "--arch", tiny,
        "--vae-steps", "1", "--vae-batch", "1", "--decoder-steps", "1", "--dit-steps", "2", "--dit-batch", "2",
        "--dataset-size", "16",
    ])
    assert seen and set(seen) <= set(split(video=True)["train"])
    pipe = DiffusionPipeline.from_pretrained(out)
    first = torch.load(tmp_path / "ckpt" / "vae.pt", weights_only=False)["modules"]["vae"]
    for name, value in pipe.vae.state_dict().items():  # the decoder stage left the encoder, so the latents, alone
        if name.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(value, first[name]), name
    assert any(not torch.equal(value, first[name]) for name, value in pipe.vae.state_dict().items()
               if name.startswith("decoder."))
    assert {m.dtype for m in (pipe.text_encoder, pipe.vae, pipe.transformer)} == {torch.float32}
    video = pipe("a small red circle moves left on a dark background", height=64, width=64, num_frames=9,
                 num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)).frames
    assert video.shape == (1, 9, 64, 64, 3)
