"""Which caption words does a video model act on while its sample is still pure noise?

    python eval/motion_probe.py                          # the shipped tiny-t2v
    python eval/motion_probe.py --model /path/to/folder  # another WanPipeline folder of the sample world

At the noisiest level (sigma 1) the best estimate of the clean clip is the mean clip of the caption, whatever
the noise. For pairs of captions that differ in one word (colour, size, direction), 16 pure-noise latents are
denoised once with each caption and the x0 estimates ``x_t - sigma * velocity`` compared: the norm of their
mean difference, as a share of the true difference of the two captions' mean latents. Then, for each
direction, the mean estimate is decoded and the scorer reads where the shape sits in the first and the last
frame, next to where the world puts it. About a minute on a CPU.

``--hint B [B ...]`` then samples 50 training captions (the draw of ``taocache world-eval --split train``) at the
recipe's settings, each from starting noise mixed with B times the mean latent of its caption's clips
(``(noise + B * mean) / sqrt(1 + B^2)``), and scores the motion direction: B = 0 is plain sampling. A model
that moves the shape the right way once it knows where the path lies gains a lot from a faint hint. Several
minutes per value on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "samples"))

from trainlib import encode_captions

from taocache.world.evaluate import scored_scenes
from taocache.world.scenes import DIRECTIONS, Scene, render
from taocache.world.scorer import read_frame, read_video

SAMPLES = 16
BASE = {"shape": "circle", "colour": "red", "size": "large", "background": "dark", "direction": "left"}
PAIRS = [("colour", "blue"), ("size", "small"), ("direction", "right"), ("direction", "up")]


@torch.no_grad()
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "samples/models/tiny-t2v")
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--hint", type=float, nargs="*", default=[], metavar="B")
    parser.add_argument("--recipe", default="tiny-t2v", help="sampling settings for --hint (a name or TOML path)")
    args = parser.parse_args(argv)
    from diffusers import WanPipeline

    from taocache.recipes import find_recipe

    pipe = WanPipeline.from_pretrained(args.model, dtype=torch.float32)
    vae, transformer = pipe.vae, pipe.transformer
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)

    def clips(scene):
        return torch.from_numpy(np.stack([render(scene, seed) for seed in range(SAMPLES)])).permute(0, 4, 1, 2, 3)

    def latents(scene):
        return (vae.encode(clips(scene) * 2 - 1).latent_dist.mean - mean) / std

    base = Scene(**BASE)
    base_latents = latents(base)
    noise = torch.randn(base_latents.shape, generator=torch.Generator().manual_seed(0))
    xt = (1 - args.sigma) * base_latents + args.sigma * noise

    def estimate(scene):
        text = encode_captions(pipe.tokenizer, pipe.text_encoder, [scene.caption] * SAMPLES, 16, masked=True)
        timestep = torch.full((SAMPLES,), args.sigma * 1000)
        return xt - args.sigma * transformer(xt, timestep, text, return_dict=False)[0]

    base_estimate = estimate(base)
    print(f"{args.model}, sigma {args.sigma}: how far one caption word moves the x0 estimate")
    for attribute, value in PAIRS:
        other = Scene(**{**BASE, attribute: value})
        true = (base_latents - latents(other)).mean(0).norm().item()
        moved = (base_estimate - estimate(other)).mean(0).norm().item()
        print(f"  {attribute:9s} {BASE[attribute]:>5s} -> {value:5s}  moved {moved:7.2f} of {true:7.2f}  ({moved / true:4.0%})")

    def path(video):
        centres = [read_frame(frame)[1] for frame in (video[0], video[-1])]
        return "  ->  ".join("none" if c is None else f"({c[0]:.2f}, {c[1]:.2f})" for c in centres)

    print("where the shape is in the first and last frame (x, y as fractions of the frame):")
    for direction in DIRECTIONS:
        scene = Scene(**{**BASE, "direction": direction})
        decoded = vae.decode(estimate(scene).mean(0, keepdim=True) * std + mean, return_dict=False)[0]
        video = decoded.clamp(-1, 1).add(1).div(2)[0].permute(1, 2, 3, 0).numpy()
        print(f"  {direction:5s}  mean estimate {path(video)}   world {path(clips(scene)[0].permute(1, 2, 3, 0).numpy())}")

    if args.hint:
        call = find_recipe(args.recipe, "video").call
        scenes = scored_scenes(video=True, split_name="train")
        means = [latents(scene).mean(0, keepdim=True) for scene in scenes]
        print(f"motion direction read on {len(scenes)} training captions, starting noise hinted at the layout:")
        for hint in args.hint:
            right = 0
            for seed, (scene, layout) in enumerate(zip(scenes, means)):
                noise = torch.randn(layout.shape, generator=torch.Generator().manual_seed(seed))
                start = (noise + hint * layout) / (1 + hint**2) ** 0.5
                video = pipe(scene.caption, latents=start, output_type="np", **call).frames[0]
                right += read_video(video).direction == scene.direction
            print(f"  hint {hint:4.2f}  direction {right / len(scenes):4.0%}")


if __name__ == "__main__":
    main()
