"""Evaluation of non-rigid editing on the sample world, where every edit can be scored without a learned judge.

Each case renders a held-out scene (a caption the embedded model never saw in training) and asks for the
same shape elsewhere (move) or at the other size (resize). The analytic scorer reads the result back: did
the requested change happen, are colour and shape (the identity) kept, are the attributes that were not asked
to change kept. Preservation is PSNR / SSIM of the result against the input, over the whole image and over the
background only (pixels that are background in both). The method runs beside two baselines at matched
settings: DDIM inversion + target prompt, and SDEdit at the strength at which the method injects the edit.

Records stream to ``records.jsonl`` (one line per case and method, appended as they are measured); a rerun
with the same settings skips what is there. ``summary.json`` and ``summary.md`` are written at the end.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import atomic_write_text
from ..metrics import format_rate, rate_interval
from ..world import Scene, agreement, read_image, render, scenes_of
from ..world.scenes import POSITIONS, SIZES, SPLITS
from .baselines import ddim_target_edit, sdedit_edit
from .config import EditConfig
from .edit_file import fidelity, lpips_scorer
from .editor import NonRigidEditor
from .latents import decode_latent

logger = logging.getLogger(__name__)

METHOD = "non-rigid"
CACHED = "non-rigid+taocache"
BASELINES = ("ddim-target", "sdedit")
INVERSION_CHECKS = ("null-text", "negative-prompt", "ddim")
#: Targets the evaluation checks (see docs/editing.md).
TARGETS = {"reconstruction_psnr": 30.0, "min_cases": 20, "edit_success": 0.70, "identity_kept": 0.90}


# ------------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class EditCase:
    """One held-out edit: render ``source`` with ``seed`` and ask for ``target`` (differs in one attribute)."""

    case_id: str
    kind: str  # "move" or "resize"
    source: Scene
    target: Scene
    seed: int


KINDS = ("move", "resize")


def build_cases(count: int, seed: int = 0, scenes: str = "test", kinds=KINDS) -> list[EditCase]:
    """``count`` cases alternating over ``kinds`` from distinct still scenes of the ``scenes`` split, in a fixed
    order. The test split is the evaluation; the tune split is for choosing settings without it."""
    if count < 1:
        raise ValueError(f"cases={count} must be at least 1")
    if scenes not in SPLITS:
        raise ValueError(f"split={scenes!r} must be one of {', '.join(SPLITS)}")
    kinds = tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds={kinds!r} must be a non-empty selection of {', '.join(KINDS)}")
    pool = list(scenes_of(scenes, video=False))
    rng = random.Random(seed)
    rng.shuffle(pool)
    prefix = "" if scenes == "test" else f"{scenes}-"
    cases = []
    for i, scene in enumerate(pool * (1 + count // len(pool))):
        if len(cases) == count:
            break
        kind = kinds[i % len(kinds)]
        if kind == "move":
            others = sorted(p for p in POSITIONS if p != scene.position)
            target = dataclasses.replace(scene, position=rng.choice(others))
        else:
            target = dataclasses.replace(scene, size=next(s for s in SIZES if s != scene.size))
        cases.append(EditCase(f"{prefix}{i:03d}-{kind}", kind, scene, target, seed=1000 + i))
    return cases


# ------------------------------------------------------------------------------------------------ scoring


def background_psnr(result: np.ndarray, reference: np.ndarray) -> float | None:
    """PSNR over the pixels that are background in both images (the reference's border colour, +-0.25)."""
    border = np.concatenate([reference[0], reference[-1], reference[:, 0], reference[:, -1]])
    colour = np.median(border, axis=0)
    foreground = (np.linalg.norm(reference - colour, axis=-1) > 0.25) | (
        np.linalg.norm(result - colour, axis=-1) > 0.25
    )
    mask = ~foreground
    if not mask.any():
        return None
    mse = float(np.mean((result[mask] - reference[mask]) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def score_edit(case: EditCase, result: np.ndarray, image: np.ndarray) -> dict:
    """Preservation against the input and the analytic reading of the result."""
    reading = read_image(result)
    asked = agreement(case.target, reading)
    changed_attribute = "position" if case.kind == "move" else "size"
    kept_attribute = "size" if case.kind == "move" else "position"
    return {
        **fidelity(result, image),
        "background_psnr": background_psnr(result, image),
        "reading": dataclasses.asdict(reading),
        "changed": bool(asked[changed_attribute]),
        "identity": bool(asked["colour"] and asked["shape"]),
        "others_kept": bool(asked[kept_attribute] and asked["background"]),
    }


# ------------------------------------------------------------------------------------------------ records


def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


#: Settings that only add records (sweep points, the cached run, more cases: the case list is a fixed order,
#: so a larger count extends it), so a rerun may change them and resume.
ADDITIVE_SETTINGS = ("cases", "sweep_alpha", "sweep_steps_source", "taocache")


class RecordFile:
    """An append-only JSONL file of result records; reopening it resumes (a damaged last line is dropped)."""

    def __init__(self, path: Path, settings: dict, restart: bool = False):
        self.path = path
        self.settings_path = path.with_name("settings.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        if restart:
            for old in (path, self.settings_path):
                if old.exists():
                    old.unlink()
        if self.settings_path.exists() and path.exists():
            stored = json.loads(self.settings_path.read_text())
            keys = (set(stored) | set(settings)) - set(ADDITIVE_SETTINGS)
            changed = sorted(k for k in keys if stored.get(k) != settings.get(k))
            if changed:
                raise ValueError(
                    f"{path} holds records made with other settings ({', '.join(changed)}); pass --restart to "
                    "discard them, or use another --output-dir"
                )
        atomic_write_text(self.settings_path, json.dumps(settings, indent=2, sort_keys=True))
        self.records = self._read()

    def _read(self) -> list[dict]:
        if not self.path.exists():
            return []
        records, damaged = [], 0
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                damaged += 1
        if damaged:
            logger.warning("%s: dropped %d unreadable line(s) (an interrupted write)", self.path, damaged)
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))
        return records

    def has(self, case_id: str, method: str, **setting) -> bool:
        return any(
            r["case"] == case_id and r["method"] == method and all(r.get(k) == v for k, v in setting.items())
            for r in self.records
        )

    def add(self, record: dict) -> None:
        record = {k: _json_value(v) for k, v in record.items()}
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records.append(record)


# ------------------------------------------------------------------------------------------------- running


@dataclass
class EvalSettings:
    """What one evaluation run does (kept beside the records so that a resumed run cannot mix settings)."""

    cases: int = 48
    config: EditConfig = dataclasses.field(default_factory=EditConfig)
    sweep_alpha: tuple = (0.0, 1.0)
    sweep_steps_source: tuple = (10, 20)
    taocache: bool = False
    seed: int = 0
    split: str = "test"
    kinds: tuple = KINDS

    def __post_init__(self):
        if self.config.steps_source >= self.config.num_steps:
            raise ValueError(
                f"steps_source={self.config.steps_source} leaves none of the {self.config.num_steps} steps to "
                "edit; evaluate with steps_source below num_steps"
            )
        for alpha in self.sweep_alpha:  # sweep values are checked like the config's own
            self.config.with_values(alpha=alpha)
        for steps in self.sweep_steps_source:
            self.config.with_values(steps_source=steps)

    def cases_to_run(self) -> list[EditCase]:
        return build_cases(self.cases, self.seed, self.split, self.kinds)

    def as_dict(self, model: str, identity: str = "") -> dict:
        return {
            "model": model,
            "model_identity": identity,
            "cases": self.cases,
            "config": dataclasses.asdict(self.config),
            "sweep_alpha": list(self.sweep_alpha),
            "sweep_steps_source": list(self.sweep_steps_source),
            "taocache": self.taocache,
            "seed": self.seed,
            "split": self.split,
            "kinds": list(self.kinds),
        }


def run_evaluation(
    pipe,
    model_name: str,
    output_dir: str | Path,
    settings: EvalSettings,
    cache_dir="default",
    restart: bool = False,
    cache_config=None,
    progress: bool = True,
) -> dict:
    """Run (or resume) the evaluation; returns the summary, also written to ``summary.json`` / ``summary.md``."""
    from tqdm.auto import tqdm

    output_dir = Path(output_dir)
    from .artefacts import model_identity

    identity = model_identity(pipe)[:16]
    records = RecordFile(output_dir / "records.jsonl", settings.as_dict(model_name, identity), restart=restart)
    if restart and (output_dir / "taocache-calibration.json").exists():
        (output_dir / "taocache-calibration.json").unlink()
    config = settings.config
    if settings.taocache and cache_config is None:
        cache_config = _calibrated_taocache(pipe, config, output_dir, settings.seed)
    editor = NonRigidEditor(pipe, config, cache_dir=cache_dir, progress=False)
    strength = (config.num_steps - config.steps_source) / config.num_steps
    started = time.perf_counter()
    for case in tqdm(settings.cases_to_run(), desc="edit cases", disable=not progress):
        _run_case(pipe, editor, case, config, settings, records, strength, cache_config)
    summary = summarise(records.records, settings, model_name, time.perf_counter() - started, identity)
    atomic_write_text(output_dir / "summary.json", json.dumps(summary, indent=2))
    atomic_write_text(output_dir / "summary.md", summary_markdown(summary))
    return summary


def _calibrated_taocache(pipe, config: EditConfig, output_dir: Path, seed: int):
    """TaoCache calibrated on full text-to-image runs of tune captions at the editing settings."""
    from .acceleration import cache_available, calibrated_cache_config
    from .inputs import model_size

    if not cache_available():
        raise RuntimeError("--taocache needs taocache.enable/disable, which this installation lacks")
    tune = scenes_of("tune", video=False)
    prompts = [scene.caption for scene in random.Random(seed + 1).sample(tune, 8)]
    height, width = model_size(pipe)
    call = {
        "num_inference_steps": config.num_steps,
        "guidance_scale": config.guidance_scale,
        "height": height,
        "width": width,
    }
    return calibrated_cache_config(pipe, prompts, call, output_dir / "taocache-calibration.json")


def _run_case(pipe, editor, case, config, settings, records, strength, cache_config):
    image = render(case.source, seed=case.seed)
    base = {
        "case": case.case_id,
        "kind": case.kind,
        "source": case.source.caption,
        "target": case.target.caption,
    }
    todo_main = not records.has(case.case_id, METHOD, alpha=config.alpha, steps_source=config.steps_source)
    sweep = [
        (a, s)
        for s in (settings.sweep_steps_source or (config.steps_source,))
        for a in settings.sweep_alpha
        if (a, s) != (config.alpha, config.steps_source)
    ]
    todo_sweep = [(a, s) for a, s in sweep if not records.has(case.case_id, METHOD, alpha=a, steps_source=s)]
    todo_cached = cache_config is not None and not records.has(case.case_id, CACHED)
    todo_reconstructions = not all(records.has(case.case_id, m) for m in RECONSTRUCTIONS)
    if todo_main or todo_sweep or todo_cached or todo_reconstructions:
        prepared = editor.prepare(image, case.source.caption, case.target.caption, config)
        prep = {"prepare_seconds": prepared.seconds, "prepared_from_cache": prepared.from_cache}
        if todo_reconstructions:
            _reconstructions(pipe, editor, case, image, prepared, records, base)
        main_edit = None
        if todo_main or todo_cached:
            main_edit = editor.edit(prepared)
        if todo_main:
            records.add(
                {
                    **base,
                    "method": METHOD,
                    "alpha": config.alpha,
                    "steps_source": config.steps_source,
                    "seconds": main_edit.seconds,
                    **prep,
                    **score_edit(case, main_edit.image, image),
                }
            )
        for alpha, steps_source in todo_sweep:
            edit = editor.edit(prepared, alpha, steps_source)
            records.add(
                {
                    **base,
                    "method": METHOD,
                    "alpha": alpha,
                    "steps_source": steps_source,
                    "sweep": True,
                    "seconds": edit.seconds,
                    **score_edit(case, edit.image, image),
                }
            )
        if todo_cached:
            cached = editor.edit(prepared, cache_config=cache_config)
            from ..metrics import psnr

            records.add(
                {
                    **base,
                    "method": CACHED,
                    "alpha": config.alpha,
                    "steps_source": config.steps_source,
                    "seconds": cached.seconds,
                    "uncached_seconds": main_edit.seconds,
                    "psnr_vs_uncached": psnr(cached.image, main_edit.image),
                    "cache_stats": cached.cache.get("stats"),
                    **score_edit(case, cached.image, image),
                }
            )
    if not records.has(case.case_id, "ddim-target"):
        start = time.perf_counter()
        out = ddim_target_edit(
            pipe, image, case.source.caption, case.target.caption, config.num_steps, config.guidance_scale
        )
        records.add(
            {
                **base,
                "method": "ddim-target",
                "seconds": time.perf_counter() - start,
                **score_edit(case, out, image),
            }
        )
    if not records.has(case.case_id, "sdedit"):
        start = time.perf_counter()
        out = sdedit_edit(
            pipe,
            image,
            case.target.caption,
            strength,
            config.num_steps,
            config.guidance_scale,
            seed=case.seed,
        )
        records.add(
            {
                **base,
                "method": "sdedit",
                "strength": strength,
                "seconds": time.perf_counter() - start,
                **score_edit(case, out, image),
            }
        )


RECONSTRUCTIONS = ("reconstruction/vae",) + tuple(f"reconstruction/{m}" for m in INVERSION_CHECKS)


def _reconstructions(pipe, editor, case, image, prepared, records, base):
    """How well each inversion gives the input back (and the VAE alone, their ceiling); each once per case."""
    if not records.has(case.case_id, "reconstruction/vae"):
        vae = decode_latent(pipe, prepared.latent)
        records.add({**base, "method": "reconstruction/vae", **fidelity(vae, image)})
    for method in INVERSION_CHECKS:
        if not records.has(case.case_id, f"reconstruction/{method}"):
            inverted = prepared if method == prepared.config.inversion else editor.invert(prepared, method)
            result = editor.reconstruct(inverted)
            records.add({**base, "method": f"reconstruction/{method}", **fidelity(result, image)})


# ------------------------------------------------------------------------------------------------ summary


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
    import diffusers
    import torch

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
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
        },
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
