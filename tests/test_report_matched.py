"""The report's paired matched-speed table: per-pair interpolation at the same call ratio, TaoCache's paired
interval against every series (the fewer-steps run included), the CVVDP column, and too few pairs."""

import numpy as np
import pytest

from taocache.report.aggregate import aggregate
from taocache.report.matched import matched_speed
from taocache.report.summary import interval, matched_speed_markdown

PAIRS = 12


def _records(pairs: int, tao_gain: float, seed: int = 0) -> list[dict]:
    """Full runs, and per series two settings at call ratios 1.25x / 2.5x (TaoCache: 1.25x / 2.5x too), whose
    per-pair PSNR is a prompt-dependent base minus a cost of speed; TaoCache is ``tao_gain`` dB better."""
    rng = np.random.default_rng(seed)
    base = rng.normal(35.0, 4.0, pairs)  # the prompts differ a lot; pairing must remove that
    records = []
    for p in range(pairs):
        records.append(_run(f"full-{p}", "full", "full", p, None, 20.0))
    for series, offset in (("taocache", tao_gain), ("steps", -3.0), ("static", 0.0)):
        for computed, loss in ((16.0, 2.0), (8.0, 10.0)):
            noise = rng.normal(0, 0.3, pairs)
            for p in range(pairs):
                psnr = base[p] - loss + offset + noise[p]
                records.append(_run(f"{series}-{computed}-{p}", f"{series} c={computed}", series, p, psnr, computed,
                                    cvvdp=9.0 - loss / 5 + offset / 10))
    return records


def _run(key, label, method, pair, psnr, computed, cvvdp=10.0):
    record = {
        "type": "run", "key": key, "label": label, "method": method, "series": method, "status": "ok",
        "prompt_index": pair, "seed": 0, "steps": 10, "setting": {},
        "metrics": {"psnr": psnr, "ssim": 0.9 if psnr is None else min(1.0, psnr / 50), "lpips": None,
                    "cvvdp": cvvdp},
        "timing": {"loop_s": computed / 10, "call_s": computed / 10 + 0.1},
        "calls": {"made": 20, "computed": computed, "computed_calls": computed, "decisions": []},
        "memory": {"peak_bytes": 1}, "flags": [], "notes": [],
    }
    if method != "full":
        record["speedup"] = {"reference_key": f"full-{pair}"}
    return record


def _table(records):
    return matched_speed(records, aggregate(records)["settings"])


def test_taocache_leads_every_series_by_its_true_margin_at_2x():
    table = _table(_records(PAIRS, tao_gain=2.0))
    assert table["pairs"] == PAIRS and set(table["references"].values()) == {"taocache"}
    rows = {r["series"]: r for r in table["targets"]["2"]}
    assert set(rows) == {"taocache", "steps", "static"}  # the equal-cost fewer-steps run is a peer row
    assert rows["taocache"]["difference"] is None and rows["taocache"]["leads"] is None
    for series, margin in (("steps", 5.0), ("static", 2.0)):
        d = rows[series]["difference"]
        assert d["low"] < d["mean"] < d["high"] and d["high"] - d["low"] < 1.0, (series, d)
        assert d["mean"] == pytest.approx(margin, abs=0.5) and d["low"] > 0
        assert rows[series]["leads"] is True
    # 2x lies 2/3 of the way from 1.25x to 2.5x in the call ratio: the mean loss interpolates the same way
    loss = 2.0 + (2.0 - 1.25) / (2.5 - 1.25) * 8.0
    static = rows["static"]
    assert static["psnr"] == pytest.approx(rows["taocache"]["psnr"] - 2.0, abs=0.3)
    assert static["cvvdp"] == pytest.approx(9.0 - loss / 5, abs=1e-6)
    assert table["targets"]["3"] == [
        {"series": s, "psnr": None, "ssim": None, "cvvdp": None, "difference": None, "leads": None}
        for s in ("taocache", "static", "steps")
    ]  # past every setting: nothing is extrapolated


def test_no_true_difference_does_not_lead():
    rows = {r["series"]: r for r in _table(_records(PAIRS, tao_gain=0.0, seed=3))["targets"]["1.5"]}
    d = rows["static"]["difference"]
    assert d["low"] < 0 < d["high"] and rows["static"]["leads"] is False


def test_too_few_pairs_give_the_mean_without_an_interval():
    rows = {r["series"]: r for r in _table(_records(4, tao_gain=2.0))["targets"]["2"]}
    d = rows["steps"]["difference"]
    assert d["low"] is None and rows["steps"]["leads"] is None and d["mean"] == pytest.approx(5.0, abs=0.5)
    assert "too few pairs" in interval(d)


def test_markdown_lists_every_target_with_the_interval():
    summary = {"matched_speed": _table(_records(PAIRS, tao_gain=2.0))}
    text = "\n".join(matched_speed_markdown(summary))
    assert text.count("| TaoCache leads |") == 3 and "| steps |" in text and "[+" in text


def test_a_ratio_only_a_stack_reaches_is_compared_through_taocache_alone_or_stacked():
    records = _records(PAIRS, tao_gain=2.0)
    rng = np.random.default_rng(1)
    base = {r["prompt_index"]: r["metrics"]["psnr"] + 2.0 - 1.0 for r in records  # the per-prompt base
            if r["label"] == "static c=16.0"}
    for series, offset in (("steps", -3.0), ("static", 0.0), ("taocache+teacache", 1.0)):
        noise = rng.normal(0, 0.3, PAIRS)
        for p in range(PAIRS):  # 4x: past TaoCache alone (2.5x), within the stack's and the peers' reach
            records.append(_run(f"{series}-5-{p}", f"{series} c=5", series, p, base[p] - 14.0 + offset + noise[p], 5.0))
            if series == "taocache+teacache":  # and a mild setting, so that it also reads at 2x
                records.append(_run(f"{series}-16-{p}", f"{series} c=16", series, p, base[p] - 2.0 + noise[p], 16.0))
    table = _table(records)
    assert table["references"] == {"1.5": "taocache", "2": "taocache", "3": "taocache (alone or stacked)"}
    rows = {r["series"]: r for r in table["targets"]["3"]}
    assert rows["taocache"]["psnr"] is None and table["targets"]["3"][0]["series"] == "taocache (alone or stacked)"
    assert rows["taocache+teacache"]["difference"] is None  # inside the reference's own family
    for series, margin in (("steps", 4.0), ("static", 1.0)):
        assert rows[series]["difference"]["mean"] == pytest.approx(margin, abs=0.6), series
    assert rows["steps"]["leads"] is True
    # at 2x TaoCache alone is the reference, and the stack is one more series compared with it
    rows = {r["series"]: r for r in table["targets"]["2"]}
    assert rows["taocache+teacache"]["difference"] is not None and rows["taocache"]["difference"] is None
