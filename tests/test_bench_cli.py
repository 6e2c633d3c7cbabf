"""`taocache bench` and `taocache report` from the command line, on a tiny pipeline saved with its recipe."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from taocache.bench.records import read_records
from taocache.cli import main

SWEEP = """
description = "cli test"
[call]
num_inference_steps = 4
[run]
num_prompts = 1
repeats = 1
[[method]]
name = "steps"
settings = [{ steps = 2 }]
[[method]]
name = "static"
settings = [{ interval = 2, start = 1 }]
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from taocache.testing import tiny_wan_pipeline

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("model")
    tiny_wan_pipeline().save_pretrained(root / "tiny")
    recipe = root / "tiny.toml"
    recipe.write_text(
        f'name = "tiny-test"\nmodel = "{root / "tiny"}"\npipeline = "WanPipeline"\nkind = "video"\n'
        "[call]\nheight = 32\nwidth = 32\nnum_frames = 5\nnum_inference_steps = 6\nguidance_scale = "
        "5.0\nmax_sequence_length = 16\n"
    )
    sweep = root / "sweep.toml"
    sweep.write_text(SWEEP)
    return recipe, sweep


def _runs(path):
    return [r for r in read_records(path) if r["type"] == "run"]


def test_bench_writes_results_and_report_then_resumes(model, tmp_path, capsys):
    recipe, sweep = model
    args = [
        "bench",
        "--model",
        str(recipe),
        "--sweep",
        str(sweep),
        "--out",
        str(tmp_path),
        "--no-progress",
        "--threads",
        "1",
    ]
    assert main(args) == 0
    results = tmp_path / "results.jsonl"
    runs = _runs(results)
    assert sorted(r["label"] for r in runs) == ["full", "static interval=2 start=1", "steps steps=2"]
    assert all(r["call"]["num_frames"] == 5 for r in runs)  # the recipe's call, not the pipeline's default
    assert next(r for r in runs if r["label"] == "full")["steps"] == 4  # the sweep's [call] wins
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["benchmark"]["model"] == "tiny-test"
    assert main(args) == 0  # same command again: resumes, runs nothing new
    assert len(_runs(results)) == 3
    assert main(["report", str(results)]) == 2  # the report exists: refuses without --force
    assert "--force" in capsys.readouterr().err
    assert main(["report", str(results), "--force"]) == 0
    assert main(args + ["--steps", "3"]) == 2  # a different benchmark is not mixed into the same file
    assert "holds a benchmark" in capsys.readouterr().err


def test_bench_checks_numbers_and_refuses_another_model_of_the_same_name(model, tmp_path, capsys):
    from taocache.testing import tiny_wan_pipeline

    recipe, sweep = model
    base = ["bench", "--sweep", str(sweep), "--out", str(tmp_path / "out"), "--no-progress", "--no-report"]
    for bad in (["--steps", "0"], ["--repeats", "0"], ["--num-prompts", "0"], ["--threads", "0"],
                ["--device", "bogus"]):
        assert main([*base, "--model", str(recipe), *bad]) == 2
        assert bad[0] in capsys.readouterr().err
    for name, seed in (("a", 0), ("b", 1)):  # two folders called "tiny", with other weights
        tiny_wan_pipeline(seed=seed).save_pretrained(tmp_path / name / "tiny")
    sized = tmp_path / "sized.toml"  # a plain folder has no recipe: the sweep's [call] gives the size
    sized.write_text(SWEEP.replace("num_inference_steps = 4", "num_inference_steps = 4\nheight = 32\n"
                                   "width = 32\nnum_frames = 5\nmax_sequence_length = 16"))
    first = ["bench", "--sweep", str(sized), "--out", str(tmp_path / "same"), "--no-progress", "--no-report",
             "--threads", "1", "--methods", "steps"]
    assert main([*first, "--model", str(tmp_path / "a" / "tiny")]) == 0
    capsys.readouterr()
    assert main([*first, "--model", str(tmp_path / "b" / "tiny")]) == 2
    assert "holds a benchmark made otherwise" in capsys.readouterr().err


def test_shards_left_by_an_interrupted_multi_process_run_are_merged(model, tmp_path, capsys):
    recipe, sweep = model
    args = ["bench", "--model", str(recipe), "--sweep", str(sweep), "--out", str(tmp_path), "--no-progress",
            "--threads", "1", "--no-report", "--num-prompts", "2"]
    assert main(args) == 0
    results = tmp_path / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    second = [line for line in lines if '"prompt_index": 1' in line]
    results.write_text("".join(line for line in lines if line not in second))
    (tmp_path / "results.jsonl.shard-1").write_text("".join(second))  # process 1's part, never merged
    assert main(args) == 0
    assert "merged 3 records" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.shard-*")) and len(_runs(results)) == 6


@pytest.mark.slow
def test_bench_splits_jobs_over_two_processes(model, tmp_path):
    recipe, sweep = model
    launcher = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    if launcher is None:
        pytest.skip("accelerate's launcher is not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Without GPUs, `--multi_gpu` makes accelerate start the processes with torchrun; they talk over gloo.
    # (accelerate's `--cpu --num_processes N` starts N processes only through MPI.)
    command = [
        launcher,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "taocache.cli",
        "bench",
        "--model",
        str(recipe),
        "--device",
        "cpu",
        "--sweep",
        str(sweep),
        "--num-prompts",
        "2",
        "--out",
        str(tmp_path),
        "--no-progress",
        "--threads",
        "1",
        "--no-report",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = _runs(tmp_path / "results.jsonl")
    assert len(runs) == 6 and {r["process"] for r in runs} == {0, 1}
    assert {r["prompt_index"] for r in runs} == {0, 1}
    assert not list(tmp_path.glob("*.shard-*"))
