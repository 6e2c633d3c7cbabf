"""Evaluation of non-rigid editing on the sample world, where every edit can be scored without a learned judge.

The cases (``cases.py``) are move and resize edits of still scenes of one split; each edit is scored
(``scoring.py``) for the change asked, the caption's attributes kept, the subject kept (shade and stripes,
which no caption says) and the background kept. The method runs beside its baselines (``methods.py``), each
at its own setting (chosen on tune edits by ``tuning.py``) or at a grid of settings (the tuning run itself).
Two renders are scored beside them: the target with the input's seed (every flag should pass) and with
another seed (a perfect redraw, the chance level). Records stream to ``records.jsonl`` (``records.py``; a
rerun with the same settings skips what is there), and ``summary.json`` and ``summary.md`` (``summary.py``)
are written at the end.
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
from .cases import (
    CACHED,
    INVERSION_CHECKS,
    METHOD,
    RECONSTRUCTIONS,
    REDRAW_SEED_OFFSET,
    REFERENCES,
    EvalSettings,
    build_cases,
)
from .config import EditConfig
from .editor import NonRigidEditor
from .inputs import model_size
from .latents import decode_latent
from .methods import run_baseline
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
    started = time.perf_counter()
    for case in tqdm(settings.cases_to_run(), desc="edit cases", disable=not progress):
        _run_case(pipe, editor, case, settings, records, cache_config)
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


def _run_case(pipe, editor, case, settings: EvalSettings, records: RecordFile, cache_config):
    config = settings.config
    image = render(case.source, seed=case.seed)
    base = {"case": case.case_id, "kind": case.kind, "source": case.source.caption, "target": case.target.caption}
    for name, seed in zip(REFERENCES, (case.seed, case.seed + REDRAW_SEED_OFFSET)):
        if not records.has(case.case_id, name):
            records.add({**base, "method": name, **score_edit(case, render(case.target, seed=seed), image)})
    todo = [(m, s, sweep) for m, s, sweep in settings.runs() if not records.has(case.case_id, m, setting=s)]
    ours = [(s, sweep) for m, s, sweep in todo if m == METHOD]
    main = settings.main_setting(METHOD)
    todo_cached = cache_config is not None and main is not None and not records.has(case.case_id, CACHED)
    todo_reconstructions = settings.reconstructions and not all(records.has(case.case_id, m) for m in RECONSTRUCTIONS)
    if ours or todo_cached or todo_reconstructions:
        prepared = editor.prepare(image, case.source.caption, case.target.caption, config)
        prep = {"prepare_seconds": prepared.seconds, "prepared_from_cache": prepared.from_cache}
        if todo_reconstructions:
            _reconstructions(pipe, editor, case, image, prepared, records, base)
        uncached = None
        for setting, sweep in ours:
            edit = editor.edit(prepared, setting["alpha"], setting["steps_source"])
            uncached = edit if setting == main else uncached
            records.add({**base, "method": METHOD, "setting": setting, **setting, "sweep": sweep,
                         "seconds": edit.seconds, **prep, **score_edit(case, edit.image, image)})
        if todo_cached:
            uncached = uncached or editor.edit(prepared, main["alpha"], main["steps_source"])
            cached = editor.edit(prepared, main["alpha"], main["steps_source"], cache_config)
            records.add({
                **base, "method": CACHED, "setting": main, **main, "seconds": cached.seconds,
                "uncached_seconds": uncached.seconds, "psnr_vs_uncached": psnr(cached.image, uncached.image),
                "cache_stats": cached.cache.get("stats"), **score_edit(case, cached.image, image),
            })
    for method, setting, _ in todo:
        if method == METHOD:
            continue
        start = time.perf_counter()
        out = run_baseline(pipe, method, setting, image, case.source.caption, case.target.caption, config,
                           seed=case.seed)
        records.add({**base, "method": method, "setting": setting, "seconds": time.perf_counter() - start,
                     **score_edit(case, out, image)})


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
