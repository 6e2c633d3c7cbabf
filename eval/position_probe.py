"""Does an image model's denoised estimate depend on the position words, noise level by noise level?

    python eval/position_probe.py                          # the shipped tiny-t2i
    python eval/position_probe.py --model /path/to/folder  # e.g. an earlier tiny-t2i checked out from git

For 32 renderings of "a large red circle" on the left and on the right, the noisy latents at each probed
timestep are denoised once with the "left" caption and once with the "right" one (same noise). It prints the
norm of the difference of the two x0 estimates (mean over the samples) next to the norm of the difference of
the true left and right latents: a model that places shapes by their caption moves its estimate by a sizeable
part of the true difference while the noise still hides the shape. About 20 s on a CPU.
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

from taocache.world.scenes import Scene, render

CAPTION = "a large red circle {} on a dark background"


@torch.no_grad()
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "samples/models/tiny-t2i")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[950, 800, 700, 600, 500, 400, 300])
    args = parser.parse_args(argv)
    if not (args.model / "model_index.json").is_file():
        parser.error(f"--model {args.model} is not a diffusers pipeline folder (no model_index.json)")
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32)
    scheduler, unet = pipe.scheduler, pipe.unet
    alphas = scheduler.alphas_cumprod.float()
    outside = [t for t in args.timesteps if not 0 <= t < len(alphas)]
    if outside:
        parser.error(f"--timesteps {outside} lie outside the model's 0..{len(alphas) - 1}")

    def latents(position):
        scene = Scene("circle", "red", "large", "dark", position=position)
        images = torch.from_numpy(np.stack([render(scene, seed) for seed in range(32)])).permute(0, 3, 1, 2)
        return pipe.vae.encode(images * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor

    left, right = latents("left"), latents("right")
    true_difference = (left - right).mean(0).norm().item()
    texts = [
        encode_captions(pipe.tokenizer, pipe.text_encoder, [CAPTION.format(p)] * 32, 16, masked=False)
        for p in ("on the left", "on the right")
    ]
    noise = torch.randn(left.shape, generator=torch.Generator().manual_seed(0))
    print(f"{args.model}: prediction {scheduler.config.prediction_type}; true left-right difference "
          f"{true_difference:.2f}")
    for t in args.timesteps:
        a = alphas[t]
        xt = a.sqrt() * left + (1 - a).sqrt() * noise
        timestep = torch.full((32,), t)
        estimates = []
        for text in texts:
            out = unet(xt, timestep, encoder_hidden_states=text).sample
            if scheduler.config.prediction_type == "v_prediction":
                estimates.append(a.sqrt() * xt - (1 - a).sqrt() * out)
            else:
                estimates.append((xt - (1 - a).sqrt() * out) / a.sqrt())
        moved = (estimates[0] - estimates[1]).mean(0).norm().item()
        print(f"  t={t:4d}  SNR {a / (1 - a):.4f}  x0 estimate moved by the position words {moved:.2f}")


if __name__ == "__main__":
    main()
