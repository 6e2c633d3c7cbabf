"""The two edits the method is compared with, on the same pipeline components.

- DDIM inversion + target prompt: invert the input with the source prompt (guidance 1), then sample every
  step with the target prompt at full guidance. No optimisation; the guided path drifts from the input.
- SDEdit: noise the input to ``strength`` of the schedule and denoise with the target prompt
  (``StableDiffusionImg2ImgPipeline`` built from the same components).
"""

from __future__ import annotations

import numpy as np
import torch

from .inversion import Inversion, ddim_pivots
from .latents import decode_latent, encode_image, encode_text
from .sampling import inject_and_sample
from .schedulers import editing_schedulers


def ddim_target_edit(
    pipe,
    image: np.ndarray,
    source: str,
    target: str,
    num_steps: int = 50,
    guidance_scale: float = 7.5,
    cache_config=None,
) -> np.ndarray:
    """Plain DDIM inversion with ``source``, then guided sampling with ``target`` from the first step."""
    sampler, inverter = editing_schedulers(pipe, num_steps)
    latent = encode_image(pipe, image)
    pivots = ddim_pivots(pipe, inverter, latent, encode_text(pipe, source))
    empty = encode_text(pipe, "")
    inversion = Inversion("ddim", pivots[-1], empty.expand(num_steps, *empty.shape[1:]).clone())
    target_embedding = encode_text(pipe, target)
    out = inject_and_sample(
        pipe,
        sampler,
        inversion,
        target_embedding,
        target_embedding,
        0,
        guidance_scale,
        cache_config=cache_config,
    )
    return decode_latent(pipe, out)


def sdedit_edit(
    pipe,
    image: np.ndarray,
    target: str,
    strength: float,
    num_steps: int = 50,
    guidance_scale: float = 7.5,
    seed: int = 0,
) -> np.ndarray:
    """SDEdit with diffusers' img2img pipeline on ``pipe``'s components (scheduler made DDIM, eta 0)."""
    from diffusers import StableDiffusionImg2ImgPipeline

    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength={strength} must be in (0, 1]")
    sampler, _ = editing_schedulers(pipe, num_steps)
    components = dict(pipe.components, scheduler=sampler)
    img2img = StableDiffusionImg2ImgPipeline(**components, requires_safety_checker=False)
    img2img.set_progress_bar_config(disable=True)
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    generator = torch.Generator().manual_seed(seed)
    result = img2img(
        prompt=target,
        image=pixels,
        strength=strength,
        num_inference_steps=num_steps,
        guidance_scale=guidance_scale,
        generator=generator,
        output_type="np",
    )
    return np.asarray(result.images[0], dtype=np.float32)
