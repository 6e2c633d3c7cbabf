"""Diffusers pipelines built from configs in code, for tests, examples and the training scripts: the shapes of
the embedded models and tiny random pipelines.

Nothing here downloads anything, and nothing in the library imports it: the same builders give the untrained
starting point of the embedded models (``samples/train_*.py``) and the tiny random pipelines the tests run on.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]


def word_tokenizer(words: list[str], max_length: int = 16) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``words`` that appends an end-of-sequence token, like T5's."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + sorted(set(w.lower() for w in words)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    from tokenizers import normalizers

    core.normalizer = normalizers.Lowercase()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def _eval(*modules):
    for m in modules:
        m.eval()
        m.requires_grad_(False)


# ---------------------------------------------------------------------------------------------- Wan (video)

def wan_components(
    words: list[str],
    *,
    text_dim: int = 32,
    text_layers: int = 2,
    vae_base_dim: int = 8,
    vae_dim_mult: tuple[int, ...] = (2, 2),
    z_dim: int = 4,
    heads: int = 2,
    head_dim: int = 8,
    layers: int = 2,
    ffn_dim: int = 32,
    patch: tuple[int, int, int] = (1, 2, 2),
    max_text_length: int = 16,
    flow_shift: float = 3.0,
    seed: int = 0,
) -> dict:
    """Components of a ``WanPipeline`` with a 4x spatial, 2x temporal Wan-style VAE (patchified, residual)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    tokenizer = word_tokenizer(words, max_text_length)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=text_dim,
            d_kv=max(text_dim // 4, 4),
            d_ff=text_dim * 2,
            num_layers=text_layers,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    vae = AutoencoderKLWan(
        base_dim=vae_base_dim,
        z_dim=z_dim,
        dim_mult=list(vae_dim_mult),
        num_res_blocks=1,
        temperal_downsample=[True, True],
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=4,
        scale_factor_temporal=2,
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    transformer = WanTransformer3DModel(
        patch_size=patch,
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=z_dim,
        out_channels=z_dim,
        text_dim=text_dim,
        freq_dim=32,
        ffn_dim=ffn_dim,
        num_layers=layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,
    )
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift, num_train_timesteps=1000
    )
    _eval(text_encoder, vae, transformer)
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler)


def tiny_wan_pipeline(seed: int = 0, **overrides):
    """A random-weight ``WanPipeline`` small enough for a test: runs 9x32x32 in well under a second."""
    from diffusers import WanPipeline

    from .world import vocabulary

    return WanPipeline(**wan_components(vocabulary(), seed=seed, **overrides)).to("cpu")


# ------------------------------------------------------------------------------------ Stable Diffusion (image)

def sd_components(
    words: list[str],
    *,
    text_dim: int = 32,
    text_layers: int = 2,
    vae_channels: tuple[int, ...] = (8, 16, 16),
    latent_channels: int = 4,
    unet_channels: tuple[int, ...] = (16, 32),
    layers_per_block: int = 1,
    attention_head_dim: int = 8,
    max_text_length: int = 16,
    sample_size: int = 16,
    prediction_type: str = "epsilon",
    beta_schedule: str = "scaled_linear",
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    seed: int = 0,
) -> dict:
    """Components of a ``StableDiffusionPipeline``; the VAE downsamples by 2**(len(vae_channels)-1).

    The noise schedule defaults to Stable Diffusion's.
    """
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = word_tokenizer(words, max_text_length)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=text_dim,
            intermediate_size=text_dim * 2,
            num_hidden_layers=text_layers,
            num_attention_heads=4,
            max_position_embeddings=max_text_length,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
        )
    )
    vae = _autoencoder_kl(vae_channels, latent_channels, sample_size * 2 ** (len(vae_channels) - 1))
    m = len(unet_channels)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (m - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (m - 1) + ("UpBlock2D",),
        block_out_channels=unet_channels,
        layers_per_block=layers_per_block,
        cross_attention_dim=text_dim,
        attention_head_dim=attention_head_dim,
        norm_num_groups=min(8, unet_channels[0]),
    )
    scheduler = DDIMScheduler(
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule=beta_schedule,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    _eval(text_encoder, vae, unet)
    return dict(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
    )


def tiny_sd_pipeline(seed: int = 0, **overrides):
    """A random-weight ``StableDiffusionPipeline`` for tests (64x64 images, 16x16 latents)."""
    from diffusers import StableDiffusionPipeline

    from .world import vocabulary

    pipe = StableDiffusionPipeline(**sd_components(vocabulary(), seed=seed, **overrides), requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------ Latte and CogVideoX (video, tests)


def _autoencoder_kl(channels: tuple[int, ...], latent_channels: int, sample_size: int):
    """An image ``AutoencoderKL`` downsampling by 2**(len(channels)-1), one layer per block."""
    from diffusers import AutoencoderKL

    n = len(channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=channels,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=min(8, channels[0]),
        sample_size=sample_size,
    )


def _tiny_t5(tokenizer, text_dim: int = 32):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=text_dim,
            d_kv=8,
            d_ff=text_dim * 2,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=16,
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )


def tiny_latte_pipeline(seed: int = 0, num_layers: int = 1, vae_levels: int = 3):
    """A random-weight ``LattePipeline`` for tests (8x8 latents, learned-variance output).

    Frames are 8 * 2**(vae_levels - 1) pixels wide (32 by default). Call it with ``clean_caption=False,
    mask_feature=False``; it batches both guidance passes in one call.
    """
    from diffusers import DDIMScheduler, LattePipeline, LatteTransformer3DModel

    from .world import vocabulary

    torch.manual_seed(seed)
    tokenizer = word_tokenizer(vocabulary(), 16)
    text_encoder = _tiny_t5(tokenizer)
    vae = _autoencoder_kl((8, 16, 16)[:vae_levels], latent_channels=4, sample_size=32)
    transformer = LatteTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=num_layers,
        cross_attention_dim=16,
        sample_size=8,
        patch_size=2,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        caption_channels=32,
        video_length=4,
    )
    scheduler = DDIMScheduler(beta_schedule="linear", clip_sample=False)
    _eval(text_encoder, vae, transformer)
    pipe = LattePipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
def tiny_cogvideox_pipeline(seed: int = 0):
    """A random-weight ``CogVideoXPipeline`` for tests (5 frames of 32x32); it batches both guidance passes."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    from .world import vocabulary

    torch.manual_seed(seed)
    tokenizer = word_tokenizer(vocabulary(), 16)
    text_encoder = _tiny_t5(tokenizer)
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 2,
        up_block_types=("CogVideoXUpBlock3D",) * 2,
        block_out_channels=(8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=32,
        num_layers=1,
        sample_width=16,
        sample_height=16,
        sample_frames=5,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=16,
    )
    scheduler = CogVideoXDDIMScheduler()
    _eval(text_encoder, vae, transformer)
    pipe = CogVideoXPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
