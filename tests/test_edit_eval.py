"""What the editing evaluation compares and how: disjoint tune and test edits, the same budget of settings per
method, the choice carried from tune to test, and paired comparisons."""

import json

import pytest
import torch
from edit_settings import QUICK

from taocache.cli import main
from taocache.edit import EditConfig
from taocache.edit.cases import build_cases
from taocache.edit.comparison import paired_comparison
from taocache.edit.methods import METHODS, PARAMETERS, check_setting, tune_grid
from taocache.edit.tuning import choose, load_choice
from taocache.world import scenes_of

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------------- cases

def test_tune_and_test_edits_come_from_disjoint_splits():
    test, tune = build_cases(48), build_cases(32, scenes="tune")
    test_scenes, tune_scenes = {c.source for c in test}, {c.source for c in tune}
    assert len(test_scenes) == 48 and len(tune_scenes) == 32  # every still of each split, once
    assert test_scenes == set(scenes_of("test", video=False))
    assert tune_scenes == set(scenes_of("tune", video=False))
    assert not test_scenes & tune_scenes
    assert not {c.case_id for c in test} & {c.case_id for c in tune}


# ---------------------------------------------------------------------------------------------- settings

def test_every_method_tries_the_same_number_of_valid_settings():
    config = EditConfig(num_steps=50, guidance_scale=3.0)
    for size in (1, 4, 6):
        grid = tune_grid(config, size)
        assert set(grid) == set(METHODS) and {len(v) for v in grid.values()} == {size}
        for method, settings in grid.items():
            assert len({json.dumps(s, sort_keys=True) for s in settings}) == size  # all different
            for setting in settings:
                assert set(setting) == set(PARAMETERS[method])
                check_setting(method, setting, config)
    small = tune_grid(EditConfig(num_steps=4, steps_source=1), 4)  # steps scale with the schedule
    assert all(s["steps_source"] < 4 for s in small["non-rigid"])
    with pytest.raises(ValueError, match="size"):
        tune_grid(config, 0)
    with pytest.raises(ValueError, match="takes the settings"):
        check_setting("masactrl", {"start_step": 4}, config)
    with pytest.raises(ValueError, match="strength"):
        check_setting("sdedit", {"strength": 1.5}, config)


def test_the_choice_is_the_best_all_kept_rate_then_subject_kept():
    def row(setting, all_kept, subject_kept, sweep=False):
        return {"setting": setting, "all_kept": all_kept, "subject_kept": subject_kept, "background_psnr": 30.0,
                "n": 8, "sweep": sweep}

    tried = {
        "sdedit": [row({"strength": 0.9}, 0.25, 0.5), row({"strength": 0.6}, 0.5, 0.5), row({"strength": 0.7}, 0.5, 0.75)],
        "non-rigid": [row({"steps_source": 5, "alpha": 1.0}, 0.25, 0.5),
                      row({"steps_source": 10, "alpha": 0.0}, 0.75, 0.75, sweep=True)],  # a sweep is no candidate
    }
    assert choose(tried) == {"sdedit": {"strength": 0.7}, "non-rigid": {"steps_source": 5, "alpha": 1.0}}


def test_a_choice_made_on_test_edits_is_refused(tmp_path):
    choice = {"split": "tune", "config": {"num_steps": 10, "guidance_scale": 3.0},
              "chosen": {"non-rigid": {"steps_source": 2, "alpha": 1.0}, "sdedit": {"strength": 0.8}}}
    (tmp_path / "choice.json").write_text(json.dumps(choice))
    config, methods = load_choice(tmp_path / "choice.json")
    assert (config.steps_source, config.alpha, config.guidance_scale) == (2, 1.0, 3.0)
    assert methods == {"non-rigid": [{"steps_source": 2, "alpha": 1.0}], "sdedit": [{"strength": 0.8}]}
    (tmp_path / "test.json").write_text(json.dumps({**choice, "split": "test"}))
    with pytest.raises(ValueError, match="chosen on tune edits"):
        load_choice(tmp_path / "test.json")


# -------------------------------------------------------------------------------------------- comparison

def test_paired_comparison_counts_the_discordant_cases_and_brackets_the_difference():
    ours = [True] * 10 + [False] * 2 + [True] * 4
    theirs = [False] * 10 + [False] * 2 + [True] * 4
    result = paired_comparison(ours, theirs, seed=0)
    assert result["n"] == 16 and result["only_ours"] == 10 and result["only_theirs"] == 0
    assert result["difference"] == pytest.approx(10 / 16)
    low, high = result["interval"]
    assert 0 < low < 10 / 16 < high <= 1
    assert result["mcnemar_p"] == pytest.approx(2 * 0.5**10)
    assert paired_comparison(ours, theirs, seed=0) == result  # a fixed seed: the same interval every time
    even = paired_comparison([True, False] * 8, [False, True] * 8)
    assert even["difference"] == 0 and even["interval"][0] < 0 < even["interval"][1] and even["mcnemar_p"] == 1.0
    assert paired_comparison([True] * 3, [True] * 3)["interval"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="one length"):
        paired_comparison([True], [True, False])


# ---------------------------------------------------------------------------------------- the commands

def test_tune_then_evaluate_with_the_chosen_settings(model_dir, tmp_path, capsys):
    tune_dir, test_dir = tmp_path / "tune", tmp_path / "test"
    common = ["--model", str(model_dir), "--cache-dir", str(tmp_path / "cache"), *QUICK]
    assert main(["edit-tune", "--cases", "1", "--size", "2", "--output-dir", str(tune_dir), *common]) == 0
    choice = json.loads((tune_dir / "choice.json").read_text())
    assert choice["split"] == "tune" and choice["settings_per_method"] == 2
    assert set(choice["chosen"]) == set(METHODS)
    records = [json.loads(line) for line in (tune_dir / "records.jsonl").read_text().splitlines()]
    assert all(r["case"].startswith("tune-") for r in records)
    for method in METHODS:  # two settings each, on the same case
        assert len([r for r in records if r["method"] == method]) == 2
    assert main(["edit-eval", "--cases", "1", "--output-dir", str(test_dir), "--methods", "non-rigid,masactrl",
                 "--settings-file", str(tune_dir / "choice.json"), *common]) == 0
    summary = json.loads((test_dir / "summary.json").read_text())
    assert summary["settings"]["split"] == "test"
    assert summary["settings"]["methods"] == {m: [choice["chosen"][m]] for m in ("non-rigid", "masactrl")}
    assert set(summary["methods"]) == {"non-rigid", "masactrl"} and set(summary["comparisons"]) == {"masactrl"}
    capsys.readouterr()
    assert main(["edit-eval", "--cases", "1", "--output-dir", str(tmp_path / "x"), "--methods", "dall-e", *common]) == 2
    assert "--methods" in capsys.readouterr().err
    assert main(["edit-tune", "--cases", "1", "--taocache", "--output-dir", str(tmp_path / "z"), *common]) == 2
    assert main(["edit-eval", "--cases", "1", "--split", "tune", "--output-dir", str(tmp_path / "y"),
                 "--settings-file", str(tune_dir / "choice.json"), *common]) == 2
