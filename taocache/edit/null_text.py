"""Null-text inversion: per-step null embeddings that make guided sampling retrace the DDIM inversion.

DDIM inversion is exact only without guidance; at guidance 7.5 the sampled path drifts away from the input.
Optimising the unconditional ("null") embedding of each step, with the model frozen, pulls every guided step
back onto its inversion pivot, so that the input is reconstructed while the conditional branch stays free for
editing. Settings as published: 10 Adam steps per sampling step, learning rate ``1e-2 * (1 - i / 100)`` and
early stop below ``1e-5 + i * 2e-5`` at step i of 50 (for other step counts i is rescaled to 50 steps).
"""

from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm

from .latents import frozen_unet, guided_noise, unet_noise

logger = logging.getLogger(__name__)

#: Part of the artefact cache's key: bumped when the optimisation changes, so that embeddings found by an
#: earlier version are not reused (version 1 stored the last step's embedding for every step).
VERSION = 2


def optimize_null_embeddings(
    pipe,
    sampler,
    pivots: list[torch.Tensor],
    condition: torch.Tensor,
    null_init: torch.Tensor,
    guidance_scale: float,
    inner_steps: int = 10,
    lr: float = 1e-2,
    early_stop: float = 1e-5,
    progress: bool = True,
) -> torch.Tensor:
    """``(num_steps, L, D)`` float32 null embeddings, one per sampling step of ``sampler``.

    ``pivots[k]`` is the inverted latent after k inversion steps (``pivots[0]`` the input's latent); sampling
    step i goes from ``pivots[n - i]`` towards ``pivots[n - i - 1]``. Each step starts from the previous step's
    result, as published.
    """
    timesteps = sampler.timesteps
    n = len(timesteps)
    if len(pivots) != n + 1:
        raise ValueError(f"expected {n + 1} pivots for {n} steps, got {len(pivots)}")
    null = null_init.detach().float().clone()
    latent = pivots[-1].float()
    found = []
    with frozen_unet(pipe):
        bar = tqdm(list(enumerate(timesteps)), desc="null-text inversion", disable=not progress, leave=False)
        for i, t in bar:
            progress_50 = i * 50.0 / n  # the published schedules are written for 50 steps
            target = pivots[n - i - 1].float()
            with torch.no_grad():
                out_cond = unet_noise(pipe, latent, t, condition)
            null = null.detach().requires_grad_(True)
            optimizer = torch.optim.Adam([null], lr=lr * (1.0 - progress_50 / 100.0))
            threshold = early_stop + progress_50 * 2e-5
            loss_value = float("nan")
            for _ in range(inner_steps):
                with torch.enable_grad():
                    out_null = unet_noise(pipe, latent, t, null)
                    guided = out_null + guidance_scale * (out_cond - out_null)
                    previous = sampler.step(guided, t, latent).prev_sample
                    loss = torch.nn.functional.mse_loss(previous, target)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                loss_value = loss.item()
                if loss_value < threshold:
                    break
            null = null.detach().clone()  # a copy: the next step's optimiser updates its tensor in place
            found.append(null[0])
            with torch.no_grad():
                guided = guided_noise(pipe, latent, t, null, condition, guidance_scale)
                latent = sampler.step(guided, t, latent).prev_sample
            bar.set_postfix(loss=f"{loss_value:.2e}")
    result = torch.stack(found)
    if not torch.isfinite(result).all():
        raise FloatingPointError("null-text inversion diverged (non-finite embedding); lower null_lr")
    logger.debug("null-text inversion: final latent error %.3e", torch.mean((latent - pivots[0]) ** 2).item())
    return result
