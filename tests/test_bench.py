"""The benchmark harness on a tiny random WanPipeline: records, resume, probe counts, flags, peers."""

import json
import logging
import math

import pytest

from taocache.bench import Benchmark, BenchPlan, make_method
from taocache.bench.methods import METHODS, Method
from taocache.bench.records import append_record, finished_keys, read_records
from taocache.bench.static_skip import StaticSkipConfig
from taocache.bench.sweep import world_calibration_prompts, world_prompts
from taocache.metrics import LPIPS

CALL = {
    "height": 32,
    "width": 32,
    "num_frames": 9,
    "num_inference_steps": 6,
    "guidance_scale": 5.0,
    "max_sequence_length": 16,
}
TEACACHE = {"rel_l1_thresh": 0.3, "coefficients": [1.0, 0.0], "warmup_steps": 1}
NO_LPIPS = LPIPS("alex", None, "LPIPS unavailable: no backbone in the tests")


class DoesNothing(Method):
    """A broken cache: claims to be a method, changes nothing. The harness must flag it."""

    name = "test-does-nothing"
    description = "test double"


@pytest.fixture(scope="module")
def pipe(wan):
    return wan


def _plan(methods, **overrides):
    settings = {
        "model": "tiny-random",
        "call": CALL,
        "prompts": world_prompts()[:1],
        "seeds": [0],
        "methods": methods,
        "repeats": 1,
        "calibration_prompts": world_calibration_prompts(count=1),
    }
    settings.update(overrides)
    return BenchPlan(**settings)


@pytest.fixture(scope="module")
def bench_run(pipe, tmp_path_factory):
    METHODS[DoesNothing.name] = DoesNothing
    methods = [
        make_method("steps", {"steps": 3}),
        make_method("static", {"interval": 2, "start": 2}),
        make_method("magcache", {"threshold": 0.5}),
        make_method("taylorseer", {"interval": 2, "start": 2}),
        make_method("fastercache"),
        make_method("easycache", {"threshold": 0.5, "warmup_steps": 2}),
        make_method("taocache", {"error_budget": 0.5}),
        make_method("teacache", TEACACHE),
        make_method("taocache+teacache", {"teacache": TEACACHE, "taocache": {"error_budget": 0.5}}),
        make_method("taocache+pab", {"pab": {"spatial": 2, "timestep_range": [0, 1000]}, "taocache": {"error_budget": 0.5}}),
        make_method("test-does-nothing"),
    ]
    results = tmp_path_factory.mktemp("bench") / "results.jsonl"
    logging.disable(logging.INFO)  # MagCache's calibration must not depend on the logging setup
    try:
        Benchmark(pipe, _plan(methods), results, lpips=NO_LPIPS, progress=False).run()
    finally:
        logging.disable(logging.NOTSET)
    yield results, methods
    METHODS.pop(DoesNothing.name, None)


def _runs(path):
    return {r["label"]: r for r in read_records(path) if r["type"] == "run"}


def test_every_run_is_recorded_with_its_measurements(bench_run):
    results, methods = bench_run
    runs = _runs(results)
    assert set(runs) == {"full"} | {m.label for m in methods}
    full = runs["full"]
    assert full["calls"]["made"] == 12 and full["calls"]["computed"] == pytest.approx(12)
    assert full["timing"]["loop_s"] > 0 and len(full["timing"]["step_s"]) == 6
    assert full["timing"]["loop_s"] < full["timing"]["call_s"]
    steps = runs["steps steps=3"]
    assert steps["status"] == "ok" and steps["calls"]["made"] == 6 and steps["steps"] == 3
    assert steps["speedup"]["calls"] == pytest.approx(2.0) and steps["speedup"]["flops"] == pytest.approx(2.0)
    assert full["calls"]["flops"] == 12 * full["calls"]["full_call_flops"] > 0
    assert steps["speedup"]["loop"] > 0 and 0 < steps["metrics"]["ssim"] < 1
    assert steps["metrics"]["lpips"] is None and "no backbone" in steps["metrics"]["lpips_unavailable"]
    assert 0 < steps["metrics"]["cvvdp"] < 10 and steps["metrics"]["cvvdp_s"] > 0  # JOD, 10 = identical
    session = next(r for r in read_records(results) if r["type"] == "session")
    assert session["environment"]["versions"]["diffusers"] and session["call"] == CALL
    assert session["cvvdp"]["available"] and "standard_fhd" in session["cvvdp"]["conditions"]


def test_probe_sees_exactly_the_static_schedule(bench_run):
    runs = _runs(bench_run[0])
    decisions = runs["static interval=2 start=2"]["calls"]["decisions"]
    # steps 0, 1 before the start, then every 2nd step, and the last step always: 0 1 2 . 4 5
    computed = [all(f == 1.0 for f in step) for step in decisions]
    assert computed == [StaticSkipConfig(2, 2).computes(i, 6) for i in range(6)]
    assert computed == [True, True, True, False, True, True]
    assert all(f == 0.0 for f in decisions[3])
    assert runs["static interval=2 start=2"]["calls"]["computed"] == pytest.approx(10)


def test_block_caches_count_partial_work(bench_run):
    runs = _runs(bench_run[0])
    magcache = runs["magcache threshold=0.5"]
    assert magcache["calibration"]["ratios"] and len(magcache["calibration"]["ratios"]) == 6
    skipped = [f for step in magcache["calls"]["decisions"] for f in step if f < 1]
    assert skipped and all(0 < f < 0.5 for f in skipped)  # embeddings still run, the blocks do not
    taylor = runs["taylorseer interval=2 start=2"]
    assert taylor["calls"]["computed"] < 12 and math.isfinite(taylor["metrics"]["psnr"])
    assert "identical_to_full_run" not in taylor["flags"]


def test_a_method_that_does_nothing_is_flagged(bench_run):
    record = _runs(bench_run[0])["test-does-nothing"]
    assert record["metrics"]["psnr"] == "inf"
    assert {"identical_to_full_run", "saves_no_work"} <= set(record["flags"])


def test_an_unsupported_peer_is_recorded_not_fatal(bench_run):
    record = _runs(bench_run[0])["fastercache"]
    # refused before it runs: Wan makes the guidance branches as separate calls, which FasterCache cannot take
    assert record["status"] == "unsupported" and "separate calls" in record["error"]
    assert "Unsupported" in record["traceback"] and "faster_cache.py" not in record["traceback"]


def test_easycache_runs_as_a_peer(bench_run):
    record = _runs(bench_run[0])["easycache threshold=0.5 warmup_steps=2"]
    assert record["status"] == "ok", record.get("error")
    last = record["method_stats"]["transformer"]["last_call"]
    assert last["cond"]["pattern"] == last["uncond"]["pattern"] and "S" in last["cond"]["pattern"]
    assert record["calls"]["computed_calls"] == sum(b["computed"] for b in last.values()) < 12


def test_taocache_runs_through_its_adapter(bench_run):
    record = _runs(bench_run[0])["taocache error_budget=0.5"]
    import taocache

    if not hasattr(taocache, "enable"):
        assert record["status"] == "unsupported"
        return
    assert record["status"] == "ok", record.get("error")
    assert record["method_stats"]["calls"] == record["calls"]["made"]
    assert "self_report_differs_from_probe" not in record["flags"]
    assert record["calibration"]["steps"] == 50  # a 6-step benchmark calibrates on 50 steps, resampled
    assert record["method_stats"]["predicted"] > 0


def test_teacache_and_the_stacked_methods_save_work_the_probe_sees(bench_run):
    runs = _runs(bench_run[0])
    alone = runs["taocache error_budget=0.5"]["calls"]["computed"]
    teacache = runs["teacache coefficients=[1.0, 0.0] rel_l1_thresh=0.3 warmup_steps=1"]
    assert teacache["status"] == "ok", teacache.get("error")
    assert teacache["calls"]["computed"] < teacache["calls"]["made"]
    assert not {"identical_to_full_run", "saves_no_work"} & set(teacache["flags"])
    stacked = [r for label, r in runs.items() if label.endswith("+ taocache error_budget=0.5")]
    assert len(stacked) == 2
    for record in stacked:
        assert record["status"] == "ok", record.get("error")
        assert record["calls"]["computed"] < alone  # the inner cache saves work in the calls TaoCache computes
        assert math.isfinite(record["metrics"]["psnr"])
        assert set(record["method_stats"]) == {record["method"].split("+")[1], "taocache"}


def test_taocache_calibration_steps_is_a_setting_of_its_own(pipe):
    from taocache.bench.methods.base import BenchContext

    method = make_method("taocache", {"calibration_steps": 8, "error_budget": 0.5})
    assert method.identity() != make_method("taocache", {"error_budget": 0.5}).identity()
    context = BenchContext(pipe=pipe, call=CALL, calibration_prompts=world_calibration_prompts(count=1),
                           calibration_seed=0, run=None, shared={})
    assert method.prepare(context)["steps"] == 8
    assert method.config(pipe, CALL).calibration.steps == 8
    with pytest.raises(ValueError, match="calibration_steps"):
        make_method("taocache", {"calibration_steps": 1})


def test_stacked_methods_refuse_unknown_parts_and_bad_settings():
    with pytest.raises(ValueError, match="parts"):
        make_method("taocache+teacache", {"speed": {}})
    with pytest.raises(ValueError, match="table"):
        make_method("taocache+pab", {"pab": 2})
    with pytest.raises(ValueError, match="rel_l1_thresh"):
        make_method("teacache", {"rel_l1_thresh": -1})


def test_rerun_resumes_and_a_torn_line_is_redone(pipe, bench_run, tmp_path):
    results, methods = bench_run
    copy = tmp_path / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    last_run = max(i for i, line in enumerate(lines) if '"type": "run"' in line)
    redo = json.loads(lines[last_run])["label"]
    copy.write_text("".join(lines[:last_run]) + lines[last_run][:40])  # interrupted in mid-write
    Benchmark(pipe, _plan(methods), copy, lpips=NO_LPIPS, progress=False).run()
    runs = [r for r in read_records(copy) if r["type"] == "run"]
    assert sorted(r["label"] for r in runs) == sorted(_runs(results))
    assert [r["label"] for r in runs].count(redo) == 1
    before = len(runs)
    Benchmark(pipe, _plan(methods), copy, lpips=NO_LPIPS, progress=False).run()
    assert len([r for r in read_records(copy) if r["type"] == "run"]) == before


def test_plan_refuses_pipeline_defaults_and_bad_settings():
    with pytest.raises(ValueError, match="num_inference_steps"):
        _plan([], call={"height": 32, "width": 32, "num_frames": 9})
    with pytest.raises(ValueError, match="own default size"):
        _plan([], call={"num_inference_steps": 4})
    with pytest.raises(ValueError, match="fewer steps than the full run"):
        _plan([make_method("steps", {"steps": 6})])
    with pytest.raises(ValueError, match="always run as the reference"):
        _plan([make_method("full")])
    with pytest.raises(ValueError, match="no setting"):
        make_method("fbcache", {"treshold": 0.1})
    with pytest.raises(ValueError, match="unknown method"):
        make_method("teacache-typo")
    with pytest.raises(ValueError, match="interval"):
        make_method("static", {"interval": 0})
    with pytest.raises(ValueError, match="num_inference_steps"):
        StaticSkipConfig(num_inference_steps=0)
    plan = _plan([], seeds=[0, 0, 1])  # a repeated seed would run, and count, twice
    assert plan.seeds == [0, 1]


def test_records_append_whole_lines_and_skip_torn_ones(tmp_path):
    path = tmp_path / "r.jsonl"
    append_record(path, {"type": "run", "key": "a", "method": "full", "status": "ok", "psnr": math.inf})
    append_record(path, {"type": "run", "key": "b", "method": "steps", "status": "unsupported"})
    with open(path, "a") as handle:
        handle.write('{"type": "run", "key": "c", "sta')
    records = read_records(path)
    assert [r["key"] for r in records] == ["a", "b"] and records[0]["psnr"] == "inf"
    assert finished_keys(records) == {"a", "b"}
    append_record(path, {"type": "run", "key": "d", "method": "steps", "status": "ok"})  # after the torn line
    assert [r["key"] for r in read_records(path)] == ["a", "b", "d"]
    with open(path, "a") as handle:  # lines that are JSON but no benchmark record (another file's content)
        handle.write('0.5\nnull\n[1, 2]\n{"type": "run", "key": "e"}\n')
    assert [r["key"] for r in read_records(path)] == ["a", "b", "d"]


def test_report_from_a_real_run(bench_run, tmp_path):
    from taocache.report import write_report

    paths = write_report(bench_run[0], tmp_path / "report")
    summary = json.loads(paths["json"].read_text())
    by_label = {s["label"]: s for s in summary["settings"]}
    assert by_label["steps steps=3"]["call_ratio"] == pytest.approx(2.0)
    assert by_label["fastercache"]["runs"] == 0
    assert any("fastercache" in note for note in summary["unmeasured"])
    assert any("no backbone" in note for note in summary["unmeasured"])
    assert summary["timeline"][0]["label"] == "full"
    page = paths["html"].read_text()
    assert page.count("data:image/gif;base64,") >= 3 and "data:image/png;base64," in page
