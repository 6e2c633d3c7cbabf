"""Latent inversion: the starting noise and the per-step null embeddings that reproduce an input image.

Three ways, from slow and exact to fast and approximate:

- ``null-text``: DDIM inversion with the source prompt at guidance 1, then null embeddings optimised so that
  guided sampling retraces it (see :mod:`.null_text`).
- ``negative-prompt``: the source embedding itself as the null embedding of every step; guidance then cancels
  and sampling retraces the unguided inversion with no optimisation (about as good when the inversion is).
- ``ddim``: the plain DDIM inversion with the empty prompt as the null embedding; guided sampling drifts away
  from the input, which is why the other two exist.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .latents import unet_noise
from .null_text import optimize_null_embeddings


@dataclass
class Inversion:
    """Where sampling starts (``noise``, ``(1, C, h, w)``) and the unconditional embedding of each of its steps
    (``null_embeddings``, ``(num_steps, L, D)``)."""

    method: str
    noise: torch.Tensor
    null_embeddings: torch.Tensor

    def null_at(self, step: int) -> torch.Tensor:
        return self.null_embeddings[step][None]


@torch.no_grad()
def ddim_pivots(pipe, inverter, latent: torch.Tensor, condition: torch.Tensor) -> list[torch.Tensor]:
    """Latents along the DDIM inversion of ``latent`` at guidance 1: ``[latent, after step 1, ..., noise]``."""
    pivots = [latent.float()]
    current = latent.float()
    for t in inverter.timesteps:
        current = inverter.step(unet_noise(pipe, current, t, condition), t, current)
        pivots.append(current)
    return pivots


def invert(
    pipe,
    sampler,
    inverter,
    latent: torch.Tensor,
    source_embedding: torch.Tensor,
    empty_embedding: torch.Tensor,
    method: str,
    guidance_scale: float,
    inner_steps: int = 10,
    lr: float = 1e-2,
    early_stop: float = 1e-5,
    progress: bool = True,
    pivots: list[torch.Tensor] | None = None,
) -> Inversion:
    """Invert ``latent`` with the source prompt by ``method`` ('null-text', 'negative-prompt' or 'ddim').

    ``pivots`` (from :func:`ddim_pivots` with the same latent, prompt and steps) saves recomputing them.
    """
    if pivots is None:
        pivots = ddim_pivots(pipe, inverter, latent, source_embedding)
    n = len(sampler.timesteps)
    if method == "null-text":
        nulls = optimize_null_embeddings(
            pipe,
            sampler,
            pivots,
            source_embedding,
            empty_embedding,
            guidance_scale,
            inner_steps=inner_steps,
            lr=lr,
            early_stop=early_stop,
            progress=progress,
        )
    elif method == "negative-prompt":
        nulls = source_embedding.float().expand(n, *source_embedding.shape[1:]).clone()
    elif method == "ddim":
        nulls = empty_embedding.float().expand(n, *empty_embedding.shape[1:]).clone()
    else:
        raise ValueError(f"inversion={method!r} must be one of 'null-text', 'negative-prompt', 'ddim'")
    return Inversion(method, pivots[-1], nulls)
