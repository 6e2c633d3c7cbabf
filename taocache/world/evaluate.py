"""How well a model draws the sample world: caption agreement read by the analytic scorer, and autoencoder PSNR.

Used to hold the embedded models to their quality bar on the test split (caption combinations never seen in
training nor used for any choice); the tune split is where a recipe's settings are chosen.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
from tqdm import tqdm

from ..metrics import psnr, rate_interval
from .scenes import Scene, render, scenes_of
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


def chance_rate(scenes: list[Scene], name: str) -> float:
    """The majority-class rate of an attribute: what always answering its commonest value would score."""
    values = [getattr(scene, name) for scene in scenes]
    return max(values.count(v) for v in set(values)) / len(values)


def caption_agreement(scenes: list[Scene], pixels: np.ndarray) -> dict:
    """Per attribute, the fraction of samples whose reading matches their caption with its 95% interval and
    its chance rate, plus every reading."""
    rows, readings = [], []
    for scene, sample in zip(scenes, pixels):
        reading = read_video(sample) if scene.is_video else read_image(sample)
        rows.append(agreement(scene, reading))
        readings.append(dataclasses.asdict(reading))
    names = list(rows[0])
    rates = {name: float(np.mean([r[name] for r in rows])) for name in names}
    intervals = {name: list(rate_interval(sum(bool(r[name]) for r in rows), len(rows))) for name in names}
    chance = {name: chance_rate(scenes, name) for name in names}
    all_right = [all(r.values()) for r in rows]
    rates["all"] = float(np.mean(all_right))
    intervals["all"] = list(rate_interval(sum(all_right), len(rows)))
    samples = [{"caption": s.caption, **r, "read": read} for s, r, read in zip(scenes, rows, readings)]
    return {"rates": rates, "intervals": intervals, "chance": chance, "samples": samples}


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


def scored_scenes(video: bool, split_name: str = "test", seeds_per_caption: int = 2) -> tuple[list[Scene], list[int]]:
    """The scenes a model is scored on and the seed of each: every caption of the split, each with
    ``seeds_per_caption`` seeds (0, 1, ...), so the layout and identity differ between a caption's samples."""
    scenes = scenes_of(split_name, video)
    pairs = [(scene, seed) for seed in range(seeds_per_caption) for scene in scenes]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def evaluate_model(pipe, recipe, split_name: str = "test", seeds_per_caption: int = 2, max_samples: int | None = None,
                   **overrides) -> dict:
    """The quality-bar figures of a sample-world model on the captions of ``split_name``.

    ``"test"`` is the quality bar; ``"tune"`` is where a recipe's settings (guidance, steps) are chosen without
    looking at the test split. ``max_samples`` keeps the first samples only (a quick look).
    """
    scenes, seeds = scored_scenes(recipe.kind == "video", split_name, seeds_per_caption)
    scenes, seeds = scenes[:max_samples], seeds[:max_samples]
    pixels = generate(pipe, recipe, [s.caption for s in scenes], seeds, **overrides)
    result = caption_agreement(scenes, pixels)
    result["autoencoder_psnr_db"] = autoencoder_psnr(pipe.vae, scenes_of(split_name, recipe.kind == "video"))
    result["settings"] = {
        "model": recipe.name,
        "split": split_name,
        "samples": len(scenes),
        "seeds_per_caption": seeds_per_caption,
        **recipe.call_kwargs(**overrides),
    }
    return result
