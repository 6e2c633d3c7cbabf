"""Tune every method on an equal footing and write the chosen settings as a sweep the benchmark reads.

    OMP_NUM_THREADS=1 python eval/tune_peers.py --steps 20 --out eval/sweeps/tuned-20.toml
    taocache bench --sweep eval/sweeps/tuned-20.toml       # then measured on the held-out (test) captions

Every method, TaoCache included, gets the same number of candidate settings (``--per-method``, spread evenly
over its list below, from mild to aggressive), and every candidate is run by the benchmark harness on the same
captions of the sample world's *tune* split (``scenes_of("tune", video=True)``): the odd ones are evaluated,
the even ones calibrate TaoCache and MagCache. The test captions, on which the benchmark reports, play no part.
Per method, the candidates' frontier (call ratio against mean PSNR against the full run) is formed, and the
frontier points that bracket each target call ratio (1.5x, 2x, 3x) are kept: the benchmark can then read every
method off at those ratios by interpolation, none extrapolated. The sweep file states, per method, how its
settings were chosen, and the report repeats it. The harness's results (``results.jsonl`` beside ``--work``)
resume when the command is run again.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from taocache.bench import Benchmark, BenchPlan
from taocache.bench.methods import make_method
from taocache.bench.records import read_records
from taocache.bench.sweep import spread
from taocache.metrics import LPIPS
from taocache.report.aggregate import TARGETS, aggregate, split_records
from taocache.results import atomic_write_text
from taocache.world import scenes_of

logger = logging.getLogger("tune_peers")


def candidates(steps: int) -> dict[str, list[dict]]:
    """Each method's candidate settings, mild to aggressive (call ratios from about 1.2x to past 3x)."""
    late, early = max(2, round(0.3 * steps)), max(1, round(0.1 * steps))

    def tao(start_fraction, error_budget, max_consecutive):
        return {"start_fraction": start_fraction, "error_budget": error_budget, "max_consecutive": max_consecutive}

    return {
        # Like TaylorSeer's and static skipping's, TaoCache's candidates vary where skipping may start.
        "taocache": [
            {"start_fraction": 0.3, "error_budget": 0.2, "max_consecutive": 1},
            {"start_fraction": 0.3, "error_budget": 0.1, "max_consecutive": 1},
            {"start_fraction": 0.2, "error_budget": 0.2, "max_consecutive": 1},
            {"start_fraction": 0.2, "error_budget": 0.1, "max_consecutive": 1},
            {"start_fraction": 0.3, "error_budget": 0.8, "max_consecutive": 2},
            {"start_fraction": 0.3, "error_budget": 0.4, "max_consecutive": 2},
            {"start_fraction": 0.2, "error_budget": 0.8, "max_consecutive": 2, "predictor": "reuse"},
            {"start_fraction": 0.2, "error_budget": 0.8, "max_consecutive": 2},
            {"start_fraction": 0.2, "error_budget": 1.6, "max_consecutive": 3},
            {"start_fraction": 0.2, "error_budget": 1.6, "max_consecutive": 3, "predictor": "reuse"},
            {"start_fraction": 0.1, "error_budget": 3.2, "max_consecutive": 3},
            {"start_fraction": 0.1, "error_budget": 3.2, "max_consecutive": 4},
        ],
        "teacache": [{"rel_l1_thresh": t} for t in (0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5)],
        "easycache": [{"threshold": t} for t in (0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5)],
        "magcache": [{"threshold": t, "max_skip_steps": k} for k in (2, 4) for t in (0.02, 0.04, 0.08, 0.16, 0.32, 0.64)],
        "fbcache": [{"threshold": t} for t in (0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5)],
        "pab": [{"spatial": s, "cross": c, "timestep_range": r} for r in ([100, 800], [0, 1000])
                for s, c in ((2, None), (3, None), (2, 4), (3, 6), (4, None), (4, 8))],
        "taylorseer": [{"interval": i, "start": s} for s in (late, early) for i in (2, 3, 4)]
        + [{"interval": i, "start": s, "order": 2} for s in (late, early) for i in (2, 3, 4)],
        "static": [{"interval": i, "start": s} for s in (late, early) for i in (2, 3, 4)]
        + [{"interval": i, "start": s, "compute_last": False} for s in (late, early) for i in (2, 3, 4)],
        # Stacks, mild to aggressive: TaoCache's candidates above on TeaCache's and PAB's.
        "taocache+teacache": [{"taocache": tao(*t), "teacache": {"rel_l1_thresh": r}} for t, r in (
            ((0.3, 0.2, 1), 0.05), ((0.2, 0.2, 1), 0.05), ((0.3, 0.2, 1), 0.08), ((0.2, 0.2, 1), 0.08),
            ((0.3, 0.8, 2), 0.08), ((0.2, 0.8, 2), 0.08), ((0.2, 0.8, 2), 0.1), ((0.2, 0.8, 2), 0.15),
            ((0.2, 1.6, 3), 0.1), ((0.2, 1.6, 3), 0.15), ((0.1, 3.2, 3), 0.15), ((0.1, 3.2, 3), 0.2))],
        "taocache+pab": [{"taocache": tao(*t), "pab": {"spatial": sp, "cross": c, "timestep_range": [100, 800]}}
                         for t, sp, c in (((0.3, 0.2, 1), 2, None), ((0.3, 0.2, 1), 2, 4), ((0.2, 0.2, 1), 2, 4),
                                          ((0.3, 0.8, 2), 2, None), ((0.3, 0.8, 2), 2, 4), ((0.2, 1.6, 3), 2, 4),
                                          ((0.2, 1.6, 3), 3, 6), ((0.1, 3.2, 3), 3, 6))],
        "steps": [{"steps": n} for n in sorted({max(1, round(steps * f)) for f in
                                                (0.85, 0.75, 0.67, 0.6, 0.5, 0.45, 0.4, 0.33, 0.3, 0.25, 0.2, 0.15)},
                                               reverse=True) if n < steps],
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="recipe name, folder or hub id (default: tiny-t2v)")
    p.add_argument("--random", action="store_true", help="a random tiny WanPipeline (tests the script only)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the recipe's)")
    p.add_argument("--methods", default=",".join(n for n in candidates(20) if "+" not in n),
                   help="comma-separated methods to tune (default: every single method; stacks on request)")
    p.add_argument("--per-method", type=int, default=8, help="candidate settings per method (the same for all)")
    p.add_argument("--num-prompts", type=int, default=8, help="tune captions evaluated (the odd ones)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", type=Path, required=True, help="the sweep file to write (TOML)")
    p.add_argument("--work", type=Path, help="folder of the harness's results (default: beside --out)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    return p.parse_args(argv)


def load(args):
    if args.random:
        from taocache.testing import tiny_wan_pipeline

        pipe = tiny_wan_pipeline()
        pipe.set_progress_bar_config(disable=True)
        call = {"height": 32, "width": 32, "num_frames": 9, "num_inference_steps": args.steps or 10,
                "guidance_scale": 5.0, "max_sequence_length": 16}
        return pipe, call, "tiny-random", "random tiny WanPipeline"
    from taocache.recipes import load_pipeline

    pipe, recipe = load_pipeline(args.model, kind="video")
    return pipe, recipe.call_kwargs(num_inference_steps=args.steps), recipe.name, recipe.model


def bracketing(settings: list[dict], targets=TARGETS) -> list[dict]:
    """The frontier points (call ratio, mean PSNR) of one method that bracket each target call ratio; where
    the frontier stops short of a target, its last point (the method's furthest reach)."""
    ran = [s for s in settings if s.get("call_ratio") and s.get("psnr") is not None]
    frontier, best = [], float("-inf")
    for s in sorted(ran, key=lambda s: (-s["call_ratio"], -s["psnr"])):
        if s["psnr"] > best:
            frontier.append(s)
            best = s["psnr"]
    frontier.sort(key=lambda s: s["call_ratio"])
    kept = []
    for target in targets:
        below = [s for s in frontier if s["call_ratio"] <= target]
        above = [s for s in frontier if s["call_ratio"] >= target]
        kept += below[-1:] + above[:1] if above else frontier[-1:]
    return [s for i, s in enumerate(kept) if s not in kept[:i]]


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return _inline(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to a sweep")


def _inline(settings: dict) -> str:
    return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in settings.items() if v is not None) + " }"


def sweep_text(chosen: dict[str, list[dict]], notes: dict[str, str], call: dict, description: str) -> str:
    lines = [f"# Written by eval/tune_peers.py. {description}", f"description = {_toml_value(description)}", "",
             "[call]", f"num_inference_steps = {call['num_inference_steps']}", ""]
    for name, settings in chosen.items():
        lines += ["[[method]]", f"name = {_toml_value(name)}", f"chosen = {_toml_value(notes[name])}",
                  "settings = [" + ", ".join(_inline(s) for s in settings) + "]", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.out.exists() and not args.force:
        raise SystemExit(f"{args.out} exists; pass --force to replace it")
    pipe, call, model, source = load(args)
    steps = int(call["num_inference_steps"])
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    every = candidates(steps)
    unknown = sorted(set(names) - set(every))
    if unknown:
        raise SystemExit(f"no candidates for {unknown}; tunable: {sorted(every)}")
    short = [n for n in names if len(every[n]) < args.per_method]
    if short:
        raise SystemExit(f"{short} have fewer than --per-method {args.per_method} candidates at {steps} steps")
    tune = [scene.caption for scene in scenes_of("tune", video=True)]
    prompts = spread(tune[1::2], args.num_prompts)
    calibration = spread(tune[0::2], 4)
    methods = [make_method(n, s) for n in names for s in spread(every[n], args.per_method)]
    work = args.work or args.out.with_suffix("")
    results = work / "results.jsonl"
    plan = BenchPlan(model=model, source=source, call=call, prompts=prompts, seeds=args.seeds, methods=methods,
                     repeats=1, media_pairs=0, calibration_prompts=calibration, cvvdp=False,
                     sweep="tune-peers", description="equal-footing tuning on the tune captions")
    Benchmark(pipe, plan, results, lpips=LPIPS("alex", None, "not used for tuning"), progress=False).run()
    _, runs = split_records(read_records(results))
    settings = aggregate(runs)["settings"]
    chosen, notes = {}, {}
    given = {m.label: m.given for m in methods}
    for name in names:
        # this run's candidates only: a resumed results file may hold those of an earlier candidate list
        own = [s for s in settings if s["method"] == name and s["label"] in given]
        kept = bracketing(own)
        if not kept:
            errors = sorted({str(s["error"]) for s in own if s.get("error")})
            logger.warning("%s: no candidate ran (%s); left out", name, "; ".join(errors) or "no runs")
            continue
        chosen[name] = [given[s["label"]] for s in kept]
        notes[name] = (
            f"{args.per_method} candidates on {len(prompts)} tune captions x seeds {args.seeds} ({steps} steps); "
            "kept the frontier points (call ratio, mean PSNR) bracketing 1.5x, 2x and 3x: "
            + ", ".join(f"{s['label']} ({s['call_ratio']:.2f}x, {s['psnr']:.2f} dB)" for s in kept)
        )
        logger.info("%s: %s", name, notes[name])
    description = (f"{model}, {steps} steps: each method's settings chosen on an equal footing on the tune "
                   f"captions ({args.per_method} candidates each)")
    atomic_write_text(args.out, sweep_text(chosen, notes, call, description))
    print(f"wrote {args.out}: {sum(len(v) for v in chosen.values())} settings of {len(chosen)} methods")
    return 0


if __name__ == "__main__":
    sys.exit(main())
