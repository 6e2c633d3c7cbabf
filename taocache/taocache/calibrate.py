"""Measuring a TaoCache calibration: full runs of a pipeline on a few prompts, their delta statistics
recorded by hooks that compute every call."""

from __future__ import annotations

import logging

import torch

from ..core.denoisers import denoisers_of, scheduler_name
from ..core.fingerprint import fingerprint
from ..core.parallel import check_same_on_every_rank, first_rank_value
from .calibration import MIN_CALIBRATION_STEPS, Calibration
from .config import TaoCacheConfig
from .hook import apply_taocache, hook_of, remove_taocache
from .recorder import CalibrationRecorder

logger = logging.getLogger(__name__)


def record_calibration(pipe, prompts: list[str], call_kwargs: dict, seed: int, horizon: int,
                       progress: bool = True) -> Calibration:
    """Run ``pipe`` in full on ``prompts`` (prompt ``n`` with a CPU generator seeded ``seed + n``) and
    return the calibration it measured. TaoCache hooks already on ``pipe`` record it and use it from then on;
    where there are none, temporary ones record it and come off again."""
    from tqdm.auto import tqdm

    denoisers = denoisers_of(pipe)
    scheduler = scheduler_name(pipe) or "unknown"
    hooks, temporary = {}, []
    for name, module in denoisers:
        hook = hook_of(module)
        if hook is None:
            hook = apply_taocache(module, TaoCacheConfig(auto_calibrate=False), name, pipe, [], scheduler)
            temporary.append(module)
        hook.start_recording(CalibrationRecorder(horizon))
        hooks[name] = hook
    try:
        for n, prompt in enumerate(tqdm(prompts, desc="TaoCache calibration", disable=not progress)):
            pipe(prompt, generator=torch.Generator("cpu").manual_seed(seed + n), **call_kwargs)
            for hook in hooks.values():
                hook.end_call()  # pipelines whose denoiser has no cache reset (e.g. UNet) end the call here
    finally:
        recorders = {name: hook.stop_recording() for name, hook in hooks.items()}
        for module in temporary:
            remove_taocache(module)
    steps = max(r.num_steps() for r in recorders.values())
    scheduled = getattr(pipe.scheduler, "timesteps", None)
    if scheduled is not None and len(scheduled) == steps:
        timesteps = [float(t) for t in scheduled]
    else:
        seen = {s: t for r in recorders.values() for s, t in r.timesteps.items()}
        timesteps = [seen.get(s, float(steps - s)) for s in range(steps)]
    entries = {}
    for (name, module), recorder in zip(denoisers, recorders.values()):
        if recorder.has_data:
            entries[name] = recorder.build(type(module).__name__, fingerprint(module), steps)
    if not entries:
        raise ValueError(f"the denoiser was called too few times to calibrate ({steps} steps); use more steps")
    if steps < MIN_CALIBRATION_STEPS:
        logger.info(
            "TaoCache calibration on %d steps: runs of fewer than %d steps predict better from a calibration "
            "on %d steps, which TaoCache resamples for them (docs/algorithm.md, section 6.1)",
            steps, MIN_CALIBRATION_STEPS, MIN_CALIBRATION_STEPS)
    samples = max(r.samples for r in recorders.values())
    calibration = Calibration(scheduler, steps, timesteps, horizon, samples, entries)
    same_on_every_rank(calibration)
    for name, module in denoisers:
        if module not in temporary:  # TaoCache enabled before: it uses the new calibration at once
            hooks[name].add_calibration(calibration)
    return calibration


def same_on_every_rank(calibration: Calibration) -> None:
    """Under context parallelism every rank measured the gathered output, so the statistics must agree; they
    are checked, and rank 0's creation time is taken, so every rank holds (and could write) the same file."""
    content = calibration.to_dict()
    content.pop("created")
    check_same_on_every_rank(content, "calibration statistics")
    calibration.created = first_rank_value(calibration.created)
