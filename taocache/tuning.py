"""Quality-budget mode: the fastest cache configuration that stays within a quality target of the full run.

A user's question is rarely "which threshold?" but "how fast can I go while staying this close to the full
run?". :func:`tune` answers it for one model and call setting by a small search:

1. full runs of the *search* prompts give the references, and TaoCache's calibration (never the prompts it
   is judged on later);
2. every candidate (TaoCache alone over a grid of settings, and TaoCache stacked on TeaCache where the model
   has TeaCache coefficients) runs on the same prompts and seeds; its cost is the fraction of full denoiser
   passes it made, its quality the worst PSNR / SSIM / LPIPS over the search prompts;
3. the cheapest candidate whose worst case meets every target (plus ``margin_db`` for PSNR) wins;
4. it is checked on separate *held-out* prompts, and the file says on how many it met the targets.

The result is a configuration file (see :mod:`taocache.configs`) that ``taocache.enable`` takes.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from . import api
from .configs import save_configs
from .core.denoisers import transformers_of
from .core.frames import frames_of
from .metrics import quality_row
from .results import json_safe
from .taocache.calibration import DEFAULT_HORIZON, calibration_steps_for
from .taocache.config import TaoCacheConfig
from .teacache.coefficients import find_coefficients
from .teacache.config import TeaCacheConfig

logger = logging.getLogger(__name__)

#: TaoCache settings searched by default: from cautious to fast. Both predictors: the calibrated coefficient
#: leads at one prediction in a row, reuse can at two on short schedules (docs/algorithm.md, section 6.1).
TAOCACHE_GRID = {
    "predictor": ("geometric", "reuse"),
    "error_budget": (0.05, 0.1, 0.2, 0.4, 0.8),
    "max_consecutive": (1, 2, 3),
    "start_fraction": (0.2, 0.3),
}
#: TeaCache thresholds tried under TaoCache (with TaoCache's settings of a reduced grid).
TEACACHE_THRESHOLDS = (0.05, 0.1, 0.2, 0.3)
STACKED_TAOCACHE_GRID = {"error_budget": (0.1, 0.4), "max_consecutive": (1, 2), "start_fraction": (0.3,)}


def check_margin(margin_db, name: str) -> None:
    """The PSNR margin must be a finite number of dB >= 0: NaN would switch the PSNR test off."""
    if not isinstance(margin_db, (int, float)) or not math.isfinite(margin_db) or margin_db < 0:
        raise ValueError(f"{name} {margin_db!r} must be a finite number of dB >= 0")


@dataclass
class Targets:
    """Quality a configuration must keep against the full run, per video (None: not constrained)."""

    psnr: float | None = None
    ssim: float | None = None
    lpips: float | None = None

    def __post_init__(self):
        if self.psnr is None and self.ssim is None and self.lpips is None:
            raise ValueError("give at least one target: target_psnr (dB), target_ssim (0-1) or target_lpips (0-1)")
        if self.psnr is not None and not self.psnr > 0:
            raise ValueError(f"target_psnr={self.psnr!r} must be a positive number of dB")
        for name in ("ssim", "lpips"):
            value = getattr(self, name)
            if value is not None and not 0 < value < 1:
                raise ValueError(f"target_{name}={value!r} must be in (0, 1)")

    def met(self, quality: dict, margin_db: float = 0.0) -> bool:
        if self.psnr is not None and quality["psnr"] < self.psnr + margin_db:
            return False
        if self.ssim is not None and quality["ssim"] < self.ssim:
            return False
        return self.lpips is None or quality["lpips"] <= self.lpips


@dataclass
class Candidate:
    """One configuration tried: its caches (innermost first) and what it measured."""

    name: str
    configs: list
    cost: float = 1.0  # full denoiser passes made / passes of the full run
    worst: dict = field(default_factory=dict)
    per_prompt: list = field(default_factory=list)

    @property
    def speedup(self) -> float:
        return 1.0 / self.cost if self.cost > 0 else float("inf")

    def summary(self) -> dict:
        return {"name": self.name, "speedup": self.speedup, "worst": self.worst, "per_prompt": self.per_prompt}


@dataclass
class TuneResult:
    """The chosen candidate, every candidate tried, and the held-out check of the chosen one."""

    targets: Targets
    chosen: Candidate | None
    candidates: list[Candidate]
    check: list[dict]
    call: dict

    @property
    def configs(self) -> list:
        if self.chosen is None:
            raise ValueError("no configuration met the targets on the search prompts; loosen the targets")
        return self.chosen.configs

    @property
    def check_pass_rate(self) -> float | None:
        if not self.check:
            return None
        return float(np.mean([row["met"] for row in self.check]))

    def report(self) -> dict:
        """What the search measured, as JSON-safe values (an output equal to the full run has PSNR "inf")."""
        return json_safe({
            "targets": {k: v for k, v in vars(self.targets).items() if v is not None},
            "call": {k: v for k, v in self.call.items() if isinstance(v, (int, float, str, bool))},
            "chosen": self.chosen.summary() if self.chosen else None,
            "check": {"prompts": len(self.check), "met": self.check_pass_rate, "per_prompt": self.check},
            "candidates": [
                {"name": c.name, "speedup": c.speedup, "worst": c.worst} for c in self.candidates
            ],
        })

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the chosen configuration (and its calibration) for ``taocache.enable(pipe, path)``."""
        return save_configs(path, self.configs, tuned=self.report(), overwrite=overwrite)


def _teacache_fraction(pipe) -> float:
    """Of the calls that reached the transformers, the fraction TeaCache computed (1.0 without TeaCache)."""
    computed = total = 0
    for counts_by_branch in (api.stats(pipe).stacked.get("TeaCache") or {}).values():
        for counts in counts_by_branch.values():
            computed += counts.get("computed", 0)
            total += counts.get("computed", 0) + counts.get("skipped", 0)
    return computed / total if total else 1.0


def _worst(rows: list[dict]) -> dict:
    worst = {"psnr": min(r["psnr"] for r in rows), "ssim": min(r["ssim"] for r in rows)}
    if rows and rows[0]["lpips"] is not None:
        worst["lpips"] = max(r["lpips"] for r in rows)
    return worst


def default_candidates(pipe, calibration, stack: bool = True) -> list[Candidate]:
    """TaoCache over :data:`TAOCACHE_GRID`, and stacked on TeaCache where the model has coefficients."""
    base = TaoCacheConfig(calibration=calibration, auto_calibrate=False)
    out = []
    for values in itertools.product(*TAOCACHE_GRID.values()):
        fields = dict(zip(TAOCACHE_GRID, values))
        name = "taocache " + " ".join(f"{key}={value}" for key, value in fields.items())
        out.append(Candidate(name, [replace(base, **fields)]))
    teacache = _teacache_base(pipe) if stack else None
    if teacache is not None:
        for thresh, (budget, consecutive, start) in itertools.product(
            TEACACHE_THRESHOLDS, itertools.product(*STACKED_TAOCACHE_GRID.values())
        ):
            tao = replace(base, error_budget=budget, max_consecutive=consecutive, start_fraction=start)
            tea = replace(teacache, rel_l1_thresh=thresh)
            name = f"teacache thresh={thresh} + taocache budget={budget} consecutive={consecutive} start={start}"
            out.append(Candidate(name, [tea, tao]))
    return out


def _teacache_base(pipe):
    """A TeaCacheConfig with this model's own coefficients (fitted file or published preset), else None."""
    try:
        transformers = transformers_of(pipe)
    except TypeError:
        return None  # a UNet pipeline: TeaCache caches a transformer's block stack
    found = find_coefficients(transformers[0][1])
    if found is None:
        logger.info("no TeaCache coefficients for this model: tuning TaoCache alone (fit some with fit-teacache)")
        return None
    return TeaCacheConfig(**{**vars(found), "recorder": None})


def tune(
    pipe,
    search_prompts: list[str],
    check_prompts: list[str],
    *,
    target_psnr: float | None = None,
    target_ssim: float | None = None,
    target_lpips: float | None = None,
    call_kwargs: dict | None = None,
    seed: int = 0,
    stack: bool = True,
    candidates: list[Candidate] | None = None,
    margin_db: float = 0.5,
    lpips_model=None,
    progress: bool = True,
) -> TuneResult:
    """Search the fastest cache configuration whose worst case on ``search_prompts`` meets the targets.

    Args:
        pipe: A diffusers ``DiffusionPipeline`` with no cache enabled.
        search_prompts: Prompts the candidates are judged on (TaoCache is calibrated on them too).
        check_prompts: Other prompts, never seen by the search, on which the chosen configuration is checked.
        target_psnr: Least PSNR (dB) against the full run, per video; ``margin_db`` is added during the search.
        target_ssim: Least SSIM (0-1) against the full run.
        target_lpips: Largest LPIPS (0-1); needs ``lpips_model`` (see :func:`taocache.metrics.load_lpips`).
        call_kwargs: The pipeline call's arguments (size, steps, guidance) for every run.
        seed: Prompt ``n`` of each list runs with a CPU generator seeded ``seed + n`` (check prompts after the
            search prompts).
        stack: Also try TaoCache stacked on TeaCache where the model has TeaCache coefficients.
        candidates: Replaces the default grid (:func:`default_candidates`).
        margin_db: PSNR the search demands above ``target_psnr`` (a finite number >= 0).
        lpips_model: The LPIPS scorer for ``target_lpips``.
        progress: Show progress bars.

    Returns:
        A :class:`TuneResult`: the chosen candidate (None when none met the targets; the cheapest in denoiser
        passes that did otherwise), every candidate with its worst-case quality, and the held-out check.

    Example::

        result = taocache.tune(pipe, search_prompts, check_prompts, target_psnr=30, call_kwargs=call)
        result.save("tuned.json")          # also writes tuned.calibration.json beside it
        taocache.enable(pipe, "tuned.json")
    """
    from tqdm.auto import tqdm

    targets = Targets(target_psnr, target_ssim, target_lpips)
    check_margin(margin_db, "margin_db")
    if target_lpips is not None and (lpips_model is None or not getattr(lpips_model, "available", True)):
        reason = getattr(lpips_model, "reason", "") or "no LPIPS model was given"
        raise ValueError(f"cannot tune for an LPIPS target: {reason}; use target_psnr or target_ssim instead")
    for name, prompts in (("search_prompts", search_prompts), ("check_prompts", check_prompts)):
        if isinstance(prompts, str) or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError(f"{name} must be a list of non-empty strings")
    if not search_prompts:
        raise ValueError("search_prompts is empty: the search needs at least one prompt")
    if set(search_prompts) & set(check_prompts):
        raise ValueError("search_prompts and check_prompts overlap: the check must use prompts the search never saw")
    if api.active_caches(pipe):
        raise ValueError("TaoCache is already enabled on this pipeline; disable it before tuning")
    call = dict(call_kwargs or {})
    lpips = lpips_model if lpips_model is not None and getattr(lpips_model, "available", True) else None

    def run(prompt: str, n: int):
        generator = torch.Generator("cpu").manual_seed(seed + n)
        return frames_of(pipe(prompt, generator=generator, output_type="np", **call))

    steps = call.get("num_inference_steps")
    calibration = api.calibrate(
        pipe, list(search_prompts), seed=seed, save=False, progress=progress,
        call_kwargs={**call, "num_inference_steps": calibration_steps_for(steps)} if steps else call,
        horizon=max(DEFAULT_HORIZON, *TAOCACHE_GRID["max_consecutive"]),
    )
    references = [run(p, n) for n, p in enumerate(search_prompts)]
    tried = candidates if candidates is not None else default_candidates(pipe, calibration, stack)
    for candidate in tqdm(tried, desc="tune", disable=not progress):
        api.enable(pipe, candidate.configs)
        try:
            rows, computed, calls = [], 0, 0
            for n, prompt in enumerate(search_prompts):
                rows.append(quality_row(run(prompt, n), references[n], lpips))
                record = api.stats(pipe)
                computed, calls = computed + record.computed, calls + record.calls
            # TaoCache's share of computed calls, times TeaCache's share of full block-stack passes in them
            candidate.cost = computed / calls * _teacache_fraction(pipe)
        finally:
            api.disable(pipe)
        candidate.per_prompt = rows
        candidate.worst = _worst(rows)
    # a configuration that skipped nothing only meets a target the plain pipeline meets: no answer to tuning
    passing = [c for c in tried if c.cost < 1.0 and targets.met(c.worst, margin_db)]
    chosen = min(passing, key=lambda c: c.cost) if passing else None
    check = []
    if chosen is not None:
        offset = len(search_prompts)
        references = [run(p, offset + n) for n, p in enumerate(check_prompts)]
        api.enable(pipe, chosen.configs)
        try:
            for n, prompt in enumerate(check_prompts):
                row = quality_row(run(prompt, offset + n), references[n], lpips)
                check.append({"prompt": prompt, **row, "met": targets.met(row)})
        finally:
            api.disable(pipe)
    return TuneResult(targets, chosen, tried, check, call)
