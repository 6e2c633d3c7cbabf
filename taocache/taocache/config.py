"""The TaoCache configuration: what a user may tune, each field checked when the config is made."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Any

PREDICTORS = ("geometric", "linear", "reuse")
SPACES = ("output", "estimate")
MAX_CONSECUTIVE_LIMIT = 8


@dataclass
class TaoCacheConfig:
    """How TaoCache decides which denoiser calls to skip and how it predicts their outputs.

    Args:
        predictor: How a skipped call's output is predicted from the last computed output ``out_j`` and an
            earlier computed one ``out_a`` (``D = out_j - out_a``), as ``out_j + coefficient * D``:
            ``"geometric"`` (default) uses the calibrated least-squares coefficient ``k = r * c`` (norm ratio
            times cosine of the delta to predict against ``D``, measured at the same gap on full runs: the
            fixed-point extrapolation of docs/algorithm.md) and picks, among the last kept outputs, the
            ``out_a`` whose prediction has the smallest calibrated error; ``"linear"`` continues the delta of
            the last two computed outputs linearly in the denoiser's timestep (first-order extrapolation);
            ``"reuse"`` returns ``out_j`` unchanged. Every predictor decides with the same calibrated error
            estimate (for its own coefficient); only the prediction differs. The default is the measured best
            on the embedded video model at one prediction in a row; with two in a row on a 20-step schedule,
            ``"reuse"`` measured better (docs/algorithm.md, section 6).
        start_fraction: Fraction of the steps, in [0, 1], that always run in full before the first skip
            (``start step = ceil(start_fraction * steps)``). The paper aims at the late steps.
        error_budget: Budget, > 0, for the predicted relative error (L2 norm of the expected prediction error
            over the L2 norm of the output, worst sample of the batch) summed over consecutive predicted calls.
            A call is predicted only while the sum stays within it; a computed call resets the sum.
            Larger is faster and further from the full run.
        max_consecutive: Most predicted calls in a row, 1 to 8 (and at most the calibration's horizon).
        final_steps: Number of last steps, at least 1, that are always computed.
        weigh_by_step: Scale each call's predicted error by the size of its step in the denoiser's timestep
            (relative to the run's mean step). A solver moves the latent by about the step size times the
            output, so an output error on a long step costs more than the same error on a short one; with a
            shifted flow schedule the late steps are several times longer than the early ones. Uniform
            schedules (DDIM's) give every step weight 1. On by default (measured, docs/algorithm.md section 6).
        space: What is extrapolated: ``"output"``, the denoiser's output itself, or ``"estimate"``, the clean
            sample it implies (``x0 = x_t - sigma * v`` for flow models; epsilon and v-prediction likewise),
            turned back into an output at the predicted step's noise level (:mod:`.space`). The estimate
            converges in the late steps, the literal fixed point. It needs a scheduler that says its
            parametrisation (flow, epsilon or v-prediction); elsewhere TaoCache predicts outputs and says so.
            Calibrations hold the statistics of both spaces. ``"estimate"`` is the default: on tune captions
            of the embedded models it measured at least as close to the full run as ``"output"`` at the
            same cost (docs/algorithm.md, section 6).
        calibration: A :class:`~taocache.cache.calibration.Calibration`, a path to its JSON file, or None to
            look one up in ``calibration_dir`` and the package's shipped calibrations (preferring one measured
            on at least 50 steps, resampled for shorter runs).
        calibration_dir: Folder holding calibration files; None means ``$TAOCACHE_CALIBRATION_DIR`` or
            ``~/.cache/taocache/calibration``.
        auto_calibrate: When no calibration is found, run the first call in full, record a calibration from
            it (logged) and use it for the later calls. When False, an uncalibrated denoiser is never skipped.
        batched_guidance: Whether each denoiser call carries both guidance branches as the halves
            ``[uncond; cond]`` of its batch (Latte, CogVideoX, Stable Diffusion). None detects it from the
            pipeline (its ``do_classifier_free_guidance`` and the absence of a ``"cond"``/``"uncond"`` cache
            context); set it for a bare module called that way.

    Example::

        config = taocache.TaoCacheConfig(error_budget=0.4, max_consecutive=2)   # faster, further from full
        taocache.enable(pipe, config)
    """

    # Defaults chosen with eval/tune_defaults.py on tune captions of the embedded video model (docs/algorithm.md, section 6).
    predictor: str = "geometric"
    start_fraction: float = 0.2
    error_budget: float = 0.2
    max_consecutive: int = 1
    final_steps: int = 1
    weigh_by_step: bool = True
    space: str = "estimate"
    calibration: Any = None
    calibration_dir: str | os.PathLike | None = None
    auto_calibrate: bool = True
    batched_guidance: bool | None = None

    def __post_init__(self):
        from .calibration import Calibration

        # numpy and torch scalars (from a sweep's arange, say) are numbers too: keep them as plain Python ones
        for name, kind in (("start_fraction", numbers.Real), ("error_budget", numbers.Real),
                           ("max_consecutive", numbers.Integral), ("final_steps", numbers.Integral)):
            value = getattr(self, name)
            if isinstance(value, kind) and not isinstance(value, bool):
                setattr(self, name, float(value) if kind is numbers.Real else int(value))
        if self.predictor not in PREDICTORS:
            raise ValueError(f"predictor={self.predictor!r} is not supported; use one of {PREDICTORS}")
        if not _is_number(self.start_fraction) or not 0.0 <= self.start_fraction <= 1.0:
            raise ValueError(f"start_fraction={self.start_fraction!r} must be a number in [0, 1]")
        if not _is_number(self.error_budget) or not 0.0 < self.error_budget < float("inf"):
            raise ValueError(f"error_budget={self.error_budget!r} must be a finite number > 0")
        if not _is_int(self.max_consecutive) or not 1 <= self.max_consecutive <= MAX_CONSECUTIVE_LIMIT:
            raise ValueError(
                f"max_consecutive={self.max_consecutive!r} must be an integer in [1, {MAX_CONSECUTIVE_LIMIT}]"
            )
        if not _is_int(self.final_steps) or self.final_steps < 1:
            raise ValueError(f"final_steps={self.final_steps!r} must be an integer >= 1")
        if self.space not in SPACES:
            raise ValueError(f"space={self.space!r} is not supported; use one of {SPACES}")
        if not isinstance(self.weigh_by_step, bool):
            raise ValueError(f"weigh_by_step={self.weigh_by_step!r} must be True or False")  # noqa: TRY004
        if self.calibration is not None and not isinstance(self.calibration, (str, os.PathLike, Calibration)):
            raise ValueError(
                f"calibration={self.calibration!r} must be None, a Calibration or a path to a calibration JSON file"
            )
        if self.calibration_dir is not None and not isinstance(self.calibration_dir, (str, os.PathLike)):
            raise ValueError(f"calibration_dir={self.calibration_dir!r} must be None or a folder path")
        if not isinstance(self.auto_calibrate, bool):
            raise ValueError(f"auto_calibrate={self.auto_calibrate!r} must be True or False")  # noqa: TRY004
        if self.batched_guidance is not None and not isinstance(self.batched_guidance, bool):
            raise ValueError(f"batched_guidance={self.batched_guidance!r} must be None, True or False")

    def start_step(self, num_steps: int) -> int:
        """The first step index that may be predicted in a run of ``num_steps`` steps."""
        return math.ceil(round(self.start_fraction * num_steps, 6))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
