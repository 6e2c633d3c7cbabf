"""Moving between pixels, text and the pipeline's latent space, always handing float32 back.

Editing optimises embeddings and compares latents; doing that in float16 loses the small differences it
relies on (and raises dtype errors in autograd), so every tensor that leaves this module is float32 and the
networks are fed their own dtype at the call.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

logger = logging.getLogger(__name__)


def model_dtype(pipe) -> torch.dtype:
    return pipe.unet.dtype


def model_device(pipe) -> torch.device:
    return pipe.unet.device


@torch.no_grad()
def encode_image(pipe, image: np.ndarray) -> torch.Tensor:
    """(1, C, h, w) latent of an (H, W, 3) float image in [0, 1]: the posterior mean, scaled as in sampling."""
    vae = pipe.vae
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() * 2.0 - 1.0
    pixels = pixels.to(device=vae.device, dtype=vae.dtype)
    latent = vae.encode(pixels).latent_dist.mode().float()
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latent - shift) * vae.config.scaling_factor


@torch.no_grad()
def decode_latent(pipe, latent: torch.Tensor) -> np.ndarray:
    """(H, W, 3) float32 image in [0, 1] of a (1, C, h, w) latent."""
    vae = pipe.vae
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    scaled = latent.float() / vae.config.scaling_factor + shift
    pixels = vae.decode(scaled.to(device=vae.device, dtype=vae.dtype)).sample.float()
    return ((pixels[0].permute(1, 2, 0).clamp(-1, 1) + 1) / 2).cpu().numpy().astype(np.float32)


@torch.no_grad()
def encode_text(pipe, prompt: str) -> torch.Tensor:
    """(1, L, D) float32 text embedding of ``prompt`` as the pipeline conditions on it."""
    _warn_unknown_words(pipe.tokenizer, prompt)
    embedding, _ = pipe.encode_prompt(prompt, model_device(pipe), 1, do_classifier_free_guidance=False)
    return embedding.float()


def _warn_unknown_words(tokenizer, prompt: str) -> None:
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or not prompt:
        return
    unknown = [w for w in prompt.split() if unk in tokenizer(w, add_special_tokens=False).input_ids]
    if unknown:
        logger.warning(
            "the model's tokenizer does not know the word(s) %s in %r; they carry no meaning", unknown, prompt
        )


def unet_noise(pipe, latents: torch.Tensor, timestep, embeddings: torch.Tensor) -> torch.Tensor:
    """The denoiser's raw output (epsilon or velocity) in float32, called through ``pipe.unet``.

    Calling the pipeline's own ``unet`` attribute keeps hooks installed on it (caches) in the path.
    """
    dtype = model_dtype(pipe)
    out = pipe.unet(
        latents.to(dtype), timestep, encoder_hidden_states=embeddings.to(dtype), return_dict=False
    )[0]
    return out.float()


def guided_noise(
    pipe, latent: torch.Tensor, timestep, uncond: torch.Tensor, cond: torch.Tensor, scale: float
):
    """Classifier-free guided output for one latent, both branches in one batched call (as diffusers does)."""
    if scale == 1.0:
        return unet_noise(pipe, latent, timestep, cond)
    both = unet_noise(pipe, torch.cat([latent, latent]), timestep, torch.cat([uncond, cond]))
    out_uncond, out_cond = both.chunk(2)
    return out_uncond + scale * (out_cond - out_uncond)


class frozen_unet:
    """Context in which the denoiser's weights need no gradient (restored after), so that optimising an
    embedding does not also accumulate gradients for every weight of the model."""

    def __init__(self, pipe):
        self.parameters = list(pipe.unet.parameters())

    def __enter__(self):
        self.flags = [p.requires_grad for p in self.parameters]
        for p in self.parameters:
            p.requires_grad_(False)
        return self

    def __exit__(self, *exc):
        for p, flag in zip(self.parameters, self.flags):
            p.requires_grad_(flag)
        return False
