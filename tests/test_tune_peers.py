"""eval/tune_peers.py on a tiny random pipeline: the same number of candidates per method, run on tune
captions only, and a sweep file the benchmark reads back with each method's settings and how they were chosen."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))


def test_bracketing_keeps_the_frontier_points_around_each_target():
    import tune_peers

    settings = [
        {"label": "a", "call_ratio": 1.2, "psnr": 40.0},
        {"label": "b", "call_ratio": 1.6, "psnr": 35.0},
        {"label": "c", "call_ratio": 1.7, "psnr": 30.0},  # beaten by a faster, better setting
        {"label": "d", "call_ratio": 1.8, "psnr": 33.0},
        {"label": "e", "call_ratio": 2.4, "psnr": 25.0},
    ]
    # 1.5x: a and b; 2x: d and e; 3x: beyond the frontier, its furthest point e
    assert [s["label"] for s in tune_peers.bracketing(settings)] == ["a", "b", "d", "e"]
    assert tune_peers.bracketing([{"label": "x", "call_ratio": None, "psnr": None}]) == []


def test_tunes_every_method_on_tune_captions_and_writes_a_sweep(tmp_path, one_thread):
    import tune_peers

    from taocache.bench.records import read_records
    from taocache.bench.sweep import load_sweep
    from taocache.world import scenes_of

    out = tmp_path / "tuned.toml"
    argv = ["--random", "--steps", "6", "--methods", "taocache,easycache,static,steps", "--per-method", "3",
            "--num-prompts", "1", "--out", str(out)]
    assert tune_peers.main(argv) == 0
    records = read_records(tmp_path / "tuned" / "results.jsonl")
    session = next(r for r in records if r["type"] == "session")
    runs = [r for r in records if r["type"] == "run" and r["method"] != "full"]
    per_method = {}
    for r in runs:
        per_method.setdefault(r["method"], set()).add(r["label"])
    assert {name: len(labels) for name, labels in per_method.items()} == dict.fromkeys(
        ("taocache", "easycache", "static", "steps"), 3
    )
    tune = {s.caption for s in scenes_of("tune", video=True)}
    test = {s.caption for s in scenes_of("test", video=True)}
    used = {r["prompt"] for r in records if r["type"] == "run"} | set(session["calibration_prompts"])
    assert used <= tune and not used & test
    assert not {r["prompt"] for r in runs} & set(session["calibration_prompts"])  # calibrated apart

    sweep = load_sweep(out)
    assert sweep.call == {"num_inference_steps": 6}
    assert {m.name for m in sweep.methods} <= {"taocache", "easycache", "static", "steps"}
    assert {"taocache", "steps"} <= {m.name for m in sweep.methods}
    for method in sweep.methods:
        assert "candidates on 1 tune captions" in method.chosen and method.label in method.chosen
    with pytest.raises(SystemExit, match="exists"):
        tune_peers.main(argv)


def test_stacks_are_tuned_like_single_methods_and_read_back(tmp_path, one_thread):
    import tune_peers

    from taocache.bench.sweep import load_sweep

    out = tmp_path / "stacks.toml"
    assert tune_peers.main(["--random", "--steps", "6", "--methods", "taocache+teacache,taocache+pab",
                            "--per-method", "2", "--num-prompts", "1", "--out", str(out)]) == 0
    stacks = [m for m in load_sweep(out).methods if "+" in m.name]
    assert stacks, "no stack ran on the random pipeline"
    for method in stacks:  # nested settings survive the round trip through TOML
        assert set(method.given) == set(method.name.split("+")) and "taocache" in method.chosen
    assert "+" not in tune_peers.parse_args(["--out", str(out)]).methods  # single methods by default
