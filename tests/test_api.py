"""The public API (enable / disable / stats / calibrate), calibration files in use, and the two commands."""

import logging

import numpy as np
import pytest
import torch

import taocache
from taocache import TaoCacheConfig
from taocache.cli import main as cli

CAPTION = "a large red circle moves left on a dark background"
WAN = {"height": 32, "width": 32, "num_frames": 9, "guidance_scale": 5.0, "max_sequence_length": 16, "num_inference_steps": 10}


@pytest.fixture(autouse=True)
def isolated_calibrations(tmp_path, monkeypatch):
    monkeypatch.setenv("TAOCACHE_CALIBRATION_DIR", str(tmp_path / "calibrations"))
    return tmp_path / "calibrations"


def run(pipe, **overrides):
    return pipe(CAPTION, generator=torch.Generator().manual_seed(0), output_type="np", **{**WAN, **overrides}).frames


@pytest.mark.parametrize("target", ["a pipeline name", 3, None])
def test_enable_rejects_what_it_cannot_hook(target):
    with pytest.raises(TypeError, match="DiffusionPipeline"):
        taocache.enable(target)


def test_pipeline_without_denoiser_is_a_type_error():
    from diffusers import DDIMScheduler, DiffusionPipeline

    class NoDenoiser(DiffusionPipeline):
        def __init__(self, scheduler):
            super().__init__()
            self.register_modules(scheduler=scheduler)

    with pytest.raises(TypeError, match="transformer, transformer_2, unet"):
        taocache.enable(NoDenoiser(DDIMScheduler()))


def test_stats_before_enable_and_disable_twice(wan, caplog):
    with pytest.raises(ValueError, match="not enabled"):
        taocache.stats(wan)
    with caplog.at_level(logging.WARNING, logger="taocache"):
        taocache.disable(wan)
    assert "nothing to disable" in caplog.text


def test_stats_record_is_readable_and_serialisable(wan):
    taocache.enable(wan, TaoCacheConfig(error_budget=1.0))
    run(wan)
    run(wan)
    record = taocache.stats(wan)
    data = record.as_dict()
    assert data["calls"] == 20 and data["computed"] + data["predicted"] == 20
    assert data["branches"]["cond"]["decisions"] == record.branches["cond"].decisions
    assert len(record.branches["cond"].decisions) == 10
    text = str(record)
    assert "computed" in text and "cond" in text and record.branches["uncond"].decisions in text
    taocache.disable(wan)


def test_an_automatic_calibration_comes_from_a_whole_guided_call(wan):
    taocache.enable(wan, TaoCacheConfig(error_budget=1.0))

    def cancel(pipe, step, timestep, kwargs):
        pipe._interrupt = step == 3
        return kwargs

    run(wan, callback_on_step_end=cancel)  # a first call cut short is too little to calibrate on
    run(wan)
    assert taocache.stats(wan).predicted == 0  # so this one records
    run(wan)
    assert taocache.stats(wan).predicted > 0
    taocache.disable(wan)

    taocache.enable(wan, TaoCacheConfig(error_budget=1.0))
    run(wan, guidance_scale=1.0)  # a first call without guidance records no 'uncond' branch
    run(wan)
    record = taocache.stats(wan)
    assert record.predicted == 0 and any("records one again" in note for note in record.notes)
    run(wan)  # recorded again, with both branches
    run(wan)
    assert taocache.stats(wan).predicted > 0
    taocache.disable(wan)


def test_calibrate_writes_a_file_that_enable_finds(wan, isolated_calibrations):
    with pytest.raises(ValueError, match="non-empty list"):
        taocache.calibrate(wan, [])
    calibration = taocache.calibrate(wan, [CAPTION, "a small blue square moves up on a light background"],
                                     call_kwargs=WAN, progress=False)
    path = isolated_calibrations / calibration.file_name()
    assert path.is_file() and calibration.samples == 2 and calibration.steps == 10
    assert set(calibration.denoisers["transformer"].branches) == {"cond", "uncond", "estimate:cond", "estimate:uncond"}
    with pytest.raises(FileExistsError, match="overwrite"):
        taocache.calibrate(wan, [CAPTION], call_kwargs=WAN, progress=False)
    taocache.enable(wan, TaoCacheConfig(error_budget=1.0))
    run(wan)  # the file is used at once: the first call already predicts
    assert taocache.stats(wan).predicted > 0
    taocache.disable(wan)


def test_a_calibration_for_another_model_is_refused(wan, tmp_path):
    from taocache.testing import tiny_sd_pipeline

    sd = tiny_sd_pipeline()
    calibration = taocache.calibrate(sd, [CAPTION], call_kwargs={"num_inference_steps": 6}, progress=False,
                                     path=tmp_path / "sd.json")
    with pytest.raises(ValueError, match="UNet2DConditionModel.*DDIMScheduler.*calibrate this model"):
        taocache.enable(wan, TaoCacheConfig(calibration=tmp_path / "sd.json"))
    with pytest.raises(ValueError, match="made for"):
        taocache.enable(wan, TaoCacheConfig(calibration=calibration))


def test_corrupt_calibration_file_is_named(wan, isolated_calibrations):
    calibration = taocache.calibrate(wan, [CAPTION], call_kwargs=WAN, progress=False, save=False)
    broken = isolated_calibrations / calibration.file_name()
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text("{ truncated")
    with pytest.raises(ValueError, match=broken.name):
        taocache.enable(wan)


def test_a_backend_added_to_the_registry_is_applied_removed_and_reported(wan, monkeypatch, tmp_path):
    from taocache import registry

    class Marker:
        pass

    applied = []

    def apply(target, config, stacked):
        applied.append((config, stacked))

    def remove(target):
        was_on = bool(applied)
        applied.clear()
        return was_on

    marker_backend = registry.CacheBackend("marker", Marker, apply, remove, lambda target: {"on": len(applied)})
    builtin = registry.backends()
    monkeypatch.setattr(registry, "backends", lambda: (*builtin, marker_backend))
    marker = Marker()
    taocache.enable(wan, [marker, TaoCacheConfig()])
    assert applied == [(marker, True)] and "cond" not in taocache.stats(wan).branches
    assert taocache.stats(wan).stacked["Marker"] == {"on": 1}
    taocache.disable(wan)
    assert applied == []
    with pytest.raises(TypeError, match="unsupported cache config"):
        taocache.enable(wan, [object()])
    with pytest.raises(TypeError, match="cannot save a Marker"):
        taocache.save_configs(tmp_path / "marker.json", [marker])
    assert not (tmp_path / "marker.json").exists()


@pytest.fixture(scope="module")
def wan_folder(tmp_path_factory):
    from taocache.testing import tiny_wan_pipeline

    folder = tmp_path_factory.mktemp("models") / "tiny-wan"
    tiny_wan_pipeline().save_pretrained(folder)
    return folder


def test_run_command_compares_and_writes_the_video(wan_folder, tmp_path, capsys):
    import imageio.v3 as iio

    out = tmp_path / "side.gif"
    size = ["--height", "32", "--width", "32", "--frames", "9", "--steps", "10"]
    assert cli(["run", "--model", str(wan_folder), *size, "--output", str(out), "--budget", "1.0"]) == 0
    text = capsys.readouterr().out
    assert "PSNR" in text and "SSIM" in text and "speed-up" in text and "predicted" in text
    frames = iio.imread(out)
    assert frames.shape[0] == 9 and frames.shape[2] > 2 * frames.shape[1] - 64  # two panels side by side
    assert cli(["run", "--model", str(wan_folder), *size, "--output", str(out)]) == 2  # no overwrite
    assert "--force" in capsys.readouterr().err
    assert cli(["run", "--model", str(wan_folder), "--output", str(tmp_path / "x.gif")]) == 2  # no size given
    assert "--height" in capsys.readouterr().err
    assert cli(["run", "--model", str(wan_folder), *size, "--output", str(tmp_path / "y.gif"), "--fps", "0"]) == 2
    assert "--fps 0 must be a number > 0" in capsys.readouterr().err
    assert cli(["run", "--model", str(wan_folder), *size, "--output", str(tmp_path / "z.gif"), "--repeats", "2"]) == 2
    assert "--repeats 2 must be at least 3" in capsys.readouterr().err


def test_run_command_times_after_a_warm_up_and_reports_medians(wan_folder, tmp_path, capsys, monkeypatch):
    from taocache.cli import run as run_module

    real = run_module._generate
    # wall times the calls take: warm-up of the full run and of TaoCache, then full and TaoCache alternated
    seconds = iter([100.0, 50.0, 2.0, 1.0, 4.0, 2.0, 3.0, 1.0])
    calls = []

    def timed(pipe, prompt, seed, call):
        frames, _ = real(pipe, prompt, seed, call)
        calls.append((prompt, seed, call["num_inference_steps"]))
        return frames, next(seconds)

    monkeypatch.setattr(run_module, "_generate", timed)
    size = ["--height", "32", "--width", "32", "--frames", "9", "--steps", "10"]
    assert cli(["run", "--model", str(wan_folder), *size, "--output", str(tmp_path / "t.gif"), "--prompt", "a red circle"]) == 0
    text = capsys.readouterr().out
    assert len(calls) == 8 and len(set(calls)) == 1  # same prompt, seed and steps every time
    assert "median of 3 runs after a warm-up: full 3.00 s, TaoCache 1.00 s, speed-up 3.00x" in text


def test_calibrate_command(wan_folder, tmp_path, capsys):
    out = tmp_path / "cal.json"
    args = ["calibrate", "--model", str(wan_folder), "--height", "32", "--width", "32", "--frames", "9",
            "--steps", "8", "--num-prompts", "2", "--output", str(out)]
    assert cli(args) == 0 and out.is_file()
    assert taocache.Calibration.load(out).samples == 2
    assert cli(args) == 2 and "--force" in capsys.readouterr().err
    assert cli(args + ["--force"]) == 0
    assert np.isfinite(taocache.Calibration.load(out).timesteps).all()


def test_commands_check_their_numbers_and_output_before_loading(tmp_path, capsys, monkeypatch):
    from taocache import recipes

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(recipes, "load_pipeline", no_model)
    monkeypatch.chdir(tmp_path)  # default outputs land here, none exists yet
    (tmp_path / "a-file").write_text("")
    bad_calls = [
        (["run", "--steps", "0"], "--steps 0"),
        (["run", "--height", "-3"], "--height -3"),
        (["run", "--calibration-prompts", "-1"], "--calibration-prompts -1"),
        (["run", "--output", str(tmp_path / "a-file" / "v.gif")], "not a writable folder"),
        (["calibrate", "--horizon", "0"], "--horizon 0"),
        (["calibrate", "--frames", "0"], "--frames 0"),
        (["calibrate", "--ulysses-degree", "0"], "--ulysses-degree and --ring-degree must be at least 1"),
        (["calibrate", "--ulysses-degree", "2"], "must equal the number of processes (1); start them with torchrun"),
        (["tune", "--target-psnr", "30", "--margin", "nan"], "--margin nan"),
        (["tune", "--target-psnr", "30", "--steps", "0"], "--steps 0"),
        (["fit-teacache", "--degree", "0"], "--degree=0"),
        (["fit-teacache", "--steps", "3", "--warmup", "5"], "more than --warmup"),
    ]
    for argv, message in bad_calls:
        assert cli(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    taken = tmp_path / "tuned.calibration.json"
    taken.write_text("{}")  # tune would write its calibration here: a file of the user's
    assert cli(["tune", "--target-psnr", "30", "--output", str(tmp_path / "tuned.json")]) == 2
    assert "tuned.calibration.json exists" in capsys.readouterr().err and taken.read_text() == "{}"
