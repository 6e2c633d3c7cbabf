"""Measure TaoCache's predictor, start step and error budget against reuse, first-order extrapolation and the
equal-cost shorter run, on tune captions, by PSNR/SSIM of the decoded video against the full run.

    OMP_NUM_THREADS=1 python eval/tune_defaults.py                       # the embedded tiny-t2v model
    OMP_NUM_THREADS=1 python eval/tune_defaults.py --random --steps 20 --output /tmp/tune-random.json  # code path

The calibration is measured on the even tune captions of the sample world, the evaluation on the odd ones: the
test captions, on which the benchmarks report, play no part in choosing the defaults.
Cost is counted in denoiser calls (computed / total); the equal-cost shorter run is the same pipeline with
fewer steps, and its PSNR at a configuration's cost is interpolated between the step counts measured.
Every finished configuration is written to the results file at once (atomically); a rerun resumes.
Each predictor is measured in the output space and, with ``--spaces output,estimate``, in the denoised-estimate
space (``TaoCacheConfig.space``); a variant is a predictor in a space ("geometric@estimate").
Selection rule printed at the end: (1) the variant with the best mean PSNR in the equal-cost comparison
(every other step predicted from each start fraction); (2) for it, among configurations with a finite error
budget that save at least ``--min-saving`` of the calls (default 30%, an ideal speed-up of 1.43x), the best
mean PSNR. Each line also gives the equal-cost shorter run. docs/algorithm.md quotes the figures.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import taocache
from taocache.metrics import psnr, ssim
from taocache.results import write_json
from taocache.world import scenes_of

logger = logging.getLogger("tune_defaults")
UNLIMITED = 1e6  # an error budget that never binds: skips follow start step and max_consecutive only
PSNR_CAP = 100.0  # a video identical to the full run (nothing predicted) counts as 100 dB in the means


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="recipe name, folder or hub id (default: tiny-t2v)")
    p.add_argument("--random", action="store_true", help="use a random tiny WanPipeline (tests the script only)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the recipe's)")
    p.add_argument("--calibration-prompts", type=int, default=8)
    p.add_argument("--eval-prompts", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--predictors", default="geometric,linear,reuse")
    p.add_argument("--spaces", default="output,estimate", help="prediction spaces: output, estimate or both")
    p.add_argument("--starts", default="0.1,0.2,0.3,0.5")
    p.add_argument("--budgets", default="0.03,0.1,0.3")
    p.add_argument("--max-consecutive", default="1,2")
    p.add_argument("--shorter", default=None, help="step counts of the shorter runs (default: 30%%..90%% of steps)")
    p.add_argument("--min-saving", type=float, default=0.3, help="selection: least fraction of calls saved")
    p.add_argument("--output", default=str(ROOT / "eval" / "results" / "tune_defaults.json"))
    p.add_argument("--force", action="store_true", help="start again instead of resuming the results file")
    p.add_argument("--summary", action="store_true", help="only print the summary of the results file")
    return p.parse_args(argv)


def load(args):
    if args.random:
        from taocache.testing import tiny_wan_pipeline

        pipe = tiny_wan_pipeline()
        pipe.set_progress_bar_config(disable=True)
        call = {"height": 32, "width": 32, "num_frames": 9, "num_inference_steps": args.steps or 20, "guidance_scale": 5.0,
                    "max_sequence_length": 16}
        return pipe, call, "random tiny WanPipeline", "video"
    from taocache.recipes import load_pipeline

    pipe, recipe = load_pipeline(args.model, kind="video")
    return pipe, recipe.call_kwargs(num_inference_steps=args.steps), recipe.name, recipe.kind


def write(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, results)


def variant(row: dict) -> str:
    """A predictor in a space: "geometric" (output space) or "geometric@estimate"."""
    space = row.get("space", "output")
    return row["predictor"] if space == "output" else f"{row['predictor']}@{space}"


def generate(pipe, call, prompts, seed, **overrides):
    frames = []
    for prompt in prompts:
        out = pipe(prompt, generator=torch.Generator("cpu").manual_seed(seed), output_type="np",
                   **{**call, **overrides})
        frames.append(out.frames[0] if hasattr(out, "frames") else out.images)
    return frames


def score(frames, reference) -> dict:
    p = [min(psnr(a, b), PSNR_CAP) for a, b in zip(frames, reference)]
    s = [ssim(a, b) for a, b in zip(frames, reference)]
    return {"psnr": float(np.mean(p)), "psnr_min": float(min(p)), "ssim": float(np.mean(s)),
            "identical": sum(v >= PSNR_CAP for v in p)}


def shorter_psnr_at(cost: float, shorter: dict, steps: int) -> float | None:
    """PSNR of the shorter run interpolated at ``cost`` (fraction of the full run's calls)."""
    points = sorted((int(n) / steps, r["psnr"]) for n, r in shorter.items())
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    if not points or not xs[0] <= cost <= xs[-1]:
        return None
    return float(np.interp(cost, xs, ys))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summary:
        if not Path(args.output).is_file():
            sys.exit(f"{args.output} does not exist: run the measurement first (without --summary)")
        summarise(json.loads(Path(args.output).read_text()), args.min_saving)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    pipe, call, model_name, kind = load(args)
    steps = int(call.get("num_inference_steps", 50))
    tune = scenes_of("tune", kind == "video")
    calibration_prompts = [s.caption for s in tune[::2][: args.calibration_prompts]]
    eval_prompts = [s.caption for s in tune[1::2][: args.eval_prompts]]
    out = Path(args.output)
    setting = {"model": model_name, "steps": steps, "call": {k: v for k, v in call.items()},
               "calibration_prompts": calibration_prompts, "eval_prompts": eval_prompts, "seed": args.seed}
    results = json.loads(out.read_text()) if out.exists() and not args.force else {}
    if results.get("setting") != setting:
        if results:  # never replace a results file of other settings unasked
            sys.exit(f"{out} holds results for other settings; pass --force to replace them, or another --output")
        results = {"setting": setting, "shorter": {}, "configs": {}}
    results["machine"] = {"torch": torch.__version__, "threads": torch.get_num_threads(), "platform": sys.platform}

    t0 = time.perf_counter()
    calibration = taocache.calibrate(pipe, calibration_prompts, call_kwargs=call, seed=1000 + args.seed, save=False)
    logger.info("calibrated on %d prompts in %.0f s", len(calibration_prompts), time.perf_counter() - t0)
    results["calibration_summary"] = summarise_calibration(calibration)
    reference = generate(pipe, call, eval_prompts, args.seed)

    shorter_steps = ([int(s) for s in args.shorter.split(",")] if args.shorter
                     else sorted({max(2, round(steps * f)) for f in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)}))
    for n in shorter_steps:
        if str(n) in results["shorter"]:
            continue
        frames = generate(pipe, call, eval_prompts, args.seed, num_inference_steps=n)
        results["shorter"][str(n)] = {"cost": n / steps, **score(frames, reference)}
        write(out, results)
        logger.info("shorter run %d steps: %s", n, results["shorter"][str(n)])

    grid = []
    for space, predictor, start in itertools.product(args.spaces.split(","), args.predictors.split(","),
                                                     [float(s) for s in args.starts.split(",")]):
        base = {"predictor": predictor, "start_fraction": start, "space": space}
        grid.append({**base, "error_budget": UNLIMITED, "max_consecutive": 1})
        for budget, mc in itertools.product([float(b) for b in args.budgets.split(",")],
                                            [int(m) for m in args.max_consecutive.split(",")]):
            grid.append({**base, "error_budget": budget, "max_consecutive": mc})
    for n, fields in enumerate(grid):
        key = json.dumps(fields, sort_keys=True)
        if key in results["configs"]:
            continue
        taocache.enable(pipe, taocache.TaoCacheConfig(calibration=calibration, **fields))
        frames, computed, calls = [], 0, 0
        for prompt in eval_prompts:
            frames += generate(pipe, call, [prompt], args.seed)
            record = taocache.stats(pipe)
            computed, calls = computed + record.computed, calls + record.calls
        taocache.disable(pipe)
        cost = computed / calls
        row = {**fields, "cost": cost, "ideal_speedup": calls / computed, **score(frames, reference)}
        row["shorter_psnr_same_cost"] = shorter_psnr_at(cost, results["shorter"], steps)
        results["configs"][key] = row
        write(out, results)
        logger.info("[%d/%d] %s", n + 1, len(grid), {k: (round(v, 3) if isinstance(v, float) else v)
                                                     for k, v in row.items()})
    summarise(results, args.min_saving)
    return 0


def summarise_calibration(calibration) -> dict:
    """Mean cosine and gain of the delta to predict against D, by part of the run, for gaps 1 and 2."""
    entry = next(iter(calibration.denoisers.values()))
    steps = calibration.steps
    parts = {"early (0-20%)": (0, 0.2), "middle (20-60%)": (0.2, 0.6), "late (60-98%)": (0.6, 0.98)}
    summary = {}
    for branch, pairs in entry.branches.items():
        for pair in ((1, 1), (2, 1), (3, 1)):
            table = pairs.get(pair)
            if table is None:
                continue
            for part, (lo, hi) in parts.items():
                rows = [i for i in range(steps) if lo * steps <= i < hi * steps and table["cos_mean"][i] is not None]
                if rows:
                    summary[f"{branch} g{pair[0]}m{pair[1]} {part}"] = {
                        f: round(float(np.mean([table[f][i] for i in rows])), 3)
                        for f in ("cos_mean", "cos_std", "ratio_mean", "gain_mean")
                    }
            last = steps - 1
            if table["cos_mean"][last] is not None:
                summary[f"{branch} g{pair[0]}m{pair[1]} last step"] = {
                    f: round(table[f][last], 3) for f in ("cos_mean", "cos_std", "ratio_mean", "gain_mean")}
    return summary


def summarise(results: dict, min_saving: float) -> None:
    rows = list(results["configs"].values())
    print(f"\nmodel {results['setting']['model']}, {results['setting']['steps']} steps, "
          f"{len(results['setting']['eval_prompts'])} tune prompts; PSNR/SSIM against the full run")
    print("calibration (mean over the part of the run; gXmY: delta over g steps, predicting m ahead):")
    for key, value in results.get("calibration_summary", {}).items():
        print(f"  {key:34s} " + ", ".join(f"{k} {v}" for k, v in value.items()))
    print("shorter runs: " + ", ".join(f"{n} steps {r['psnr']:.1f} dB" for n, r in
                                       sorted(results["shorter"].items(), key=lambda kv: int(kv[0]))))
    print("\nevery other step from the start step (same cost for every predictor):")
    for start in sorted({r["start_fraction"] for r in rows}):
        line = [f"start {start:.2f}"]
        for r in rows:
            if r["start_fraction"] == start and r["error_budget"] == UNLIMITED:
                line.append(f"{variant(r)} {r['psnr']:.1f} dB ({r['ideal_speedup']:.2f}x)")
        print("  " + ", ".join(line))
    print("\nselection, step 1: the variant with the best mean PSNR over the start fractions above")
    pattern = {}
    for r in rows:
        if r["error_budget"] == UNLIMITED:
            pattern.setdefault(variant(r), []).append(r["psnr"])
    means = {p: float(np.mean(v)) for p, v in pattern.items()}
    for p, v in sorted(means.items(), key=lambda kv: -kv[1]):
        print(f"  {p:18s} {v:.2f} dB")
    chosen = max(means, key=means.get)
    eligible = [r for r in rows if 1 - r["cost"] >= min_saving - 1e-9 and r["error_budget"] < UNLIMITED]
    print(f"\nstep 2: best PSNR per variant among budgeted configurations saving >= {min_saving:.0%} of calls:")
    best_of = {}
    for predictor in sorted({variant(r) for r in rows}):
        mine = [r for r in eligible if variant(r) == predictor]
        if mine:
            best = best_of[predictor] = max(mine, key=lambda r: r["psnr"])
            shorter = best["shorter_psnr_same_cost"]
            print(f"  {predictor:18s} {best['psnr']:.2f} dB (worst prompt {best['psnr_min']:.2f}) SSIM "
                  f"{best['ssim']:.4f} at {best['ideal_speedup']:.2f}x (start {best['start_fraction']}, budget "
                  f"{best['error_budget']}, max {best['max_consecutive']}); shorter run at that cost "
                  + (f"{shorter:.2f} dB" if shorter is not None else "not measured"))
    if chosen in best_of:
        best = best_of[chosen]
        keys = ("predictor", "space", "start_fraction", "error_budget", "max_consecutive")
        print(f"\nselected: {json.dumps({k: best.get(k, 'output') for k in keys})}")


if __name__ == "__main__":
    sys.exit(main())
