"""Timestep-aware text injection: sample from the inverted noise, switching the prompt after S steps.

The first ``steps_source`` steps are conditioned on the source prompt, so the coarse layout and the look of
the input are laid down as they were; the remaining steps are conditioned on
``alpha * e_target + (1 - alpha) * e_optimised``, which asks for the change while the optimised embedding
keeps the identity. The per-step null embeddings of the inversion are the unconditional branch throughout.
Each step is the DDIM scheduler's own ``step`` (eta 0), which handles epsilon and v-prediction models.
"""

from __future__ import annotations

import torch

from .acceleration import sampling_cache
from .inversion import Inversion
from .latents import guided_noise


def blend(target_embedding: torch.Tensor, optimised_embedding: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * e_target + (1 - alpha) * e_optimised``."""
    return alpha * target_embedding.float() + (1.0 - alpha) * optimised_embedding.float()


@torch.no_grad()
def inject_and_sample(
    pipe,
    sampler,
    inversion: Inversion,
    source_embedding: torch.Tensor,
    edit_embedding: torch.Tensor,
    steps_source: int,
    guidance_scale: float,
    cache_config=None,
    cache_report: dict | None = None,
) -> torch.Tensor:
    """The final latent of sampling with ``source_embedding`` for ``steps_source`` steps, then ``edit_embedding``.

    ``steps_source`` equal to the number of steps reconstructs the input (up to the inversion's accuracy).
    ``cache_config`` enables TaoCache on ``pipe.unet`` for this run only (see :mod:`.acceleration`); its
    statistics are stored in ``cache_report`` when given.
    """
    timesteps = sampler.timesteps
    if not 0 <= steps_source <= len(timesteps):
        raise ValueError(f"steps_source={steps_source} must be in 0-{len(timesteps)} (the number of steps)")
    if len(inversion.null_embeddings) != len(timesteps):
        raise ValueError(
            f"the inversion has {len(inversion.null_embeddings)} null embeddings for {len(timesteps)} steps"
        )
    latent = inversion.noise.float()
    with sampling_cache(pipe, cache_config, sampler, guidance_scale) as report:
        for i, t in enumerate(timesteps):
            condition = source_embedding if i < steps_source else edit_embedding
            noise = guided_noise(pipe, latent, t, inversion.null_at(i), condition, guidance_scale)
            latent = sampler.step(noise, t, latent).prev_sample
    if cache_report is not None:
        cache_report.update(report)
    return latent
