"""The TaoCache decision, as pure functions of what the hook keeps: which earlier output to continue from,
with which coefficient, at what predicted error, whether that fits the budget, and the prediction itself.

Notation (docs/algorithm.md, sections 2 and 4): ``out_j`` is the last computed output, ``out_a`` an earlier
computed one, ``D = out_j - out_a`` over a gap ``g = j - a``; the step to predict is ``i = j + m`` (horizon
``m``). A prediction is ``out_j + k * D``; its predicted relative error for one sample is
``||D|| / ||out_j|| * rms(||out_i - out_j - k D|| / ||D||)`` from the calibrated statistics, times the
length of step ``i`` relative to the run's mean step when ``weigh_by_step``. The worst sample decides.

In the estimate space (``space.py``) the outputs kept are estimates ``x0 = s x_t + b out``; a predicted
estimate's error becomes an output error divided by ``|b|`` at the predicted step, so the predicted error is
taken back to the output's scale (``||x0|| / (|b_i| ||out||)`` of the last computed call): the budget means
the same in both spaces.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .calibration import StepStats, first_order_coefficient

#: Computed outputs kept per branch: the geometric predictor may extrapolate over one or two gaps.
HISTORY = 3

#: ``(branch, step, gap, horizon, first-order coefficient) -> statistics`` (None where none were measured).
StatsLookup = Callable[[str, int, int, int, float], "StepStats | None"]


@dataclass
class Computed:
    """A computed output kept for extrapolation (in the estimate space: its estimate), with
    ``||out - earlier|| / ||out||`` per sample for each earlier kept output (keyed by that output's step),
    and in the estimate space ``||estimate|| / ||output||`` per sample."""

    step: int
    timestep: float | None
    output: torch.Tensor
    relative_deltas: dict[int, list[float]]
    per_output: list[float] | None = None


@dataclass(frozen=True)
class Option:
    """A possible prediction: its predicted error, the earlier output ``D`` is taken from, and the
    coefficient ``k`` for each group of batch rows (guidance branch)."""

    error: float
    earlier: Computed
    coefficients: list[tuple[slice, float]]


def keep(history: list[Computed], step: int, timestep: float | None, output: torch.Tensor,
         raw: torch.Tensor | None = None) -> list[Computed]:
    """The history after computing ``output`` at ``step``: the last HISTORY outputs of its shape, the new one
    with its relative deltas to the others (in float64: no overflow near the dtype's maximum). ``raw`` is
    the denoiser's output when ``output`` is its estimate."""
    kept = output.detach().clone()
    history = [h for h in history if h.output.shape == kept.shape][-(HISTORY - 1):]
    norm = kept.flatten(1).double().norm(dim=1).clamp_min(1e-12)
    relative = {}
    for earlier in history:
        delta = (kept - earlier.output).flatten(1).double().norm(dim=1)
        relative[earlier.step] = (delta / norm).tolist()
    per_output = None
    if raw is not None:
        raw_norm = raw.detach().flatten(1).double().norm(dim=1).clamp_min(1e-12)
        per_output = (norm / raw_norm).tolist()
    return [*history, Computed(step, timestep, kept, relative, per_output)]


def coefficient(predictor: str, stats: StepStats, first_order: float) -> float:
    """``k`` of each predictor: the calibrated least-squares gain, first-order extrapolation, or reuse."""
    if predictor == "geometric":
        return stats.gain_mean
    if predictor == "linear":
        return first_order
    return 0.0


def step_weight(schedule: list[float] | None, step: int, weigh: bool) -> float:
    """The length of ``step`` in the denoiser's timestep over the run's mean step (1 when not weighing)."""
    if not weigh or not schedule or step + 1 >= len(schedule):
        return 1.0
    mean_step = abs(schedule[0] - schedule[-1]) / (len(schedule) - 1)
    return abs(schedule[step] - schedule[step + 1]) / mean_step if mean_step > 0 else 1.0


def ready(history: list[Computed], consecutive: int, max_consecutive: int, horizon: int) -> bool:
    """Whether a branch may predict at all: two computed outputs kept, and fewer predictions in a row than
    allowed (and than the calibration's horizon)."""
    return len(history) >= 2 and consecutive < min(max_consecutive, horizon)


def option(
    predictor: str,
    step: int,
    timestep: float | None,
    branches: list[tuple[str, slice]],
    last: Computed,
    earlier: Computed,
    lookup: StatsLookup,
    weight: float,
    output_scale: float | None = None,
) -> Option | None:
    """The prediction of ``step`` from ``D = last - earlier``, or None where a branch has no statistics.
    ``output_scale`` is ``|b|`` at ``step`` in the estimate space (None in the output space)."""
    gap, horizon = last.step - earlier.step, step - last.step
    first_order = first_order_coefficient(timestep, last.timestep, earlier.timestep, step, last.step, earlier.step)
    relative = last.relative_deltas.get(earlier.step)
    if relative is None:
        return None
    coefficients, errors = [], []
    for branch, rows in branches:
        stats = lookup(branch, step, gap, horizon, first_order)
        if stats is None:
            return None
        k = coefficient(predictor, stats, first_order)
        coefficients.append((rows, k))
        unit_error = stats.expected_error(k)
        to_output = [1.0] * len(relative) if last.per_output is None or output_scale is None else [
            p / output_scale for p in last.per_output]
        errors.extend(rel * unit_error * f for rel, f in zip(relative[rows], to_output[rows]))
    if not errors:
        return None
    return Option(max(errors) * weight, earlier, coefficients)


def best_option(
    predictor: str,
    step: int,
    timestep: float | None,
    branches: list[tuple[str, slice]],
    history: list[Computed],
    lookup: StatsLookup,
    weight: float,
    output_scale: float | None = None,
) -> Option | None:
    """Reuse and linear continue the delta of the last two computed outputs; geometric tries every kept
    earlier output and keeps the one whose calibrated prediction has the smallest predicted error."""
    candidates = history[:-1] if predictor == "geometric" else history[-2:-1]
    best = None
    for earlier in candidates:
        found = option(predictor, step, timestep, branches, history[-1], earlier, lookup, weight, output_scale)
        if found is not None and (best is None or found.error < best.error):
            best = found
    return best


def within_budget(accumulated: float, error: float, budget: float) -> bool:
    """Whether a prediction of predicted ``error`` keeps the sum since the last computed call in budget."""
    return math.isfinite(error) and accumulated + error <= budget


def extrapolate(last: torch.Tensor, delta: torch.Tensor, coefficients: list[tuple[slice, float]]) -> torch.Tensor:
    """``last + k * delta`` with one ``k`` per group of batch rows, computed in at least float32."""
    dtype = torch.promote_types(last.dtype, torch.float32)
    if len({k for _, k in coefficients}) == 1:
        k = coefficients[0][1]
        return (last.to(dtype) + k * delta.to(dtype)).to(last.dtype)
    scale = torch.empty(last.shape[0], dtype=dtype, device=last.device)
    for rows, k in coefficients:
        scale[rows] = k
    scale = scale.view(-1, *([1] * (last.ndim - 1)))
    return (last.to(dtype) + scale * delta.to(dtype)).to(last.dtype)
