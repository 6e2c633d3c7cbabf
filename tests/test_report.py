"""Reports from result records: frontiers, the matched-speed-up table, the HTML page and the summaries."""

import json
import math

import numpy as np
import pytest

from taocache.bench.records import append_record
from taocache.report import write_report
from taocache.report.aggregate import aggregate, frontier, interpolate, matched_table
from taocache.results.media import side_by_side, write_video


def test_frontier_keeps_undominated_points_and_interpolates():
    points = [(1.2, 40.0), (1.5, 35.0), (1.6, 36.0), (2.0, 30.0), (3.0, 20.0)]
    assert frontier(points) == [(1.2, 40.0), (1.6, 36.0), (2.0, 30.0), (3.0, 20.0)]
    curve = frontier(points)
    assert interpolate(curve, 1.8) == pytest.approx(33.0)
    assert interpolate(curve, 2.5) == pytest.approx(25.0)
    assert interpolate(curve, 1.0) is None and interpolate(curve, 3.5) is None
    # PSNR goes through its squared error: halfway from 36 dB (1.6x) to 30 dB (2.0x) is 32.2 dB, not 33
    assert interpolate(curve, 1.8, decibels=True) == pytest.approx(-10 * math.log10((10**-3.6 + 10**-3) / 2))
    assert interpolate([(1.54, 42.0)], 1.5, slowest=1.42) == 42.0  # a faster, better setting covers 1.5x
    assert interpolate([(1.54, 42.0)], 1.5, slowest=1.52) is None
    assert frontier([(1.5, 0.2), (2.0, 0.1), (2.5, 0.3)], higher_better=False) == [(2.0, 0.1), (2.5, 0.3)]


def _run(key, label, method, seed, psnr, loop, computed, ref="full-0", **extra):
    record = {
        "type": "run",
        "key": key,
        "label": label,
        "method": method,
        "series": method,
        "status": "ok",
        "prompt": "p",
        "prompt_index": 0,
        "seed": seed,
        "steps": 10,
        "setting": {},
        "metrics": {"psnr": psnr, "ssim": 0.9, "lpips": None},
        "timing": {"loop_s": loop, "call_s": loop + 0.5},
        "calls": {"made": 20, "computed": computed, "computed_calls": round(computed), "decisions": [[1.0, 1.0]] * 10},
        "memory": {"peak_bytes": 2**20},
        "flags": [],
        "notes": [],
    }
    if method != "full":
        record["speedup"] = {"reference_key": ref}
    record.update(extra)
    return record


@pytest.fixture
def results(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(
        path,
        {
            "type": "session",
            "key": "s",
            "model": "tiny",
            "pipeline": "WanPipeline",
            "kind": "video",
            "call": {"num_inference_steps": 10},
            "repeats": 3,
            "sweep": "t",
            "description": "d",
            "lpips": {"net": "alex", "available": False, "reason": "LPIPS unavailable: no weights"},
            "environment": {"cpu": "test cpu", "cpu_count": 2, "gpu": None, "versions": {"torch": "x"}},
        },
    )
    append_record(path, _run("full-0", "full", "full", 0, None, 2.0, 20))
    for i, (steps, psnr) in enumerate([(8, 40.0), (5, 30.0), (4, 25.0)]):
        append_record(
            path, _run(f"s{i}", f"steps steps={steps}", "steps", 0, psnr, 2.0 * steps / 10, 2 * steps)
        )
    append_record(path, _run("c0", "cache a=1", "cache", 0, 45.0, 1.25, 15.0))
    append_record(
        path, _run("c1", "cache a=2", "cache", 0, "inf", 2.0, 20.0, flags=["identical_to_full_run"])
    )
    append_record(
        path,
        {
            "type": "run",
            "key": "u",
            "label": "broken",
            "method": "broken",
            "status": "unsupported",
            "error": "IndexError: boom",
            "prompt_index": 0,
            "seed": 0,
        },
    )
    video = np.random.default_rng(0).random((3, 8, 8, 3))
    gif = write_video(tmp_path / "media" / "c0.gif", side_by_side(video, video * 0.5))
    assert gif.is_file()
    lines = path.read_text().splitlines()
    lines = [json.dumps({**json.loads(x), "media": "media/c0.gif"}) if '"c0"' in x else x for x in lines]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_aggregate_measures_speedup_from_times_and_counts(results):
    from taocache.bench.records import read_records
    from taocache.report.aggregate import split_records

    _, runs = split_records(read_records(results))
    numbers = aggregate(runs)
    by = {s["label"]: s for s in numbers["settings"]}
    assert by["steps steps=5"]["speedup"] == pytest.approx(2.0)
    assert by["cache a=1"]["speedup"] == pytest.approx(1.6) and by["cache a=1"][
        "call_ratio"
    ] == pytest.approx(20 / 15)
    assert by["cache a=2"]["psnr"] == 100.0 and by["cache a=2"]["identical"] == 1
    assert by["broken"]["runs"] == 0 and "IndexError" in by["broken"]["error"]
    table = matched_table(numbers["settings"])
    assert table["steps"]["psnr"]["2.0"] == pytest.approx(30.0)
    # a third of the way from 40 dB at 1.25x to 30 dB at 2x, through the squared error
    assert table["steps"]["psnr"]["1.5"] == pytest.approx(-10 * math.log10(1e-4 + (1e-3 - 1e-4) / 3))
    assert table["steps"]["psnr"]["3.0"] is None  # beyond the swept range (2.5x at most)


def test_report_files_are_self_contained_and_honest(results, tmp_path):
    out = tmp_path / "report"
    paths = write_report(results, out)
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and "data:image/gif;base64," in page
    assert 'src="http' not in page and "src='http" not in page
    assert "LPIPS unavailable: no weights" in page and "test cpu" in page
    assert "IndexError: boom" in page
    summary = json.loads(paths["json"].read_text())
    assert summary["lpips"]["available"] is False
    assert any("broken" in note for note in summary["unmeasured"])
    markdown = paths["markdown"].read_text()
    assert (
        "| steps |" in markdown and "LPIPS" not in markdown.split("## Quality at matched")[1].split("\n")[2]
    )
    with pytest.raises(FileExistsError, match="--force"):
        write_report(results, out)
    write_report(results, out, overwrite=True)


def test_report_refuses_a_file_without_records(tmp_path):
    empty = tmp_path / "r.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no benchmark records"):
        write_report(empty, tmp_path / "out")


def test_report_refuses_to_average_two_models(results, tmp_path):
    other = json.loads(next(line for line in results.read_text().splitlines() if '"session"' in line))
    append_record(results, {**other, "key": "s2", "model": "another"})
    with pytest.raises(ValueError, match="mixes benchmarks"):
        write_report(results, tmp_path / "out")


def test_a_published_summary_carries_its_media(results, tmp_path):
    out = tmp_path / "published"
    paths = write_report(results, out, html=False, copy_media=True)
    assert "html" not in paths and not (out / "report.html").exists()
    assert (out / "media" / "c0.gif").is_file()
    assert "![cache a=1](media/c0.gif)" in paths["markdown"].read_text()
    assert json.loads(paths["json"].read_text())["media_links"] == {"cache a=1": "media/c0.gif"}
