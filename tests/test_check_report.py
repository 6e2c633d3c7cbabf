"""eval/check_report.py: headless Chromium renders a page, and broken pages fail naming each problem; a
benchmark report made here from records renders with its tables, interval chart and side-by-side clips, and its
Every-setting table no longer makes the page scroll sideways. Skipped, saying why, where no Chromium exists
(set REQUIRE_CHROMIUM=1 where it must)."""

import base64
import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import check_report

try:
    BROWSER = check_report.find_chromium()
except check_report.BrowserError:
    if os.environ.get("REQUIRE_CHROMIUM"):  # where Chromium is meant to be installed, its absence fails
        raise
    BROWSER = None
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium binary found (apt-get install -y chromium, or set CHROMIUM)"
)


def png(size=(40, 30), colour=(200, 30, 30), kind="PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, kind)
    return buffer.getvalue()


def page(folder: Path, body: str) -> Path:
    path = folder / "report.html"
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>t</title></head><body>{body}</body></html>"
    )
    return path


GOOD_BODY = (
    "<h1>Benchmark</h1><h2>Numbers</h2><table><tr><th>method</th><th>PSNR</th></tr><tr><td>a</td><td>30.1</td></tr></table>"
    "<img alt='chart' src='data:image/png;base64,{chart}'>"
    "<figure><img alt='clip' src='media/clip.gif'></figure><p><a href='media/other%20clip.gif'>other</a></p>"
)


def good_report(folder: Path) -> Path:
    (folder / "media").mkdir()
    (folder / "media" / "clip.gif").write_bytes(png((64, 64), kind="GIF"))
    (folder / "media" / "other clip.gif").write_bytes(png((64, 64), (0, 0, 200), kind="GIF"))
    return page(folder, GOOD_BODY.format(chart=base64.b64encode(png()).decode()))


def run_with(options: list[str], path: Path, out: Path, capsys) -> tuple[int, str]:
    code = check_report.main([str(path), "--out", str(out), *options])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def run(path: Path, out: Path, capsys) -> tuple[int, str]:
    return run_with([], path, out, capsys)


def test_a_good_page_passes_and_leaves_screenshot_and_dom(tmp_path, capsys):
    code, text = run(good_report(tmp_path), tmp_path / "check", capsys)
    assert code == 0, text
    assert "1 tables, 2 images, 1 links, 0 interval charts, 0 clips" in text
    assert (tmp_path / "check" / "screenshot.png").stat().st_size > 0
    assert "30.1" in (tmp_path / "check" / "dom.html").read_text()


def test_a_broken_page_fails_naming_each_problem(tmp_path, capsys):
    path = good_report(tmp_path)
    (tmp_path / "media" / "clip.gif").unlink()  # a missing GIF
    (tmp_path / "media" / "other clip.gif").write_bytes(b"GIF89a not really")  # a corrupt linked GIF
    html = path.read_text()
    html = html.replace("<tr><td>a</td><td>30.1</td></tr>", "")  # an empty table (header only)
    html = html.replace(
        "<h2>Numbers</h2>",
        "<h2>First</h2><table><tr><td>x</td></tr></table><h2>Empty</h2><table></table><h2>Numbers</h2>",
    )
    html = html.replace("data:image/png;base64,", "data:image/png;base64,AAAA")  # broken inline chart
    html = html.replace(
        "</body>", "<img alt='remote' src='http://127.0.0.1:9/x.png'></body>"
    )  # not self-contained
    path.write_text(html)
    code, text = run(path, tmp_path / "check", capsys)
    assert code == 1, text
    expected = [
        "table 2 under 'Empty' has no data rows (0 rows in all)",
        "table 3 under 'Numbers' has no data rows (1 rows in all)",
        "image 1 ('chart', data:image/png;base64,...) did not load",
        "image 2 ('clip', file://",
        "linked file missing: " + str(tmp_path / "media" / "clip.gif"),
        "linked image does not decode: file://" + str(tmp_path / "media" / "other clip.gif"),
        "<img> loaded from the network: http://127.0.0.1:9/x.png",
        "browser error: Failed to load resource",
    ]
    for line in expected:
        assert line in text, f"{line!r} not in:\n{text}"
    assert "table 1 " not in text  # the table with a data row is fine


def test_a_blank_page_fails(tmp_path, capsys):
    code, text = run(page(tmp_path, "<div style='height:500px'></div>"), tmp_path / "check", capsys)
    assert code == 1 and "the page is blank" in text, text


def test_missing_page_and_missing_browser_exit_2(tmp_path, capsys):
    code, text = run(tmp_path / "nothing.html", tmp_path / "check", capsys)
    assert code == 2 and "no report at" in text
    code, text = run_with(["--chromium", "/no/such/browser"], good_report(tmp_path), tmp_path / "c", capsys)
    assert code == 2 and "no browser at '/no/such/browser'" in text


def test_overflow_is_a_warning_not_a_failure(tmp_path, capsys):
    body = GOOD_BODY.format(chart=base64.b64encode(png()).decode())
    body += "<h2>Wide</h2><table><tr><td style='white-space:nowrap'>" + "x" * 400 + "</td></tr></table>"
    good_report(tmp_path)
    code, text = run(page(tmp_path, body), tmp_path / "check", capsys)
    assert code == 0 and "warning: table under 'Wide' reaches" in text, text


# ------------------------------------------------------------------------------------- a benchmark report


@pytest.fixture
def report(tmp_path):
    """A report of 12 prompt/seed pairs from records made here (TaoCache, fewer steps, static skipping, and a
    setting with a long label), with a side-by-side GIF for the first pair."""
    from test_report_matched import _records

    from taocache.bench.records import append_record
    from taocache.report import write_report
    from taocache.results.media import side_by_side, write_video

    results = tmp_path / "results.jsonl"
    append_record(results, {
        "type": "session", "key": "s", "model": "tiny", "pipeline": "WanPipeline", "kind": "video",
        "call": {"num_inference_steps": 10}, "repeats": 1, "sweep": "t", "description": "d",
        "lpips": {"net": "alex", "available": False, "reason": "LPIPS unavailable: no weights"},
        "cvvdp": {"available": True, "reason": "", "fps": 16, "conditions": "ColorVideoVDP v0.5.7 (test)"},
        "methods": [{"series": "steps", "chosen": "the fewer-steps settings of the test"}],
        "environment": {"cpu": "test cpu", "cpu_count": 2, "gpu": None, "versions": {"torch": "x"}},
    })
    video = np.random.default_rng(0).random((3, 16, 16, 3))
    write_video(tmp_path / "media" / "tao.gif", side_by_side(video, video * 0.5))
    long = "taocache error_budget=0.4 max_consecutive=2 predictor=linear start_fraction=0.2 weigh_by_step=False"
    for record in _records(12, tao_gain=2.0):
        if record["label"] == "taocache c=8.0":
            record["label"] = long
        if record["label"] == long and record["prompt_index"] == 0:
            record["media"] = "media/tao.gif"
        append_record(results, record)
    return write_report(results, tmp_path / "report")["html"]


def test_a_benchmark_report_renders_with_intervals_and_clips(report, tmp_path, capsys):
    code, text = run_with(["--report"], report, tmp_path / "check", capsys)
    assert code == 0, text
    assert "1 interval charts, 1 clips" in text
    assert "Every setting" not in text  # the wide table scrolls inside its box: no sideways page
    html = report.read_text()
    for heading in ("Matched speed, paired", "How each method's settings were chosen", "Every setting"):
        assert f"<h2>{heading}</h2>" in html


def test_a_report_without_its_chart_and_clips_fails_with_report(report, tmp_path, capsys):
    html = report.read_text()
    html = html.replace('alt="paired PSNR differences with 95% intervals"', 'alt="chart"')
    start = html.index('<div class="media">')
    html = html[:start] + html[html.index("</div>", start) + len("</div>"):]
    report.write_text(html)
    code, text = run_with(["--report"], report, tmp_path / "check", capsys)
    assert code == 1 and "no chart of paired intervals" in text and "no side-by-side clip" in text, text
    assert run_with([], report, tmp_path / "check2", capsys)[0] == 0  # a plain page check does not ask
