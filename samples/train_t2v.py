"""Train the embedded text-to-video model (samples/models/tiny-t2v) from scratch on the sample world.

    python samples/train_t2v.py --force        # rebuilds the shipped weights (resumes if interrupted)

Two stages, each checkpointed under samples/checkpoints/t2v/: a Wan-style video autoencoder (4x spatial,
2x temporal compression), then a Wan transformer and its small UMT5 text encoder trained together with
rectified flow on the autoencoder's normalised latents. The result is a complete ``WanPipeline`` folder.
"""

from __future__ import annotations

import argparse
import inspect
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

from diffusers import WanPipeline  # noqa: E402
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

from taocache.testing import wan_components  # noqa: E402
from taocache.world import split  # noqa: E402
from taocache.world.scenes import sample_batch  # noqa: E402

FRAMES, SIZE = 9, 64
# WanPipeline's default max_sequence_length (512): captions are encoded for training exactly as a plain call
# encodes them, so the model needs no argument a diffusers user would not pass.
TEXT_LEN = inspect.signature(WanPipeline.__call__).parameters["max_sequence_length"].default
ARCH = dict(
    text_dim=64, text_layers=2, vae_base_dim=16, vae_dim_mult=(2, 2), z_dim=8, heads=4, head_dim=32, layers=6,
    ffn_dim=512, patch=(1, 2, 2), max_text_length=TEXT_LEN, flow_shift=3.0,
)


def to_tensor(videos: np.ndarray) -> torch.Tensor:
    """(B, F, H, W, 3) in [0, 1] -> (B, 3, F, H, W) in [-1, 1]."""
    return torch.from_numpy(videos).permute(0, 4, 1, 2, 3).mul(2).sub(1).contiguous()


def train_vae(vae, scenes, args, ckpt):
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / args.vae_steps)))
    )
    rng = np.random.default_rng(args.seed)

    def loss_fn(step):
        # The autoencoder is causal and works in chunks of frames after the first; 5-frame clips are cheap and
        # teach the encoder, but the decoder also needs whole clips (the decoder stage).
        _, videos = sample_batch(scenes, args.vae_batch, rng, size=SIZE, num_frames=args.vae_frames)
        x = to_tensor(videos).to(args.device)
        post = vae.encode(x).latent_dist
        z = post.mean + 0.05 * torch.randn_like(post.mean)
        rec = vae.decode(z).sample
        # Weight the shape's pixels up: they are few, and they carry everything the captions talk about.
        weight = subject_weight(x)
        mse = (weight * (rec - x) ** 2).mean()
        kl = 0.5 * (post.mean**2 + post.var - 1 - post.logvar).mean()
        return mse + 1e-6 * kl

    settings = {**args.settings, **{k: getattr(args, k) for k in ("vae_steps", "vae_batch", "vae_frames", )}}
    return train_loop("vae", {"vae": vae}, opt, loss_fn, args.vae_steps, ckpt, scheduler=sched,
                      generators={"batches": NumpyGenerator(rng)}, settings=settings)


def train_decoder(vae, scenes, args, ckpt):
    """Fine-tune the decoder alone on the frozen encoder's latents of whole clips: the latent space, and so
    every denoiser trained on it, stays as it is. The causal decoder carries a cache from one chunk of frames to
    the next; trained on 5-frame clips (one chunk after the first frame) it never learnt to use that cache and
    decoded the later frames of a 9-frame clip at 17-25 dB against 31-35 dB for the first five."""
    decoder = torch.nn.ModuleDict({"decoder": vae.decoder, "post_quant_conv": vae.post_quant_conv})
    vae.requires_grad_(False)
    decoder.requires_grad_(True)
    opt = torch.optim.AdamW(decoder.parameters(), lr=3e-4, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / args.decoder_steps))
    )
    rng = np.random.default_rng(args.seed + 3)

    def loss_fn(step):
        _, videos = sample_batch(scenes, args.decoder_batch, rng, size=SIZE, num_frames=args.decoder_frames)
        x = to_tensor(videos).to(args.device)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        rec = vae.decode(z + 0.05 * torch.randn_like(z)).sample  # as tolerant of a sampled latent as before
        return (subject_weight(x) * (rec - x) ** 2).mean()

    kept = ("vae_steps", "vae_batch", "vae_frames", "decoder_steps", "decoder_batch", "decoder_frames")
    settings = {**args.settings, **{k: getattr(args, k) for k in kept}}
    done = train_loop("decoder", {"decoder": decoder}, opt, loss_fn, args.decoder_steps, ckpt, scheduler=sched,
                      generators={"batches": NumpyGenerator(rng)}, settings=settings)
    vae.eval().requires_grad_(False)
    return done


@torch.no_grad()
def encode_dataset(vae, scenes, count, seed):
    rng = np.random.default_rng(seed)
    latents, weights, captions = [], [], []
    for _ in tqdm(range(0, count, 16), desc="encode", mininterval=10):
        picks, videos = sample_batch(scenes, 16, rng, size=SIZE, num_frames=FRAMES)
        x = to_tensor(videos)
        latents.append(vae.encode(x.to(vae.device)).latent_dist.mean.cpu())
        weights.append(latent_weight(x, vae.config.scale_factor_spatial, vae.config.scale_factor_temporal))
        captions += [s.caption for s in picks]
    return torch.cat(latents), torch.cat(weights), captions


def train_dit(components, latents, weights, captions, args, ckpt):
    transformer, text_encoder, tokenizer = components["transformer"], components["text_encoder"], components["tokenizer"]
    text_encoder.requires_grad_(True)
    transformer.requires_grad_(True)
    net = torch.nn.ModuleDict({"transformer": transformer, "text_encoder": text_encoder})
    ema = ema_of(net, decay=0.999)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * min(s, args.dit_steps) / args.dit_steps))
    )
    gen = torch.Generator().manual_seed(args.seed + 1)
    shift = args.flow_shift

    def loss_fn(step):
        idx = torch.randint(0, len(latents), (args.dit_batch,), generator=gen)
        x0, weight = latents[idx].to(args.device), weights[idx].to(args.device)
        batch_captions = [captions[i] if torch.rand(1, generator=gen).item() > 0.1 else "" for i in idx.tolist()]
        text = encode_captions(tokenizer, net["text_encoder"], batch_captions, TEXT_LEN, masked=True)
        # Logit-normal noise levels, shifted like the sampler's (flow_shift): an unshifted draw almost never
        # reaches the noisiest levels, where the sampler spends many of its steps and where the caption alone
        # must decide the motion.
        t = torch.sigmoid(torch.randn(args.dit_batch, generator=gen))
        t = (shift * t / (1 + (shift - 1) * t)).to(args.device)
        noise = torch.randn(x0.shape, generator=gen).to(args.device)
        tt = t.view(-1, 1, 1, 1, 1)
        xt = (1 - tt) * x0 + tt * noise
        pred = net["transformer"](xt, timestep=t * 1000, encoder_hidden_states=text, return_dict=False)[0]
        return (weight * (pred.float() - (noise - x0)) ** 2).mean()

    kept = ("dit_steps", "dit_batch", "dataset_size", "lr", "vae_steps", "vae_from", "bf16")
    settings = {**args.settings, **{k: getattr(args, k) for k in kept}}
    done = train_loop("dit", {"net": net}, opt, loss_fn, args.dit_steps, ckpt, scheduler=sched, ema=ema,
                      generators={"batches": gen}, settings=settings, bf16=args.bf16)
    ema.copy_to(net.parameters())
    net.eval().requires_grad_(False)
    return done


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "samples/models/tiny-t2v")
    parser.add_argument("--checkpoints", type=Path, default=ROOT / "samples/checkpoints/t2v")
    parser.add_argument("--vae-steps", type=int, default=5000)
    parser.add_argument("--vae-batch", type=int, default=6)
    parser.add_argument("--vae-frames", type=int, default=5)
    parser.add_argument("--decoder-steps", type=int, default=1200,
                        help="then fine-tune the decoder alone for this many steps (the latents stay the same)")
    parser.add_argument("--decoder-batch", type=int, default=3)
    parser.add_argument("--decoder-frames", type=int, default=FRAMES)
    parser.add_argument("--dit-steps", type=int, default=4000)
    parser.add_argument("--dit-batch", type=int, default=16)
    parser.add_argument("--dataset-size", type=int, default=8192)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="denoiser steps under bfloat16 autocast (faster on CPUs with "
                        "AVX-512 BF16 and on GPUs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when there is one)")
    parser.add_argument("--arch", default=None, help='JSON overrides of ARCH, e.g. \'{"layers": 8}\' (for experiments)')
    parser.add_argument("--vae-from", type=Path, default=None, help="reuse the autoencoder of this model folder")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out folder")
    parser.add_argument("--stop-after", choices=("vae", "decoder"), default=None,
                        help="stop once this stage is complete (to run the stages as separate jobs)")
    args = parser.parse_args(argv)
    check_args(parser, args, ARCH, ("--vae-batch", "--vae-frames", "--decoder-batch", "--decoder-frames",
                                    "--dit-steps", "--dit-batch", "--dataset-size"))
    if args.decoder_steps < 0:
        parser.error(f"--decoder-steps {args.decoder_steps} must be at least 0")
    torch.set_num_threads(args.threads)
    if args.out.exists() and any(args.out.iterdir()) and not args.force:
        parser.error(f"{args.out} exists; pass --force to overwrite it")
    seed_everything(args.seed)
    train_scenes = split(video=True)["train"]
    components, arch = build_components(wan_components, ARCH, args)
    args.settings = {"arch": arch, "seed": args.seed}  # kept in each checkpoint: a resume must match them
    args.flow_shift = arch["flow_shift"]
    vae = components["vae"]
    vae.requires_grad_(True)
    steps_done, seconds = {"vae": 0}, {"vae": 0.0}
    if args.vae_steps:
        steps_done["vae"], seconds["vae"] = train_vae(vae, train_scenes, args, args.checkpoints)
    if steps_done["vae"] < args.vae_steps:
        sys.exit("stopped during the autoencoder stage; run the same command again to resume")
    vae.eval().requires_grad_(False)
    if args.stop_after == "vae":
        sys.exit("the autoencoder stage is complete (--stop-after vae)")
    # The decoder stage changes no latent, so the denoiser may train before, after or beside it.
    if args.decoder_steps:
        steps_done["decoder"], seconds["decoder"] = train_decoder(vae, train_scenes, args, args.checkpoints)
        if steps_done["decoder"] < args.decoder_steps:
            sys.exit("stopped during the decoder stage; run the same command again to resume")
    if args.stop_after == "decoder":
        sys.exit("the decoder stage is complete (--stop-after decoder)")

    latents, weights, captions = encode_dataset(vae, train_scenes, args.dataset_size, args.seed + 2)
    dims = (0, 2, 3, 4)
    mean, std = latents.mean(dim=dims), latents.std(dim=dims)
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
    latents = (latents - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)
    print(f"latent mean {mean.numpy().round(3)} std {std.numpy().round(3)}")

    steps_done["dit"], seconds["dit"] = train_dit(components, latents, weights, captions, args, args.checkpoints)
    if steps_done["dit"] < args.dit_steps:  # a partial model is never written over --out
        sys.exit(f"stopped after {steps_done['dit']} of {args.dit_steps} denoiser steps; run the same command again "
                 "to resume")

    pipe = WanPipeline(**components)
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
