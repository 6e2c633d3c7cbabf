"""The editing evaluation's summary: success and identity rates with their 95% intervals, per method, kind and
sweep setting, the reconstructions, the targets checked, and the same as Markdown."""

from __future__ import annotations

import math

import numpy as np

from ..metrics import format_rate, rate_interval
from ..results.environment import describe_environment
from .cases import BASELINES, CACHED, METHOD, TARGETS, EvalSettings
from .scoring import lpips_scorer


def _mean(values):
    values = [v for v in values if v is not None and not (isinstance(v, str))]
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


#: The rates the targets are about, each with its 95% interval in the summary.
RATE_FLAGS = {
    "edit_success": ("changed",),
    "identity_kept": ("identity",),
    "success_and_identity": ("changed", "identity"),
}


def _rates(rows: list[dict]) -> dict:
    n = len(rows)
    counts = {name: sum(all(r[f] for f in flags) for r in rows) for name, flags in RATE_FLAGS.items()}
    return {
        "n": n,
        **{name: count / n if n else None for name, count in counts.items()},
        "intervals": {name: list(rate_interval(count, n)) for name, count in counts.items()} if n else {},
        "others_kept": sum(bool(r["others_kept"]) for r in rows) / n if n else None,
        "psnr": _mean(r["psnr"] for r in rows),
        "ssim": _mean(r["ssim"] for r in rows),
        "background_psnr": _mean(r["background_psnr"] for r in rows),
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


def summarise(records: list[dict], settings: EvalSettings, model_name: str, wall_seconds: float,
              identity: str = "") -> dict:
    """Rates and means per method (and per kind, and per sweep setting), with the targets checked."""
    config = settings.config
    case_ids = {c.case_id for c in settings.cases_to_run()}
    rows = [r for r in records if r["case"] in case_ids]
    main = [
        r
        for r in rows
        if r["method"] == METHOD
        and r.get("alpha") == config.alpha
        and r.get("steps_source") == config.steps_source
    ]
    methods = {METHOD: main, **{m: [r for r in rows if r["method"] == m] for m in BASELINES + (CACHED,)}}
    methods = {m: v for m, v in methods.items() if v}
    per_method = {m: _rates(v) for m, v in methods.items()}
    per_kind = {
        m: {k: _rates([r for r in v if r["kind"] == k]) for k in ("move", "resize")}
        for m, v in methods.items()
    }
    sweep = {}
    for r in rows:
        if r["method"] == METHOD:
            sweep.setdefault(f"S={r['steps_source']} alpha={r['alpha']:g}", []).append(r)
    reconstruction = {
        m.split("/", 1)[1]: {
            "n": len(v),
            "psnr": _mean(r["psnr"] for r in v),
            "ssim": _mean(r["ssim"] for r in v),
            "lpips": _mean(r.get("lpips") for r in v),
        }
        for m in sorted({r["method"] for r in rows if r["method"].startswith("reconstruction/")})
        for v in [[r for r in rows if r["method"] == m]]
    }
    ours = per_method.get(METHOD, {})
    baselines = [per_method[b] for b in BASELINES if b in per_method]
    recon_psnr = reconstruction.get("null-text", {}).get("psnr")
    targets = {
        "reconstruction_psnr >= 30 dB": recon_psnr is not None
        and recon_psnr >= TARGETS["reconstruction_psnr"],
        "cases >= 20": ours.get("n", 0) >= TARGETS["min_cases"],
        "edit_success >= 70%": (ours.get("edit_success") or 0) >= TARGETS["edit_success"],
        "identity_kept >= 90%": (ours.get("identity_kept") or 0) >= TARGETS["identity_kept"],
        "success_and_identity better than both baselines": bool(baselines)
        and all((ours.get("success_and_identity") or 0) > b["success_and_identity"] for b in baselines),
    }
    summary = {
        "model": model_name,
        "settings": settings.as_dict(model_name, identity),
        "sdedit_strength": (config.num_steps - config.steps_source) / config.num_steps,
        "methods": per_method,
        "by_kind": per_kind,
        "sweep": {k: _rates(v) for k, v in sorted(sweep.items())},
        "reconstruction": reconstruction,
        "preparation_seconds": _preparation(main),
        "targets": targets,
        "lpips": "available" if lpips_scorer().available else lpips_scorer().reason,
        "machine": _machine(),
        "wall_seconds_this_run": wall_seconds,
    }
    if CACHED in methods:
        cached = methods[CACHED]
        summary["taocache"] = {
            "sampling_speedup": (_mean(r["uncached_seconds"] for r in cached) or 0)
            / (_mean(r["seconds"] for r in cached) or math.inf),
            "psnr_vs_uncached": _mean(r["psnr_vs_uncached"] for r in cached),
            "edit_success_change": per_method[CACHED]["edit_success"] - ours.get("edit_success", 0),
            "identity_kept_change": per_method[CACHED]["identity_kept"] - ours.get("identity_kept", 0),
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
    return format_rate(rates[name], interval) if interval else _fmt(rates[name], True)


def _fmt(value, percent=False):
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if percent:
        return f"{100 * value:.0f}%"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def summary_markdown(summary: dict) -> str:
    """The summary as a Markdown report."""
    s = summary["settings"]
    c = s["config"]
    lines = [
        f"# Non-rigid editing evaluation on {summary['model']}",
        "",
        (
            f"{s['cases']} {'/'.join(s['kinds'])} edits of {s['split']} scenes of the sample world; DDIM "
            f"{c['num_steps']} steps, guidance "
            f"{c['guidance_scale']}, text optimisation {c['text_steps']} steps (lr {c['text_lr']}), "
            f"{c['inversion']} inversion, injection after S={c['steps_source']} steps at alpha={c['alpha']}; "
            f"SDEdit at strength {summary['sdedit_strength']:.2f}. LPIPS: {summary['lpips']}."
        ),
        "",
        ("Rates with their 95% interval (Wilson), which shows which differences are larger than the chance of "
         "the draw of cases."),
        "",
        "| method | n | edit success | identity kept | both | others kept | PSNR | SSIM | background PSNR | s/edit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in summary["methods"].items():
        lines.append(
            f"| {name} | {m['n']} | {_fmt_rate(m, 'edit_success')} | {_fmt_rate(m, 'identity_kept')} | "
            f"{_fmt_rate(m, 'success_and_identity')} | {_fmt(m['others_kept'], True)} | {_fmt(m['psnr'])} | "
            f"{_fmt(m['ssim'])} | {_fmt(m['background_psnr'])} | {_fmt(m['seconds'])} |"
        )
    lines += [
        "",
        "By kind (edit success / identity kept):",
        "",
        "| method | move | resize |",
        "|---|---|---|",
    ]
    for name, kinds in summary["by_kind"].items():
        cells = [
            f"{_fmt(k['edit_success'], True)} / {_fmt(k['identity_kept'], True)} (n={k['n']})"
            for k in kinds.values()
        ]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += [
        "",
        "Reconstruction of the input (PSNR dB / SSIM):",
        "",
        "| inversion | n | PSNR | SSIM |",
        "|---|---|---|---|",
    ]
    for name, r in summary["reconstruction"].items():
        lines.append(f"| {name} | {r['n']} | {_fmt(r['psnr'])} | {_fmt(r['ssim'])} |")
    if summary["sweep"]:
        lines += [
            "",
            "Sweep of the method's settings:",
            "",
            "| setting | n | edit success | identity kept | both | background PSNR |",
            "|---|---|---|---|---|---|",
        ]
        for name, m in summary["sweep"].items():
            lines.append(
                f"| {name} | {m['n']} | {_fmt(m['edit_success'], True)} | {_fmt(m['identity_kept'], True)} | "
                f"{_fmt(m['success_and_identity'], True)} | {_fmt(m['background_psnr'])} |"
            )
    t = summary.get("taocache")
    if isinstance(t, dict):
        lines += ["", (
            f"TaoCache on the sampling stage: wall-time speed-up of sampling {_fmt(t['sampling_speedup'])}x; denoiser "
            f"calls computed {t.get('computed_calls', 'n/a')} of {t.get('denoiser_calls', 'n/a')} (call speed-up "
            f"{_fmt(t.get('call_speedup'))}x); PSNR against the uncached edit {_fmt(t['psnr_vs_uncached'])} dB; "
            f"change in edit success {_fmt(t['edit_success_change'], True)}, in identity kept "
            f"{_fmt(t['identity_kept_change'], True)}."
        )]
    elif t is not None:
        lines += ["", f"TaoCache on the sampling stage: {t}"]
    prep = summary.get("preparation_seconds", {})
    if any(v["n"] for v in prep.values()):
        lines += ["", "Preparation per image (mean seconds, where computed rather than read from the cache): "
                  + ", ".join(f"{k} {_fmt(v['mean'])} (n={v['n']})" for k, v in prep.items())]
    lines += ["", "Targets:", ""] + [f"- {k}: {_fmt(v)}" for k, v in summary["targets"].items()]
    m = summary["machine"]
    lines += [
        "",
        (
            f"Measured on {m['platform']} ({m['cpu_count']} CPUs, {m['torch_threads']} torch thread(s)), "
            f"torch {m['torch']}, diffusers {m['diffusers']}; {summary['wall_seconds_this_run']:.0f} s this run."
        ),
    ]
    return "\n".join(lines) + "\n"
