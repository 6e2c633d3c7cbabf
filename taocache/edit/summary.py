"""The editing evaluation's summary: per method (at its reported setting) and per tried setting, the rate of
each flag of ``scoring.py`` with its 95% Wilson interval beside the chance level (a redraw of the target
caption from another seed), the method against each baseline on the same cases (``comparison.py``), the
reconstructions and the targets checked; and the same as Markdown."""

from __future__ import annotations

import math

import numpy as np

from ..metrics import format_rate, rate_interval
from ..results.environment import describe_environment
from .cases import BASELINES, CACHED, METHOD, REFERENCES, TARGETS, EvalSettings
from .comparison import paired_comparison
from .scoring import BACKGROUND_PSNR_KEPT, lpips_scorer

#: The rates reported, each with its 95% interval: rate name -> the record's flag.
RATE_FLAGS = {
    "edit_success": "changed",
    "caption_kept": "caption_kept",
    "subject_kept": "subject_kept",
    "background_kept": "background_kept",
    "all_kept": "all_kept",
}


def _mean(values):
    finite = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _rates(rows: list[dict]) -> dict:
    n = len(rows)
    counts = {name: sum(bool(r.get(flag)) for r in rows) for name, flag in RATE_FLAGS.items()}
    return {
        "n": n,
        **{name: count / n if n else None for name, count in counts.items()},
        "intervals": {name: list(rate_interval(count, n)) for name, count in counts.items()} if n else {},
        "psnr": _mean(r.get("psnr") for r in rows),
        "ssim": _mean(r.get("ssim") for r in rows),
        "background_psnr": _mean(r.get("background_psnr") for r in rows),
        "background_ssim": _mean(r.get("background_ssim") for r in rows),
        "shade_delta_e": _mean((r.get("subject") or {}).get("shade_delta_e") for r in rows),
        "lpips": _mean(r.get("lpips") for r in rows),
        "seconds": _mean(r.get("seconds") for r in rows),
    }


def _preparation(rows: list[dict]) -> dict:
    """Mean seconds of each preparation stage over the cases that computed it (not read from the cache)."""
    result = {}
    for stage, flag in (("text_optimisation", "text"), ("inversion", "inversion")):
        values = [r["prepare_seconds"][stage] for r in rows
                  if "prepare_seconds" in r and not r["prepared_from_cache"].get(flag, True)]
        result[stage] = {"n": len(values), "mean": _mean(values)}
    return result


def setting_label(setting: dict | None) -> str:
    """``S=5 alpha=0.5``-style label of a method's setting."""
    names = {"steps_source": "S", "guidance_scale": "guidance", "start_layer": "layer"}
    return " ".join(f"{names.get(k, k)}={v:.3g}" if isinstance(v, float) else f"{names.get(k, k)}={v}"
                    for k, v in (setting or {}).items())


def summarise(records: list[dict], settings: EvalSettings, model_name: str, wall_seconds: float,
              identity: str = "") -> dict:
    """Rates and means per method, per kind and per tried setting; paired comparisons; the targets checked."""
    order = [c.case_id for c in settings.cases_to_run()]
    rows = [r for r in records if r["case"] in set(order)]

    def rows_of(method, setting=None):
        return [r for r in rows if r["method"] == method and (setting is None or r.get("setting") == setting)]

    reported = {m: rows_of(m, settings.main_setting(m)) for m in settings.methods}
    if CACHED in {r["method"] for r in rows}:
        reported[CACHED] = rows_of(CACHED)
    reported = {m: v for m, v in reported.items() if v}
    per_method = {m: _rates(v) for m, v in reported.items()}
    references = {name.split("/", 1)[1]: _rates(rows_of(name)) for name in REFERENCES if rows_of(name)}
    per_kind = {m: {k: _rates([r for r in v if r["kind"] == k]) for k in settings.kinds} for m, v in reported.items()}
    tried = {}
    for method, setting, sweep in settings.runs():
        tried.setdefault(method, []).append({"setting": setting, "sweep": sweep, **_rates(rows_of(method, setting))})
    comparisons = {}
    if METHOD in reported:
        ours = {r["case"]: r["all_kept"] for r in reported[METHOD]}
        for baseline in BASELINES:
            theirs = {r["case"]: r["all_kept"] for r in reported.get(baseline, [])}
            both = [c for c in order if c in ours and c in theirs]
            if both:
                comparisons[baseline] = paired_comparison([ours[c] for c in both], [theirs[c] for c in both],
                                                          seed=settings.seed)
    reconstruction = {
        m.split("/", 1)[1]: {"n": len(v), "psnr": _mean(r["psnr"] for r in v), "ssim": _mean(r["ssim"] for r in v),
                             "lpips": _mean(r.get("lpips") for r in v)}
        for m in sorted({r["method"] for r in rows if r["method"].startswith("reconstruction/")})
        for v in [rows_of(m)]
    }
    ours = per_method.get(METHOD, {})
    recon_psnr = reconstruction.get("null-text", {}).get("psnr")
    targets = {
        f"null-text reconstruction_psnr >= {TARGETS['reconstruction_psnr']:g} dB": recon_psnr is not None
        and recon_psnr >= TARGETS["reconstruction_psnr"],
        f"cases >= {TARGETS['min_cases']}": ours.get("n", 0) >= TARGETS["min_cases"],
        f"all_kept >= {TARGETS['all_kept']:.0%}": (ours.get("all_kept") or 0) >= TARGETS["all_kept"],
        f"background_psnr >= {TARGETS['background_psnr']:g} dB": (ours.get("background_psnr") or 0)
        >= TARGETS["background_psnr"],
        "all_kept above every baseline (paired interval above 0)": bool(comparisons)
        and all(c["interval"][0] > 0 for c in comparisons.values()),
    }
    summary = {
        "model": model_name,
        "settings": settings.as_dict(model_name, identity),
        "background_psnr_kept": BACKGROUND_PSNR_KEPT,
        "methods": per_method,
        "references": references,
        "comparisons": comparisons,
        "by_kind": per_kind,
        "tried": tried,
        "reconstruction": reconstruction,
        "preparation_seconds": _preparation(reported.get(METHOD, [])),
        "targets": targets,
        "lpips": "available" if lpips_scorer().available else lpips_scorer().reason,
        "machine": _machine(),
        "wall_seconds_this_run": wall_seconds,
    }
    if CACHED in reported:
        cached = reported[CACHED]
        summary["taocache"] = {
            "sampling_speedup": (_mean(r["uncached_seconds"] for r in cached) or 0)
            / (_mean(r["seconds"] for r in cached) or math.inf),
            "psnr_vs_uncached": _mean(r["psnr_vs_uncached"] for r in cached),
            "all_kept_change": per_method[CACHED]["all_kept"] - (ours.get("all_kept") or 0),
        }
        stats = [r["cache_stats"] for r in cached if isinstance(r.get("cache_stats"), dict)]
        if stats:
            calls, computed = sum(x.get("calls", 0) for x in stats), sum(x.get("computed", 0) for x in stats)
            summary["taocache"].update(denoiser_calls=calls, computed_calls=computed,
                                       call_speedup=calls / computed if computed else None)
    elif settings.taocache:
        summary["taocache"] = "not measured"
    return summary


def _machine() -> dict:
    env = describe_environment()
    return {
        "platform": env["platform"],
        "processor": env["cpu"],
        "cpu_count": env["cpu_count"],
        "torch_threads": env["torch_threads"],
        "torch": env["versions"]["torch"],
        "diffusers": env["versions"]["diffusers"],
    }


def _fmt_rate(rates: dict, name: str) -> str:
    interval = rates.get("intervals", {}).get(name)
    return format_rate(rates[name], interval) if interval else _fmt(rates.get(name), True)


def _fmt(value, percent=False):
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if percent:
        return f"{100 * value:.0f}%"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def _rate_row(name: str, setting: str, m: dict) -> str:
    return (f"| {name} | {setting} | {m['n']} | " + " | ".join(_fmt_rate(m, k) for k in RATE_FLAGS)
            + f" | {_fmt(m['psnr'])} | {_fmt(m['background_psnr'])} | {_fmt(m['background_ssim'])} | "
            f"{_fmt(m['seconds'])} |")


def summary_markdown(summary: dict) -> str:
    """The summary as a Markdown report."""
    s = summary["settings"]
    c = s["config"]
    header = ("| method | setting | n | edit success | caption kept | subject kept | background kept | all kept | "
              "PSNR | background PSNR | background SSIM | s/edit |")
    lines = [
        f"# Non-rigid editing evaluation on {summary['model']}",
        "",
        (f"{s['cases']} {'/'.join(s['kinds'])} edits of {s['split']} scenes of the sample world; DDIM "
         f"{c['num_steps']} steps, guidance {c['guidance_scale']} (DDIM + target prompt: its own), text "
         f"optimisation {c['text_steps']} steps (lr {c['text_lr']}), {c['inversion']} inversion. Background kept: "
         f"PSNR >= {summary['background_psnr_kept']:g} dB outside the subjects. LPIPS: {summary['lpips']}."),
        "",
        ("Rates with their 95% interval (Wilson). The reference rows are renders, not edits: the target caption "
         "with the input's seed (what keeping everything gives) and with another seed (a perfect redraw: the "
         "chance level of the subject and background flags)."),
        "",
        header,
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in summary["methods"].items():
        setting = setting_label(s["methods"].get(name, s["methods"].get(METHOD, [None]))[0])
        lines.append(_rate_row(name, setting, m))
    for name, m in summary["references"].items():
        lines.append(_rate_row(f"reference: {name}", "", m))
    if summary["comparisons"]:
        lines += ["", (f"{METHOD} against each baseline on the same cases, \"all kept\": difference of rates, its "
                       "95% paired-bootstrap interval, the cases only one of the two got right, exact McNemar p:"),
                  "", "| baseline | n | difference | interval | only ours | only theirs | McNemar p |",
                  "|---|---|---|---|---|---|---|"]
        for name, d in summary["comparisons"].items():
            lo, hi = d["interval"]
            lines.append(f"| {name} | {d['n']} | {100 * d['difference']:+.0f} points | {100 * lo:+.0f} to "
                         f"{100 * hi:+.0f} | {d['only_ours']} | {d['only_theirs']} | {d['mcnemar_p']:.3g} |")
    lines += ["", "By kind (edit success / all kept):", "", "| method | " + " | ".join(s["kinds"]) + " |",
              "|---|" + "---|" * len(s["kinds"])]
    for name, kinds in summary["by_kind"].items():
        cells = [f"{_fmt(k['edit_success'], True)} / {_fmt(k['all_kept'], True)} (n={k['n']})" for k in kinds.values()]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    if any(len(v) > 1 for v in summary["tried"].values()):
        lines += ["", ("Every setting tried (the first of each method is the one reported above; sweep points are "
                       "marked):"), "", header, "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, tried in summary["tried"].items():
            for m in tried:
                lines.append(_rate_row(name, setting_label(m["setting"]) + (" (sweep)" if m["sweep"] else ""), m))
    if summary["reconstruction"]:
        lines += ["", "Reconstruction of the input (PSNR dB / SSIM):", "", "| inversion | n | PSNR | SSIM |",
                  "|---|---|---|---|"]
        for name, r in summary["reconstruction"].items():
            lines.append(f"| {name} | {r['n']} | {_fmt(r['psnr'])} | {_fmt(r['ssim'])} |")
    t = summary.get("taocache")
    if isinstance(t, dict):
        lines += ["", (
            f"TaoCache on the sampling stage: wall-time speed-up of sampling {_fmt(t['sampling_speedup'])}x; denoiser "
            f"calls computed {t.get('computed_calls', 'n/a')} of {t.get('denoiser_calls', 'n/a')} (call speed-up "
            f"{_fmt(t.get('call_speedup'))}x); PSNR against the uncached edit {_fmt(t['psnr_vs_uncached'])} dB; "
            f"change in all kept {_fmt(t['all_kept_change'], True)}."
        )]
    elif t is not None:
        lines += ["", f"TaoCache on the sampling stage: {t}"]
    prep = summary.get("preparation_seconds", {})
    if any(v["n"] for v in prep.values()):
        lines += ["", "Preparation per image (mean seconds, where computed rather than read from the cache): "
                  + ", ".join(f"{k} {_fmt(v['mean'])} (n={v['n']})" for k, v in prep.items())]
    lines += ["", "Targets:", ""] + [f"- {k}: {_fmt(v)}" for k, v in summary["targets"].items()]
    m = summary["machine"]
    lines += ["", (f"Measured on {m['platform']} ({m['cpu_count']} CPUs, {m['torch_threads']} torch thread(s)), "
                   f"torch {m['torch']}, diffusers {m['diffusers']}; {summary['wall_seconds_this_run']:.0f} s this run.")]
    return "\n".join(lines) + "\n"
