"""CPU seconds of each stage of one editing case: how long the tuning and test runs will take on this machine.

    python eval/edit_timing.py --model tiny-t2i --guidance-scale 3

CPU seconds of the process (``time.process_time``) are printed beside wall seconds: on a shared machine the
wall time stretches, the CPU time much less. Nothing is cached, so preparation is measured in full.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="recipe name or file, or pipeline folder (default: the embedded model)")
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument("--case", type=int, default=0, help="index of the tune edit timed")
    args = parser.parse_args(argv)
    import torch

    from taocache.edit.cases import build_cases
    from taocache.edit.config import default_config
    from taocache.edit.editor import NonRigidEditor
    from taocache.edit.methods import default_settings, run_baseline
    from taocache.edit.scoring import score_edit
    from taocache.recipes import load_pipeline
    from taocache.world import render

    torch.set_num_threads(1)
    pipe, recipe = load_pipeline(args.model, kind="image")
    config = default_config(recipe.name).with_values(guidance_scale=args.guidance_scale)
    case = build_cases(args.case + 1, scenes="tune")[args.case]
    image = render(case.source, seed=case.seed)
    seconds = {}

    def clock(name, work):
        cpu, wall = time.process_time(), time.perf_counter()
        result = work()
        seconds[name] = {"cpu": round(time.process_time() - cpu, 3), "wall": round(time.perf_counter() - wall, 3)}
        print(f"{name}: {seconds[name]['cpu']:.2f} CPU s ({seconds[name]['wall']:.2f} s wall)", flush=True)
        return result

    editor = NonRigidEditor(pipe, config, cache_dir=None, progress=False)
    source, target = case.source.caption, case.target.caption
    prepared = clock("preparation", lambda: editor.prepare(image, source, target, config))
    edit = clock("non-rigid", lambda: editor.edit(prepared))
    clock("scoring", lambda: score_edit(case, edit.image, image))
    for method, setting in default_settings(config).items():
        if method != "non-rigid":
            clock(method, lambda m=method, s=setting: run_baseline(pipe, m, s, image, source, target, config,
                                                                   seed=case.seed))
    print(json.dumps({"model": recipe.name, "guidance_scale": args.guidance_scale, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
