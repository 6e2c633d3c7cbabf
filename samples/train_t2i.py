"""Train the embedded text-to-image model (samples/models/tiny-t2i) from scratch on the sample world.

    python samples/train_t2i.py --force        # rebuilds the shipped weights (resumes if interrupted)

Two stages, each checkpointed under samples/checkpoints/t2i/: an ``AutoencoderKL`` (4x compression), then a
``UNet2DConditionModel`` and its small CLIP text encoder trained together with the DDPM loss in
v-prediction (the target ``sqrt(a) * noise - sqrt(1 - a) * x0``, as Stable Diffusion 2.x). The result is a
complete ``StableDiffusionPipeline`` folder (DDIM scheduler, ``prediction_type="v_prediction"``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "samples"))

from trainlib import (  # noqa: E402
    NumpyGenerator,
    build_components,
    check_args,
    device_name,
    ema_of,
    encode_captions,
    latent_weight,
    seed_everything,
    subject_weight,
    train_loop,
)

from taocache.testing import sd_components  # noqa: E402
from taocache.world import split  # noqa: E402
from taocache.world.scenes import sample_batch  # noqa: E402

SIZE, TEXT_LEN = 64, 16
ARCH = dict(
    text_dim=64, text_layers=2, vae_channels=(16, 32, 32), latent_channels=4, unet_channels=(32, 64, 64),
    layers_per_block=1, attention_head_dim=8, max_text_length=TEXT_LEN, sample_size=16,
    # DDPM's linear schedule, not Stable Diffusion's scaled-linear one: on a 16x16 latent the scaled-linear
    # schedule leaves about 7% of the image in its noisiest sample, enough for the model to read where the
    # shape is from the noise instead of from the caption, and at sampling time it then ignores position words.
    beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
    # v-prediction, not epsilon: where the shape is placed is decided in the noisiest steps, before the noisy
    # sample gives the placement away. There an epsilon model must output ~x_t plus an x0 term about 1/100 of
    # its size, which this UNet cannot resolve: trained on epsilon, its placement ignored the position words
    # (16% agreement on held-out captions), while the v target carries x0 at full scale there (100%;
    # eval/position_probe.py and samples/README.md).
    prediction_type="v_prediction",
)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) in [0, 1] -> (B, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).mul(2).sub(1).contiguous()


def train_vae(vae, scenes, args, ckpt):
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / args.vae_steps)))
    )
    rng = np.random.default_rng(args.seed)

    def loss_fn(step):
        _, images = sample_batch(scenes, args.vae_batch, rng, size=SIZE)
        x = to_tensor(images).to(args.device)
        post = vae.encode(x).latent_dist
        z = post.mean + 0.05 * torch.randn_like(post.mean)
        rec = vae.decode(z).sample
        weight = subject_weight(x)
        mse = (weight * (rec - x) ** 2).mean()
        kl = 0.5 * (post.mean**2 + post.var - 1 - post.logvar).mean()
        return mse + 1e-6 * kl

    settings = {**args.settings, **{k: getattr(args, k) for k in ("vae_steps", "vae_batch", )}}
    return train_loop("vae", {"vae": vae}, opt, loss_fn, args.vae_steps, ckpt, scheduler=sched,
                      generators={"batches": NumpyGenerator(rng)}, settings=settings)


@torch.no_grad()
def encode_dataset(vae, scenes, count, seed):
    rng = np.random.default_rng(seed)
    latents, weights, captions = [], [], []
    for _ in tqdm(range(0, count, 64), desc="encode", mininterval=10):
        picks, images = sample_batch(scenes, 64, rng, size=SIZE)
        x = to_tensor(images)
        latents.append(vae.encode(x.to(vae.device)).latent_dist.mean.cpu())
        weights.append(latent_weight(x, 2 ** (len(vae.config.block_out_channels) - 1)))
        captions += [s.caption for s in picks]
    return torch.cat(latents), torch.cat(weights), captions


def train_unet(components, latents, weights, captions, args, ckpt):
    unet, text_encoder, tokenizer = components["unet"], components["text_encoder"], components["tokenizer"]
    scheduler = components["scheduler"]
    unet.requires_grad_(True)
    text_encoder.requires_grad_(True)
    net = torch.nn.ModuleDict({"unet": unet, "text_encoder": text_encoder})
    ema = ema_of(net, decay=0.999)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * min(s, args.unet_steps) / args.unet_steps))
    )
    alphas = scheduler.alphas_cumprod.float().to(args.device)
    gen = torch.Generator().manual_seed(args.seed + 1)

    def loss_fn(step):
        idx = torch.randint(0, len(latents), (args.unet_batch,), generator=gen)
        x0, weight = latents[idx].to(args.device), weights[idx].to(args.device)
        batch_captions = [captions[i] if torch.rand(1, generator=gen).item() > 0.1 else "" for i in idx.tolist()]
        text = encode_captions(tokenizer, net["text_encoder"], batch_captions, TEXT_LEN, masked=False)
        t = torch.randint(0, len(alphas), (args.unet_batch,), generator=gen).to(args.device)
        noise = torch.randn(x0.shape, generator=gen).to(args.device)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = net["unet"](xt, t, encoder_hidden_states=text, return_dict=False)[0]
        velocity = scheduler.config.prediction_type == "v_prediction"
        target = scheduler.get_velocity(x0, noise, t) if velocity else noise
        return (weight * (pred.float() - target) ** 2).mean()

    kept = ("unet_steps", "unet_batch", "dataset_size", "lr", "vae_steps", "vae_from", "bf16")
    settings = {**args.settings, **{k: getattr(args, k) for k in kept}}
    done = train_loop("unet", {"net": net}, opt, loss_fn, args.unet_steps, ckpt, scheduler=sched, ema=ema,
                      generators={"batches": gen}, settings=settings, bf16=args.bf16)
    ema.copy_to(net.parameters())
    net.eval().requires_grad_(False)
    return done


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "samples/models/tiny-t2i")
    parser.add_argument("--checkpoints", type=Path, default=ROOT / "samples/checkpoints/t2i")
    parser.add_argument("--vae-steps", type=int, default=5000)
    parser.add_argument("--vae-batch", type=int, default=8)
    parser.add_argument("--unet-steps", type=int, default=8000)
    parser.add_argument("--unet-batch", type=int, default=64)
    parser.add_argument("--dataset-size", type=int, default=8192)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="denoiser steps under bfloat16 autocast (faster on CPUs with "
                        "AVX-512 BF16 and on GPUs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when there is one)")
    parser.add_argument("--arch", default=None, help='JSON overrides of ARCH, e.g. \'{"unet_channels": [32, 64, 128]}\' (for experiments)')
    parser.add_argument("--vae-from", type=Path, default=None, help="reuse the autoencoder of this model folder")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out folder")
    args = parser.parse_args(argv)
    check_args(parser, args, ARCH, ("--vae-batch", "--unet-steps", "--unet-batch", "--dataset-size"))
    torch.set_num_threads(args.threads)
    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        parser.error(f"{args.out} exists; pass --force to overwrite it")
    seed_everything(args.seed)
    train_scenes = split(video=False)["train"]
    components, arch = build_components(sd_components, ARCH, args)
    args.settings = {"arch": arch, "seed": args.seed}  # kept in each checkpoint: a resume must match them
    vae = components["vae"]
    vae.requires_grad_(True)
    steps_done, seconds = {"vae": 0}, {"vae": 0.0}
    if args.vae_steps:
        steps_done["vae"], seconds["vae"] = train_vae(vae, train_scenes, args, args.checkpoints)
    if steps_done["vae"] < args.vae_steps:
        sys.exit("stopped during the autoencoder stage; run the same command again to resume")
    vae.eval().requires_grad_(False)

    latents, weights, captions = encode_dataset(vae, train_scenes, args.dataset_size, args.seed + 2)
    scaling = 1.0 / latents.std().item()
    vae.register_to_config(scaling_factor=scaling)
    latents = latents * scaling
    print(f"latent scaling factor {scaling:.4f}")

    steps_done["unet"], seconds["unet"] = train_unet(components, latents, weights, captions, args, args.checkpoints)
    if steps_done["unet"] < args.unet_steps:  # a partial model is never written over --out
        sys.exit(f"stopped after {steps_done['unet']} of {args.unet_steps} denoiser steps; run the same command again "
                 "to resume")

    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**components, requires_safety_checker=False)
    pipe.to("cpu", torch.float32)  # float32 throughout: a plain from_pretrained gets one dtype
    args.out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(args.out, safe_serialization=True)
    settings = {k: str(v) if isinstance(v, (Path, torch.device)) else v for k, v in vars(args).items()
                if k != "settings"}
    cost = {"device": device_name(args.device), "threads": args.threads, "steps": steps_done,
            "wall_seconds": {k: round(v) for k, v in seconds.items()}}
    (args.out / "training.json").write_text(json.dumps({"arch": arch, "args": settings, "cost": cost}, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
