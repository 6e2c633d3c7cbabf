"""TaoCache's own cost: the hook's time per denoiser call against one forward pass of a mid-size transformer,
and the wall-time speed-up of the denoising loop against the ideal given by the calls saved.

    OMP_NUM_THREADS=1 python eval/bench_overhead.py            # about two minutes on one CPU thread

Targets: hook time at most 1% of a forward pass; measured speed-up at least 0.9 of the ideal (calls over
computed calls). The transformer has random weights: only time is measured here, not fidelity. The loop is
a WanPipeline with a tiny text encoder and VAE and ``output_type="latent"``, so denoising dominates its time.
Writes eval/results/overhead.json (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import taocache
from taocache.taocache.backend import hooks_of

CAPTION = "a large red circle moves left on a dark background"


def build(args):
    from diffusers import WanPipeline

    from taocache.testing import wan_components
    from taocache.world import vocabulary

    parts = wan_components(vocabulary(), z_dim=16, heads=args.heads, head_dim=64, layers=args.layers,
                           ffn_dim=4 * 64 * args.heads)
    pipe = WanPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call(pipe, args, seed=0):
    return pipe(CAPTION, height=args.size, width=args.size, num_frames=args.frames, num_inference_steps=args.steps,
                guidance_scale=5.0, max_sequence_length=16, output_type="latent",
                generator=torch.Generator().manual_seed(seed))


def forward_time(pipe, args) -> float:
    """Median seconds of one transformer forward pass on this run's latent shape (no hook)."""
    captured = {}

    def grab(module, a, kw):
        captured.setdefault("kwargs", {k: v for k, v in kw.items()})

    handle = pipe.transformer.register_forward_pre_hook(grab, with_kwargs=True)
    call(pipe, argparse.Namespace(**{**vars(args), "steps": 1}))
    handle.remove()
    times = []
    with torch.no_grad():
        for _ in range(args.repeats * 3):
            start = time.perf_counter()
            pipe.transformer(**captured["kwargs"])
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def instrument(hook) -> dict:
    """Time the hook's own work (decision, prediction, keeping outputs) on every call."""
    spent = {"before": [], "after": []}
    before, after = hook._before, hook._after

    def timed_before(*a, **kw):
        start = time.perf_counter()
        result = before(*a, **kw)
        spent["before"].append((time.perf_counter() - start, result[1] is not None))
        return result

    def timed_after(*a, **kw):
        start = time.perf_counter()
        result = after(*a, **kw)
        spent["after"].append(time.perf_counter() - start)
        return result

    hook._before, hook._after = timed_before, timed_after
    return spent


def loop_time(pipe, args) -> float:
    start = time.perf_counter()
    call(pipe, args)
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8, help="attention heads of 64 channels")
    p.add_argument("--size", type=int, default=64, help="frame height and width (latents are 4x smaller)")
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--output", default=str(ROOT / "eval" / "results" / "overhead.json"))
    p.add_argument("--force", action="store_true", help="replace --output if it exists")
    args = p.parse_args(argv)
    for name in ("layers", "heads", "size", "frames", "steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} {getattr(args, name)} must be at least 1")
    if Path(args.output).exists() and not args.force:
        p.error(f"{args.output} exists; pass --force to replace it")
    torch.set_num_threads(1)
    pipe = build(args)
    params = sum(p.numel() for p in pipe.transformer.parameters())
    forward = forward_time(pipe, args)
    print(f"transformer: {params / 1e6:.1f} M parameters, one forward pass {forward * 1000:.1f} ms (median)")

    calibration = taocache.calibrate(pipe, [CAPTION], call_kwargs={
        "height": args.size, "width": args.size, "num_frames": args.frames, "num_inference_steps": args.steps,
        "guidance_scale": 5.0, "max_sequence_length": 16}, save=False, progress=False)
    config = taocache.TaoCacheConfig(error_budget=1.0, max_consecutive=3, calibration=calibration)
    full_times, cached_times, spent = [], [], {"before": [], "after": []}
    for _ in range(args.repeats):  # alternate, so that a change in the machine's load hits both alike
        full_times.append(loop_time(pipe, args))
        taocache.enable(pipe, config)
        timings = instrument(hooks_of(pipe)["transformer"])
        cached_times.append(loop_time(pipe, args))
        record = taocache.stats(pipe)
        taocache.disable(pipe)
        spent["before"] += timings["before"]
        spent["after"] += timings["after"]
    full, cached = min(full_times), min(cached_times)

    computed_befores = [b for b, predicted in spent["before"] if not predicted]
    hook_computed = statistics.mean(b + a for b, a in zip(computed_befores, spent["after"]))
    hook_predicted = statistics.mean([b for b, predicted in spent["before"] if predicted] or [0.0])
    hook_all = (sum(b for b, _ in spent["before"]) + sum(spent["after"])) / len(spent["before"])
    ideal = record.ideal_speedup
    measured = full / cached
    results = {
        "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()},
        "transformer": {"class": type(pipe.transformer).__name__, "parameters": params, "layers": args.layers,
                        "heads": args.heads, "latent": [16, (args.frames - 1) // 2 + 1, args.size // 4,
                                                        args.size // 4]},
        "steps": args.steps,
        "config": {"error_budget": config.error_budget, "max_consecutive": config.max_consecutive,
                   "start_fraction": config.start_fraction, "predictor": config.predictor},
        "forward_ms": forward * 1000,
        "hook_ms_per_call": hook_all * 1000,
        "hook_ms_per_computed_call": hook_computed * 1000,
        "hook_ms_per_predicted_call": hook_predicted * 1000,
        "hook_fraction_of_forward": hook_all / forward,
        "calls": record.calls,
        "computed": record.computed,
        "loop_seconds_full": full,
        "loop_seconds_cached": cached,
        "loop_seconds_all": {"full": full_times, "cached": cached_times},
        "speedup_measured": measured,
        "speedup_ideal": ideal,
        "speedup_ratio_to_ideal": measured / ideal,
        "targets": {"hook_fraction_of_forward": "<= 0.01", "speedup_ratio_to_ideal": ">= 0.9"},
        "command": " ".join(["OMP_NUM_THREADS=1 python eval/bench_overhead.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    print(f"hook per call: {hook_all * 1000:.3f} ms ({hook_all / forward:.2%} of a forward pass; "
          f"computed calls {hook_computed * 1000:.3f} ms, predicted calls {hook_predicted * 1000:.3f} ms)")
    print(f"denoising loop: full {full:.2f} s, TaoCache {cached:.2f} s ({record.computed}/{record.calls} calls "
          f"computed): speed-up {measured:.2f}x of an ideal {ideal:.2f}x = {measured / ideal:.2f}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, out)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
