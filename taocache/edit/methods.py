"""The edits the evaluation compares, each with the settings it may be tuned on.

Every method runs at the evaluation's number of steps; each has its own knobs, and the tuning step
(``tuning.py``) tries the same number of settings of each on tune edits before one is used on test edits:

- ``non-rigid``: the method (text optimisation, inversion, timestep-aware injection): S and alpha;
- ``ddim-target``: DDIM inversion + target prompt, whose one knob is its guidance scale;
- ``sdedit``: SDEdit's strength (the share of the schedule it re-noises);
- ``masactrl``: MasaCtrl's first controlled step and first controlled layer (``masactrl.py``).

Steps in the grids are fractions of the schedule, so one grid serves any step count.
"""

from __future__ import annotations

import numpy as np

from .baselines import ddim_target_edit, sdedit_edit
from .config import EditConfig
from .masactrl import PAPER_START_LAYER, PAPER_START_STEP, masactrl_edit

METHOD = "non-rigid"
BASELINES = ("ddim-target", "sdedit", "masactrl")
METHODS = (METHOD, *BASELINES)
PARAMETERS = {
    METHOD: ("steps_source", "alpha"),
    "ddim-target": ("guidance_scale",),
    "sdedit": ("strength",),
    "masactrl": ("start_step", "start_layer"),
}


def _steps(fraction: float, num_steps: int) -> int:
    return round(fraction * num_steps)


def default_settings(config: EditConfig) -> dict[str, dict]:
    """Each method's setting before tuning: the config's S and alpha, its guidance, SDEdit at the strength
    that edits the steps the method edits, MasaCtrl as published (step 4 of 50, layer 10 of 16)."""
    n = config.num_steps
    return {
        METHOD: {"steps_source": config.steps_source, "alpha": config.alpha},
        "ddim-target": {"guidance_scale": config.guidance_scale},
        "sdedit": {"strength": max(1, n - config.steps_source) / n},
        "masactrl": {"start_step": _steps(PAPER_START_STEP / 50, n), "start_layer": PAPER_START_LAYER},
    }


def tune_grid(config: EditConfig, size: int = 4) -> dict[str, list[dict]]:
    """``size`` settings per method (the same number for each), around the published values."""
    n = config.num_steps
    grids = {
        METHOD: [{"steps_source": _steps(s, n), "alpha": a} for s in (0.1, 0.2, 0.3) for a in (0.5, 1.0)],
        "ddim-target": [{"guidance_scale": g} for g in (1.5, 2.0, 3.0, 5.0, 7.5, 1.0)],
        "sdedit": [{"strength": s} for s in (0.9, 0.8, 0.7, 0.6, 0.5, 0.95)],
        "masactrl": [{"start_step": _steps(s, n), "start_layer": lay}
                     for s in (0.08, 0.2, 0.3) for lay in (3 / 7, PAPER_START_LAYER)],
    }
    if not 1 <= size <= min(len(g) for g in grids.values()):
        raise ValueError(f"size={size} must be 1-{min(len(g) for g in grids.values())} settings per method")
    return {m: grid[:size] for m, grid in grids.items()}


def check_setting(method: str, setting: dict, config: EditConfig) -> dict:
    """``setting`` if it names exactly ``method``'s knobs with accepted values; ValueError otherwise."""
    if method not in PARAMETERS:
        raise ValueError(f"method {method!r} must be one of {', '.join(METHODS)}")
    if set(setting) != set(PARAMETERS[method]):
        raise ValueError(f"{method} takes the settings {PARAMETERS[method]}, got {sorted(setting)}")
    n = config.num_steps
    if method == METHOD:
        config.with_values(**setting)
        if setting["steps_source"] >= n:
            raise ValueError(f"{method}: steps_source={setting['steps_source']} leaves none of the {n} steps to edit")
    elif method == "ddim-target":
        config.with_values(**setting)
    elif method == "sdedit":
        if not 0.0 < setting["strength"] <= 1.0:
            raise ValueError(f"sdedit: strength={setting['strength']} must be in (0, 1]")
    elif not (isinstance(setting["start_step"], int) and 0 <= setting["start_step"] <= n
              and 0.0 <= setting["start_layer"] <= 1.0):
        raise ValueError(f"masactrl: start_step must be an integer in 0-{n} and start_layer in [0, 1], got {setting}")
    return dict(setting)


def run_baseline(pipe, method: str, setting: dict, image: np.ndarray, source: str, target: str,
                 config: EditConfig, seed: int = 0) -> np.ndarray:
    """The edit of one baseline at ``setting`` (the steps and, except where it is the knob, guidance of
    ``config``)."""
    if method == "ddim-target":
        return ddim_target_edit(pipe, image, source, target, config.num_steps, setting["guidance_scale"])
    if method == "sdedit":
        return sdedit_edit(pipe, image, target, setting["strength"], config.num_steps, config.guidance_scale,
                           seed=seed)
    if method == "masactrl":
        return masactrl_edit(pipe, image, source, target, config.num_steps, config.guidance_scale,
                             start_step=setting["start_step"], start_layer=setting["start_layer"])
    raise ValueError(f"{method!r} is not a baseline; baselines: {', '.join(BASELINES)}")
