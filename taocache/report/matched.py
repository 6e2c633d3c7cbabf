"""Quality at matched speed with paired intervals: every series (the fewer-steps run and static skipping
included) read off at the same call ratios as TaoCache, over the same (prompt, seed) pairs.

Per series, the settings on its frontier (call ratio against mean PSNR, as in the matched table) are
interpolated pair by pair at each target ratio (``taocache.metrics.paired.at_ratio``); the difference of
TaoCache minus the series then gets a paired BCa bootstrap 95% interval, and TaoCache *leads* where the whole
interval lies above zero. The call ratio is used rather than the measured speed-up: it is free of timing
noise, and a single timed run per pair would make per-pair speed-ups noisy.

Where TaoCache was also run stacked on other caches, one more series, TaoCache *alone or stacked*, takes its
frontier over all of them (formed like every series' own); at a ratio TaoCache alone does not reach, that
series is the reference, compared with every series outside TaoCache's family.
"""

from __future__ import annotations

from collections import defaultdict

from ..bench.records import number
from ..metrics.paired import MIN_PAIRS, PSNR_CAP, at_ratio, paired_difference
from . import aggregate as agg

#: The series every other series is compared with.
REFERENCE = "taocache"
#: The series over TaoCache's settings alone and stacked: the reference where TaoCache alone falls short.
STACKED = "taocache (alone or stacked)"
#: Metrics read off at the matched ratio (higher is better for each).
METRICS = ("psnr", "ssim", "cvvdp")
AXIS = "call_ratio"


def _frontier_labels(settings: list[dict], series: str | set[str]) -> list[dict]:
    """The settings of the series (or of any of a set of series) that no faster setting beats on mean PSNR, by
    increasing call ratio."""
    names = {series} if isinstance(series, str) else series
    own = [s for s in settings if s["series"] in names and s.get(AXIS) and s.get("psnr") is not None]
    kept, best = [], float("-inf")
    for s in sorted(own, key=lambda s: (-s[AXIS], -s["psnr"])):
        if s["psnr"] > best and all(s[AXIS] != k[AXIS] for k in kept):
            kept.append(s)
            best = s["psnr"]
    return sorted(kept, key=lambda s: s[AXIS])


def reference_label(matched: dict, target: str) -> str:
    """How the tables name the reference at ``target``: TaoCache, or TaoCache alone or stacked."""
    return "TaoCache" if matched.get("references", {}).get(target, REFERENCE) == REFERENCE else "TaoCache (alone or stacked)"


def _family(name: str) -> bool:
    """Whether a series is TaoCache, alone or stacked."""
    return name in (REFERENCE, STACKED) or name.startswith(REFERENCE + "+")


def _per_pair(runs: list[dict]) -> dict[str, dict[tuple, dict]]:
    """label -> (prompt index, seed) -> that run's metrics."""
    found: dict[str, dict[tuple, dict]] = defaultdict(dict)
    for r in runs:
        if r["status"] == "ok" and r["method"] != "full":
            found[r["label"]][(r["prompt_index"], r["seed"])] = r["metrics"]
    return found


def _values(metrics_by_pair: dict, pairs: list, metric: str) -> list[float] | None:
    values = [number(metrics_by_pair[p].get(metric)) if p in metrics_by_pair else None for p in pairs]
    return None if any(v is None for v in values) else values


def _series_at(settings: list[dict], per_pair: dict, pairs: list, target: float) -> dict | None:
    """Per metric, the per-pair values of one series' frontier interpolated at ``target`` (None outside)."""
    found = {}
    for metric in METRICS:
        points = [(s[AXIS], _values(per_pair[s["label"]], pairs, metric)) for s in settings]
        points = [(x, v) for x, v in points if v is not None]
        if len(points) < len(settings):  # a setting without this metric on every pair: leave the metric out
            found[metric] = None
            continue
        found[metric] = at_ratio(points, target, cap=PSNR_CAP if metric == "psnr" else None) if points else None
    return found if found.get("psnr") is not None else None


def matched_speed(runs: list[dict], settings: list[dict], targets=agg.TARGETS) -> dict:
    """{"axis", "reference", "pairs", "targets": {target: [row per series]}, "references": {target: series}}
    (see the module docstring)."""
    pairs = sorted({(r["prompt_index"], r["seed"]) for r in runs if r["method"] == "full" and r["status"] == "ok"})
    per_pair = _per_pair(runs)
    series = sorted({s["series"] for s in settings if s["series"] != "full"})
    frontiers = {name: _frontier_labels(settings, name) for name in series}
    stacks = {name for name in series if _family(name)}
    if len(stacks) > 1:
        series.append(STACKED)
        frontiers[STACKED] = _frontier_labels(settings, stacks)
    result = {"axis": AXIS, "reference": REFERENCE, "pairs": len(pairs), "min_pairs": MIN_PAIRS, "targets": {},
              "references": {}}
    for target in targets:
        at = {name: _series_at(frontiers[name], per_pair, pairs, target) if frontiers[name] else None
              for name in series}
        reference_name = STACKED if at.get(REFERENCE) is None and at.get(STACKED) is not None else REFERENCE
        reference = at.get(reference_name)
        rows = []
        for name in series:
            values = at[name]
            row = {"series": name, **{m: None for m in METRICS}, "difference": None, "leads": None}
            if values is not None:
                row.update({m: (sum(v) / len(v) if v is not None else None) for m, v in values.items()})
            compared = name != reference_name and not (reference_name == STACKED and _family(name))
            if values is not None and reference is not None and compared:
                row["difference"], row["leads"] = _compare(reference["psnr"], values["psnr"])
            rows.append(row)
        rows.sort(key=lambda row: (row["series"] != reference_name, -(row["psnr"] or float("-inf"))))
        result["targets"][f"{target:g}"] = rows
        result["references"][f"{target:g}"] = reference_name
    return result


def _compare(reference, other) -> tuple[dict, bool | None]:
    """TaoCache minus the series: the mean, and with enough pairs its interval and whether TaoCache leads."""
    if len(reference) < MIN_PAIRS:
        mean = float(sum(a - b for a, b in zip(reference, other)) / len(reference))
        return {"mean": mean, "low": None, "high": None, "pairs": len(reference)}, None
    d = paired_difference(reference, other)
    return {"mean": d.mean, "low": d.low, "high": d.high, "pairs": d.pairs, "capped": d.capped}, d.leads()
