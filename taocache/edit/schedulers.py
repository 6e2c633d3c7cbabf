"""The DDIM sampler and its inverse, built from the pipeline's scheduler configuration.

Inversion and editing are only consistent on a deterministic sampler whose steps can be retraced, so both
stages use DDIM (eta 0) on the model's own noise schedule and prediction type, whatever scheduler the pipeline
carries (the pipeline's scheduler itself is left untouched). Sampling uses ``DDIMScheduler.step``.

The inverse step is written here rather than taken from ``DDIMInverseScheduler``: for v-prediction that class
converts the model's output to noise with the noise level of the step's *start*, while the model was asked
about the step's *end*. Converting with the level the model was asked about makes the inverse exact whenever
the predicted noise does not change within a step (the usual DDIM inversion assumption), for epsilon and
v-prediction alike.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

PREDICTION_TYPES = ("epsilon", "v_prediction")


class DDIMInverter:
    """Runs a DDIM sampler's steps backwards: from the clean latent towards noise, one sampler step each."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.timesteps = sampler.timesteps.flip(0)
        self.step_size = sampler.config.num_train_timesteps // sampler.num_inference_steps

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor) -> torch.Tensor:
        """The latent at noise level ``timestep`` from ``sample`` one sampler step below it.

        ``model_output`` is the model evaluated on ``sample`` at ``timestep``.
        """
        alphas = self.sampler.alphas_cumprod
        t = int(timestep)
        lower = t - self.step_size
        a_t = alphas[t].double()
        a_low = alphas[lower].double() if lower >= 0 else self.sampler.final_alpha_cumprod.double()
        sample64, out64 = sample.double(), model_output.double()
        if self.sampler.config.prediction_type == "epsilon":
            noise = out64
        else:  # v-prediction, read at the level the model was asked about
            noise = a_t.sqrt() * out64 + (1 - a_t).sqrt() * sample64
        clean = (sample64 - (1 - a_low).sqrt() * noise) / a_low.sqrt()
        return (a_t.sqrt() * clean + (1 - a_t).sqrt() * noise).to(sample.dtype)


def editing_schedulers(pipe, num_steps: int):
    """``(sampler, inverter)``: a DDIMScheduler set to ``num_steps`` and its :class:`DDIMInverter`.

    Sample clipping and thresholding are switched off: latents are not bounded to [-1, 1], and clipping
    breaks invertibility.
    """
    from diffusers import DDIMScheduler

    config = pipe.scheduler.config
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise ValueError(
            f"the model predicts {prediction!r}; editing supports prediction_type {' or '.join(PREDICTION_TYPES)}"
        )
    if type(pipe.scheduler).__name__ != "DDIMScheduler":
        logger.info(
            "editing uses DDIM on the noise schedule of the pipeline's %s", type(pipe.scheduler).__name__
        )
    if num_steps > config.get("num_train_timesteps", 1000):
        raise ValueError(
            f"num_steps={num_steps} exceeds the model's {config.get('num_train_timesteps')} timesteps"
        )
    sampler = DDIMScheduler.from_config(config, clip_sample=False, thresholding=False)
    sampler.set_timesteps(num_steps)
    return sampler, DDIMInverter(sampler)
