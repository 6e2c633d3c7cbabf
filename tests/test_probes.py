"""The diagnostic probes of the embedded models run end to end on tiny pipelines saved to disk."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))


@pytest.mark.usefixtures("one_thread")
def test_position_probe_prints_each_timestep(tmp_path, capsys):
    import position_probe

    from taocache.testing import tiny_sd_pipeline

    tiny_sd_pipeline().save_pretrained(tmp_path)
    position_probe.main(["--model", str(tmp_path), "--timesteps", "900", "300"])
    out = capsys.readouterr().out
    assert "t= 900" in out and "t= 300" in out
    with pytest.raises(SystemExit):
        position_probe.main(["--model", str(tmp_path), "--timesteps", "1000"])
    assert "outside the model's 0..999" in capsys.readouterr().err


def test_diagnostic_scripts_refuse_arguments_they_would_ignore(tmp_path, capsys):
    import gpu_check
    import position_probe
    import skip_probe

    for main, argv, message in [
        (gpu_check.main, ["--tiny", "--steps", "0"], "--steps 0"),
        (skip_probe.main, ["--steps", "20", "--predict", "5,25"], "0..19"),
        (position_probe.main, ["--model", str(tmp_path / "none")], "no model_index.json"),
    ]:
        with pytest.raises(SystemExit):
            main(argv)
        assert message in capsys.readouterr().err


def test_tune_defaults_never_replaces_results_of_other_settings_unasked(tmp_path, capsys, one_thread):
    import tune_defaults

    out = tmp_path / "tune.json"
    small = ["--random", "--predictors", "reuse", "--starts", "0.5", "--budgets", "0.1", "--max-consecutive", "1",
             "--eval-prompts", "1", "--calibration-prompts", "1", "--shorter", "3", "--output", str(out)]
    assert tune_defaults.main([*small, "--steps", "6"]) == 0
    assert "reuse@estimate" in capsys.readouterr().out  # both spaces measured by default
    before = out.read_text()
    with pytest.raises(SystemExit, match="other settings"):
        tune_defaults.main([*small, "--steps", "5"])
    assert out.read_text() == before


def test_predictor_probe_compares_every_predictor(tmp_path, capsys, one_thread):
    import predictor_probe

    from taocache.testing import tiny_wan_pipeline

    tiny_wan_pipeline().save_pretrained(tmp_path)
    assert predictor_probe.main(["--model", str(tmp_path), "--steps", "8", "--prompts", "1", "--fit-prompts", "2",
                                 "--height", "32", "--width", "32"]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [row.split()[0] for row in rows] == list(predictor_probe.PREDICTORS)
    assert all(0 < float(row.split()[1]) < float("inf") for row in rows)  # random weights: no ranking to check
