"""``taocache bench`` and ``taocache report``: thin wrappers over the harness and the report writer."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from .common import add_model_argument

logger = logging.getLogger(__name__)

#: Where benchmarks write unless told otherwise: under the current folder.
RUNS_DIR = Path("eval", "runs")


def register(subparsers) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="run the full pipeline and every method of a sweep; score against the full run and time it",
        description=(
            "Benchmark caches against the full run. Results stream to OUT/results.jsonl (re-running the "
            "same command resumes); the report is written to OUT/report/. Under `accelerate launch` the "
            "prompt/seed jobs are split over the processes."
        ),
    )
    add_model_argument(bench, "the embedded model of --kind")
    bench.add_argument(
        "--kind", choices=("video", "image"), default="video", help="default model kind (video)"
    )
    bench.add_argument("--sweep", help="sweep name under eval/sweeps/ or a TOML file (default: default)")
    bench.add_argument("--methods", help="comma-separated subset of the sweep's methods")
    bench.add_argument("--prompts", help="prompt file (default: the held-out captions of the sample world)")
    bench.add_argument("--num-prompts", type=int, help="use this many prompts, spread evenly over the set")
    bench.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the sweep's, else 0)")
    bench.add_argument(
        "--steps", type=int, help="denoising steps of the full run (default: the recipe's or sweep's)"
    )
    bench.add_argument(
        "--repeats", type=int, help="timed runs per method and prompt after the warm-up (default 3)"
    )
    bench.add_argument(
        "--media-pairs", type=int, default=1, help="prompt/seed pairs to keep GIFs of (default 1)"
    )
    bench.add_argument(
        "--calibration-prompts",
        nargs="+",
        help="prompts of the calibration runs (default: 4 training captions of the sample world)",
    )
    bench.add_argument("--lpips-net", default="alex", choices=("alex", "vgg", "squeeze"))
    bench.add_argument("--fps", type=float, default=16.0,
                       help="frame rate the clips are watched at by ColorVideoVDP (default 16)")
    bench.add_argument("--no-cvvdp", action="store_true",
                       help="leave out ColorVideoVDP (about 0.1 s of CPU per 9x64x64 clip)")
    bench.add_argument("--out", type=Path, help="output folder (default: eval/runs/MODEL-SWEEP under the current folder)")
    bench.add_argument(
        "--device", help="cpu, cuda, cuda:1 ... (default: the process's accelerator, else cpu)"
    )
    bench.add_argument("--threads", type=int, help="torch CPU threads")
    bench.add_argument("--force", action="store_true", help="start over when OUT holds a different benchmark")
    bench.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.set_defaults(func=run_bench)

    report = subparsers.add_parser(
        "report",
        help="turn a results file into an HTML page, a Markdown and a JSON summary",
        description="Write report.html (self-contained), summary.md and summary.json for RESULTS.jsonl.",
    )
    report.add_argument("results", type=Path, help="results file written by `taocache bench`")
    report.add_argument("--out", type=Path, help="output folder (default: report/ beside the results file)")
    report.add_argument("--force", action="store_true", help="overwrite an existing report")
    report.add_argument("--no-html", action="store_true", help="only the Markdown and JSON summaries")
    report.add_argument(
        "--copy-media",
        action="store_true",
        help="copy the featured GIFs into OUT/media (a summary to publish)",
    )
    report.set_defaults(func=run_report)


def _distributed(device: str | None):
    """(state, process index, process count, accelerator device or None) from accelerate.

    Under ``accelerate launch`` every process gets its index; on a machine without GPUs the processes talk
    over gloo on the CPU (launch them with ``--multi_gpu --num_processes N``, which starts them with torchrun,
    or with accelerate's MPI launch for ``--cpu``). A plain ``python -m taocache.cli`` is one process.
    """
    import torch

    try:
        from accelerate import PartialState
    except ImportError:
        return None, 0, 1, None
    state = PartialState(cpu=(device or "").startswith("cpu") or not torch.cuda.is_available())
    accelerator = str(state.device) if state.device.type != "cpu" else None
    return state, state.process_index, state.num_processes, accelerator


def _check_out(results: Path, plan, force: bool) -> None:
    """Refuse to mix two different benchmarks in one results file (unless --force moves the old one aside)."""
    from ..bench.records import read_records

    sessions = [r for r in read_records(results) if r.get("type") == "session"]
    mine = _comparable(plan)
    mismatched = [s for s in sessions if any(s.get(k, v) != v for k, v in mine.items())]
    if not mismatched:
        return
    old = mismatched[0]
    if not force:
        differ = ", ".join(f"{k} {old.get(k)!r} here, {v!r} asked" for k, v in mine.items() if old.get(k, v) != v)
        raise FileExistsError(
            f"{results} holds a benchmark made otherwise ({differ}); choose another --out, or pass --force to "
            "move the old file aside"
        )
    aside = results.with_name(f"{results.name}.{time.strftime('%Y%m%d-%H%M%S')}.old")
    results.rename(aside)
    logger.info("moved the earlier results aside to %s", aside)


def _comparable(plan) -> dict:
    """What a session record must share with this plan for their runs to be compared in one file (records
    written before a field existed do not hold it and are not refused for it)."""
    return {
        "model": plan.model,
        "source": plan.source,
        "call": plan.call,
        "lpips_net": plan.lpips_net,
        "calibration_prompts": plan.calibration_prompts,
    }


def _check_at_least_one(name: str, value) -> None:
    """Given counts below 1 are refused (None: not given, the sweep's value is used)."""
    if value is not None and value < 1:
        raise ValueError(f"{name} {value} must be at least 1")


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from ..bench.records import merge_shards, shard_files
    from ..bench.runner import Benchmark, BenchPlan
    from ..bench.sweep import load_sweep, read_prompts, spread, world_calibration_prompts, world_prompts
    from ..recipes import check_device, load_pipeline

    for name in ("threads", "steps", "repeats", "num_prompts"):
        _check_at_least_one(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.media_pairs < 0:
        raise ValueError(f"--media-pairs {args.media_pairs} must be 0 or more")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    check_device(args.device)
    sweep = load_sweep(args.sweep).select(args.methods.split(",") if args.methods else None)
    state, index, count, accelerator = _distributed(args.device)
    device = args.device or accelerator or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe, recipe = load_pipeline(args.model, kind=args.kind, device=device)
    steps = args.steps if args.steps is not None else sweep.call.get("num_inference_steps")
    call = recipe.call_kwargs(**{**sweep.call, "num_inference_steps": steps})
    prompts = (
        read_prompts(args.prompts or sweep.run["prompts"])
        if (args.prompts or "prompts" in sweep.run)
        else None
    )
    num_prompts = args.num_prompts if args.num_prompts is not None else sweep.run.get("num_prompts")
    prompts = spread(prompts or world_prompts(recipe.kind), num_prompts)
    plan = BenchPlan(
        model=recipe.name,
        source=recipe.model,
        kind=recipe.kind,
        call=call,
        prompts=prompts,
        seeds=args.seeds if args.seeds is not None else sweep.run.get("seeds", [0]),
        methods=sweep.methods,
        repeats=args.repeats if args.repeats is not None else sweep.run.get("repeats", 3),
        media_pairs=args.media_pairs,
        calibration_prompts=args.calibration_prompts or world_calibration_prompts(recipe.kind),
        lpips_net=args.lpips_net,
        fps=args.fps,
        cvvdp=not args.no_cvvdp,
        sweep=sweep.name,
        description=sweep.description,
    )
    out = args.out or RUNS_DIR / f"{recipe.name}-{sweep.name}".replace("/", "_")
    results = out / "results.jsonl"
    if index == 0:
        _check_out(results, plan, args.force)
        if count == 1 and shard_files(results):  # left by an interrupted run over several processes
            print(f"merged {merge_shards(results)} records left by an interrupted multi-process run")
    if state is not None and count > 1:
        state.wait_for_everyone()
    bench = Benchmark(
        pipe,
        plan,
        results,
        device=device,
        process_index=index,
        process_count=count,
        progress=not args.no_progress,
    )
    bench.run()
    if count > 1:
        state.wait_for_everyone()
        if index != 0:
            return 0
        moved = merge_shards(results)
        print(f"merged {moved} records from {count} processes into {results}")
    print(f"results: {results}")
    if not args.no_report:
        from ..report import write_report

        paths = write_report(results, out / "report", overwrite=True)
        print(f"report: {paths['html']}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ..report import write_report

    if not args.results.is_file():
        raise FileNotFoundError(f"{args.results} does not exist (write one with `taocache bench`)")
    paths = write_report(
        args.results,
        args.out or args.results.parent / "report",
        overwrite=args.force,
        html=not args.no_html,
        copy_media=args.copy_media,
    )
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
