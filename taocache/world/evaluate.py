"""How well a model draws the sample world: caption agreement read by the analytic scorer, and autoencoder PSNR.

Used to hold the embedded models to their quality bar on caption combinations never seen in training.
"""

from __future__ import annotations

import dataclasses
import logging
import random

import numpy as np
import torch
from tqdm import tqdm

from ..metrics import psnr, rate_interval
from .scenes import SPLITS, Scene, render, split
from .scorer import agreement, read_image, read_video

logger = logging.getLogger(__name__)


def generate(pipe, recipe, captions: list[str], seeds: list[int], batch: int = 10, **overrides) -> np.ndarray:
    """Images (N, H, W, 3) or videos (N, F, H, W, 3) in [0, 1], one per caption, each with its own seed."""
    kwargs = recipe.call_kwargs(**overrides)
    out = []
    for start in tqdm(range(0, len(captions), batch), desc="generate", leave=False):
        prompts, batch_seeds = captions[start : start + batch], seeds[start : start + batch]
        generators = [torch.Generator().manual_seed(s) for s in batch_seeds]
        result = pipe(prompt=prompts, generator=generators, output_type="np", **kwargs)
        out.append(np.asarray(result.frames if recipe.kind == "video" else result.images))
    return np.concatenate(out)


def caption_agreement(scenes: list[Scene], pixels: np.ndarray) -> dict:
    """Per attribute, the fraction of samples whose reading matches their caption with its 95% interval, plus
    every reading."""
    rows, readings = [], []
    for scene, sample in zip(scenes, pixels):
        reading = read_video(sample) if scene.is_video else read_image(sample)
        rows.append(agreement(scene, reading))
        readings.append(dataclasses.asdict(reading))
    rates = {name: float(np.mean([r[name] for r in rows])) for name in rows[0]}
    intervals = {name: list(rate_interval(sum(bool(r[name]) for r in rows), len(rows))) for name in rows[0]}
    samples = [{"caption": s.caption, **r, "read": read} for s, r, read in zip(scenes, rows, readings)]
    return {"rates": rates, "intervals": intervals, "samples": samples}


@torch.no_grad()
def autoencoder_psnr(vae, scenes: list[Scene], seed: int = 10_000, num_frames: int = 9, size: int = 64) -> float:
    """Mean PSNR of the autoencoder's reconstruction (posterior mean) of rendered scenes."""
    values = []
    dtype, device = next(vae.parameters()).dtype, next(vae.parameters()).device
    for i, scene in enumerate(scenes):
        pixels = render(scene, seed + i, size=size, num_frames=num_frames)
        x = torch.from_numpy(pixels).to(device, dtype)
        x = x.permute(3, 0, 1, 2)[None] if scene.is_video else x.permute(2, 0, 1)[None]
        rec = vae.decode(vae.encode(x * 2 - 1).latent_dist.mean).sample
        rec = ((rec.float().cpu().clamp(-1, 1) + 1) / 2)[0]
        rec = rec.permute(1, 2, 3, 0) if scene.is_video else rec.permute(1, 2, 0)
        values.append(psnr(rec.numpy(), pixels))
    return float(np.mean(values))


#: Seed of the draw of training captions that ``split="train"`` scores.
TRAIN_DRAW_SEED = 7


def scored_scenes(video: bool, split_name: str = "held-out", num_captions: int = 50) -> list[Scene]:
    """The scenes whose captions a model is scored on: the first held-out ones, or a fixed seeded draw of
    training ones."""
    train, held_out = split(video)
    if split_name == "held-out":
        return held_out[:num_captions]
    if split_name == "train":
        return random.Random(TRAIN_DRAW_SEED).sample(train, min(num_captions, len(train)))
    raise ValueError(f"split={split_name!r} must be one of {', '.join(SPLITS)}")


def evaluate_model(pipe, recipe, num_captions: int = 50, split_name: str = "held-out", **overrides) -> dict:
    """The quality-bar figures of a sample-world model on ``num_captions`` captions of ``split_name``.

    ``"held-out"`` (caption combinations never seen in training) is the quality bar; ``"train"`` scores a fixed
    seeded draw of training captions, on which a recipe's settings (guidance, steps) can be chosen without
    looking at the held-out set.
    """
    scenes = scored_scenes(recipe.kind == "video", split_name, num_captions)
    pixels = generate(pipe, recipe, [s.caption for s in scenes], list(range(len(scenes))), **overrides)
    result = caption_agreement(scenes, pixels)
    result["autoencoder_psnr_db"] = autoencoder_psnr(pipe.vae, scenes)
    result["settings"] = {
        "model": recipe.name,
        "split": split_name,
        "captions": len(scenes),
        **recipe.call_kwargs(**overrides),
    }
    return result
