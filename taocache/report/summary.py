"""The summary of a results file as plain data (the JSON summary) and as Markdown."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..bench.records import read_records
from . import aggregate as agg
from .matched import matched_speed, reference_label

CONVENTIONS = [
    (
        "Quality is measured against the full run of the same prompt and seed: frames as RGB in [0, 1], "
        "each metric computed per frame and averaged over the frames, then averaged over prompts and seeds."
    ),
    (
        f"Identical videos have infinite PSNR; in means they count as {agg.PSNR_CAP:.0f} dB (column "
        "'identical')."
    ),
    (
        "Speed-up = total denoising-loop time of the full runs / that of the method over the same prompts "
        "and seeds, measured (median of the timed repeats after one warm-up call), not derived from call "
        "counts."
    ),
    (
        "Call ratio = computed denoiser calls of the full run / the method's, where a call counts as computed "
        "when it did at least half a full call's work; FLOP ratio = the same quotient of the floating-point "
        "operations that ran (torch.utils.flop_counter.FlopCounterMode, attention included)."
    ),
    (
        "Matched speed: each series' frontier (call ratio against mean PSNR) is interpolated pair by pair at "
        "1.5x, 2x and 3x; 'TaoCache - method' is the mean PSNR difference over the same (prompt, seed) pairs "
        "with a paired BCa bootstrap 95% interval (scipy, 9999 resamples, fixed seed; at least 10 pairs), and "
        "TaoCache leads where the whole interval is above zero."
    ),
    (
        "Matched speed-ups are read off each method's frontier (its settings that nothing else of the "
        "method beats on both speed-up and quality) by linear interpolation (PSNR through its squared error, "
        "what running the two neighbouring settings on shares of the videos would give, so a lossless "
        "setting at the 100 dB cap lifts nothing); '-' means outside the swept "
        "range. Below a frontier's first point, when slower settings were swept, the first point's value "
        "counts (it is faster and better than they are)."
    ),
]


def summarise(results: str | Path) -> dict:
    """Everything the report shows, as JSON-ready data."""
    records = read_records(results)
    sessions, runs = agg.split_records(records)
    if not sessions or not runs:
        raise ValueError(
            f"{results} holds no benchmark records (sessions: {len(sessions)}, runs: {len(runs)})"
        )
    last = sessions[-1]
    benchmarks = {json.dumps([s.get("model"), s.get("source"), s.get("call")], sort_keys=True, default=str)
                  for s in sessions}
    if len(benchmarks) > 1:
        raise ValueError(
            f"{results} mixes benchmarks of different models or call settings ({len(benchmarks)} of them), whose "
            "runs cannot be averaged together; report each results file on its own"
        )
    numbers = agg.aggregate(runs)
    lpips = last.get("lpips", {})
    chosen = {m["series"]: m["chosen"] for s in sessions for m in s.get("methods", []) if m.get("chosen")}
    return {
        "title": f"TaoCache benchmark: {last['model']}",
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "results": str(results),
        "benchmark": {
            "model": last["model"],
            "pipeline": last.get("pipeline"),
            "kind": last.get("kind"),
            "call": last.get("call"),
            "prompts": len({(r["prompt_index"]) for r in runs}),
            "seeds": sorted({r["seed"] for r in runs}),
            "repeats": last.get("repeats"),
            "sweep": last.get("sweep"),
            "description": last.get("description"),
            "calibration": last.get("calibration"),
            "sessions": len({s["key"] for s in sessions}),
            "processes": max(s.get("processes", 1) for s in sessions),
        },
        "environment": last.get("environment", {}),
        "environments_differ": len({_machine(s) for s in sessions}) > 1,
        "lpips": lpips,
        "cvvdp": last.get("cvvdp", {"available": False, "reason": "ColorVideoVDP was not recorded"}),
        "chosen": chosen,
        "full": numbers["full"],
        "settings": numbers["settings"],
        "targets": list(agg.TARGETS),
        "matched": {
            "speedup": agg.matched_table(numbers["settings"], "speedup"),
            "call_ratio": agg.matched_table(numbers["settings"], "call_ratio"),
        },
        "matched_speed": matched_speed(runs, numbers["settings"]),
        "timeline": agg.timeline(runs),
        "media": agg.media(runs),
        "featured": agg.featured(numbers["settings"], agg.media(runs)),
        "unmeasured": agg.unmeasured(sessions, runs),
        "conventions": CONVENTIONS,
    }


def _machine(session: dict) -> tuple:
    env = session.get("environment", {})
    return env.get("cpu"), env.get("gpu"), tuple(sorted((env.get("versions") or {}).items()))


# ----------------------------------------------------------------------------------------------- Markdown


def fmt(value, digits: int = 2, empty: str = "-") -> str:
    if value is None:
        return empty
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _metric_digits(metric: str) -> int:
    return {"psnr": 2, "ssim": 4, "lpips": 4, "cvvdp": 2}[metric]


def shown_metrics(summary: dict) -> list[str]:
    """The quality metrics of the tables: PSNR, SSIM, LPIPS and CVVDP (JOD), each where it was measured."""
    available = {"lpips": summary["lpips"].get("available"), "cvvdp": summary.get("cvvdp", {}).get("available")}
    return [m for m in ("psnr", "ssim", "lpips", "cvvdp") if available.get(m, True)]


def interval(d: dict | None) -> str:
    """A paired difference as 'mean [low, high]' (or the mean alone, with too few pairs for an interval)."""
    if d is None:
        return "-"
    if d.get("low") is None:
        return f"{d['mean']:+.2f} (n={d['pairs']}, too few pairs for an interval)"
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def leads_text(row: dict) -> str:
    return {True: "yes", False: "no", None: "-"}[row["leads"]]


def machine_line(summary: dict) -> str:
    env = summary["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)
    cpu = (
        f"CPU only: {env.get('cpu')} ({env.get('cpu_count')} cores, {env.get('torch_threads')} torch threads)"
    )
    where = env.get("gpu") or cpu
    return f"{where}; {env.get('platform')}; Python {env.get('python')}; {versions}"


def to_markdown(summary: dict) -> str:
    b = summary["benchmark"]
    lines = [
        f"# {summary['title']}",
        "",
        f"Generated {summary['generated']} from `{summary['results']}`.",
        "",
        f"- Machine: {machine_line(summary)}",
        f"- Model: {b['model']} ({b['pipeline']}), call {b['call']}",
        (
            f"- {b['prompts']} prompts x seeds {b['seeds']}; {b['repeats']} timed repeats per run; sweep "
            f"`{b['sweep']}`"
        ),
        (
            f"- Full run: {fmt(summary['full']['loop_s'], 3)} s denoising loop, "
            f"{fmt(summary['full']['call_s'], 3)} s whole call, {fmt(summary['full']['calls'], 0)} denoiser "
            "calls (means)"
        ),
    ]
    if summary["environments_differ"]:
        lines.append(
            "- Warning: the runs were measured in sessions on different machines or library versions."
        )
    lines += ["", "## Quality at matched speed-ups (denoising loop, measured)", ""]
    lines += _matched_markdown(summary, "speedup")
    lines += ["", "## Quality at matched call ratios", ""]
    lines += _matched_markdown(summary, "call_ratio")
    lines += ["", "## Matched speed, paired (call ratio; TaoCache - method over the same prompt/seed pairs)", ""]
    lines += matched_speed_markdown(summary)
    if summary.get("chosen"):
        lines += ["", "## How each method's settings were chosen", ""]
        lines += [f"- {series}: {text}" for series, text in sorted(summary["chosen"].items())]
    lines += ["", "## Every setting", ""]
    lines += settings_markdown(summary)
    if summary.get("media_links"):
        lines += ["", "## Side by side (first prompt and seed: full run | method | difference)", ""]
        lines += [f"![{label}]({link}) {label}  " for label, link in summary["media_links"].items()]
    lines += ["", "## Not measured", ""]
    lines += [f"- {note}" for note in summary["unmeasured"]] or ["- everything was measured"]
    lines += ["", "## How to read this", ""] + [f"- {c}" for c in summary["conventions"]]
    return "\n".join(lines) + "\n"


def _matched_markdown(summary: dict, axis: str) -> list[str]:
    targets = summary["targets"]
    metrics = shown_metrics(summary)
    head = "| method | " + " | ".join(f"{m.upper()} @{t:g}x" for m in metrics for t in targets) + " |"
    lines = [head, "|" + "---|" * (1 + len(metrics) * len(targets))]
    for method, table in sorted(summary["matched"][axis].items()):
        cells = [fmt(table.get(m, {}).get(str(t)), _metric_digits(m)) for m in metrics for t in targets]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def matched_speed_markdown(summary: dict) -> list[str]:
    lines = []
    matched = summary["matched_speed"]
    for target, rows in matched["targets"].items():
        reference = reference_label(matched, target)
        lines += [f"At {target}x ({matched['pairs']} pairs):", "",
                  f"| method | PSNR | SSIM | CVVDP (JOD) | {reference} - method, PSNR [95% CI] | {reference} leads |",
                  "|---|---|---|---|---|---|"]
        lines += [
            f"| {r['series']} | {fmt(r['psnr'])} | {fmt(r['ssim'], 4)} | {fmt(r['cvvdp'])} | "
            f"{interval(r['difference'])} | {leads_text(r)} |"
            for r in rows
        ]
        lines.append("")
    return lines


def settings_markdown(summary: dict) -> list[str]:
    lines = [
        (
            "| setting | runs | PSNR | SSIM | LPIPS | CVVDP | speed-up | call ratio | FLOP ratio | efficiency | "
            "calls made | computed | flags |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary["settings"]:
        if not s["runs"]:
            error = str(s["error"]).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {s['label']} | 0 | unsupported: {error} |" + " |" * 10)
            continue
        flags = ", ".join(f"{k} x{v}" for k, v in s["flags"].items())
        lines.append(
            f"| {s['label']} | {s['runs']} | {fmt(s['psnr'])} | {fmt(s['ssim'], 4)} | {fmt(s['lpips'], 4)} | "
            f"{fmt(s.get('cvvdp'))} | {fmt(s['speedup'])} | {fmt(s['call_ratio'])} | {fmt(s.get('flop_ratio'))} | {fmt(s['efficiency'])} | "
            f"{fmt(s['calls_made'], 1)} | {fmt(s['calls_computed'], 1)} | {flags} |"
        )
    return lines
