"""Text optimisation: move the target prompt's embedding until the frozen model reconstructs the input.

This is the first stage of Imagic, and the only training the method does: no network weight changes. The
optimised embedding ``e_opt`` describes the input image in the target prompt's neighbourhood, so that blending
it with the target embedding later changes what the prompt asks for while keeping what the image shows.
The optimisation runs in float32 whatever dtype the pipeline uses, so that half-precision models do not lose
the small gradient steps (or fail in autograd).
"""

from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm

from .latents import frozen_unet, unet_noise

logger = logging.getLogger(__name__)


def optimize_text_embedding(
    pipe,
    latent: torch.Tensor,
    target_embedding: torch.Tensor,
    steps: int,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """``e_opt``: ``target_embedding`` after ``steps`` Adam steps on the denoising loss of ``latent``.

    Each step draws one timestep uniformly over the training range and one noise sample, and compares the
    model's output with what it should predict there (the noise for epsilon models, the velocity for
    v-prediction models). Returns a detached float32 tensor shaped like ``target_embedding``.
    """
    schedule = pipe.scheduler
    prediction = schedule.config.get("prediction_type", "epsilon")
    num_train = schedule.config.get("num_train_timesteps", 1000)
    alphas = schedule.alphas_cumprod.to(torch.float64)
    embedding = target_embedding.detach().float().clone().requires_grad_(True)
    if steps == 0:
        return embedding.detach()
    optimizer = torch.optim.Adam([embedding], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    clean = latent.detach().float().cpu()
    with torch.enable_grad(), frozen_unet(pipe):
        bar = tqdm(range(steps), desc="text optimisation", disable=not progress, leave=False)
        for _ in bar:
            t = int(torch.randint(0, num_train, (1,), generator=generator))
            noise = torch.randn(clean.shape, generator=generator)
            a = float(alphas[t])
            noisy = a**0.5 * clean + (1 - a) ** 0.5 * noise
            wanted = noise if prediction == "epsilon" else a**0.5 * noise - (1 - a) ** 0.5 * clean
            device = latent.device
            predicted = unet_noise(pipe, noisy.to(device), t, embedding)
            loss = torch.nn.functional.mse_loss(predicted, wanted.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
    if not torch.isfinite(embedding).all():
        raise FloatingPointError("text optimisation diverged (non-finite embedding); lower text_lr")
    return embedding.detach()
