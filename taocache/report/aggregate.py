"""From result records to the numbers of a report: per-setting means, frontiers, the matched-speed-up table.

Conventions (also stated in every report):
- quality is the mean over prompt/seed runs of per-video scores (each the mean over frames);
- an identical video has infinite PSNR; for means it counts as ``PSNR_CAP`` dB and is counted apart;
- the speed-up of a setting is the total denoising-loop time of the full runs divided by that of the
  setting's runs over the same prompts and seeds (measured, never derived from call counts); the call ratio
  is the same quotient of computed denoiser calls (a call counts as computed when it did at least half a
  full call's work), the FLOP ratio that of the work done (``FlopCounterMode``, attention included: see
  ``taocache.bench.probe``), and the efficiency is the speed-up over the FLOP ratio;
- a frontier keeps the settings that no other setting of the method beats on both speed-up and quality, and
  the matched table interpolates linearly along it (PSNR through its squared error); outside the swept range there is no value (below the
  frontier's first point, when a slower setting was swept, that first point's value counts).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict

from ..bench.records import number
from ..metrics.paired import between_decibels

PSNR_CAP = 100.0
TARGETS = (1.5, 2.0, 3.0)
#: metric -> True when higher is better
METRICS = {"psnr": True, "ssim": True, "lpips": False, "cvvdp": True}


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _std(values):
    values = [v for v in values if v is not None]
    return statistics.stdev(values) if len(values) > 1 else None


def split_records(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(sessions, runs) of a results file."""
    return [r for r in records if r.get("type") == "session"], [r for r in records if r.get("type") == "run"]


def aggregate(runs: list[dict]) -> dict:
    """Everything per setting label, plus the full run's totals. See the module docstring for definitions."""
    references = {r["key"]: r for r in runs if r["method"] == "full" and r["status"] == "ok"}
    by_label: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        if run["key"] in references:
            continue
        by_label[run["label"]].append(run)
    settings = []
    for label, group in by_label.items():
        ok = [
            r
            for r in group
            if r["status"] == "ok" and r.get("speedup", {}).get("reference_key") in references
        ]
        failed = [r for r in group if r["status"] != "ok"]
        entry = {
            "label": label,
            "method": group[0]["method"],
            "series": group[0].get("series") or group[0]["method"],
            "setting": group[0].get("setting", {}),
            "runs": len(ok),
            "unsupported": len(failed),
            "error": failed[0].get("error") if failed else None,
        }
        if ok:
            entry.update(_summarise(ok, [references[r["speedup"]["reference_key"]] for r in ok]))
        settings.append(entry)
    settings.sort(key=lambda e: (e["series"], -(e.get("speedup") or 0)))
    full = list(references.values())
    return {
        "settings": settings,
        "full": {
            "runs": len(full),
            "loop_s": _mean([r["timing"]["loop_s"] for r in full]),
            "call_s": _mean([r["timing"]["call_s"] for r in full]),
            "calls": _mean([r["calls"]["made"] for r in full]),
            "steps": _mean([r["steps"] for r in full]),
            "peak_bytes": max((r["memory"]["peak_bytes"] or 0 for r in full), default=None),
            "flags": sorted({f for r in full for f in r.get("flags", [])}),
        },
    }


def _summarise(ok: list[dict], refs: list[dict]) -> dict:
    psnrs = [number(r["metrics"]["psnr"]) for r in ok]
    capped = [min(p, PSNR_CAP) for p in psnrs]
    flags = defaultdict(int)
    for r in ok:
        for flag in r.get("flags", []):
            flags[flag] += 1
    loop = sum(r["timing"]["loop_s"] for r in ok)
    loop_ref = sum(r["timing"]["loop_s"] for r in refs)
    call = sum(r["timing"]["call_s"] for r in ok)
    call_ref = sum(r["timing"]["call_s"] for r in refs)
    work = sum(r["calls"]["computed"] for r in ok)
    work_ref = sum(r["calls"]["computed"] for r in refs)
    computed = sum(r["calls"]["computed_calls"] for r in ok)
    computed_ref = sum(r["calls"]["computed_calls"] for r in refs)
    speedup = loop_ref / loop if loop else None
    call_ratio = computed_ref / computed if computed else None
    flop_ratio = work_ref / work if work else None
    return {
        "psnr": _mean(capped),
        "psnr_std": _std(capped),
        "identical": sum(math.isinf(p) for p in psnrs),
        "ssim": _mean([r["metrics"]["ssim"] for r in ok]),
        "ssim_std": _std([r["metrics"]["ssim"] for r in ok]),
        "lpips": _mean([r["metrics"]["lpips"] for r in ok]),
        "lpips_std": _std([r["metrics"]["lpips"] for r in ok]),
        "cvvdp": _mean([r["metrics"].get("cvvdp") for r in ok]),
        "cvvdp_std": _std([r["metrics"].get("cvvdp") for r in ok]),
        "cvvdp_s": _mean([r["metrics"].get("cvvdp_s") for r in ok]),
        "speedup": speedup,
        "call_speedup": call_ref / call if call else None,
        "call_ratio": call_ratio,
        "flop_ratio": flop_ratio,
        "efficiency": speedup / flop_ratio if speedup and flop_ratio else None,
        "loop_s": _mean([r["timing"]["loop_s"] for r in ok]),
        "calls_made": _mean([r["calls"]["made"] for r in ok]),
        "calls_computed": _mean([r["calls"]["computed"] for r in ok]),
        "steps": _mean([r["steps"] for r in ok]),
        "peak_bytes": max((r["memory"]["peak_bytes"] or 0 for r in ok), default=None),
        "flags": dict(flags),
        "notes": sorted({n for r in ok for n in r.get("notes", [])}),
    }


# ---------------------------------------------------------------------------------------------- frontiers


def frontier(points: list[tuple[float, float]], higher_better: bool = True) -> list[tuple[float, float]]:
    """The points no other point beats on both coordinates (speed-up, quality), by increasing speed-up."""
    sign = 1 if higher_better else -1
    kept, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (-p[0], -sign * p[1])):
        if sign * y > best:
            kept.append((x, y))
            best = sign * y
    return sorted(kept)


def interpolate(curve: list[tuple[float, float]], x: float, slowest: float | None = None,
                decibels: bool = False) -> float | None:
    """Linear interpolation along a frontier; None outside its speed-up range. ``decibels``: the values are
    PSNR, interpolated through their squared error (``taocache.metrics.paired.between_decibels``).

    Below the frontier's first point, if the sweep also ran a setting at most as fast as ``x`` (``slowest``:
    the lowest speed-up of all its settings), the first point's value counts: that setting is faster than
    ``x`` and at least as good as anything slower.
    """
    if curve and slowest is not None and slowest <= x < curve[0][0]:
        return curve[0][1]
    if not curve or x < curve[0][0] or x > curve[-1][0]:
        return None
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if x0 <= x <= x1:
            if x1 == x0:
                return y0
            weight = (x - x0) / (x1 - x0)
            return float(between_decibels(y0, y1, weight)) if decibels else y0 + (y1 - y0) * weight
    return curve[0][1]  # a single point exactly at x


def frontiers(settings: list[dict], axis: str = "speedup") -> dict:
    """Per series (a method, or a named group of its settings) and metric: the frontier of (axis, metric)."""
    result: dict = defaultdict(dict)
    for method in sorted({s["series"] for s in settings}):
        for metric, higher in METRICS.items():
            points = [
                (s[axis], s[metric])
                for s in settings
                if s["series"] == method and s.get(axis) is not None and s.get(metric) is not None
            ]
            if points:
                result[method][metric] = frontier(points, higher)
    return dict(result)


def matched_table(settings: list[dict], axis: str = "speedup", targets=TARGETS) -> dict:
    """{series: {metric: {target: value or None}}} at matched speed-ups along each series' frontier."""
    table = {}
    for method, curves in frontiers(settings, axis).items():
        if method == "full":
            continue
        slowest = min(s[axis] for s in settings if s["series"] == method and s.get(axis) is not None)
        table[method] = {
            metric: {str(t): interpolate(curve, t, slowest, decibels=metric == "psnr") for t in targets}
            for metric, curve in curves.items()
        }
    return table


# ------------------------------------------------------------------------------------------------ details


def first_group(runs: list[dict]) -> tuple[int, int] | None:
    """(prompt index, seed) of the first prompt/seed pair, used for the timeline and the media."""
    pairs = sorted({(r["prompt_index"], r["seed"]) for r in runs if r["status"] == "ok"})
    return pairs[0] if pairs else None


def timeline(runs: list[dict]) -> list[dict]:
    """Per setting of the first prompt/seed pair: the fraction of a full call computed at each step."""
    pair = first_group(runs)
    rows = []
    for r in runs:
        if r["status"] != "ok" or (r["prompt_index"], r["seed"]) != pair:
            continue
        steps = [_mean(step) if step else 0.0 for step in r["calls"]["decisions"]]
        rows.append({"label": r["label"], "method": r.get("series") or r["method"], "computed": steps})
    rows.sort(key=lambda row: (row["method"] != "full", row["method"], -sum(row["computed"])))
    return rows


def media(runs: list[dict]) -> dict[str, str]:
    """Label -> GIF path (relative to the results folder) for the runs that kept media."""
    found = {}
    for r in sorted(runs, key=lambda r: (r["prompt_index"], r["seed"])):
        if r.get("media") and r["label"] not in found:
            found[r["label"]] = r["media"]
    return found


def featured(settings: list[dict], media_labels) -> list[str]:
    """The media worth showing first: the full run, and per series the setting nearest a 2x call ratio."""
    available = set(media_labels)
    by_series: dict[str, list[dict]] = defaultdict(list)
    for s in settings:
        if s["label"] in available and s.get("call_ratio"):
            by_series[s["series"]].append(s)
    shown = ["full"] if "full" in available else []
    return shown + [
        min(group, key=lambda s: abs(s["call_ratio"] - 2.0))["label"] for group in by_series.values()
    ]


def unmeasured(sessions: list[dict], runs: list[dict]) -> list[str]:
    """What could not be measured, in words."""
    notes = []
    reasons = {s["lpips"]["reason"] for s in sessions if not s.get("lpips", {}).get("available", True)}
    reasons |= {s["cvvdp"]["reason"] for s in sessions if not s.get("cvvdp", {}).get("available", True)}
    notes += sorted(reasons)
    failures = {}
    for r in runs:
        if r["status"] != "ok":
            failures.setdefault(r["label"], r.get("error", "unknown error"))
    notes += [f"{label}: unsupported here ({error})" for label, error in sorted(failures.items())]
    for s in sessions:
        if s.get("environment", {}).get("gpu") is None:
            notes.append("no GPU: times are CPU times, memory is the process's resident set (sampled)")
            break
    return notes
