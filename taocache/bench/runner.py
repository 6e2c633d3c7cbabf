"""The benchmark loop: for each prompt and seed, the full run, then every method setting, each measured.

A run is measured in two parts. The first call, *instrumented*, counts the work (FLOPs) every denoiser call did,
records the per-step decisions, the peak memory and the output scored against the full run; it also serves
as the warm-up. Then ``repeats`` plain calls are timed (whole call and denoising loop) and their medians
kept. Every finished run is appended to the results file at once, so an interrupted benchmark resumes
where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import statistics
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core import compat
from ..core.denoisers import denoisers_of
from ..core.frames import frames_of
from ..metrics import LPIPS, VideoVDP, load_cvvdp, load_lpips, quality_row
from ..results.environment import describe_environment
from ..results.media import difference_image, side_by_side, write_video
from .methods import BenchContext, Method, Unsupported, make_method
from .probe import CallTrace, DenoiserProbe, PeakMemory
from .records import (
    SCHEMA,
    append_record,
    finished_keys,
    read_records,
    run_key,
    shard_files,
    shard_jobs,
    shard_path,
)

logger = logging.getLogger(__name__)

#: A call whose work (FLOPs) is at least this fraction of a full call counts as computed; below it, as skipped.
COMPUTED_FRACTION = 0.5
#: Speed-up (denoising loop, measured) above which a method that saved no work is flagged.
SUSPICIOUS_SPEEDUP = 1.1


@dataclass
class BenchPlan:
    """What to run. ``call`` holds the full run's pipeline call arguments (the recipe's, never defaults)."""

    model: str
    call: dict
    prompts: list[str]
    seeds: list[int]
    methods: list[Method]
    kind: str = "video"
    source: str = ""  # where the model was loaded from (a resolved folder or a hub id)
    repeats: int = 3
    media_pairs: int = 1
    calibration_prompts: list[str] = field(default_factory=list)
    calibration_seed: int = 1000
    lpips_net: str = "alex"
    fps: float = 16.0  # the clips' frame rate, at which ColorVideoVDP watches them
    cvvdp: bool = True  # score ColorVideoVDP (about 0.1 s of CPU per 9x64x64 clip)
    sweep: str = ""
    description: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("prompts", "seeds"):  # a repeated prompt or seed would run, and count, twice
            values = list(getattr(self, name))
            unique = list(dict.fromkeys(values))
            if len(unique) < len(values):
                logger.warning("%d repeated %s dropped: each runs once", len(values) - len(unique), name)
            setattr(self, name, unique)
        if "num_inference_steps" not in self.call:
            raise ValueError(
                "the call arguments lack num_inference_steps: give the model a recipe (pipelines/*.toml) "
                "with a [call] table, or set it in the sweep's [call] table"
            )
        if self.kind == "video":
            missing = [k for k in ("height", "width", "num_frames") if k not in self.call]
            if missing:
                raise ValueError(
                    f"the call arguments lack {missing}: without them a video pipeline renders at its own "
                    "default size (480x832x81 for Wan); set them in the recipe's or the sweep's [call] table"
                )
        if self.repeats < 1:
            raise ValueError(f"repeats={self.repeats} must be >= 1 (timed runs after the instrumented one)")
        if not self.prompts or not self.seeds:
            raise ValueError("the benchmark needs at least one prompt and one seed")
        full_steps = int(self.call["num_inference_steps"])
        too_many = [m.label for m in self.methods if m.name == "steps" and m.settings["steps"] >= full_steps]
        if too_many:
            raise ValueError(
                f"{too_many} do not run fewer steps than the full run ({full_steps}); use a sweep made for "
                "this step count (e.g. t2v-20, t2v-50) or change --steps"
            )
        if any(m.name == "full" for m in self.methods):
            raise ValueError("the full run is always run as the reference; leave 'full' out of the methods")
        labels = [m.label for m in self.methods]
        duplicates = sorted({x for x in labels if labels.count(x) > 1})
        if duplicates:
            raise ValueError(f"the same method setting is listed twice: {duplicates}")

    def groups(self) -> list[tuple[int, str, int]]:
        """(prompt index, prompt, seed) in a fixed order; each group shares one full run."""
        return [(i, p, s) for i, p in enumerate(self.prompts) for s in self.seeds]


@dataclass
class Measurement:
    frames: np.ndarray
    trace: CallTrace
    call_seconds: list[float]
    loop_seconds: list[float]
    step_seconds: list[list[float]]
    memory: dict
    repeat_max_abs_diff: float
    stats: dict | None = None  # what the method says about its last call, if it says anything


def _digest(frames: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(frames, dtype=np.float32).tobytes()).hexdigest()[:16]


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Benchmark:
    """Runs a :class:`BenchPlan` on one pipeline, appending records to ``results`` (see module docstring)."""

    def __init__(
        self,
        pipe,
        plan: BenchPlan,
        results: str | Path,
        *,
        device: str = "cpu",
        lpips: LPIPS | None = None,
        process_index: int = 0,
        process_count: int = 1,
        progress: bool = True,
    ):
        self.pipe = pipe
        self.plan = plan
        self.results = Path(results)
        self.media_dir = self.results.parent / "media"
        self.device = str(device)
        self.lpips = lpips if lpips is not None else load_lpips(plan.lpips_net)
        self.cvvdp = (
            load_cvvdp(plan.fps) if plan.cvvdp
            else VideoVDP(plan.fps, reason="ColorVideoVDP not computed (switched off for this benchmark)")
        )
        self.process_index = process_index
        self.process_count = process_count
        self.output = self.results if process_count == 1 else shard_path(self.results, process_index)
        self.progress = progress
        self.session = uuid.uuid4().hex[:12]
        self.shared: dict = {}
        self.prepared: dict[str, dict] = {}
        self.cuda = self.device.startswith("cuda")
        # hooks the pipeline came with stay untouched
        self.own_hooks = {m: set(compat.all_hook_names(m)) for _, m in denoisers_of(pipe)}

    # ------------------------------------------------------------------------------------ running the pipe
    def _call(self, prompt: str, seed: int, call: dict, extra: dict | None = None):
        for _, denoiser in denoisers_of(self.pipe):  # a fresh start for stateful hooks, whatever the pipeline
            registry = compat.registry_of(denoiser)  # does at its end
            if registry is not None:
                registry.reset_stateful_hooks()
        generator = torch.Generator("cpu").manual_seed(int(seed))
        return self.pipe(prompt=prompt, generator=generator, output_type="np", **call, **(extra or {}))

    def run_once(self, prompt: str, seed: int, call: dict) -> np.ndarray:
        """One unmeasured call (for calibration)."""
        return frames_of(self._call(prompt, seed, call))

    def measure(self, prompt: str, seed: int, call: dict, repeats: int) -> Measurement:
        probe = DenoiserProbe(self.pipe, count_work=True, synchronize=self.cuda)
        memory = PeakMemory(self.device)
        with probe.attached(), memory.watch():
            frames = frames_of(self._call(prompt, seed, call, probe.call_kwargs()))
        trace = probe.finish()
        timer = DenoiserProbe(self.pipe, count_work=False, synchronize=self.cuda)
        call_s, loop_s, steps_s, diff = [], [], [], 0.0
        with timer.attached():
            for _ in range(repeats):
                timer.new_trace()
                if self.cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                again = frames_of(self._call(prompt, seed, call, timer.call_kwargs()))
                if self.cuda:
                    torch.cuda.synchronize()
                call_s.append(time.perf_counter() - start)
                timed = timer.finish()
                loop_s.append(timed.loop_seconds)
                steps_s.append(timed.step_seconds)
                diff = max(diff, float(np.abs(again - frames).max()))
        return Measurement(
            frames=frames,
            trace=trace,
            call_seconds=call_s,
            loop_seconds=loop_s,
            step_seconds=steps_s,
            memory={
                "peak_bytes": memory.peak_bytes,
                "baseline_bytes": memory.baseline_bytes,
                "kind": memory.kind,
            },
            repeat_max_abs_diff=diff,
        )

    # ------------------------------------------------------------------------------------------- records
    def _identity(self, prompt: str, seed: int, method: Method) -> dict:
        return {
            "model": self.plan.model,
            "call": self.plan.call,
            "prompt": prompt,
            "seed": seed,
            **method.identity(),
        }

    def _base_record(self, index: int, prompt: str, seed: int, method: Method, call: dict) -> dict:
        return {
            "type": "run",
            "schema": SCHEMA,
            "key": run_key(**self._identity(prompt, seed, method)),
            "session": self.session,
            "process": self.process_index,
            "model": self.plan.model,
            "prompt": prompt,
            "prompt_index": index,
            "seed": seed,
            "method": method.name,
            "series": method.series,
            "setting": method.given,
            "label": method.label,
            "call": call,
            "steps": int(call["num_inference_steps"]),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def _work(self, trace: CallTrace, full_call_flops: int) -> dict:
        fractions = [[flops / full_call_flops for flops in step] for step in trace.step_flops]
        flat = [f for step in fractions for f in step]
        return {
            "made": trace.calls,
            "computed": round(sum(flat), 4),
            "computed_calls": sum(f >= COMPUTED_FRACTION for f in flat),
            "skipped_calls": sum(f < COMPUTED_FRACTION for f in flat),
            "calls_per_step": max((len(s) for s in fractions), default=0),
            "flops": sum(sum(step) for step in trace.step_flops),
            "full_call_flops": full_call_flops,
            "decisions": [[round(f, 3) for f in step] for step in fractions],
        }

    def _timing(self, m: Measurement) -> dict:
        per_step = [_median(list(col)) for col in zip(*m.step_seconds)] if m.step_seconds else []
        return {
            "repeats": len(m.call_seconds),
            "call_s": _median(m.call_seconds),
            "loop_s": _median(m.loop_seconds),
            "call_s_runs": m.call_seconds,
            "loop_s_runs": m.loop_seconds,
            "step_s": per_step,
        }

    def _quality(self, frames: np.ndarray, reference: np.ndarray) -> dict:
        return {
            **quality_row(frames, reference, self.lpips, self.cvvdp),
            "lpips_net": self.lpips.net,
            "lpips_unavailable": None if self.lpips.available else self.lpips.reason,
            "cvvdp_s": round(self.cvvdp.seconds, 4) if self.cvvdp.available else None,
        }

    # ------------------------------------------------------------------------------------------ the loop
    def run(self) -> Path:
        plan = self.plan
        existing = read_records(self.results)
        for shard in shard_files(self.results):
            existing += read_records(shard)
        done = finished_keys(existing)
        by_key = {r["key"]: r for r in existing if r.get("type") == "run"}
        reference = make_method("full")
        jobs = []  # (group, its place in the whole list, run keys: full run first)
        for order, (index, prompt, seed) in shard_jobs(
            list(enumerate(plan.groups())), self.process_index, self.process_count
        ):
            keys = [run_key(**self._identity(prompt, seed, m)) for m in [reference, *plan.methods]]
            jobs.append(((index, prompt, seed), order, keys))
        pending = [job for job in jobs if not all(k in done for k in job[2])]
        if not pending:
            logger.info("every run of this benchmark is already in %s", self.results)
            return self.output
        append_record(self.output, self._session_record())
        total = len(jobs) * (1 + len(plan.methods))
        with tqdm(
            total=total,
            desc=f"bench {plan.model}",
            unit="run",
            disable=not self.progress,
            position=self.process_index,
            leave=True,
        ) as bar:
            bar.update(total - len(pending) * (1 + len(plan.methods)))
            for (index, prompt, seed), order, keys in pending:
                ref_record, ref_frames = self._reference(index, prompt, seed, by_key.get(keys[0]), order)
                bar.update(1)
                for method, key in zip(plan.methods, keys[1:]):
                    if key not in done:
                        bar.set_postfix_str(method.label[:40])
                        record = self._run_method(index, prompt, seed, method, ref_record, ref_frames, order)
                        append_record(self.output, record)
                    bar.update(1)
        return self.output

    def _session_record(self) -> dict:
        plan = self.plan
        return {
            "type": "session",
            "schema": SCHEMA,
            "key": self.session,
            "process": self.process_index,
            "processes": self.process_count,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "model": plan.model,
            "source": plan.source,
            "lpips_net": plan.lpips_net,
            "calibration_prompts": plan.calibration_prompts,
            "kind": plan.kind,
            "pipeline": type(self.pipe).__name__,
            "call": plan.call,
            "prompts": len(plan.prompts),
            "seeds": plan.seeds,
            "repeats": plan.repeats,
            "sweep": plan.sweep,
            "description": plan.description,
            "methods": [
                {"name": m.name, "series": m.series, "label": m.label, "description": m.description,
                 "settings": m.settings, "chosen": m.chosen}
                for m in plan.methods
            ],
            "calibration": {"prompts": plan.calibration_prompts, "seed": plan.calibration_seed},
            "lpips": {"net": self.lpips.net, "available": self.lpips.available, "reason": self.lpips.reason},
            "cvvdp": {"available": self.cvvdp.available, "reason": self.cvvdp.reason, "fps": plan.fps,
                      "conditions": self.cvvdp.describe()},
            "environment": describe_environment(self.device),
            "timing_note": (
                "denoising loop = first denoiser call to the end of the last step; medians of the timed "
                "repeats after one instrumented warm-up call"
            ),
            **plan.extra,
        }

    def _reference(self, index, prompt, seed, finished: dict | None, order: int) -> tuple[dict, np.ndarray]:
        full = make_method("full")
        if finished is not None and "full_call_flops" not in finished.get("calls", {}):
            finished = None  # recorded before work was counted in FLOPs: measured again
        if finished is not None:  # resumed: its record stands; only its frames are needed again
            measured = self.measure(prompt, seed, self.plan.call, repeats=0)
            if _digest(measured.frames) != finished.get("digest"):
                logger.warning(
                    "the full run for prompt %d seed %d differs from the recorded one", index, seed
                )
                finished = {**finished, "flags": finished.get("flags", []) + ["reference_not_reproduced"]}
            return finished, measured.frames
        m = self.measure(prompt, seed, self.plan.call, self.plan.repeats)
        full_call_flops = max((x for step in m.trace.step_flops for x in step), default=0)
        if full_call_flops <= 0:
            raise RuntimeError("the full run made no denoiser call that the probe could see")
        record = self._base_record(index, prompt, seed, full, self.plan.call)
        record.update(
            status="ok",
            digest=_digest(m.frames),
            calls=self._work(m.trace, full_call_flops),
            timing=self._timing(m),
            memory=m.memory,
            repeat_max_abs_diff=m.repeat_max_abs_diff,
            flags=["nondeterministic"] if m.repeat_max_abs_diff > 0 else [],
            media=self._media(record["key"], order, m.frames),
        )
        append_record(self.output, record)
        return record, m.frames

    def _media(self, key: str, order: int, *videos) -> str | None:
        if order >= self.plan.media_pairs:
            return None
        path = write_video(self.media_dir / f"{key}.gif", side_by_side(*videos))
        return str(path.relative_to(self.results.parent))

    def _prepare(self, method: Method) -> dict:
        """The method's one-off preparation, done once; a failure is remembered and raised again."""
        if method.label not in self.prepared:
            context = BenchContext(
                pipe=self.pipe,
                call=self.plan.call,
                calibration_prompts=self.plan.calibration_prompts or self.plan.prompts[:1],
                calibration_seed=self.plan.calibration_seed,
                run=self.run_once,
                shared=self.shared,
            )
            try:
                self.prepared[method.label] = method.prepare(context)
            except Exception as err:  # noqa: BLE001 - raised again for every run of this setting
                self.prepared[method.label] = err
        outcome = self.prepared[method.label]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _run_method(self, index, prompt, seed, method, ref_record, ref_frames, order) -> dict:
        call = {**self.plan.call, **method.call_overrides(self.plan.call)}
        record = self._base_record(index, prompt, seed, method, call)
        try:
            refusal = method.refuse(ref_record["calls"]["calls_per_step"])
            if refusal:
                raise Unsupported(refusal)
            calibration = self._prepare(method)
            method.enable(self.pipe, call)
            try:
                m = self.measure(prompt, seed, call, self.plan.repeats)
                stats = m.stats = method.stats(self.pipe)
            finally:
                method.disable(self.pipe)
        except Exception as err:  # noqa: BLE001 - a peer that cannot run here is recorded, not fatal
            logger.warning("%s could not run: %s: %s", method.label, type(err).__name__, err)
            for denoiser, own in self.own_hooks.items():
                compat.strip_hooks(denoiser, keep=own)
            record.update(
                status="unsupported",
                error=str(err) if isinstance(err, Unsupported) else f"{type(err).__name__}: {err}",
                traceback=traceback.format_exc(limit=6)[-3000:],
            )
            return record
        leftover = sorted(name for denoiser, own in self.own_hooks.items()
                          for name in set(compat.all_hook_names(denoiser)) - own)
        if leftover:
            raise RuntimeError(f"{method.label} left hooks on the denoiser after disable(): {leftover}")
        ref_timing, ref_calls = ref_record["timing"], ref_record["calls"]
        work = self._work(m.trace, ref_calls["full_call_flops"])
        timing = self._timing(m)
        quality = self._quality(m.frames, ref_frames)
        speedup = {
            "loop": _ratio(ref_timing["loop_s"], timing["loop_s"]),
            "call": _ratio(ref_timing["call_s"], timing["call_s"]),
            "calls": _ratio(ref_calls["computed_calls"], work["computed_calls"]),
            "flops": _ratio(ref_calls["flops"], work["flops"]),
            "reference_key": ref_record["key"],
        }
        record.update(
            status="ok",
            metrics=quality,
            calls=work,
            timing=timing,
            speedup=speedup,
            memory=m.memory,
            repeat_max_abs_diff=m.repeat_max_abs_diff,
            calibration=calibration or None,
            method_stats=stats,
            flags=self._flags(method, quality, work, ref_calls, speedup, m)
            + [f for f in ref_record.get("flags", []) if f == "reference_not_reproduced"],
            notes=method.caveats(ref_calls["calls_per_step"]) if hasattr(method, "caveats") else [],
            media=self._media(
                record["key"], order, ref_frames, m.frames, difference_image(m.frames, ref_frames)
            ),
        )
        return record

    def _flags(self, method, quality, work, ref_calls, speedup, m) -> list[str]:
        flags = []
        if m.repeat_max_abs_diff > 0:
            flags.append("nondeterministic")
        if method.name == "full":
            return flags
        if quality["psnr"] == float("inf"):
            flags.append("identical_to_full_run")
        stats = m.stats if isinstance(m.stats, dict) else {}
        counted = isinstance(stats.get("computed"), int) and isinstance(stats.get("calls"), int)
        if counted and (stats["calls"], stats["computed"]) != (work["made"], work["computed_calls"]):
            flags.append("self_report_differs_from_probe")
        saves_nothing = work["computed"] >= ref_calls["computed"] - 1e-6 and work["made"] >= ref_calls["made"]
        if saves_nothing:
            flags.append("saves_no_work")
            if (speedup["loop"] or 0) > SUSPICIOUS_SPEEDUP:
                flags.append("speedup_without_saved_work")
        return flags


def _ratio(a, b):
    return a / b if a and b else None
