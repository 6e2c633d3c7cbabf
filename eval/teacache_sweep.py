"""TeaCache threshold sweep on a video model: measured speed-up and call ratio against PSNR to the full run.

For every step count, each tune caption is generated once in full (the reference), then with TeaCache at
each threshold, and with the plain shorter run that computes as many steps as TeaCache did (the equal-cost
baseline any cache has to beat). Quality and call ratio come from one pass; then every method is timed
(wall time and process CPU time of the pipeline call), the methods taking turns call by call so that the
machine's background load touches them alike, keeping each call's fastest of ``--repeats``. Results are
written as JSON after every step count.

    OMP_NUM_THREADS=1 python eval/teacache_sweep.py                # embedded tiny-t2v, fitted coefficients
    OMP_NUM_THREADS=1 python eval/teacache_sweep.py --steps 20 --thresholds 0.1 0.2 --captions 2
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from taocache.core.data import data_path
from taocache.metrics import psnr
from taocache.recipes import load_pipeline
from taocache.results import write_json
from taocache.teacache import TeaCacheConfig, apply_teacache, remove_teacache, teacache_stats
from taocache.world import scenes_of

logger = logging.getLogger("teacache_sweep")


def generate(pipe, call: dict, caption: str, seed: int) -> tuple[np.ndarray, float, float]:
    """Frames of one caption, and the wall time and process CPU time of the pipeline call."""
    generator = torch.Generator().manual_seed(seed)
    wall, cpu = time.perf_counter(), time.process_time()
    frames = pipe(prompt=caption, generator=generator, output_type="np", **call).frames[0]
    return np.asarray(frames), time.perf_counter() - wall, time.process_time() - cpu


@contextmanager
def teacache(pipe, config: TeaCacheConfig | None):
    """TeaCache on the transformer for the block (nothing when ``config`` is None), then removed."""
    if config is None:
        yield
        return
    apply_teacache(pipe.transformer, config)
    try:
        yield
    finally:
        remove_teacache(pipe.transformer)


@dataclass
class Method:
    """One way of sampling: a label, its call arguments and its TeaCache config (None: no cache)."""

    label: str
    call: dict
    config: TeaCacheConfig | None = None
    row: dict = field(default_factory=dict)


def measure_quality(pipe, method: Method, captions, seed, references) -> list[np.ndarray]:
    """Frames of every caption, plus the call ratio and PSNR against ``references`` in ``method.row``."""
    with teacache(pipe, method.config):
        frames = [
            generate(pipe, method.call, c, seed + i)[0] for i, c in enumerate(tqdm(captions, leave=False))
        ]
        counts = teacache_stats(pipe.transformer) if method.config is not None else None
    steps = method.call["num_inference_steps"]
    if counts is not None:
        computed = sum(c["computed"] for c in counts.values())
        ratio = computed / (computed + sum(c["skipped"] for c in counts.values()))
    else:
        ratio = steps / method.row["steps"]
    method.row.update(
        method=method.label,
        call_ratio=ratio,
        psnr_db=None
        if references is None
        else float(np.mean([psnr(f, r) for f, r in zip(frames, references)])),
    )
    return frames


def measure_time(pipe, methods: list[Method], captions, seed, repeats) -> None:
    """Per method, summed over captions, the fastest of ``repeats`` calls; methods take turns call by call,
    so that a change in the machine's background load touches all of them alike."""
    best = {m.label: [[np.inf, np.inf] for _ in captions] for m in methods}
    for _ in tqdm(range(repeats), desc="timing", leave=False):
        for i, caption in enumerate(captions):
            for method in methods:
                with teacache(pipe, method.config):
                    _, wall, cpu = generate(pipe, method.call, caption, seed + i)
                slot = best[method.label][i]
                slot[0], slot[1] = min(slot[0], wall), min(slot[1], cpu)
    full = np.sum(best[methods[0].label], axis=0)
    for method in methods:
        wall, cpu = np.sum(best[method.label], axis=0)
        method.row.update(
            wall_seconds=float(wall),
            cpu_seconds=float(cpu),
            speedup_wall=float(full[0] / wall),
            speedup_cpu=float(full[1] / cpu),
        )


def sweep(
    pipe, recipe, captions, steps_list, thresholds, coefficients, warmup, repeats, seed, output
) -> dict:
    """Measure quality and call ratio of every method, then time them all; rewrite ``output`` as rows come."""
    report = {
        "model": recipe.name,
        "coefficients": str(coefficients) if coefficients else "found for the model by apply_teacache",
        "warmup_steps": warmup if warmup is not None else "the coefficient file's",
        "timing": f"per pipeline call the fastest of {repeats}, methods taking turns, summed over captions; "
        "wall time and the process's CPU time (one torch thread)",
        "captions": captions,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch threads {torch.get_num_threads()}",
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "rows": [],
    }
    for steps in steps_list:
        call = recipe.call_kwargs(num_inference_steps=steps)
        methods = [Method("full", call, row={"steps": steps})]
        references = measure_quality(pipe, methods[0], captions, seed, None)
        for threshold in thresholds:
            settings = {"rel_l1_thresh": threshold}
            if warmup is not None:
                settings["warmup_steps"] = warmup
            config = (
                TeaCacheConfig.from_file(coefficients, **settings)
                if coefficients
                else TeaCacheConfig(**settings)
            )
            method = Method(f"teacache {threshold:g}", call, config, row={"steps": steps})
            measure_quality(pipe, method, captions, seed, references)
            methods.append(method)
            equal = max(2, round(steps * method.row["call_ratio"]))  # the plain run computing as many steps
            if equal < steps and all(m.label != f"shorter {equal}" for m in methods):
                shorter = Method(
                    f"shorter {equal}", recipe.call_kwargs(num_inference_steps=equal), row={"steps": steps}
                )
                measure_quality(pipe, shorter, captions, seed, references)
                methods.append(shorter)
        measure_time(pipe, methods, captions, seed, repeats)
        report["rows"].extend(m.row for m in methods)
        write_json(output, report)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=None, help="recipe, folder or hub id (default: the embedded video model)"
    )
    parser.add_argument(
        "--coefficients",
        type=Path,
        default=data_path("pipelines", "coefficients", "tiny-t2v-teacache.json"),
        help="fitted coefficient file; 'auto' lets apply_teacache find coefficients for the model",
    )
    parser.add_argument("--captions", type=int, default=4, help="tune captions of the sample world")
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3])
    parser.add_argument(
        "--warmup", type=int, default=None, help="warm-up steps (default: the coefficient file's)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per caption; the fastest counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("eval", "runs", "teacache_sweep.json"))
    parser.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)

    if args.repeats < 1 or args.captions < 1:
        raise SystemExit("--repeats and --captions must be >= 1")
    if args.output.exists() and not args.force:
        raise SystemExit(f"{args.output} exists; pass --force to overwrite it")
    coefficients = None if str(args.coefficients) == "auto" else args.coefficients
    captions = [scene.caption for scene in scenes_of("tune", video=True)[: args.captions]]
    pipe, recipe = load_pipeline(args.model, kind="video")
    report = sweep(
        pipe,
        recipe,
        captions,
        args.steps,
        args.thresholds,
        coefficients,
        args.warmup,
        args.repeats,
        args.seed,
        args.output,
    )

    print(
        f"{recipe.name}, {len(captions)} tune captions; PSNR against the full run of the same step count"
    )
    print(
        f"{'steps':>5}  {'method':<15} {'wall s':>7} {'speed-up':>8} {'CPU s':>7} {'speed-up':>8} "
        f"{'calls':>6} {'PSNR dB':>9}"
    )
    for line in report["rows"]:
        quality = "reference" if line["psnr_db"] is None else f"{line['psnr_db']:.2f}"
        wall = f"{line['wall_seconds']:7.2f} {line['speedup_wall']:7.2f}x"
        cpu = f"{line['cpu_seconds']:7.2f} {line['speedup_cpu']:7.2f}x"
        print(f"{line['steps']:>5}  {line['method']:<15} {wall} {cpu} {line['call_ratio']:6.2f} {quality:>9}")
    print(f"written {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
