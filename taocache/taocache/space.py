"""The denoised-estimate space: a denoiser output turned into the clean sample it implies, and back.

In the late steps the estimate of the clean sample (``x0``) hardly moves: it is the fixed point the
trajectory converges to, while the raw output's scale and direction change with the noise level. TaoCache
may therefore extrapolate the estimate instead of the output (``TaoCacheConfig(space="estimate")``) and turn
the predicted estimate back into an output at the predicted step's noise level. Every supported
parametrisation is a line ``x0 = sample_scale * x_t + output_scale * output``:

- flow matching (velocity ``v``): ``x0 = x_t - sigma * v``, ``sigma`` the step's flow noise level;
- epsilon prediction: ``x0 = (x_t - sqrt(1 - a) * eps) / sqrt(a)``, ``a`` the cumulative alpha;
- v-prediction: ``x0 = sqrt(a) * x_t - sqrt(1 - a) * v``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: The noise level below which an output cannot be recovered from an estimate (the last step's).
MIN_OUTPUT_SCALE = 1e-6


@dataclass(frozen=True)
class Line:
    """``x0 = sample_scale * x_t + output_scale * output`` at one step."""

    sample_scale: float
    output_scale: float

    def estimate(self, output: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(output.dtype, torch.float32)
        return self.sample_scale * _rows_like(sample, output).to(dtype) + self.output_scale * output.to(dtype)

    def output(self, estimate: torch.Tensor, sample: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        value = (estimate - self.sample_scale * _rows_like(sample, estimate).to(estimate.dtype)) / self.output_scale
        return value.to(dtype)

    @property
    def invertible(self) -> bool:
        return abs(self.output_scale) > MIN_OUTPUT_SCALE


def fits(sample, output: torch.Tensor) -> bool:
    """Whether an output has the sample's shape (batched guidance: one latent per branch), as the estimate
    needs; an output with learned variances (Latte's doubled channels) does not."""
    if not torch.is_tensor(sample):
        return False
    return sample.shape == output.shape or (
        sample.ndim == output.ndim and sample.shape[1:] == output.shape[1:] and sample.shape[0] > 0
        and output.shape[0] % sample.shape[0] == 0)


def _rows_like(sample: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """The sample with as many rows as the output: a batched-guidance call repeats one latent per branch."""
    if sample.shape == output.shape:
        return sample
    if sample.shape[1:] == output.shape[1:] and output.shape[0] % sample.shape[0] == 0:
        return sample.repeat(output.shape[0] // sample.shape[0], *([1] * (sample.ndim - 1)))
    raise ValueError(
        f"the denoiser's sample {tuple(sample.shape)} and output {tuple(output.shape)} differ in shape: "
        "TaoCache's estimate space needs an output of the sample's shape (use space='output')"
    )


def parametrisation(scheduler) -> str | None:
    """``"flow"``, ``"epsilon"`` or ``"v_prediction"`` for a scheduler that says which, else None."""
    if scheduler is None:
        return None
    config = getattr(scheduler, "config", {}) or {}
    kind = config.get("prediction_type", None)
    if "FlowMatch" in type(scheduler).__name__ or config.get("use_flow_sigmas", False) or kind == "flow_prediction":
        return "flow"
    if kind in ("epsilon", "v_prediction") and getattr(scheduler, "alphas_cumprod", None) is not None:
        return kind
    return None


def line_at(scheduler, step: int, timestep: float | None) -> Line | None:
    """The line at ``step`` (whose timestep is ``timestep``), or None where the scheduler does not say."""
    kind = parametrisation(scheduler)
    if kind is None or timestep is None:
        return None
    if kind == "flow":
        sigma = _flow_sigma(scheduler, step, timestep)
        return Line(1.0, -sigma)
    alphas = scheduler.alphas_cumprod
    index = round(timestep)
    if not 0 <= index < len(alphas):
        return None
    a = float(alphas[index])
    if kind == "epsilon":
        return Line(1.0 / math.sqrt(a), -math.sqrt(1.0 - a) / math.sqrt(a))
    return Line(math.sqrt(a), -math.sqrt(1.0 - a))


def _flow_sigma(scheduler, step: int, timestep: float) -> float:
    """The scheduler's own noise level for ``step`` when its table lines up with the timestep, else the
    timestep over the training timesteps (how flow pipelines make the timestep)."""
    sigmas, timesteps = getattr(scheduler, "sigmas", None), getattr(scheduler, "timesteps", None)
    lined_up = (sigmas is not None and timesteps is not None and step < min(len(sigmas), len(timesteps))
                and abs(float(timesteps[step]) - timestep) <= 1e-3 * max(1.0, abs(timestep)))
    if lined_up:
        return float(sigmas[step])
    total = float(getattr(scheduler, "config", {}).get("num_train_timesteps", 1000) or 1000)
    return timestep / total
