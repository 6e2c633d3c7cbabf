"""The cached runs tests/test_context_parallel.py compares: made by each rank of a two-process job (this file
run as a script, one process per rank, Ulysses degree 2 over gloo) and by the single process (imported).

Every TaoCache and TeaCache decision is voted on by all ranks as it is made: ranks that would decide
differently stop at that call with ``RanksDisagree`` on every rank at once, instead of hanging in the next
collective of the attention. Each rank saves what it measured to ``<workdir>/rank<N>.pt``.

    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 python tests/context_parallel_runs.py WORKDIR
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import sys
from datetime import timedelta
from pathlib import Path
from unittest import mock

import torch

PROMPT = "a large red circle moves left on a dark background"
STEPS = 10
CALL = {
    "height": 32,
    "width": 32,
    "num_frames": 9,
    "guidance_scale": 5.0,
    "max_sequence_length": 16,
    "num_inference_steps": STEPS,
}
#: TeaCache with the identity as its polynomial: the threshold applies to the indicator's change itself.
TEA = {"coefficients": [1.0, 0.0], "indicator": "modulated_input", "warmup_steps": 1}
ULYSSES = 2


class RanksDisagree(RuntimeError):
    """Raised on every rank at the same call."""


def build_pipeline():
    from taocache.testing import tiny_wan_pipeline

    torch.set_num_threads(1)
    pipe = tiny_wan_pipeline(seed=0)  # seeded: the same weights in every process
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe):
    return pipe(PROMPT, generator=torch.Generator("cpu").manual_seed(0), output_type="np", **CALL).frames[0]


def digest(content) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def statistics_digest(calibration) -> str:
    """A calibration's content without its creation time."""
    return digest({k: v for k, v in calibration.to_dict().items() if k != "created"})


def _vote(what: str, decided: bool, group) -> None:
    if group is None:
        return
    votes = [torch.zeros(1) for _ in range(torch.distributed.get_world_size(group))]
    torch.distributed.all_gather(votes, torch.tensor([float(decided)]), group=group)
    if len({float(v) for v in votes}) > 1:
        raise RanksDisagree(f"ranks disagree at {what}: {[bool(v) for v in votes]}")


@contextlib.contextmanager
def watched(group, log: list):
    """Log every decision (TeaCache: with the change it decided on and this rank's own change) and vote."""
    from taocache.core import compat
    from taocache.taocache.hook import TaoCacheHook
    from taocache.teacache.hooks import TeaCacheHeadHook
    from taocache.teacache.indicators import per_sample_rel_l1

    decide, before = TeaCacheHeadHook._decide, TaoCacheHook._before

    def tea_decide(self, module, args, kwargs):
        context = compat.context_of(self.state_manager)
        if context is None:
            return decide(self, module, args, kwargs)
        state = self.state_manager.get_state()
        previous = state.previous_indicator
        skip = decide(self, module, args, kwargs)
        current, local = state.previous_indicator, None
        if previous is not None and previous.shape == current.shape:  # this rank's shard alone
            local = float(per_sample_rel_l1(current, previous, state.num_samples or 1).max())
        change = None if state.indicator_change is None else float(state.indicator_change.max())
        log.append({"cache": "TeaCache", "branch": context.name, "step": state.step, "skip": skip,
                    "change": change, "local_change": local})
        _vote(f"TeaCache {context.name} step {state.step}", skip, group)
        return skip

    def tao_before(self, args, kwargs):
        call, prediction = before(self, args, kwargs)
        log.append({"cache": "TaoCache", "branch": call.context, "step": call.step, "skip": prediction is not None})
        _vote(f"TaoCache {call.context} step {call.step}", prediction is not None, group)
        return call, prediction

    with mock.patch.object(TeaCacheHeadHook, "_decide", tea_decide), \
            mock.patch.object(TaoCacheHook, "_before", tao_before):
        yield


def decisions(log: list) -> dict[str, str]:
    """Per cache and branch, a letter a step: C computed, P predicted (TaoCache), S skipped (TeaCache)."""
    out = {}
    for entry in log:
        key = f"{entry['cache']}/{entry['branch']}"
        letter = ("P" if entry["cache"] == "TaoCache" else "S") if entry["skip"] else "C"
        text = out.get(key, "")
        out[key] = text + "." * (entry["step"] - len(text)) + letter
    return out


def cached_run(pipe, configs, group, calls: int = 1) -> dict:
    """``calls`` pipeline calls with ``configs`` enabled; the last call's frames and decisions."""
    import taocache
    from taocache.taocache.hook import hook_of

    taocache.enable(pipe, configs)
    try:
        log, error, frames = [], None, None
        with watched(group, log):
            try:
                for _ in range(calls):
                    log.clear()
                    frames = generate(pipe)
            except RanksDisagree as err:
                error = str(err)
        hook = hook_of(pipe.transformer)
        used = statistics_digest(hook.calibrations[0]) if hook is not None and hook.calibrations else None
        return {"frames": frames, "log": log, "decisions": decisions(log), "error": error, "calibration": used}
    finally:
        taocache.disable(pipe)


def run_all(pipe, group, workdir: Path) -> dict:
    """The runs made alike by each rank and by the single process."""
    import taocache
    from taocache.taocache.calibration import Calibration

    results = {"none": {"frames": generate(pipe)}}

    # TaoCache alone: the first call records a calibration (kept in memory), the second uses it
    results["taocache"] = cached_run(pipe, [taocache.TaoCacheConfig()], group, calls=2)

    # taocache.calibrate: every rank measures, one writes
    writes, save = [], Calibration.save

    def counted_save(self, *args, **kwargs):
        writes.append(1)
        return save(self, *args, **kwargs)

    path = workdir / "calibration.json"
    with mock.patch.object(Calibration, "save", counted_save):
        calibration = taocache.calibrate(pipe, [PROMPT], call_kwargs=CALL, path=path, progress=False)
    results["calibrate"] = {
        "content": digest(calibration.to_dict()),
        "statistics": statistics_digest(calibration),
        "file": hashlib.sha256(path.read_bytes()).hexdigest()[:16],
        "writes": len(writes),
        "source": calibration.source,
    }

    # a configuration file with that calibration held in memory, saved beside it (what taocache.tune writes)
    writes.clear()
    configs = [taocache.TeaCacheConfig(rel_l1_thresh=0.1, **TEA), taocache.TaoCacheConfig(calibration=calibration)]
    with mock.patch.object(Calibration, "save", counted_save):
        saved = taocache.save_configs(workdir / "configs.json", configs)
    results["save_configs"] = {
        "writes": len(writes),
        "files": sorted(p.name for p in saved.parent.glob("configs*")),
        "loaded": [type(c).__name__ for c in taocache.load_configs(saved)],
    }

    # TeaCache measuring only (threshold 0 computes every step), then at 1.5 x the median change
    measured = cached_run(pipe, [taocache.TeaCacheConfig(rel_l1_thresh=0.0, **TEA)], group)
    changes = [e["change"] for e in measured["log"] if e["change"] is not None and e["step"] < STEPS - 1]
    threshold = 1.5 * statistics.median(changes)
    results["measured"] = {"log": measured["log"], "threshold": threshold}
    results["teacache"] = cached_run(pipe, [taocache.TeaCacheConfig(rel_l1_thresh=threshold, **TEA)], group)
    tao = taocache.TaoCacheConfig(calibration=Calibration.load(path))
    results["stack"] = cached_run(pipe, [taocache.TeaCacheConfig(rel_l1_thresh=threshold, **TEA), tao], group)
    return results


def split_ranks(pipe, group, measured_log: list) -> dict:
    """TeaCache with its threshold between the ranks' own changes at cond step 1, as the package runs it and
    with the reduction over the ranks taken out (which must make the ranks disagree there)."""
    import taocache
    from taocache.teacache import hooks

    first = next(e for e in measured_log if e["branch"] == "cond" and e["step"] == 1)
    local = [torch.zeros(1, dtype=torch.float64) for _ in range(torch.distributed.get_world_size(group))]
    torch.distributed.all_gather(local, torch.tensor([first["local_change"]], dtype=torch.float64), group=group)
    local = [float(v) for v in local]
    threshold = (min(local) + max(local)) / 2
    config = taocache.TeaCacheConfig(rel_l1_thresh=threshold, **TEA)
    reduced = cached_run(pipe, [config], group)
    with mock.patch.object(hooks, "context_parallel_group", lambda module: None):
        unreduced = cached_run(pipe, [config], group)
    return {
        "local_changes": local,
        "reduced_change": first["change"],
        "threshold": threshold,
        "reduced": {k: reduced[k] for k in ("decisions", "error")},
        "unreduced": {k: unreduced[k] for k in ("decisions", "error")},
    }


def enabled_first(workdir: Path, group, threshold: float) -> dict:
    """The stack enabled before ``enable_parallelism`` (on a second pipeline: parallelism cannot be enabled
    twice): diffusers' split and gather then wrap the caches' hooks instead of the reverse."""
    import taocache
    from taocache.core import parallel
    from taocache.taocache.calibration import Calibration

    pipe = build_pipeline()
    tao = taocache.TaoCacheConfig(calibration=Calibration.load(workdir / "calibration.json"))
    configs = [taocache.TeaCacheConfig(rel_l1_thresh=threshold, **TEA), tao]
    taocache.enable(pipe, configs)
    parallel.enable_context_parallel(pipe, ulysses_degree=ULYSSES)
    with mock.patch.object(taocache, "enable"), mock.patch.object(taocache, "disable"):  # already on, stays
        return cached_run(pipe, configs, group)


def rank_main(workdir: Path) -> None:
    from taocache.core import parallel

    rank = int(os.environ["RANK"])
    torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=120))
    try:
        pipe = build_pipeline()
        parallel.enable_context_parallel(pipe, ulysses_degree=ULYSSES)
        group = parallel.context_parallel_group(pipe.transformer)
        assert group is not None and torch.distributed.get_world_size(group) == ULYSSES
        results = run_all(pipe, group, workdir)
        results["split"] = split_ranks(pipe, group, results["measured"]["log"])
        results["enabled_first"] = enabled_first(workdir, group, results["measured"]["threshold"])
        torch.save(results, workdir / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    rank_main(Path(sys.argv[1]))
