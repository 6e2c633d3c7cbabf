"""The TaoCache hook: on late denoising steps, predict the denoiser's output instead of computing it.

The hook wraps the whole denoiser (``transformer`` or ``unet``) through diffusers' ``HookRegistry``, so it
acts on the denoiser's output and stacks on block-level caches registered on the same module. State is kept
per cache context (``"cond"``/``"uncond"`` when the pipeline separates the guidance passes), and reset when
the pipeline call ends (``maybe_free_model_hooks``) or, for callers without that reset, when the timestep goes
back up. The decision (``decision.py``) runs outside any compiled graph.

One call of the denoiser at step ``i``:
  1. compute if: recording a calibration, no calibration, unknown schedule, ``i`` before the start step or
     among the final steps, fewer than two computed outputs yet, or ``max_consecutive`` predictions in a row;
  2. otherwise find the best prediction and its predicted error (``decision.best_option``);
  3. predict while the error summed since the last computed call stays within the budget and the prediction
     is finite; else compute. When the guidance passes are separate calls, the first to reach a step decides
     for all of them, on the worst of their errors (as the two halves of a batched call do): a predicted
     branch beside a computed one would pass its error on amplified by the guidance.

With ``space="estimate"`` the outputs kept and extrapolated are the clean-sample estimates they imply
(``space.py``); a prediction goes back to an output at its own step. Calibrations record both spaces, the
estimate's statistics under the branch names prefixed ``"estimate:"``.
"""

from __future__ import annotations

import copy
import logging
import weakref

import torch

from ..core import compat
from ..core.fingerprint import fingerprint
from ..core.outputs import sample_of, shaped_like, template_of
from ..core.steps import CallSignature, index_in_schedule, same_timestep, scheduler_timesteps
from . import decision, space
from .calibration import DEFAULT_HORIZON, CalibratedDenoiser, Calibration, calibration_steps_for
from .config import TaoCacheConfig
from .recorder import CalibrationRecorder
from .stats import COMPUTED, PREDICTED, BranchStats, CacheStats

logger = logging.getLogger(__name__)

TAOCACHE_HOOK = "taocache"
NO_CONTEXT = "taocache_default"
SEPARATE_BRANCHES = ("cond", "uncond")
ESTIMATE = "estimate:"
AUTOMATIC_SOURCE = "recorded from the first call (automatic)"


class TaoCacheState(compat.BaseState):
    """One guidance branch's memory within a call: the last few computed outputs and the skip counters."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.history: list[decision.Computed] = []  # oldest first
        self.template = None  # how to shape a predicted output like the computed ones
        self.output_dtype = None  # the computed outputs' dtype (the estimate space keeps float32)
        self.seen_x = None  # timestep of the latest call in this branch
        self.next_step = 0
        self.schedule: list[float] | None = None
        self.consecutive = 0
        self.accumulated_error = 0.0

    @property
    def last(self) -> torch.Tensor | None:
        return self.history[-1].output if self.history else None


class _Call:
    """One denoiser call: its branch state, step, timestep and which batch rows belong to which branch."""

    def __init__(self, state, context: str, step: int, timestep, branches, keep: bool = True, sample=None):
        self.state, self.context, self.step, self.timestep = state, context, step, timestep
        self.branches, self.keep, self.sample = branches, keep, sample


class TaoCacheHook(compat.ModelHook):
    """Predicts skipped denoiser outputs by calibrated extrapolation of the last computed delta."""

    _is_stateful = True

    def __init__(self, config: TaoCacheConfig, component: str = "denoiser", pipeline=None,
                 calibrations: list[Calibration] | None = None, scheduler: str | None = None):
        super().__init__()
        self.config = config
        self.component = component
        self.scheduler = scheduler
        self.state_manager = compat.StateManager(TaoCacheState)
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
        self.signature = CallSignature(None, None)
        self.denoiser_name = ""
        self.fingerprint = ""

    # ---------------------------------------------------------------------------------- registration

    def initialize_hook(self, module):
        inner = compat.unwrap_module(module)
        self.denoiser_name = type(inner).__name__
        self.fingerprint = fingerprint(inner)
        self.signature = CallSignature.of(inner)
        return module

    def reset_state(self, module):
        self.end_call()
        return module

    # ---------------------------------------------------------------------------------- the call

    def new_forward(self, module, *args, **kwargs):
        call, prediction = self._before(args, kwargs)
        if prediction is not None:
            return prediction
        schedule = call.state.schedule if call.state is not None else None
        context = compat.context_of(self.state_manager)
        if schedule and (context is None or context.step_index is None):
            with compat.step_for_inner_caches(module, self, call.step, len(schedule)):
                output = self.fn_ref.original_forward(*args, **kwargs)
        else:
            output = self.fn_ref.original_forward(*args, **kwargs)
        return self._after(call, output)

    @torch.compiler.disable
    def _before(self, args, kwargs):
        """Find the step, decide, and return (the call, the predicted output or None)."""
        context = compat.ensure_context(self.state_manager, NO_CONTEXT)
        state = self.state_manager.get_state()
        x = self.signature.timestep_of(args, kwargs)
        if self._starts_new_call(state, context, x):
            self.end_call()
            self.state_manager.set_context(context)
            state = self.state_manager.get_state()
        batch = self.signature.batch_size(args, kwargs) or (int(state.last.shape[0]) if state.last is not None else 1)
        branches = self._branches(context.name, batch)
        if state.seen_x is not None and x is not None and x == state.seen_x:
            self._note(
                "two calls at the same timestep in one branch: give each guidance pass its own "
                "cache_context('cond'/'uncond'); the repeated calls are computed and not cached"
            )
            return _Call(None, context.name, max(state.next_step - 1, 0), x, branches, keep=False), None
        if state.schedule is None:
            state.schedule = self._schedule()
        step = self._step_index(state, context, x)
        state.seen_x, state.next_step = x, step + 1
        if x is not None:
            self._call_timesteps.setdefault(step, x)
        if self.recorder is None and not self.record and self.config.auto_calibrate and not self._calibrated():
            self.start_recording(CalibrationRecorder(max(DEFAULT_HORIZON, self.config.max_consecutive)), automatic=True)
        call = _Call(state, context.name, step, x, branches, sample=self.signature.sample_of(args, kwargs))
        if state.last is not None and state.last.shape[0] != batch:
            self._note("the batch size changed within a call: its calls are computed")
            prediction = None
        else:
            prediction = self._predict(call, context)
        if prediction is not None:
            self._count(call, PREDICTED)
        return call, prediction

    @torch.compiler.disable
    def _after(self, call: _Call, output):
        """Keep the computed output (and feed the calibration recorder); returns the output unchanged."""
        if call.keep:
            state = call.state
            sample = sample_of(output)
            if sample is None:
                raise TypeError(
                    "TaoCache supports denoisers whose forward returns a tensor, a tuple starting with a tensor or "
                    f"an output with a .sample tensor; {self.denoiser_name} returned {type(output).__name__}"
                )
            fits = space.fits(call.sample, sample)
            line = self._line(call.step, call.timestep, fits) if self.config.space == "estimate" else None
            if line is not None:
                state.history = decision.keep(state.history, call.step, call.timestep,
                                              line.estimate(sample.detach(), call.sample), raw=sample)
            else:
                state.history = decision.keep(state.history, call.step, call.timestep, sample)
            state.template, state.output_dtype = template_of(output), sample.dtype
            state.consecutive, state.accumulated_error = 0, 0.0
            if self.recorder is not None:
                self._observe(call, sample.detach().clone(), line, fits)
        self._count(call, COMPUTED)
        return output

    def _observe(self, call: _Call, sample: torch.Tensor, line: space.Line | None, fits: bool) -> None:
        """Feed the recorder the output's statistics and, where the scheduler gives a line, the estimate's."""
        self.recorder.observe(call.context, call.step, call.timestep, sample, call.branches)
        if fits and line is None and self.config.space != "estimate":
            line = space.line_at(getattr(self._pipe(), "scheduler", None), call.step, call.timestep)
        if line is not None:
            branches = [(ESTIMATE + name, rows) for name, rows in call.branches]
            self.recorder.observe(ESTIMATE + call.context, call.step, call.timestep,
                                  line.estimate(sample, call.sample), branches)

    def _line(self, step: int, timestep, fits: bool = True) -> space.Line | None:
        """The estimate line at ``step`` (None without a scheduler that says its parametrisation, or an output
        of the sample's shape; with ``space="estimate"`` TaoCache then predicts outputs, and says so)."""
        pipe = self._pipe()
        line = None
        if fits and self.signature.sample is not None:
            line = space.line_at(getattr(pipe, "scheduler", None), step, timestep)
        if line is None and self.config.space == "estimate":
            self._note("space='estimate' needs a scheduler with a flow, epsilon or v-prediction parametrisation "
                       "and an output of the sample's shape: predicting outputs instead")
        return line

    # ---------------------------------------------------------------------------------- the decision

    def _predict(self, call: _Call, context):
        """The predicted output, or None when this call must be computed."""
        state, step, cfg = call.state, call.step, self.config
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
            self._joint[step] = self._decide_jointly(call, calibrated, num_steps)
        if not self._joint[step] or not decision.ready(state.history, state.consecutive, cfg.max_consecutive,
                                                        calibrated.horizon):
            return None
        found = self._best_option(call, calibrated, num_steps)
        if found is None:
            return None
        last = state.history[-1]
        predicted = decision.extrapolate(last.output, last.output - found.earlier.output, found.coefficients)
        if last.per_output is not None:  # an estimate: back to an output at this step
            line = self._line(step, call.timestep)
            if line is None or not line.invertible or call.sample is None:
                return None
            predicted = line.output(predicted, call.sample, state.output_dtype or predicted.dtype)
        if not bool(torch.isfinite(predicted).all()):
            self._note(f"step {step}: non-finite prediction replaced by a computed call")
            return None
        state.consecutive += 1
        state.accumulated_error += found.error
        return shaped_like(state.template, predicted)

    def _decide_jointly(self, call: _Call, calibrated: CalibratedDenoiser, num_steps: int) -> bool:
        """Predict this step only if every guidance branch waiting at it may, each within the budget."""
        calls = [call]
        for name, other in compat.states_of(self.state_manager).items():
            if other is not call.state and other.next_step == call.step and other.history:
                rows = self._branches(name, int(other.history[-1].output.shape[0]))
                calls.append(_Call(other, name, call.step, call.timestep, rows))
        for branch in calls:
            state = branch.state
            if not decision.ready(state.history, state.consecutive, self.config.max_consecutive, calibrated.horizon):
                return False
            found = self._best_option(branch, calibrated, num_steps)
            if found is None or not decision.within_budget(state.accumulated_error, found.error, self.config.error_budget):
                return False
        return True

    def _best_option(self, call: _Call, calibrated: CalibratedDenoiser, num_steps: int) -> decision.Option | None:
        estimate = bool(call.state.history) and call.state.history[-1].per_output is not None
        line = self._line(call.step, call.timestep) if estimate else None
        if estimate and (line is None or not line.invertible):
            return None
        prefix = ESTIMATE if estimate else ""

        def lookup(branch, step, gap, horizon, first_order):
            branch = prefix + branch
            stats = calibrated.stats(branch, step, gap, horizon, num_steps, first_order)
            if stats is None and not calibrated.has_branch(branch):
                self._missing_branch(calibrated, branch)
            return stats

        weight = decision.step_weight(call.state.schedule, call.step, self.config.weigh_by_step)
        return decision.best_option(self.config.predictor, call.step, call.timestep, call.branches,
                                    call.state.history, lookup, weight,
                                    abs(line.output_scale) if line is not None else None)

    def _missing_branch(self, calibrated: CalibratedDenoiser, branch: str) -> None:
        if calibrated.calibration.source == AUTOMATIC_SOURCE:
            self._record_again = True
            self._note(
                f"the calibration recorded from the first call has no {branch!r} branch (was that call made "
                "without guidance?): the next call records one again"
            )
        else:
            self._note(f"the calibration has no {branch!r} branch: those calls are computed")

    def _calibrated(self) -> bool:
        return any(c.entry_for(self.component, self.denoiser_name, self.fingerprint) for c in self.calibrations)

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
        matches.sort(key=lambda c: (c.calibration.steps < fine, abs(c.calibration.steps - num_steps),
                                    -c.calibration.samples))
        chosen = matches[0] if matches else None
        if chosen is not None and chosen.calibration.steps != num_steps:
            logger.info("TaoCache %s: calibration for %d steps resampled to %d steps (%s)", self.component,
                        chosen.calibration.steps, num_steps, chosen.calibration.source)
        self._resolved[num_steps] = chosen
        return chosen

    # ---------------------------------------------------------------------------------- where we are

    def _starts_new_call(self, state: TaoCacheState, context, x) -> bool:
        if state.seen_x is None and not state.history:
            return False
        if context.step_index == 0 and state.next_step > 0:
            return True
        schedule = state.schedule
        if schedule and x is not None and state.next_step >= len(schedule) and same_timestep(x, schedule[0]):
            return True  # the run was over, and this call is at its first timestep (one-step runs, back to back)
        return x is not None and state.seen_x is not None and x > state.seen_x

    def _pipe(self):
        return self._pipeline() if self._pipeline is not None else None

    def _schedule(self) -> list[float] | None:
        """This run's timesteps: the pipeline scheduler's, else the last complete call's or the calibration's."""
        timesteps = scheduler_timesteps(self._pipe())
        if timesteps is not None:
            return timesteps
        if self._learned_schedule:
            return list(self._learned_schedule)
        for calibration in self.calibrations:
            if calibration.entry_for(self.component, self.denoiser_name, self.fingerprint):
                return list(calibration.timesteps)
        return None

    def _step_index(self, state: TaoCacheState, context, x) -> int:
        if context.step_index is not None:
            return int(context.step_index)
        schedule = state.schedule
        if schedule and x is not None:
            found = index_in_schedule(schedule, x, state.next_step)
            if found is not None:
                return found
            if scheduler_timesteps(self._pipe()) is not None:  # e.g. timesteps rescaled or cast by the pipeline
                self._note("the denoiser's timesteps differ from the scheduler's: steps are counted by calls")
            else:
                self._note("the timesteps differ from the learned schedule: no call of this run is predicted")
                state.schedule = []
        return state.next_step

    def _branches(self, context: str, batch: int) -> list[tuple[str, slice]]:
        """Which rows of the batch belong to which guidance branch (for statistics; decisions take the worst)."""
        batched = self.config.batched_guidance
        if batched is None:
            batched = context not in SEPARATE_BRANCHES and self._pipeline_guides()
        if batched and batch % 2 == 0:
            half = batch // 2
            return [("uncond", slice(0, half)), ("cond", slice(half, batch))]
        return [(context if context not in (NO_CONTEXT, "cond_uncond") else "cond", slice(0, batch))]

    def _pipeline_guides(self) -> bool:
        pipe = self._pipe()
        if pipe is None:
            return False
        try:
            if hasattr(type(pipe), "do_classifier_free_guidance"):
                return bool(pipe.do_classifier_free_guidance)
            return float(compat.guidance_scale_of(pipe) or 1.0) > 1.0  # e.g. CogVideoX has no such property
        except (AttributeError, TypeError, ValueError):  # attributes set only inside __call__
            return False

    # ---------------------------------------------------------------------------------- bookkeeping

    def _count(self, call: _Call, outcome: str) -> None:
        label = "+".join(name for name, _ in call.branches) if call.branches else call.context
        self.record.setdefault(label, BranchStats()).add(max(call.step, 0), outcome)

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

    def end_call(self) -> None:
        """The pipeline call is over: keep its record, learn its schedule, finish an automatic calibration."""
        if self.record:
            self.last_record = self.current_stats()
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
                "on; the next call records the calibration again", self.component, steps, len(scheduled))
            return
        timesteps = scheduled if scheduled is not None else recorder.schedule(steps)
        entry = recorder.build(self.denoiser_name, self.fingerprint, steps)
        calibration = Calibration(self.scheduler or "unknown", steps, timesteps, recorder.horizon, recorder.samples,
                                  {self.component: entry}, source=AUTOMATIC_SOURCE)
        self.add_calibration(calibration)
        logger.info(
            "TaoCache %s: no calibration was found, so the first call ran in full and recorded one (%d steps, %d "
            "samples); later calls use it. Calibrate on several prompts with taocache.calibrate() for better "
            "decisions.", self.component, steps, recorder.samples)

    def current_stats(self) -> CacheStats:
        """The record of the call in progress if it made any call, else of the last finished call."""
        if not self.record:
            return self.last_record
        notes = list(self._call_notes)
        if self.recorder is not None:
            notes.insert(0, "recording a calibration: every call computed")
        return CacheStats(branches={k: copy.copy(v) for k, v in self.record.items()}, notes=notes)


def apply_taocache(module: torch.nn.Module, config: TaoCacheConfig, component: str = "denoiser", pipeline=None,
                   calibrations: list[Calibration] | None = None, scheduler: str | None = None) -> TaoCacheHook:
    """Register the TaoCache hook on ``module`` (replacing an earlier one) and return it."""
    remove_taocache(module)
    registry = compat.HookRegistry.check_if_exists_or_initialize(module)
    hook = TaoCacheHook(config, component, pipeline, calibrations, scheduler)
    with compat.beneath_offload_hook(module):
        registry.register_hook(hook, TAOCACHE_HOOK)
    registry.invalidate_child_registries_cache()
    return hook


def remove_taocache(module: torch.nn.Module) -> bool:
    """Remove the hook; True if there was one."""
    if compat.hook_on(module, TAOCACHE_HOOK) is None:
        return False
    with compat.beneath_offload_hook(module):
        compat.remove_registered(module, [TAOCACHE_HOOK])
    compat.registry_of(module).invalidate_child_registries_cache()
    return True


def hook_of(module: torch.nn.Module) -> TaoCacheHook | None:
    """The TaoCache hook on ``module``, if any."""
    return compat.hook_on(module, TAOCACHE_HOOK)
