"""The TaoCache hook: on late denoising steps, predict the denoiser's output instead of computing it.

The hook wraps the whole denoiser (``transformer`` or ``unet``) through diffusers' ``HookRegistry``, so it
acts on the denoiser's output and stacks on block-level caches registered on the same module. State is
kept per cache context (``"cond"``/``"uncond"`` when the pipeline separates the guidance passes), and reset
when the pipeline call ends (``maybe_free_model_hooks``) or, for callers without that reset, when the
timestep goes back up. The decision runs outside any compiled graph.

One call of the denoiser at step ``i``:
  1. compute if: recording a calibration, no calibration, unknown schedule, ``i`` before the start step or
     among the final steps, fewer than two computed outputs yet, or ``max_consecutive`` predictions in a row;
  2. otherwise take the last computed output ``out_j`` and an earlier computed one ``out_a``
     (``D = out_j - out_a``, gap ``g = j - a``, horizon ``m = i - j``), the calibrated statistics for
     (branch, ``i``, ``g``, ``m``) and the predictor's coefficient ``k``; the predicted relative error of the
     worst sample is ``||D|| / ||out_j|| * rms(||out_i - out_j - k D|| / ||D||)``, times the length of step
     ``i`` over the run's mean step (``weigh_by_step``). The geometric predictor tries each kept ``out_a``
     (up to two gaps) and keeps the one with the smallest predicted error;
  3. predict ``out_j + k * D`` while the error summed since the last computed call stays within the budget
     and the prediction is finite; else compute. When the guidance passes are separate calls, the first
     to reach a step decides for all of them, on the worst of their errors (as the two halves of a batched
     call do): a predicted branch beside a computed one would pass its error on amplified by the guidance.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import logging
import math
import weakref

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager
from diffusers.utils.torch_utils import unwrap_module

from .calibration import (
    DEFAULT_HORIZON,
    CalibratedDenoiser,
    Calibration,
    CalibrationRecorder,
    calibration_steps_for,
    fingerprint,
    first_order_coefficient,
)
from .config import TaoCacheConfig
from .stats import COMPUTED, PREDICTED, BranchStats, CacheStats

logger = logging.getLogger(__name__)

TAOCACHE_HOOK = "taocache"
_NO_CONTEXT = "taocache_default"
_SEPARATE_BRANCHES = ("cond", "uncond")
_TIMESTEP_NAMES = ("timestep", "timesteps", "t")
AUTOMATIC_SOURCE = "recorded from the first call (automatic)"
HISTORY = 3  # computed outputs kept per branch: the geometric predictor may extrapolate over 1 or 2 gaps


@dataclasses.dataclass
class _Computed:
    """A computed output kept for extrapolation, with ``||out - earlier|| / ||out||`` per sample for each
    earlier kept output (keyed by that output's step)."""

    step: int
    timestep: float | None
    output: torch.Tensor
    relative_deltas: dict[int, list[float]]


class TaoCacheState(BaseState):
    """One guidance branch's memory within a call: the last few computed outputs and the skip counters."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.history: list[_Computed] = []  # the last HISTORY computed outputs, oldest first
        self.template = None  # how to shape a predicted output like the computed ones
        self.seen_x = None  # timestep of the latest call in this branch
        self.next_step = 0
        self.schedule: list[float] | None = None
        self.consecutive = 0
        self.accumulated_error = 0.0

    @property
    def last(self) -> torch.Tensor | None:
        return self.history[-1].output if self.history else None


@dataclasses.dataclass
class _Plan:
    state: TaoCacheState | None
    context: str
    step: int
    timestep: float | None
    branches: list
    keep: bool = True


class TaoCacheHook(ModelHook):
    """Predicts skipped denoiser outputs by calibrated extrapolation of the last computed delta."""

    _is_stateful = True

    def __init__(
        self,
        config: TaoCacheConfig,
        component: str = "denoiser",
        pipeline=None,
        calibrations: list[Calibration] | None = None,
        scheduler: str | None = None,
    ):
        super().__init__()
        self.config = config
        self.component = component
        self.scheduler = scheduler
        self.state_manager = StateManager(TaoCacheState)
        self._pipeline = weakref.ref(pipeline) if pipeline is not None else None
        self.calibrations = list(calibrations or [])
        self.recorder: CalibrationRecorder | None = None
        self._auto_recording = False
        self._record_again = False  # the automatic calibration lacks a branch: drop it when this call ends
        self._learned_schedule: list[float] | None = None
        self._call_timesteps: dict[int, float] = {}
        self._call_notes: list[str] = []
        self._resolved: dict[int, CalibratedDenoiser | None] = {}
        self._joint: dict[int, bool] = {}  # step -> whether the guidance branches predict it (decided once)
        self.record: dict[str, BranchStats] = {}
        self.last_record = CacheStats()
        self._timestep_index = None
        self._sample_name = None
        self.denoiser_name = ""
        self.fingerprint = ""

    # ---------------------------------------------------------------------------------- registration

    def initialize_hook(self, module):
        inner = unwrap_module(module)
        self.denoiser_name = type(inner).__name__
        self.fingerprint = fingerprint(inner)
        params = [
            p
            for p in inspect.signature(inner.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        names = [p.name for p in params]
        self._sample_name = names[0] if names else None
        for name in _TIMESTEP_NAMES:
            if name in names:
                self._timestep_index = (name, names.index(name))
                break
        return module

    def reset_state(self, module):
        self._end_call()
        return module

    # ---------------------------------------------------------------------------------- the call

    def new_forward(self, module, *args, **kwargs):
        plan, prediction = self._before(args, kwargs)
        if prediction is not None:
            return prediction
        with self._step_for_inner_caches(module, plan):
            output = self.fn_ref.original_forward(*args, **kwargs)
        return self._after(plan, output)

    @contextlib.contextmanager
    def _step_for_inner_caches(self, module, plan: _Plan):
        """Tell the stateful hooks under this one which step a computed call is, when the pipeline did not.

        A stacked cache that counts steps by the calls it sees (TeaCache on pipelines without a step index in
        their cache context, such as Latte) would otherwise fall behind on every step TaoCache predicts.
        """
        schedule = plan.state.schedule if plan.state is not None else None
        context = self.state_manager._context
        managers = []
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None and schedule and (context is None or context.step_index is None):
            for child in (registry, *registry._get_child_registries()):
                for hook in child.hooks.values():
                    if hook is self or not hook._is_stateful:
                        continue
                    managers += [m for m in vars(hook).values() if isinstance(m, StateManager)]
        # A manager without a context gets none: its hook names its own on the call (and keeps it), so from
        # the call after, it is told the step
        told = [(m, m._context) for m in managers if m._context is not None and m._context.step_index is None]
        for manager, theirs in told:
            told_step = dataclasses.replace(theirs, step_index=plan.step, num_inference_steps=len(schedule))
            manager.set_context(told_step)
        try:
            yield
        finally:
            for manager, theirs in told:
                manager.set_context(theirs)

    @torch.compiler.disable
    def _before(self, args, kwargs):
        """Find the step, decide, and return (plan, predicted output or None)."""
        if self.state_manager._context is None:
            self.state_manager.set_context(CacheContext(_NO_CONTEXT))
        context = self.state_manager._context
        state = self.state_manager.get_state()
        x = self._timestep(args, kwargs)
        if self._starts_new_call(state, context, x):
            self._end_call()
            self.state_manager.set_context(context)
            state = self.state_manager.get_state()
        batch = self._batch_size(args, kwargs, state)
        branches = self._branches(context.name, batch)
        if state.seen_x is not None and x is not None and x == state.seen_x:
            self._note(
                "two calls at the same timestep in one branch: give each guidance pass its own "
                "cache_context('cond'/'uncond'); the repeated calls are computed and not cached"
            )
            return _Plan(None, context.name, max(state.next_step - 1, 0), x, branches, keep=False), None
        if state.schedule is None:
            state.schedule = self._schedule()
        step = self._step_index(state, context, x)
        state.seen_x, state.next_step = x, step + 1
        if x is not None:
            self._call_timesteps.setdefault(step, x)
        if (
            self.recorder is None
            and not self.record
            and self.config.auto_calibrate
            and not self._calibrated()
        ):
            self.start_recording(
                CalibrationRecorder(max(DEFAULT_HORIZON, self.config.max_consecutive)), automatic=True
            )
        plan = _Plan(state, context.name, step, x, branches)
        if state.last is not None and state.last.shape[0] != batch:
            self._note("the batch size changed within a call: its calls are computed")
            prediction = None
        else:
            prediction = self._predict(plan, context)
        if prediction is not None:
            self._count(plan, PREDICTED)
        return plan, prediction

    @torch.compiler.disable
    def _after(self, plan: _Plan, output):
        """Keep the computed output (and feed the calibration recorder); returns the output unchanged."""
        if not plan.keep:
            self._count(plan, COMPUTED)
            return output
        state = plan.state
        sample = _sample_of(output, self.denoiser_name)
        kept = sample.detach().clone()
        state.history = [h for h in state.history if h.output.shape == kept.shape][-(HISTORY - 1) :]
        kept_norm = kept.flatten(1).double().norm(dim=1).clamp_min(1e-12)  # float64: no overflow near the max
        relative = {}
        for earlier in state.history:
            delta_norm = (kept - earlier.output).flatten(1).double().norm(dim=1)
            relative[earlier.step] = (delta_norm / kept_norm).tolist()
        state.history.append(_Computed(plan.step, plan.timestep, kept, relative))
        state.template = _template_of(output)
        state.consecutive, state.accumulated_error = 0, 0.0
        if self.recorder is not None:
            self.recorder.observe(plan.context, plan.step, plan.timestep, kept, plan.branches)
        self._count(plan, COMPUTED)
        return output

    # ---------------------------------------------------------------------------------- the decision

    def _predict(self, plan: _Plan, context: CacheContext):
        """The predicted output, or None when this call must be computed."""
        state, step, cfg = plan.state, plan.step, self.config
        if self.recorder is not None:
            return None
        num_steps = context.num_inference_steps or (len(state.schedule) if state.schedule else None)
        if num_steps is None or not state.schedule and context.step_index is None:
            return None
        if step < cfg.start_step(num_steps) or step >= num_steps - cfg.final_steps:
            return None
        calibrated = self._calibration_for(num_steps)
        if calibrated is None:
            return None
        if step not in self._joint:  # the first guidance branch to reach this step decides for all
            self._joint[step] = self._decide_jointly(plan, calibrated, num_steps)
        if not self._joint[step] or not self._ready(state, calibrated):
            return None
        option = self._best_option(plan, calibrated, num_steps)
        if option is None:
            return None
        error, earlier, coefficients = option
        last = state.history[-1]
        predicted = _extrapolate(last.output, last.output - earlier.output, coefficients)
        if not bool(torch.isfinite(predicted).all()):
            self._note(f"step {step}: non-finite prediction replaced by a computed call")
            return None
        state.consecutive += 1
        state.accumulated_error += error
        return _shaped_like(state.template, predicted)

    def _ready(self, state: TaoCacheState, calibrated: CalibratedDenoiser) -> bool:
        limit = min(self.config.max_consecutive, calibrated.horizon)
        return len(state.history) >= 2 and state.consecutive < limit

    def _decide_jointly(self, plan: _Plan, calibrated: CalibratedDenoiser, num_steps: int) -> bool:
        """Predict this step only if every guidance branch waiting at it may, each within the budget.

        The guided output ``uncond + s * (cond - uncond)`` amplifies the difference of the two branches' errors:
        extrapolations of both branches err alike and largely cancel, but a predicted branch beside a computed
        one passes ``s`` times its error on. So separate guidance calls decide together, as the two halves of a
        batched call do.
        """
        plans = [plan]
        for name, other in self.state_manager._state_cache.items():
            if other is not plan.state and other.next_step == plan.step and other.history:
                rows = self._branches(name, int(other.history[-1].output.shape[0]))
                plans.append(_Plan(other, name, plan.step, plan.timestep, rows))
        for branch_plan in plans:
            if not self._ready(branch_plan.state, calibrated):
                return False
            option = self._best_option(branch_plan, calibrated, num_steps)
            if option is None or not math.isfinite(option[0]):
                return False
            if branch_plan.state.accumulated_error + option[0] > self.config.error_budget:
                return False
        return True

    def _best_option(self, plan: _Plan, calibrated: CalibratedDenoiser, num_steps: int):
        """The prediction to make for ``plan``: (predicted error, earlier output, coefficients) or None.

        Reuse and linear continue the delta of the last two computed outputs; geometric picks, among the kept
        outputs, the gap whose calibrated prediction has the smallest expected error.
        """
        history = plan.state.history
        candidates = history[:-1] if self.config.predictor == "geometric" else history[-2:-1]
        best = None
        for earlier in candidates:
            option = self._option(plan, calibrated, num_steps, history[-1], earlier)
            if option is not None and (best is None or option[0] < best[0]):
                best = option
        return best

    def _option(
        self, plan: _Plan, calibrated: CalibratedDenoiser, num_steps: int, last: _Computed, earlier: _Computed
    ):
        """(predicted error of the worst sample, earlier, per-branch coefficients) for ``D = last - earlier``."""
        step = plan.step
        gap, horizon = last.step - earlier.step, step - last.step
        first_order = first_order_coefficient(
            plan.timestep, last.timestep, earlier.timestep, step, last.step, earlier.step
        )
        relative = last.relative_deltas.get(earlier.step)
        if relative is None:
            return None
        coefficients, errors = [], []
        for branch, rows in plan.branches:
            stats = calibrated.stats(branch, step, gap, horizon, num_steps, first_order)
            if stats is None:
                if not calibrated.has_branch(branch):
                    if calibrated.calibration.source == AUTOMATIC_SOURCE:
                        self._record_again = True
                        self._note(
                            f"the calibration recorded from the first call has no {branch!r} branch (was that "
                            "call made without guidance?): the next call records one again"
                        )
                    else:
                        self._note(f"the calibration has no {branch!r} branch: those calls are computed")
                return None
            if self.config.predictor == "geometric":
                k = stats.gain_mean
            elif self.config.predictor == "linear":
                k = first_order
            else:
                k = 0.0
            coefficients.append((rows, k))
            unit_error = stats.expected_error(k)
            errors.extend(rel * unit_error for rel in relative[rows])
        if not errors:
            return None
        return max(errors) * self._step_weight(plan), earlier, coefficients

    def _step_weight(self, plan: _Plan) -> float:
        """The length of step ``plan.step`` in the denoiser's timestep over the run's mean step (1 when off)."""
        schedule = plan.state.schedule if plan.state is not None else None
        if not self.config.weigh_by_step or not schedule or plan.step + 1 >= len(schedule):
            return 1.0
        mean_step = abs(schedule[0] - schedule[-1]) / (len(schedule) - 1)
        return abs(schedule[plan.step] - schedule[plan.step + 1]) / mean_step if mean_step > 0 else 1.0

    def _calibrated(self) -> bool:
        return any(
            c.entry_for(self.component, self.denoiser_name, self.fingerprint) for c in self.calibrations
        )

    def _calibration_for(self, num_steps: int) -> CalibratedDenoiser | None:
        """The calibration to use for a run of ``num_steps`` steps.

        Preferred: one measured on at least ``calibration_steps_for(num_steps)`` steps, the nearest such
        (so the exact step count from 50 steps on); else the nearest step count; then the most samples.
        """
        if num_steps in self._resolved:
            return self._resolved[num_steps]
        matches = []
        for calibration in self.calibrations:
            entry = calibration.entry_for(self.component, self.denoiser_name, self.fingerprint)
            if entry is not None:
                matches.append(CalibratedDenoiser(calibration, entry))
        fine = calibration_steps_for(num_steps)
        matches.sort(
            key=lambda c: (
                c.calibration.steps < fine,
                abs(c.calibration.steps - num_steps),
                -c.calibration.samples,
            )
        )
        chosen = matches[0] if matches else None
        if chosen is not None and chosen.calibration.steps != num_steps:
            logger.info(
                "TaoCache %s: calibration for %d steps resampled to %d steps (%s)",
                self.component,
                chosen.calibration.steps,
                num_steps,
                chosen.calibration.source,
            )
        self._resolved[num_steps] = chosen
        return chosen

    # ---------------------------------------------------------------------------------- where we are

    def _timestep(self, args, kwargs) -> float | None:
        if self._timestep_index is None:
            return None
        name, index = self._timestep_index
        value = kwargs.get(name, args[index] if index < len(args) else None)
        if value is None:
            return None
        if torch.is_tensor(value):
            return float(value.detach().float().max()) if value.numel() else None
        return float(value)

    def _starts_new_call(self, state: TaoCacheState, context: CacheContext, x) -> bool:
        if state.seen_x is None and not state.history:
            return False
        if context.step_index == 0 and state.next_step > 0:
            return True
        schedule = state.schedule
        if (
            schedule
            and x is not None
            and state.next_step >= len(schedule)
            and abs(x - schedule[0]) <= 1e-4 * max(1.0, abs(schedule[0]))
        ):
            return True  # the run was over, and this call is at its first timestep (one-step runs, back to back)
        return x is not None and state.seen_x is not None and x > state.seen_x

    def _schedule(self) -> list[float] | None:
        """This run's timesteps: the pipeline scheduler's, else the last complete call's or the calibration's."""
        timesteps = self._scheduler_timesteps()
        if timesteps is not None:
            return timesteps
        if self._learned_schedule:
            return list(self._learned_schedule)
        for calibration in self.calibrations:
            if calibration.entry_for(self.component, self.denoiser_name, self.fingerprint):
                return list(calibration.timesteps)
        return None

    def _scheduler_timesteps(self) -> list[float] | None:
        pipe = self._pipeline() if self._pipeline is not None else None
        timesteps = getattr(getattr(pipe, "scheduler", None), "timesteps", None)
        if timesteps is None or not len(timesteps):
            return None
        return [float(t) for t in timesteps]

    def _step_index(self, state: TaoCacheState, context: CacheContext, x) -> int:
        if context.step_index is not None:
            return int(context.step_index)
        schedule = state.schedule
        if schedule and x is not None:
            for k in range(state.next_step, len(schedule)):
                if abs(schedule[k] - x) <= 1e-4 * max(1.0, abs(schedule[k])):
                    return k
            if self._scheduler_timesteps() is not None:  # e.g. timesteps rescaled or cast by the pipeline
                self._note("the denoiser's timesteps differ from the scheduler's: steps are counted by calls")
            else:
                self._note("the timesteps differ from the learned schedule: no call of this run is predicted")
                state.schedule = []
        return state.next_step

    def _batch_size(self, args, kwargs, state: TaoCacheState) -> int:
        sample = kwargs.get(self._sample_name, args[0] if args else None)
        if torch.is_tensor(sample) and sample.ndim:
            return int(sample.shape[0])
        return int(state.last.shape[0]) if state.last is not None else 1

    def _branches(self, context: str, batch: int) -> list[tuple[str, slice]]:
        """Which rows of the batch belong to which guidance branch (for statistics; decisions take the worst)."""
        batched = self.config.batched_guidance
        if batched is None:
            batched = context not in _SEPARATE_BRANCHES and self._pipeline_guides()
        if batched and batch % 2 == 0:
            half = batch // 2
            return [("uncond", slice(0, half)), ("cond", slice(half, batch))]
        return [(context if context not in (_NO_CONTEXT, "cond_uncond") else "cond", slice(0, batch))]

    def _pipeline_guides(self) -> bool:
        pipe = self._pipeline() if self._pipeline is not None else None
        if pipe is None:
            return False
        try:
            if hasattr(type(pipe), "do_classifier_free_guidance"):
                return bool(pipe.do_classifier_free_guidance)
            return float(getattr(pipe, "_guidance_scale", 1.0)) > 1.0  # e.g. CogVideoX has no such property
        except (AttributeError, TypeError, ValueError):  # attributes set only inside __call__
            return False

    # ---------------------------------------------------------------------------------- bookkeeping

    def _count(self, plan: _Plan, decision: str) -> None:
        label = "+".join(name for name, _ in plan.branches) if plan.branches else plan.context
        self.record.setdefault(label, BranchStats()).add(max(plan.step, 0), decision)

    def _note(self, text: str) -> None:
        if text not in self._call_notes:
            self._call_notes.append(text)
            logger.info("TaoCache %s: %s", self.component, text)

    def start_recording(self, recorder: CalibrationRecorder, automatic: bool = False) -> None:
        """Compute every call and feed the outputs to ``recorder`` until :meth:`stop_recording`."""
        self.recorder = recorder
        self._auto_recording = automatic

    def stop_recording(self) -> CalibrationRecorder | None:
        recorder, self.recorder, self._auto_recording = self.recorder, None, False
        return recorder

    def add_calibration(self, calibration: Calibration) -> None:
        self.calibrations.insert(0, calibration)
        self._resolved.clear()

    def _end_call(self) -> None:
        """The pipeline call is over: keep its record, learn its schedule, finish an automatic calibration."""
        if self.record:
            notes = list(self._call_notes)
            if self.recorder is not None:
                notes.insert(0, "recording a calibration: every call computed")
            self.last_record = CacheStats(branches=self.record, notes=notes)
        steps = sorted(self._call_timesteps)
        if steps and steps == list(range(len(steps))):
            self._learned_schedule = [self._call_timesteps[s] for s in steps]
        if self.recorder is not None:
            self.recorder.end_call()
            if self._auto_recording and self.recorder.has_data:
                self._finish_automatic_calibration()
        if self._record_again:
            self.calibrations = [c for c in self.calibrations if c.source != AUTOMATIC_SOURCE]
            self._resolved.clear()
            self._record_again = False
        self.record, self._call_timesteps, self._call_notes, self._joint = {}, {}, [], {}
        self.state_manager.reset()

    def _finish_automatic_calibration(self) -> None:
        recorder = self.stop_recording()
        steps = recorder.num_steps()
        scheduled = self._schedule()
        if scheduled is not None and steps < len(scheduled):
            logger.info(
                "TaoCache %s: the first call ended after %d of its %d steps (interrupted?), too few to calibrate "
                "on; the next call records the calibration again",
                self.component,
                steps,
                len(scheduled),
            )
            return
        if scheduled is not None and len(scheduled) == steps:
            timesteps = scheduled
        else:
            timesteps = [recorder.timesteps.get(i, float(steps - i)) for i in range(steps)]
        entry = recorder.build(self.denoiser_name, self.fingerprint, steps)
        calibration = Calibration(
            self.scheduler or "unknown",
            steps,
            timesteps,
            recorder.horizon,
            recorder.samples,
            {self.component: entry},
            source=AUTOMATIC_SOURCE,
        )
        self.add_calibration(calibration)
        logger.info(
            "TaoCache %s: no calibration was found, so the first call ran in full and recorded one "
            "(%d steps, %d samples); later calls use it. Calibrate on several prompts with "
            "taocache.calibrate() for better decisions.",
            self.component,
            steps,
            recorder.samples,
        )

    def current_stats(self) -> CacheStats:
        """The record of the call in progress if it made any call, else of the last finished call."""
        if self.record:
            notes = list(self._call_notes)
            if self.recorder is not None:
                notes.insert(0, "recording a calibration: every call computed")
            return CacheStats(branches={k: copy.copy(v) for k, v in self.record.items()}, notes=notes)
        return self.last_record


# -------------------------------------------------------------------------------------- output shapes


def _sample_of(output, denoiser: str) -> torch.Tensor:
    if torch.is_tensor(output):
        return output
    if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        return output[0]
    sample = getattr(output, "sample", None)
    if torch.is_tensor(sample):
        return sample
    raise TypeError(
        f"TaoCache supports denoisers whose forward returns a tensor, a tuple starting with a tensor or an "
        f"output with a .sample tensor; {denoiser} returned {type(output).__name__}"
    )


def _template_of(output):
    """What a predicted output needs besides the sample: nothing for a tensor, the rest of a tuple, the object."""
    if torch.is_tensor(output):
        return None
    if isinstance(output, (tuple, list)):
        return type(output), tuple(output[1:])
    return output


def _shaped_like(template, sample: torch.Tensor):
    if template is None:
        return sample
    if isinstance(template, tuple) and len(template) == 2 and isinstance(template[0], type):
        kind, rest = template
        return kind((sample, *rest))
    if dataclasses.is_dataclass(template):
        return dataclasses.replace(template, sample=sample)
    shaped = copy.copy(template)
    shaped.sample = sample
    return shaped


def _extrapolate(
    last: torch.Tensor, delta: torch.Tensor, coefficients: list[tuple[slice, float]]
) -> torch.Tensor:
    """``last + k * delta`` with one ``k`` per group of batch rows, computed in at least float32."""
    dtype = torch.promote_types(last.dtype, torch.float32)
    if len({k for _, k in coefficients}) == 1:
        k = coefficients[0][1]
        return (last.to(dtype) + k * delta.to(dtype)).to(last.dtype)
    scale = torch.empty(last.shape[0], dtype=dtype, device=last.device)
    for rows, k in coefficients:
        scale[rows] = k
    scale = scale.view(-1, *([1] * (last.ndim - 1)))
    return (last.to(dtype) + scale * delta.to(dtype)).to(last.dtype)


@contextlib.contextmanager
def _beneath_offload_hook(module: torch.nn.Module):
    """Rewrite ``module.forward`` underneath accelerate's offload hook, if there is one, and keep that on top.

    accelerate's wrapper calls ``module._old_forward`` and restores it when the pipeline re-applies
    ``enable_model_cpu_offload`` after each call; a hook placed outside it would be dropped then.
    """
    if not (hasattr(module, "_hf_hook") and hasattr(module, "_old_forward")):
        yield
        return
    outer = module.forward
    module.forward = module._old_forward
    try:
        yield
    finally:
        module._old_forward = module.forward
        module.forward = outer


def apply_taocache(
    module: torch.nn.Module,
    config: TaoCacheConfig,
    component: str = "denoiser",
    pipeline=None,
    calibrations: list[Calibration] | None = None,
    scheduler: str | None = None,
) -> TaoCacheHook:
    """Register the TaoCache hook on ``module`` (replacing an earlier one) and return it."""
    remove_taocache(module)
    registry = HookRegistry.check_if_exists_or_initialize(module)
    hook = TaoCacheHook(config, component, pipeline, calibrations, scheduler)
    with _beneath_offload_hook(module):
        registry.register_hook(hook, TAOCACHE_HOOK)
    registry.invalidate_child_registries_cache()
    return hook


def remove_taocache(module: torch.nn.Module) -> bool:
    """Remove the hook; True if there was one."""
    registry = getattr(module, "_diffusers_hook", None)
    if registry is None or registry.get_hook(TAOCACHE_HOOK) is None:
        return False
    with _beneath_offload_hook(module):
        registry.remove_hook(TAOCACHE_HOOK, recurse=False)
    registry.invalidate_child_registries_cache()
    return True
