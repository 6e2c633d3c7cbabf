"""Choosing every method's setting on tune edits, with the same budget for each, for the test run to read.

Each method tries the same number of settings (``methods.tune_grid``) on the same tune edits; the one with
the highest "all kept" rate is chosen (ties: subject kept, then background PSNR, then the earlier in the
grid). The choice is written to a JSON file with the shared settings it was made at; the test evaluation
reads it (``load_choice``) and refuses one that was not made on the tune split.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..results import write_json
from .cases import EvalSettings
from .config import EditConfig
from .evaluation import run_evaluation
from .methods import METHOD, tune_grid


def choose(tried: dict) -> dict:
    """method -> the chosen setting, from a summary's ``tried`` block (sweep points are not candidates)."""
    chosen = {}
    for method, rows in tried.items():
        candidates = [(i, r) for i, r in enumerate(rows) if not r["sweep"] and r["n"]]
        if candidates:
            best = max(candidates, key=lambda ir: (ir[1]["all_kept"], ir[1]["subject_kept"],
                                                   ir[1]["background_psnr"] or 0.0, -ir[0]))
            chosen[method] = best[1]["setting"]
    return chosen


def run_tuning(pipe, model_name: str, output_dir, config: EditConfig, cases: int, size: int = 4, seed: int = 0,
               methods=None, cache_dir="default", restart: bool = False, progress: bool = True) -> dict:
    """Try ``size`` settings of each method on ``cases`` tune edits; writes ``choice.json`` beside the
    evaluation's records and summaries, and returns it."""
    grid = tune_grid(config, size)
    if methods is not None:
        grid = {m: grid[m] for m in methods}
    settings = EvalSettings(cases=cases, config=config, split="tune", seed=seed, methods=grid,
                            reconstructions=False)
    summary = run_evaluation(pipe, model_name, output_dir, settings, cache_dir=cache_dir, restart=restart,
                             progress=progress)
    choice = {
        "model": model_name,
        "split": "tune",
        "cases": cases,
        "seed": seed,
        "settings_per_method": size,
        "criterion": "all kept, then subject kept, then background PSNR, then grid order",
        "config": dataclasses.asdict(config),
        "chosen": choose(summary["tried"]),
        "tried": {m: [{"setting": r["setting"], "n": r["n"], "all_kept": r["all_kept"],
                       "subject_kept": r["subject_kept"], "edit_success": r["edit_success"]} for r in rows]
                  for m, rows in summary["tried"].items()},
    }
    write_json(Path(output_dir) / "choice.json", choice)
    return choice


def load_choice(path) -> tuple[EditConfig, dict]:
    """The shared config and method -> [chosen setting] of a choice file written by :func:`run_tuning`."""
    path = Path(path)
    try:
        choice = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the settings file {path}: {err}") from err
    if choice.get("split") != "tune":
        raise ValueError(f"{path} was made on the {choice.get('split')!r} split; settings are chosen on tune edits")
    if not choice.get("chosen"):
        raise ValueError(f"{path} chose no setting")
    config = EditConfig(**{**choice["config"], **choice["chosen"].get(METHOD, {})})
    return config, {m: [s] for m, s in choice["chosen"].items()}
