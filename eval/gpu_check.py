"""Time a full-size Wan2.1-T2V-1.3B denoising loop on a GPU: full run against TaoCache with a fixed pattern.

The transformer is built from the published Wan2.1-T2V-1.3B configuration with random weights (no download),
in bfloat16, and run at the published latent size (81 frames of 480x832 -> latents 16 x 21 x 60 x 104),
two guidance branches a step like ``WanPipeline``. Quality means nothing with random weights; this checks
the cost side only:

- the time of each step of a full 50-step loop;
- the same loop with TaoCache on a fixed skip pattern: an error budget so large that every allowed call is
  predicted, ``max_consecutive=1`` (so it alternates computed / predicted after the start step) and the
  final step computed. The calibration TaoCache needs is recorded by its first call (``auto_calibrate``),
  which is not timed;
- the hook's overhead on a computed step, the cost of a predicted step, and the measured speed-up against
  the ideal one (calls / computed calls).

    python eval/gpu_check.py             # full size, needs a CUDA GPU (about 40 GB free)
    python eval/gpu_check.py --tiny      # the same on this CPU at a tiny size, to check the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

# Wan2.1-T2V-1.3B transformer, as published with the model (transformer/config.json).
WAN_1_3B = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 1024,
}
FULL_SIZE = {
    "config": WAN_1_3B,
    "latents": (16, 21, 60, 104),
    "text_tokens": 512,
    "dtype": "bfloat16",
    "steps": 50,
}
TINY = {
    "config": {
        **WAN_1_3B,
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "in_channels": 4,
        "out_channels": 4,
        "text_dim": 32,
        "freq_dim": 32,
        "ffn_dim": 64,
        "num_layers": 2,
        "rope_max_seq_len": 64,
    },
    "latents": (4, 3, 8, 8),
    "text_tokens": 16,
    "dtype": "float32",
    "steps": 12,
}


def build(setting: dict, device: str):
    from diffusers import UniPCMultistepScheduler, WanTransformer3DModel

    dtype = getattr(torch, setting["dtype"])
    torch.manual_seed(0)
    with torch.device(device):
        transformer = WanTransformer3DModel(**setting["config"]).eval().requires_grad_(False)
    keep = tuple(getattr(transformer, "_keep_in_fp32_modules", None) or ())
    tensors = list(transformer.named_parameters()) + list(transformer.named_buffers())
    for name, tensor in tensors:  # as from_pretrained(torch_dtype=...) would load it
        if tensor.is_floating_point() and not any(part in keep for part in name.split(".")):
            tensor.data = tensor.data.to(dtype)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0, num_train_timesteps=1000
    )
    latents = torch.randn(1, *setting["latents"], device=device, dtype=torch.float32)
    text = torch.randn(1, setting["text_tokens"], setting["config"]["text_dim"], device=device, dtype=dtype)
    negative = torch.randn_like(text)
    return transformer, scheduler, latents, text, negative


def denoise(transformer, scheduler, latents, text, negative, steps: int, device: str, guidance: float = 5.0):
    """One denoising loop; returns the wall time of each step (synchronised on CUDA)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    scheduler.set_timesteps(steps, device=device)
    x = latents.clone()
    times = []
    with torch.inference_mode():
        sync()
        for i, t in enumerate(scheduler.timesteps):
            start = time.perf_counter()
            model_in = x.to(transformer.dtype)
            timestep = t.expand(x.shape[0])
            outputs = []
            for branch, embeds in (("cond", text), ("uncond", negative)):
                with transformer.cache_context(branch, step_index=i, num_inference_steps=steps):
                    outputs.append(
                        transformer(
                            hidden_states=model_in,
                            timestep=timestep,
                            encoder_hidden_states=embeds,
                            return_dict=False,
                        )[0].float()
                    )
            noise = outputs[1] + guidance * (outputs[0] - outputs[1])
            x = scheduler.step(noise, t, x, return_dict=False)[0]
            sync()
            times.append(time.perf_counter() - start)
    transformer._reset_stateful_cache()  # what a pipeline does at the end of its call
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny size on the CPU (checks the script)")
    parser.add_argument("--steps", type=int, help="denoising steps (default 50, tiny 12)")
    parser.add_argument("--frames", type=int, help="latent frames (default 21, i.e. 81 video frames)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    for name in ("steps", "frames"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)} must be at least 1")
    if args.json and Path(args.json).exists():
        parser.error(f"{args.json} exists; choose another --json file")

    import taocache

    setting = dict(TINY if args.tiny else FULL_SIZE)
    if args.frames is not None:
        setting["latents"] = (setting["latents"][0], args.frames, *setting["latents"][2:])
    steps = args.steps if args.steps is not None else setting["steps"]
    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: run with --tiny to check the script on the CPU", file=sys.stderr)
        return 2
    transformer, scheduler, latents, text, negative = build(setting, device)
    loop = (transformer, scheduler, latents, text, negative)
    print(
        f"Wan transformer {sum(p.numel() for p in transformer.parameters()) / 1e9:.3f} B parameters, "
        f"{setting['dtype']}, latents {tuple(latents.shape)}, {steps} steps x 2 guidance branches, on "
        f"{device}"
    )

    denoise(*loop, steps=min(3, steps), device=device)  # warm-up (kernels, allocator)
    full = denoise(*loop, steps=steps, device=device)

    config = taocache.TaoCacheConfig(
        error_budget=1e9,
        max_consecutive=1,
        start_fraction=0.2,
        final_steps=1,
        auto_calibrate=True,
        calibration_dir=tempfile.mkdtemp(prefix="taocal-"),
    )
    taocache.enable(transformer, config)
    try:
        denoise(*loop, steps=steps, device=device)  # records the calibration: every call computed, not timed
        cached = denoise(*loop, steps=steps, device=device)
        stats = taocache.stats(transformer)
    finally:
        taocache.disable(transformer)

    per_step = ["".join(set(step)) for step in zip(*(b.decisions for b in stats.branches.values()))]
    decisions = "".join(d if len(d) == 1 else "m" for d in per_step)  # m: the branches decided differently
    computed_steps = [i for i, d in enumerate(decisions) if d == "C"]
    predicted_steps = [i for i, d in enumerate(decisions) if d == "P"]
    ideal = stats.calls / stats.computed
    measured = sum(full) / sum(cached)
    full_step = statistics.median(full)
    overhead = statistics.median(cached[i] for i in computed_steps) - full_step
    predicted_cost = statistics.median(cached[i] for i in predicted_steps) if predicted_steps else None

    print("\nstep  full ms  taocache ms  decision (cond/uncond)")
    for i, (a, b) in enumerate(zip(full, cached)):
        marks = "/".join(branch.decisions[i] for branch in stats.branches.values())
        print(f"{i:4d} {a * 1e3:8.1f} {b * 1e3:12.1f}  {marks}")
    print(f"\npattern: {decisions}")
    print(
        f"full loop {sum(full):.3f} s; TaoCache loop {sum(cached):.3f} s; {stats.computed} of {stats.calls} "
        "calls computed"
    )
    print(
        f"hook overhead on a computed step: {overhead * 1e3:+.2f} ms ({overhead / full_step:+.2%} of a full "
        "step)"
    )
    if predicted_cost is not None:
        print(
            f"a predicted step costs {predicted_cost * 1e3:.2f} ms ({predicted_cost / full_step:.2%} of a "
            "full step)"
        )
    print(f"speed-up: measured {measured:.3f}x, ideal {ideal:.3f}x, ratio {measured / ideal:.3f}")
    if args.json:
        figures = {
            "device": device,
            "latents": list(latents.shape),
            "steps": steps,
            "dtype": setting["dtype"],
            "full_step_s": full,
            "taocache_step_s": cached,
            "pattern": decisions,
            "calls": stats.calls,
            "computed": stats.computed,
            "overhead_s": overhead,
            "predicted_step_s": predicted_cost,
            "speedup": measured,
            "ideal_speedup": ideal,
            "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        }
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
