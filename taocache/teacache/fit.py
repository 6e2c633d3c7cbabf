"""Fitting TeaCache's rescaling polynomial for any model, from full pipeline runs.

TeaCache decides from a cheap indicator at the entrance of the block stack, but what matters is how much the
model output changes. The link between the two is model-specific, so it is measured: run the pipeline in full
on calibration prompts, record per step (after the warm-up) the relative L1 change of the indicator and of the
model output (or of the block stack's residual), and fit a polynomial (degree 4 by default) mapping one to the
other. The result is written as a JSON file that ``TeaCacheConfig.from_file`` loads; it names the transformer
class and config fingerprint it belongs to, and the scheduler and step count it was measured with.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..core.fingerprint import fingerprint
from ..results import refuse_overwrite, write_json
from .config import COEFFICIENT_FORMAT, COEFFICIENT_VERSION, INDICATORS, TeaCacheConfig
from .hooks import TeaCacheRecord, apply_teacache, remove_teacache

logger = logging.getLogger(__name__)

#: What the indicator's change is mapped to: the model output (as TeaCache fits it) or the stack residual.
TARGETS = ("output", "residual")


@dataclass
class TeaCacheFit:
    """A fitted rescaling polynomial and how well it describes the measured pairs."""

    coefficients: list[float]
    degree: int
    indicator: str
    target: str
    warmup_steps: int
    step_counts: list[int | None]
    num_points: int
    r2: float
    rmse: float
    indicator_range: tuple[float, float]
    target_range: tuple[float, float]


def collect_changes(
    pipe,
    prompts: list[str],
    call_kwargs: dict,
    indicator: str = "auto",
    seed: int = 0,
    batch_size: int = 1,
) -> tuple[list[TeaCacheRecord], str]:
    """Run the pipeline in full on ``prompts`` and return every step's record and the indicator watched.

    TeaCache is attached with threshold 0 (it never skips) so that it only measures; it is removed afterwards.
    """
    if not prompts:
        raise ValueError("fitting TeaCache needs at least one calibration prompt")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    records: list[TeaCacheRecord] = []
    config = TeaCacheConfig(
        rel_l1_thresh=0.0, coefficients=(1.0, 0.0), indicator=indicator, recorder=records.append
    )
    resolved = apply_teacache(pipe.transformer, config)
    kwargs = {"output_type": "latent", **call_kwargs}
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="fit-teacache: full runs", leave=False):
            batch = prompts[start : start + batch_size]
            generators = [torch.Generator().manual_seed(seed + start + i) for i in range(len(batch))]
            pipe(prompt=batch, generator=generators, **kwargs)
    finally:
        remove_teacache(pipe.transformer)
    return records, resolved.indicator


def change_pairs(records: list[TeaCacheRecord], target: str = "output", warmup_steps: int = 1):
    """Per sample and step after the warm-up: (indicator change, target change) as two arrays."""
    if target not in TARGETS:
        raise ValueError(f"target={target!r} must be one of {TARGETS}")
    xs, ys = [], []
    for record in records:
        y = record.output_change if target == "output" else record.residual_change
        if record.step < warmup_steps or record.indicator_change is None or y is None:
            continue
        xs.extend(record.indicator_change)
        ys.extend(y)
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def fit_polynomial(x: np.ndarray, y: np.ndarray, degree: int = 4) -> tuple[np.ndarray, float, float]:
    """Least-squares polynomial (highest power first) with its R^2 and root-mean-square error."""
    if degree < 1:
        raise ValueError(f"degree={degree} must be >= 1")
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    distinct = len(np.unique(x))  # guidance branches share the indicator, so points can repeat
    if distinct <= degree:
        raise ValueError(
            f"{len(x)} measured step pairs ({distinct} distinct indicator values) cannot fit a degree-{degree} "
            "polynomial; run more prompts or steps, or lower the degree"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.RankWarning)
        coefficients = np.polyfit(x, y, degree)
    predicted = np.polyval(coefficients, x)
    rmse = float(np.sqrt(np.mean((predicted - y) ** 2)))
    spread = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((predicted - y) ** 2)) / spread if spread > 0 else 1.0
    return coefficients, r2, rmse


def fit_teacache(
    pipe,
    prompts: list[str],
    call_kwargs: dict,
    degree: int = 4,
    indicator: str = "auto",
    target: str = "residual",
    warmup_steps: int = 5,
    seed: int = 0,
    batch_size: int = 1,
    step_counts: list[int] | None = None,
) -> TeaCacheFit:
    """Measure full runs of ``pipe`` on ``prompts`` and fit the polynomial TeaCache rescales with.

    ``step_counts`` pools runs at several step counts into one fit, so that the polynomial covers the range
    of changes each of them produces (per-step changes grow as steps get fewer); by default the step count of
    ``call_kwargs`` alone.
    """
    if indicator not in INDICATORS:
        raise ValueError(f"indicator={indicator!r} must be one of {INDICATORS}")
    if target not in TARGETS:
        raise ValueError(f"target={target!r} must be one of {TARGETS}")
    if step_counts is not None and (not step_counts or any(s < 2 for s in step_counts)):
        raise ValueError(f"step_counts={step_counts!r} must list step counts >= 2")
    counts = list(step_counts) if step_counts else [call_kwargs.get("num_inference_steps")]
    xs, ys = [], []
    for steps in counts:
        kwargs = call_kwargs if steps is None else {**call_kwargs, "num_inference_steps": steps}
        records, resolved = collect_changes(pipe, prompts, kwargs, indicator, seed, batch_size)
        x, y = change_pairs(records, target, warmup_steps)
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    coefficients, r2, rmse = fit_polynomial(x, y, degree)
    logger.info("TeaCache fit on %d pairs: R^2 %.3f, RMSE %.4g", len(x), r2, rmse)
    return TeaCacheFit(
        coefficients=[float(c) for c in coefficients],
        degree=degree,
        indicator=resolved,
        target=target,
        warmup_steps=warmup_steps,
        step_counts=counts,
        num_points=len(x),
        r2=r2,
        rmse=rmse,
        indicator_range=(float(x.min()), float(x.max())),
        target_range=(float(y.min()), float(y.max())),
    )


def coefficient_file_content(
    fit: TeaCacheFit, pipe, call_kwargs: dict, model: str = "", num_prompts: int = 0
) -> dict:
    """The JSON document ``TeaCacheConfig.from_file`` reads, keyed by model, scheduler and steps."""
    transformer = pipe.transformer
    scheduler = pipe.scheduler
    scheduler_settings = {
        k: v
        for k, v in dict(scheduler.config).items()
        if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))
    }
    return {
        "format": COEFFICIENT_FORMAT,
        "version": COEFFICIENT_VERSION,
        "model": model,
        "transformer_class": type(transformer).__name__,
        "config_fingerprint": fingerprint(transformer),
        "scheduler": type(scheduler).__name__,
        "scheduler_config": scheduler_settings,
        "num_inference_steps": fit.step_counts,
        "guidance_scale": call_kwargs.get("guidance_scale"),
        "num_prompts": num_prompts,
        **asdict(fit),
    }


def write_coefficient_file(path: str | Path, content: dict, overwrite: bool = False) -> Path:
    """Write the coefficient file atomically; refuses to replace an existing file unless ``overwrite``."""
    refuse_overwrite(path, overwrite)
    return write_json(path, content)
