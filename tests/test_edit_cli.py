"""The editing commands (`taocache edit`, `edit-batch`, `edit-eval`), run in-process on a tiny pipeline folder."""

import json
import os

import numpy as np
import pytest
import torch
from edit_settings import QUICK, SOURCE, TARGET
from PIL import Image

from taocache.cli import main
from taocache.edit import EditConfig
from taocache.edit.cases import EditCase, EvalSettings, build_cases
from taocache.edit.evaluation import run_evaluation
from taocache.edit.scoring import score_edit
from taocache.metrics import format_rate
from taocache.testing import tiny_sd_pipeline
from taocache.world import Scene, render, scenes_of

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inputs") / "red_circle.png"
    scene = Scene("circle", "red", "small", "dark", position="left")
    Image.fromarray(np.uint8(np.rint(render(scene, seed=0) * 255))).save(path)
    return path


def edit_args(image, output, model_dir, cache_dir, *extra):
    return ["edit", str(image), "--source", SOURCE, "--target", TARGET, "--output", str(output),
            "--model", str(model_dir), "--cache-dir", str(cache_dir), *QUICK, *extra]


def test_edit_writes_the_edit_and_a_grid_and_reuses_artefacts(model_dir, image_file, tmp_path, capsys):
    output = tmp_path / "out" / "edit.png"
    code = main(edit_args(image_file, output, model_dir, tmp_path / "cache", "--sweep-alpha", "0,0.5"))
    assert code == 0
    printed = capsys.readouterr().out
    assert "text computed" in printed and "inversion computed" in printed
    edit = np.asarray(Image.open(output))
    grid = np.asarray(Image.open(output.with_name("edit_grid.png")))
    umask = os.umask(0)
    os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not an owner-only one
    assert edit.shape == (64, 64, 3)
    assert grid.shape[1] == 5 * 128  # input, reconstruction, alphas 0, 0.5 and the chosen 0.6

    before = output.read_bytes()
    assert main(edit_args(image_file, output, model_dir, tmp_path / "cache")) == 2
    assert "exists" in capsys.readouterr().err and output.read_bytes() == before

    assert main(edit_args(image_file, output, model_dir, tmp_path / "cache", "--force")) == 0
    printed = capsys.readouterr().out
    assert "text cached" in printed and "inversion cached" in printed
    assert output.read_bytes() == before  # same artefacts, same deterministic edit


@pytest.mark.parametrize("extra, message", [
    (["--alpha", "1.5"], "alpha"),
    (["--steps-source", "9"], "steps_source"),
    (["--sweep-alpha", "0,a"], "sweep-alpha"),
    (["--sweep-steps-source", "1,9"], "steps_source"),
    (["--target", " ", "--taocache"], "target prompt is empty"),
    (["--output", "edit.unknown"], "unknown image format"),
    (["--output", "edit.psd"], "cannot write"),
    (["--output", "a-file/edit.png"], "not a folder"),
    (["--model", "tiny-t2v"], "video model"),
])
def test_edit_rejects_bad_settings_before_any_work(model_dir, image_file, tmp_path, capsys, extra, message,
                                                  monkeypatch):
    from taocache.cli import edit as commands

    def no_model(*args):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(commands, "_load", no_model)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    assert main(edit_args(image_file, tmp_path / "o.png", model_dir, tmp_path / "c", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "c").exists()


def test_edit_reports_missing_and_unreadable_inputs(model_dir, tmp_path, capsys):
    assert main(edit_args(tmp_path / "nope.png", tmp_path / "o.png", model_dir, tmp_path / "c")) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 broken")
    assert main(edit_args(tmp_path / "bad.jpg", tmp_path / "o.png", model_dir, tmp_path / "c")) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(edit_args(tmp_path / "bad.jpg", tmp_path / "o.png", tmp_path / "no-model", tmp_path / "c")) == 2


def test_edit_batch_continues_past_failing_items(model_dir, image_file, tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(f"""
model = "{model_dir}"
output_dir = "results"

[defaults]
num_steps = 4
steps_source = 1
text_steps = 2
null_inner_steps = 2

[[edit]]
image = "missing.png"
source = "{SOURCE}"
target = "{TARGET}"
output = "first.png"

[[edit]]
image = "{image_file}"
source = "{SOURCE}"
target = "{TARGET}"
output = "second.png"
sweep_alpha = [0.0, 1.0]

[[edit]]
image = "{image_file}"
source = "{SOURCE}"
target = "{TARGET}"
output = "third.png"
alpha = 3.0
""")
    code = main(["edit-batch", str(spec), "--no-cache"])
    captured = capsys.readouterr()
    assert code == 1
    assert (tmp_path / "results" / "second.png").is_file()
    assert (tmp_path / "results" / "second_grid.png").is_file()
    assert not (tmp_path / "results" / "first.png").exists()
    assert "2 of 3 edit(s) failed" in captured.err
    assert "[1]" in captured.err and "does not exist" in captured.err
    assert "[3]" in captured.err and "alpha" in captured.err


def test_edit_batch_settings_come_from_the_model_defaults_command_line_and_item_in_turn(
        model_dir, image_file, tmp_path, capsys, monkeypatch):
    import shutil

    from taocache.edit import batch

    shutil.copytree(model_dir, tmp_path / "model")
    spec = tmp_path / "spec.toml"
    spec.write_text(f"""
model = "model"

[defaults]
inversion = "ddim"
text_steps = 2
null_inner_steps = 2

[[edit]]
image = "{image_file}"
source = "{SOURCE}"
target = "{TARGET}"
output = "plain.png"
num_steps = 4

[[edit]]
image = "{image_file}"
source = "{SOURCE}"
target = "{TARGET}"
output = "own.png"
num_steps = 4
inversion = "null-text"
""")
    used = []

    def fake_edit(pipe, image, source, target, output, config, **kwargs):
        used.append(config)
        return batch.FileEditReport(output, output, {"psnr": 1.0}, {}, {})

    monkeypatch.setattr(batch, "edit_file", fake_edit)
    monkeypatch.chdir("/")  # the spec's model folder is found beside the spec, not in the working folder
    assert main(["edit-batch", str(spec), "--inversion", "negative-prompt", "--steps-source", "1", "--no-cache"]) == 0
    assert [c.inversion for c in used] == ["negative-prompt", "null-text"]  # [defaults] < command line < item
    assert all(c.num_steps == 4 and c.steps_source == 1 and c.text_steps == 2 for c in used)
    assert "all 2 edit(s) done" in capsys.readouterr().out


def test_edit_batch_rejects_a_malformed_spec(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text("[[edit]\n")
    assert main(["edit-batch", str(spec)]) == 2
    assert "cannot read batch spec" in capsys.readouterr().err
    spec.write_text("title = 'x'\n")
    assert main(["edit-batch", str(spec)]) == 2
    assert "unknown top-level" in capsys.readouterr().err


def test_example_spec_parses():
    from pathlib import Path

    from taocache.edit.batch import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "samples" / "edits" / "world.toml")
    assert not spec.invalid and len(spec.items) == 4
    assert all(item.image.is_file() for item in spec.items)


# ------------------------------------------------------------------------------------------------ evaluation

def test_cases_come_from_the_test_split_and_ask_for_one_change():
    cases = build_cases(6)
    held_out = scenes_of("test", video=False)
    assert [c.kind for c in cases] == ["move", "resize"] * 3
    for case in cases:
        assert case.source in held_out
        differing = [k for k in ("shape", "colour", "size", "background", "position")
                     if getattr(case.source, k) != getattr(case.target, k)]
        assert differing == (["position"] if case.kind == "move" else ["size"])
    assert build_cases(6) == cases
    tune = scenes_of("tune", video=False)
    tuning = build_cases(4, scenes="tune", kinds=("resize",))
    assert all(c.kind == "resize" and c.source in tune and c.case_id.startswith("tune-") for c in tuning)
    with pytest.raises(ValueError, match="kinds"):
        build_cases(4, kinds=("rotate",))


def test_scoring_recognises_a_perfect_and_a_failed_edit():
    source = Scene("square", "blue", "small", "dark", position="left")
    case = EditCase("x", "move", source, Scene("square", "blue", "small", "dark", position="right"), seed=0)
    image = render(source, seed=0)
    perfect = score_edit(case, render(case.target, seed=0), image)
    assert perfect["changed"] and perfect["caption_kept"] and perfect["subject_kept"] and perfect["background_kept"]
    assert perfect["all_kept"] and perfect["background_psnr"] > 40
    unchanged = score_edit(case, image, image)
    assert not unchanged["changed"] and unchanged["identity"] and not unchanged["all_kept"]
    recoloured = score_edit(case, render(Scene("square", "red", "small", "dark", position="right"), seed=0), image)
    assert recoloured["changed"] and not recoloured["identity"] and not recoloured["caption_kept"]
    # the caption redrawn from another seed: everything the caption says, nothing of this subject or background
    redrawn = score_edit(case, render(case.target, seed=7), image)
    assert redrawn["changed"] and redrawn["caption_kept"]
    assert not redrawn["subject_kept"] and not redrawn["background_kept"] and not redrawn["all_kept"]


def test_evaluation_streams_records_resumes_and_summarises(tmp_path, capsys):
    pipe = tiny_sd_pipeline()
    config = EditConfig(num_steps=4, steps_source=1, text_steps=2, null_inner_steps=2)
    settings = EvalSettings(cases=2, config=config, sweep_alpha=(1.0,), sweep_steps_source=())
    with pytest.raises(ValueError, match="steps_source"):
        EvalSettings(cases=2, config=config, sweep_steps_source=(10,))
    out = tmp_path / "eval"
    summary = run_evaluation(pipe, "tiny", out, settings, cache_dir=tmp_path / "cache", progress=False)
    lines = (out / "records.jsonl").read_text().splitlines()
    methods = sorted({json.loads(line)["method"] for line in lines})
    assert methods == ["ddim-target", "masactrl", "non-rigid", "reconstruction/ddim", "reconstruction/negative-prompt",
                       "reconstruction/null-text", "reconstruction/vae", "reference/redraw", "reference/same-seed",
                       "sdedit"]
    # per case: 2 reference renders, 4 reconstructions, the edit, one sweep setting, three baselines
    assert len(lines) == 2 * 11
    assert summary["methods"]["non-rigid"]["n"] == 2
    assert summary["settings"]["methods"]["sdedit"] == [{"strength": 0.75}]
    ours = summary["methods"]["non-rigid"]
    low, high = ours["intervals"]["all_kept"]
    assert low <= ours["all_kept"] <= high and high - low > 0.5  # two cases say little
    assert summary["references"]["same-seed"]["all_kept"] == 1.0
    assert summary["references"]["redraw"]["subject_kept"] == 0.0
    assert set(summary["comparisons"]) == {"ddim-target", "sdedit", "masactrl"}
    assert set(summary["targets"]) >= {"cases >= 48", "null-text reconstruction_psnr >= 32 dB", "all_kept >= 85%"}
    assert not summary["targets"]["cases >= 48"]
    assert "| non-rigid |" in (out / "summary.md").read_text()
    assert format_rate(ours["all_kept"], (low, high)) in (out / "summary.md").read_text()
    assert json.loads((out / "summary.json").read_text())["methods"].keys() == summary["methods"].keys()

    # an interrupted write leaves a broken last line: it is dropped and that record measured again
    with open(out / "records.jsonl", "a") as handle:
        handle.write('{"case": "000-move", "meth')
    run_evaluation(pipe, "tiny", out, settings, cache_dir=tmp_path / "cache", progress=False)
    assert (out / "records.jsonl").read_text().splitlines() == lines

    # another sweep only adds its records
    more = EvalSettings(cases=2, config=config, sweep_alpha=(1.0, 0.0), sweep_steps_source=())
    run_evaluation(pipe, "tiny", out, more, cache_dir=tmp_path / "cache", progress=False)
    assert len((out / "records.jsonl").read_text().splitlines()) == len(lines) + 2

    # more cases extend the same fixed list: the first ones are read back, only the new one is measured
    assert build_cases(3)[:2] == build_cases(2)
    three = EvalSettings(cases=3, config=config, sweep_alpha=(1.0, 0.0), sweep_steps_source=())
    summary = run_evaluation(pipe, "tiny", out, three, cache_dir=tmp_path / "cache", progress=False)
    assert len((out / "records.jsonl").read_text().splitlines()) == len(lines) + 2 + 12
    assert summary["methods"]["non-rigid"]["n"] == 3

    with pytest.raises(ValueError, match="other settings"):
        run_evaluation(pipe, "tiny", out, EvalSettings(cases=2, config=config.with_values(alpha=0.1),
                                                       sweep_steps_source=()),
                       cache_dir=None, progress=False)
