"""MasaCtrl: mutual self-attention control, as a real-image editing baseline.

Cao et al., "MasaCtrl: Tuning-Free Mutual Self-Attention Control for Consistent Image Synthesis and
Editing", ICCV 2023, arXiv 2304.08465 (reference code: github.com/TencentARC/MasaCtrl).

The method. Two branches are denoised together from the same starting noise: a *source* branch that
reconstructs the input, and a *target* branch conditioned on the target prompt. From step ``S`` on, and in
self-attention layers from ``L`` on, the target's self-attention keeps its own queries but takes the keys and
values of the source branch at the same layer (mutual self-attention,
``Attention(Q_tgt, K_src, V_src)``); elsewhere every branch attends to itself. Controlled everywhere, the
target would reproduce the source, layout included; the layout forms in the early steps and the shallow
layers, so those are left to the target prompt. The target then takes its layout from its prompt and its
textures, colours and identity from the source.

Definitions as published (the paper's method section and its reference code: ``masactrl/masactrl.py``,
``masactrl_utils.py`` and ``playground_real.ipynb`` of TencentARC/MasaCtrl):

- *Layers* are the self-attention (``attn1``) modules of the UNet's transformer blocks counted in the order
  the forward pass runs them: down blocks, middle block, up blocks (16 in SD 1.x / 2.x: 6 + 1 + 9). The
  defaults ``S = 4`` of 50 steps and ``L = 10`` control steps 4-49 (0-based) in layers 10-15, the decoder's
  self-attention at its two finest resolutions. Cross-attention is never touched.
- *Guidance*: both branches are sampled with classifier-free guidance, and each guidance half queries its
  own counterpart: the target's unconditional pass takes the source's unconditional keys and values, the
  conditional pass the conditional ones.
- *Real images* are inverted with deterministic DDIM; the source branch starts from that noise. The
  reference demo inverts and reconstructs with the *empty* source prompt, so guidance has no effect on its
  source branch and it retraces the inversion.
- *Mask-guided* variant: foreground masks of source and target are taken from the cross-attention maps of
  the object's word (averaged over the 16x16 layers and heads, min-max normalised, thresholded at 0.1 in the
  reference code); target queries attend once to the source foreground only and once to the source
  background only, and the two outputs are merged with the target mask.
  It is **not** implemented here: it needs the object's token position per prompt and a cross-attention
  capture, and the plain variant is the method the reference real-image demo runs.

Choices made here:

- ``start_layer`` is a *fraction* of the self-attention layers, so one value maps onto any UNet: with ``n``
  layers, layer ``l`` (0-based, forward order) is controlled when ``l >= ceil(start_layer * n)``. The default
  0.625 is the paper's 10 of 16 (on SD, at 64x64 latents, layers 10-15 are the decoder's self-attention at
  32x32 and 64x64). On the 7-layer tiny-t2i UNet (16x16 latents; self-attention at 8, 4 | 4 | 4, 4, 8, 8
  pixels of latent down, middle, up) it controls layers 5-6, the decoder at its finest attention
  resolution; 3/7 controls the whole decoder. ``start_step`` stays an integer step index (the paper's 4 of 50).
- Inversion is DDIM with the source prompt at guidance 1, as in the project's other baselines. The source
  branch is sampled at ``source_guidance_scale`` (default 1), so it retraces that inversion whatever the
  prompt (with an empty source prompt this is exactly the reference demo). Setting it to ``guidance_scale``
  gives the reference code's behaviour with a non-empty source prompt, where the source branch drifts from
  the input as plain guided DDIM reconstruction does.
- The unconditional embedding is the empty prompt's, for both branches (as in the reference code).

Implementation: diffusers attention processors on the controlled ``attn1`` modules only. The batch holds
(source, target) pairs, ``[src_uncond, tgt_uncond, src_cond, tgt_cond]`` with guidance and
``[src, tgt]`` without, and a controlled layer calls the module's own processor with the source rows'
hidden states as ``encoder_hidden_states``: the keys and values are then the source's, projected by the
layer's own weights, while the source rows attend exactly as before. The step the control reads is set by
the sampling loop (not counted from calls), so a cache that skips denoiser calls cannot shift it. The
original processors are put back when sampling ends, also on error.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from .acceleration import sampling_cache
from .inputs import check_model_image
from .inversion import ddim_pivots
from .latents import decode_latent, encode_image, encode_text, unet_noise
from .schedulers import editing_schedulers

#: The paper's settings for SD 1.4 / 1.5 at 50 steps: start step 4, start layer 10 of 16.
PAPER_START_STEP = 4
PAPER_START_LAYER = 10 / 16

_SECTIONS = ("down_blocks", "mid_block", "up_blocks")


# ------------------------------------------------------------------------------------------- layers


def self_attention_layers(unet) -> list[str]:
    """Names of the UNet's self-attention modules in the order the forward pass runs them.

    ``unet.attn_processors`` lists the up blocks before the middle block (their registration order), so
    the order is rebuilt from the names: down blocks, middle block, up blocks, each in module order.
    """
    found = []
    for name, module in unet.named_modules():
        if not name.endswith("attn1") or getattr(module, "is_cross_attention", True):
            continue
        section = name.split(".", 1)[0]
        if section not in _SECTIONS:
            raise ValueError(
                f"self-attention layer {name!r} is outside the down/mid/up blocks; MasaCtrl needs a "
                "UNet2DConditionModel-style UNet"
            )
        found.append((_SECTIONS.index(section), len(found), name))
    if not found:
        raise ValueError("the pipeline's UNet has no self-attention (attn1) layers to control")
    return [name for _, _, name in sorted(found)]


def first_controlled_layer(num_layers: int, start_layer: float) -> int:
    """Index of the first controlled layer: ``ceil(start_layer * num_layers)`` (num_layers: none)."""
    return min(num_layers, math.ceil(start_layer * num_layers - 1e-9))


# ---------------------------------------------------------------------------------------- processor


class _Control:
    """What the processors read: the sampling step now running, and the first step under control."""

    def __init__(self, start_step: int):
        self.start_step = start_step
        self.step = 0

    @property
    def active(self) -> bool:
        return self.step >= self.start_step


class MutualSelfAttentionProcessor:
    """Wraps one self-attention layer's processor: under control, each target row attends to the keys and
    values of the source row paired with it (the row before it); source rows attend to themselves."""

    def __init__(self, original, control: _Control, name: str):
        self.original = original
        self.control = control
        self.name = name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, **kwargs):
        if not self.control.active or encoder_hidden_states is not None:
            return self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states, **kwargs)
        batch = hidden_states.shape[0]
        if batch % 2:
            raise RuntimeError(
                f"{self.name}: MasaCtrl runs (source, target) pairs, but the denoiser got a batch of {batch}"
            )
        sources = torch.arange(batch, device=hidden_states.device) // 2 * 2
        return self.original(attn, hidden_states, encoder_hidden_states=hidden_states[sources], **kwargs)


def _check_plain_self_attention(name: str, attn) -> None:
    """The processor passes the source's hidden states as ``encoder_hidden_states``; that equals attending
    to its keys and values only when nothing treats the two inputs differently."""
    for feature in ("group_norm", "spatial_norm", "norm_cross"):
        if getattr(attn, feature, None) is not None:
            raise ValueError(
                f"{name} has {feature}; MasaCtrl here supports plain self-attention layers (as in SD's UNet)"
            )


@contextlib.contextmanager
def mutual_self_attention(unet, start_step: int, start_layer: float):
    """Install MasaCtrl on ``unet`` for the body; yields the control whose ``step`` the sampler sets.

    The original processors (the same objects) are restored on exit, also when the body raises.
    """
    layers = self_attention_layers(unet)
    controlled = layers[first_controlled_layer(len(layers), start_layer) :]
    modules = dict(unet.named_modules())
    for name in controlled:
        _check_plain_self_attention(name, modules[name])
    original = unet.attn_processors
    control = _Control(start_step)
    wrapped = dict(original)
    for name in controlled:
        key = f"{name}.processor"
        wrapped[key] = MutualSelfAttentionProcessor(original[key], control, name)
    try:
        unet.set_attn_processor(wrapped)  # set_attn_processor consumes the dict it is given
        yield control
    finally:
        unet.set_attn_processor(dict(original))


# ------------------------------------------------------------------------------------------ sampling


@torch.no_grad()
def masactrl_sample(
    pipe,
    sampler,
    noise: torch.Tensor,
    source_embedding: torch.Tensor,
    target_embedding: torch.Tensor,
    uncond_embedding: torch.Tensor,
    guidance_scale: float,
    start_step: int,
    start_layer: float,
    source_guidance_scale: float = 1.0,
    cache_config=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(source_latent, target_latent)``: both branches denoised from ``noise`` (``(1, C, h, w)``) under MasaCtrl.

    Each step is ``DDIMScheduler.step`` (eta 0). Guidance is ``u + s * (c - u)`` per branch, ``s`` being
    ``source_guidance_scale`` for the source and ``guidance_scale`` for the target; with both at 1 the
    unconditional passes are skipped.
    """
    _check_control(start_step, start_layer, len(sampler.timesteps))
    if noise.shape[0] != 1:
        raise ValueError(f"noise must hold one latent (1, C, h, w), got shape {tuple(noise.shape)}")
    guided = guidance_scale != 1.0 or source_guidance_scale != 1.0
    conds = [source_embedding.float(), target_embedding.float()]
    embeddings = torch.cat(([uncond_embedding.float()] * 2 if guided else []) + conds)
    scales = torch.tensor([source_guidance_scale, guidance_scale]).view(2, 1, 1, 1)
    latents = noise.float().expand(2, *noise.shape[1:]).clone()
    with (
        mutual_self_attention(pipe.unet, start_step, start_layer) as control,
        sampling_cache(pipe, cache_config, sampler, guidance_scale),
    ):
        for i, t in enumerate(sampler.timesteps):
            control.step = i
            out = unet_noise(pipe, torch.cat([latents, latents]) if guided else latents, t, embeddings)
            if guided:
                out_uncond, out_cond = out.chunk(2)
                out = out_uncond + scales.to(out.device) * (out_cond - out_uncond)
            latents = sampler.step(out, t, latents).prev_sample
    return latents[:1], latents[1:]


def masactrl_edit(
    pipe,
    image: np.ndarray,
    source: str,
    target: str,
    num_steps: int = 50,
    guidance_scale: float = 7.5,
    start_step: int = PAPER_START_STEP,
    start_layer: float = PAPER_START_LAYER,
    source_guidance_scale: float = 1.0,
    cache_config=None,
    return_source: bool = False,
):
    """MasaCtrl edit of ``image`` ((H, W, 3) floats in [0, 1] at the model's size) from ``source`` to ``target``.

    DDIM inversion with ``source`` (guidance 1), then source and target branches from its noise with
    mutual self-attention from step ``start_step`` (0-based; ``num_steps``: never) in the last layers from
    ``start_layer`` (a fraction of the self-attention layers; 1: none). Returns the edited image in [0, 1],
    and with ``return_source`` also the source branch's reconstruction: ``(edit, reconstruction)``.
    """
    image = _check_arguments(
        pipe, image, source, target, num_steps, guidance_scale, start_step, start_layer, source_guidance_scale
    )
    sampler, inverter = editing_schedulers(pipe, num_steps)
    source_embedding = encode_text(pipe, source)
    pivots = ddim_pivots(pipe, inverter, encode_image(pipe, image), source_embedding)
    source_latent, target_latent = masactrl_sample(
        pipe,
        sampler,
        pivots[-1],
        source_embedding,
        encode_text(pipe, target),
        encode_text(pipe, ""),
        guidance_scale,
        start_step,
        start_layer,
        source_guidance_scale,
        cache_config=cache_config,
    )
    edited = decode_latent(pipe, target_latent)
    return (edited, decode_latent(pipe, source_latent)) if return_source else edited


# ---------------------------------------------------------------------------------------- arguments


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_control(start_step, start_layer, num_steps: int) -> None:
    if not _is_integer(start_step) or not 0 <= start_step <= num_steps:
        raise ValueError(
            f"start_step={start_step!r} must be an integer in 0-{num_steps} (the number of steps; "
            f"{num_steps} turns the control off)"
        )
    if not _is_number(start_layer) or not 0.0 <= start_layer <= 1.0:
        raise ValueError(
            f"start_layer={start_layer!r} must be a fraction of the self-attention layers in [0, 1] "
            f"(the paper's 10 of 16 is {PAPER_START_LAYER}; 1 turns the control off)"
        )


def _check_arguments(
    pipe, image, source, target, num_steps, guidance_scale, start_step, start_layer, source_guidance_scale
) -> np.ndarray:
    """The image as float32; ValueError naming the first bad argument and what is accepted."""
    if not _is_integer(num_steps) or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} must be an integer >= 1")
    for name, value in (("guidance_scale", guidance_scale), ("source_guidance_scale", source_guidance_scale)):
        if not _is_number(value) or not math.isfinite(value) or value < 1.0:
            raise ValueError(f"{name}={value!r} must be a finite number >= 1")
    _check_control(start_step, start_layer, num_steps)
    if not isinstance(source, str):
        raise ValueError(f"source={source!r} must be a string (the empty prompt is allowed)")  # noqa: TRY004
    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"target={target!r} must be a non-empty string describing the wanted result")
    image = np.asarray(image, dtype=np.float32)
    check_model_image(pipe, image)
    return image
