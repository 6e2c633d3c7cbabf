"""Evaluation of non-rigid editing on the sample world, where every edit can be scored without a learned judge.

The cases (``cases.py``) are held-out move and resize edits; each is scored (``scoring.py``) for the change
asked, the identity kept and the input preserved. The method runs beside two baselines at matched settings:
DDIM inversion + target prompt, and SDEdit at the strength at which the method injects the edit. Records
stream to ``records.jsonl`` (``records.py``; a rerun with the same settings skips what is there), and
``summary.json`` and ``summary.md`` (``summary.py``) are written at the end.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from ..metrics import psnr
from ..results import atomic_write_text, write_json
from ..world import render, scenes_of
from .acceleration import calibrated_cache_config
from .artefacts import model_identity
from .baselines import ddim_target_edit, sdedit_edit
from .cases import CACHED, INVERSION_CHECKS, METHOD, RECONSTRUCTIONS, EvalSettings, build_cases
from .config import EditConfig
from .editor import NonRigidEditor
from .inputs import model_size
from .latents import decode_latent
from .records import RecordFile
from .scoring import fidelity, score_edit
from .summary import summarise, summary_markdown

__all__ = ["EvalSettings", "build_cases", "run_evaluation", "score_edit", "summarise", "summary_markdown"]


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
    write_json(output_dir / "summary.json", summary)
    atomic_write_text(output_dir / "summary.md", summary_markdown(summary))
    return summary


def _calibrated_taocache(pipe, config: EditConfig, output_dir: Path, seed: int):
    """TaoCache calibrated on full text-to-image runs of tune captions at the editing settings."""
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
