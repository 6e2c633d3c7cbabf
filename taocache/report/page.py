"""The HTML report: one self-contained page, charts and GIFs inlined as base64."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from ..results.media import DIFFERENCE_GAIN
from . import charts
from .matched import reference_label
from .summary import fmt, interval, leads_text, machine_line, shown_metrics

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th:first-child, td:first-child { text-align: left; white-space: nowrap; }
.wide { overflow-x: auto; max-width: 100%; }
.wide td:first-child { white-space: normal; min-width: 14em; max-width: 26em; overflow-wrap: anywhere; }
th { background: #f2f2f2; }
.note { color: #555; font-size: 13px; }
.warn { color: #a33; }
.media { display: flex; flex-wrap: wrap; gap: 16px; }
.media figure { margin: 0; }
.media figcaption { font-size: 12px; max-width: 340px; }
img.chart { max-width: 100%; }
"""


def _img(data: bytes, mime: str, alt: str, css: str = "") -> str:
    encoded = base64.b64encode(data).decode()
    return f'<img class="{css}" alt="{html.escape(alt)}" src="data:{mime};base64,{encoded}">'


def _table(head: list[str], rows: list[list[str] | str]) -> str:
    """A table; a row given as a string is inserted as it is (a prepared ``<tr>``)."""
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        out.append(
            row if isinstance(row, str) else "<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
        )
    return "\n".join(out) + "</table>"


def _matched(summary: dict, axis: str) -> str:
    metrics = shown_metrics(summary)
    digits = {"psnr": 2, "ssim": 4, "lpips": 4, "cvvdp": 2}
    head = ["method"] + [f"{m.upper()} @{t:g}x" for m in metrics for t in summary["targets"]]
    rows = []
    for method, table in sorted(summary["matched"][axis].items()):
        rows.append(
            [html.escape(method)]
            + [fmt(table.get(m, {}).get(str(t)), digits[m]) for m in metrics for t in summary["targets"]]
        )
    return _table(head, rows)


def _matched_speed(summary: dict) -> str:
    """Per target ratio: each series' quality and TaoCache's paired lead over it."""
    matched = summary["matched_speed"]
    parts = []
    for target, rows in matched["targets"].items():
        reference = reference_label(matched, target)
        parts.append(f"<h3>At {target}x fewer denoiser calls ({matched['pairs']} prompt/seed pairs)</h3>")
        parts.append(_table(
            ["method", "PSNR", "SSIM", "CVVDP (JOD)", f"{reference} - method, PSNR [95% CI]", f"{reference} leads"],
            [[html.escape(r["series"]), fmt(r["psnr"]), fmt(r["ssim"], 4), fmt(r["cvvdp"]),
              html.escape(interval(r["difference"])), leads_text(r)] for r in rows],
        ))
    chart = charts.paired_intervals(matched)
    if chart:
        parts.append(_img(chart, "image/png", "paired PSNR differences with 95% intervals", "chart"))
    return "\n".join(parts)


def _chosen(summary: dict) -> str:
    chosen = summary.get("chosen") or {}
    if not chosen:
        return "<p class='note'>The sweep does not say how its settings were chosen.</p>"
    return "<ul>" + "".join(
        f"<li><b>{html.escape(series)}</b>: {html.escape(text)}</li>" for series, text in sorted(chosen.items())
    ) + "</ul>"


def _settings(summary: dict) -> str:
    head = [
        "setting",
        "runs",
        "PSNR",
        "SSIM",
        "LPIPS",
        "CVVDP",
        "speed-up",
        "call ratio",
        "FLOP ratio",
        "efficiency",
        "calls made",
        "computed",
        "loop s",
        "peak MiB",
        "flags / notes",
    ]
    rows = []
    for s in summary["settings"]:
        if not s["runs"]:
            rows.append(
                f"<tr><td>{html.escape(s['label'])}</td><td>0</td><td colspan='{len(head) - 2}' "
                f"style='text-align:left' class='warn'>unsupported: {html.escape(str(s['error']))}</td></tr>"
            )
            continue
        remarks = [f"{k} x{v}" for k, v in s["flags"].items()] + s["notes"]
        peak = s["peak_bytes"] / 2**20 if s["peak_bytes"] else None
        rows.append(
            [
                html.escape(s["label"]),
                str(s["runs"]),
                fmt(s["psnr"]) + (f" ({s['identical']} identical)" if s["identical"] else ""),
                fmt(s["ssim"], 4),
                fmt(s["lpips"], 4),
                fmt(s.get("cvvdp")),
                fmt(s["speedup"]),
                fmt(s["call_ratio"]),
                fmt(s.get("flop_ratio")),
                fmt(s["efficiency"]),
                fmt(s["calls_made"], 1),
                fmt(s["calls_computed"], 1),
                fmt(s["loop_s"], 3),
                fmt(peak, 0),
                f'<span class="warn">{html.escape("; ".join(remarks))}</span>',
            ]
        )
    return "<div class='wide'>" + _table(head, rows) + "</div>"


def _figure(summary: dict, label: str, path: Path) -> str:
    caption = "full run" if label == "full" else f"full run | {label} | difference x{DIFFERENCE_GAIN:g}"
    setting = next((s for s in summary["settings"] if s["label"] == label), None)
    if setting and setting.get("psnr") is not None:
        caption += f": PSNR {fmt(setting['psnr'])} dB, speed-up {fmt(setting['speedup'])}x"
    image = _img(path.read_bytes(), "image/gif", label)
    return f"<figure>{image}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _media(summary: dict, root: Path, page_dir: Path) -> str:
    """The featured media inlined (see ``aggregate.featured``); the others linked, to keep the page small."""
    available = {label: root / rel for label, rel in summary["media"].items() if (root / rel).is_file()}
    if not available:
        return "<p>No media were kept.</p>"
    shown = [label for label in summary["featured"] if label in available]
    rest = [label for label in available if label not in shown]
    parts = [
        '<div class="media">'
        + "\n".join(_figure(summary, label, available[label]) for label in shown)
        + "</div>"
    ]
    if rest:
        links = ", ".join(
            f'<a href="{html.escape(Path(os.path.relpath(available[label], page_dir)).as_posix())}">'
            f"{html.escape(label)}</a>"
            for label in rest
        )
        parts.append(
            f"<p class='note'>The other settings' GIFs (files beside the results, not inlined): {links}</p>"
        )
    return "\n".join(parts)


def _cvvdp_line(summary: dict) -> str:
    cvvdp = summary.get("cvvdp") or {}
    if not cvvdp.get("available"):
        return cvvdp.get("reason") or "not measured"
    return f"ColorVideoVDP, {cvvdp.get('conditions')}, clips at {cvvdp.get('fps'):g} fps (10 JOD = identical)"


def render(summary: dict, results_dir: Path, page_dir: Path) -> str:
    """The page for ``summary`` (see ``summary.summarise``), to be written into the folder ``page_dir``."""
    b, full = summary["benchmark"], summary["full"]
    lpips = summary["lpips"]
    lpips_note = None if lpips.get("available") else lpips.get("reason", "LPIPS unavailable")
    settings = [s for s in summary["settings"] if s["runs"]]
    parts = [
        (
            "<!doctype html><html><head><meta "
            f"charset='utf-8'><title>{html.escape(summary['title'])}</title><style>{STYLE}</style></head><body>"
        ),
        f"<h1>{html.escape(summary['title'])}</h1>",
        f"<p class='note'>Generated {summary['generated']} from {html.escape(summary['results'])}.</p>",
        "<h2>Setting</h2><ul>",
        f"<li>Machine: {html.escape(machine_line(summary))}</li>",
        (
            f"<li>Model: {html.escape(str(b['model']))} ({html.escape(str(b['pipeline']))}); call "
            f"{html.escape(str(b['call']))}</li>"
        ),
        (
            f"<li>{b['prompts']} prompts x seeds {b['seeds']}, {b['repeats']} timed repeats per run after a "
            f"warm-up; sweep {html.escape(str(b['sweep']))}: {html.escape(str(b['description'] or ''))}</li>"
        ),
        (
            f"<li>Full run (mean): denoising loop {fmt(full['loop_s'], 3)} s, whole call "
            f"{fmt(full['call_s'], 3)} s, {fmt(full['calls'], 0)} denoiser calls over "
            f"{fmt(full['steps'], 0)} steps</li>"
        ),
        f"<li>LPIPS network: {html.escape(lpips.get('net', 'alex'))}"
        + ("" if lpips.get("available") else f" (<span class='warn'>{html.escape(lpips_note)}</span>)")
        + "</li>",
        f"<li>CVVDP: {html.escape(_cvvdp_line(summary))}</li>",
        "</ul>",
    ]
    if summary["environments_differ"]:
        parts.append(
            "<p class='warn'>The runs were measured in sessions on different machines or library "
            "versions.</p>"
        )
    parts += [
        "<h2>Quality against speed-up</h2>",
        _img(charts.quality_vs_speedup(settings, lpips_note), "image/png", "quality vs speed-up", "chart"),
        (
            "<p class='note'>Faint dots: every setting; lines: each method's frontier. Speed-up is the "
            "measured denoising-loop time ratio.</p>"
        ),
        "<h3>Against the call ratio (work saved, free of timing noise)</h3>",
        _img(
            charts.quality_vs_speedup(settings, lpips_note, axis="call_ratio"),
            "image/png",
            "quality vs call ratio",
            "chart",
        ),
        "<h2>Matched speed-ups</h2><h3>At equal measured speed-up of the denoising loop</h3>",
        _matched(summary, "speedup"),
        "<h3>At equal call ratio (work saved)</h3>",
        _matched(summary, "call_ratio"),
        "<h2>Matched speed, paired</h2>",
        (
            "<p class='note'>Each series' frontier interpolated pair by pair at the same call ratio; TaoCache "
            "minus the method over the same prompt/seed pairs, with a paired BCa bootstrap 95% interval "
            "(at least 10 pairs). The fewer-steps run is the equal-cost baseline.</p>"
        ),
        _matched_speed(summary),
        "<h2>How each method's settings were chosen</h2>",
        _chosen(summary),
        "<h2>Time saved against work saved</h2>",
        _img(charts.speedup_vs_calls(settings), "image/png", "speed-up vs call ratio", "chart"),
        "<h2>Every setting</h2>",
        _settings(summary),
        "<h2>Which steps each method computed</h2>",
        (
            "<p class='note'>First prompt and seed; each cell is the share of a full denoiser call computed "
            "at that step, averaged over the calls of the step (guidance branches).</p>"
        ),
        _img(charts.step_timeline(summary["timeline"]), "image/png", "step timeline", "chart")
        if summary["timeline"]
        else "<p>No runs.</p>",
        "<h2>Side by side</h2>",
        "<p class='note'>First prompt and seed. For each method, the setting nearest a 2x call ratio.</p>",
        _media(summary, results_dir, page_dir),
        "<h2>Not measured</h2><ul>",
        "".join(f"<li>{html.escape(n)}</li>" for n in summary["unmeasured"])
        or "<li>everything was measured</li>",
        "</ul><h2>How to read this</h2><ul>",
        "".join(f"<li>{html.escape(c)}</li>" for c in summary["conventions"]),
        "</ul></body></html>",
    ]
    return "\n".join(parts)
