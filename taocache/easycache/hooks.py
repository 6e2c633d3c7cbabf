"""EasyCache as a diffusers hook: reuse the denoiser's last input-to-output transformation while the
estimated output change, accumulated since the last computed step, stays under a threshold.

The paper (Zhou et al., arXiv 2507.02860): the denoiser's output at step t is v_t = u(x_t); its
*transformation vector* is Delta_t = v_t - x_t, and the *transformation rate* k = |v_t - v_i| / |x_t - x_i|
between computed steps settles after the first steps. So the output change of a step can be estimated at run
time from the input change alone, with no offline calibration: eps_t = k |x_t - x_{t-1}| / |v_i| (norms are
mean absolute values, as in the authors' Wan2.1 code), summed since the last computed step i into E. While E
stays under ``threshold`` the model is not run and its output is rebuilt as x_t + Delta_i; otherwise it runs,
Delta and k are refreshed and E restarts from 0. The first steps (warm-up) and the last one are computed.

What is added here, beyond the paper:

- Guidance branches keep their own state per ``cache_context`` (``"cond"`` / ``"uncond"``). When they run as
  separate calls, the first branch to reach a step decides for every branch at that step (the guided
  prediction u + w (c - u) multiplies a one-sided error by w, so both are computed or reused together); each
  branch still runs its own estimator and reuses its own Delta.
- Within a batch every sample has its own estimate; a step is reused only when all are under the threshold.
- Output channels beyond the input's (Latte's learned variance) are reused as computed.
- A new pipeline call is recognised by a step index that does not grow, a timestep that rises or a new latent
  shape, besides diffusers' ``reset_state``. The decision runs outside compiled graphs.
"""

from __future__ import annotations

import inspect

import torch

from ..core import compat
from ..core.outputs import sample_of, shaped_like, template_of
from .config import EasyCacheConfig

EASYCACHE_HOOK = "easycache"
#: The branch name used when the pipeline sets no ``cache_context`` (Latte batches both passes in one call).
DEFAULT_CONTEXT = "inference"
_TINY = 1e-12  # keeps ratios finite when a change or a norm is exactly zero


class EasyCacheState(compat.BaseState):
    """One guidance branch: where it is in the call, its estimator (k, E) and what a reused step rebuilds."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.step = -1
        self.step_index = None  # the pipeline's own step index, when its cache_context gives one
        self.timestep = None
        self.previous_input = None  # x of this branch's previous call, computed or reused (float32)
        self.current_input = None  # x of the call in progress, for the update after a computed step
        self.anchor_input = None  # x_i of the last computed step
        self.anchor_output = None  # v_i of the last computed step (float32)
        self.anchor_scale = None  # mean|v_i| per sample
        self.transformation = None  # Delta_i = v_i - x_i (extra output channels hold v_i itself)
        self.template = None  # what the last computed output held besides its sample
        self.dtype = None  # the sample's dtype
        self.rate = None  # k per sample
        self.accumulated = None  # E per sample, None when it restarts from 0


class _Stats:
    """Computed and reused calls per guidance branch: for the most recent pipeline call and in total."""

    def __init__(self):
        self.calls = 0
        self.last_call: dict[str, dict] = {}
        self.total: dict[str, dict] = {}
        self.open = False

    def start_call(self) -> None:
        self.calls += 1
        self.last_call = {}
        self.open = True

    def record(self, branch: str, reused: bool) -> None:
        if not self.open:
            self.start_call()
        last = self.last_call.setdefault(branch, {"computed": 0, "skipped": 0, "pattern": ""})
        total = self.total.setdefault(branch, {"computed": 0, "skipped": 0})
        key = "skipped" if reused else "computed"
        last[key] += 1
        total[key] += 1
        last["pattern"] += "S" if reused else "C"

    def as_dict(self) -> dict:
        computed = sum(c["computed"] for c in self.total.values())
        skipped = sum(c["skipped"] for c in self.total.values())
        return {
            "calls": self.calls,
            "last_call": {name: dict(counts) for name, counts in self.last_call.items()},
            "total": {name: dict(counts) for name, counts in self.total.items()},
            "computed_ratio": computed / (computed + skipped) if computed + skipped else None,
        }


def _per_sample_mean_abs(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.abs().flatten(1).mean(1) if tensor.ndim > 1 else tensor.abs().mean().reshape(1)


def _prediction(output) -> torch.Tensor:
    sample = sample_of(output)
    if sample is None:
        raise TypeError(
            "EasyCache needs a denoiser that returns a tensor, a tuple with the prediction first or an output "
            f"with .sample; this one returned {type(output).__name__}"
        )
    return sample


class EasyCacheHook(compat.ModelHook):
    """On the denoiser: decides per call whether to run it or to return ``x + Delta`` of its branch."""

    _is_stateful = True

    def __init__(self, config: EasyCacheConfig):
        super().__init__()
        self.config = config
        self.state_manager = compat.StateManager(EasyCacheState)
        self.stats = _Stats()
        self.decision: tuple[int, bool] | None = None  # (step, reuse) set by the first branch at that step
        self._signature = None
        self._latent_name = None

    def initialize_hook(self, module):
        signature = inspect.signature(type(compat.unwrap_module(module)).forward)
        parameters = list(signature.parameters.values())[1:]
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if not parameters or parameters[0].kind not in positional:
            raise TypeError(
                "EasyCache needs a denoiser whose forward takes the latent as its first argument; "
                f"{type(compat.unwrap_module(module)).__name__}.forward{signature} does not"
            )
        self._signature = signature.replace(parameters=parameters)
        self._latent_name = parameters[0].name
        return module

    def new_forward(self, module, *args, **kwargs):
        reused = self._before(args, kwargs)
        if reused is not None:
            return reused
        output = self.fn_ref.original_forward(*args, **kwargs)
        self._after(output)
        return output

    def reset_state(self, module):
        self.state_manager.reset()
        self.decision = None
        self.stats.open = False
        return module

    def _restart(self, context) -> None:
        """A new pipeline call began without ``reset_state``: forget every branch and the shared decision."""
        self.state_manager.reset()
        self.state_manager.set_context(context)
        self.decision = None
        self.stats.start_call()

    @staticmethod
    def _is_new_call(state: EasyCacheState, context, timestep, latent: torch.Tensor) -> bool:
        """Step indices only grow and diffusion timesteps only fall within one pipeline call."""
        if state.previous_input is not None and state.previous_input.shape != latent.shape:
            return True
        if context.step_index is not None and state.step_index is not None:
            return context.step_index <= state.step_index
        return timestep is not None and state.timestep is not None and timestep > state.timestep

    def _forced(self, state: EasyCacheState, step: int, num_steps: int | None) -> bool:
        """Steps that are computed whatever the estimate says."""
        config = self.config
        return (
            config.threshold == 0
            or step < config.warmup_for(num_steps)
            or (config.final_steps > 0 and step >= num_steps - config.final_steps)
            or state.rate is None
            or state.accumulated is None
        )

    @torch.compiler.disable
    @torch.no_grad()
    def _before(self, args, kwargs):
        """Update this branch's estimator and return the reused output, or None to run the model."""
        context = compat.ensure_context(self.state_manager, DEFAULT_CONTEXT)
        state: EasyCacheState = self.state_manager.get_state()
        bound = self._signature.bind_partial(*args, **kwargs).arguments
        latent = bound.get(self._latent_name)
        if not torch.is_tensor(latent):
            raise TypeError(
                f"EasyCache: the denoiser's first argument {self._latent_name!r} must be the latent tensor, "
                f"got {type(latent).__name__}"
            )
        timestep = bound.get("timestep")
        if torch.is_tensor(timestep):
            timestep = float(timestep.detach().float().max())
        if state.step >= 0 and self._is_new_call(state, context, timestep, latent):
            self._restart(context)
            state = self.state_manager.get_state()
        if not self.stats.open:
            self.stats.start_call()

        step = context.step_index if context.step_index is not None else state.step + 1
        state.step, state.step_index, state.timestep = step, context.step_index, timestep
        num_steps = context.num_inference_steps or self.config.num_inference_steps
        if num_steps is None and self.config.needs_step_count():
            raise ValueError(
                "EasyCache: the pipeline does not pass num_inference_steps through cache_context, and the "
                "warm-up ratio or the final steps need it; set EasyCacheConfig.num_inference_steps (or "
                "warmup_steps and final_steps=0)"
            )

        x = latent.detach().float()
        if state.previous_input is not None and state.rate is not None:
            estimate = state.rate * _per_sample_mean_abs(x - state.previous_input)
            estimate = estimate / state.anchor_scale.clamp_min(_TINY)
            state.accumulated = estimate if state.accumulated is None else state.accumulated + estimate
        state.previous_input = state.current_input = x

        if self.decision is not None and self.decision[0] == step:
            reuse = self.decision[1]  # another branch already decided this step
        else:
            reuse = not self._forced(state, step, num_steps) and bool(
                state.accumulated.max() < self.config.threshold
            )
            self.decision = (step, reuse)
        reuse = reuse and state.anchor_input is not None and state.anchor_input.shape == x.shape
        self.stats.record(context.name, reuse)
        if not reuse:
            state.accumulated = None  # E restarts from 0 at every computed step
            return None
        prediction = state.transformation.clone()
        prediction[:, : x.shape[1]] += x
        return shaped_like(state.template, prediction.to(state.dtype))

    @torch.compiler.disable
    @torch.no_grad()
    def _after(self, output) -> None:
        """After a computed step: refresh k from the last two computed steps, and Delta."""
        state: EasyCacheState = self.state_manager.get_state()
        x, state.current_input = state.current_input, None
        sample = _prediction(output)
        v = sample.detach().float()
        extra_channels = (
            v.ndim == x.ndim and v.shape[0] == x.shape[0] and v.shape[2:] == x.shape[2:] and v.shape[1] > x.shape[1]
        )
        if v.shape != x.shape and not extra_channels:
            raise ValueError(
                f"EasyCache: the denoiser's output {tuple(v.shape)} cannot be related to its input "
                f"{tuple(x.shape)} (same shape, or extra channels only, is needed to form output - input)"
            )
        if state.anchor_output is not None and state.anchor_output.shape == v.shape:
            output_change = _per_sample_mean_abs(v - state.anchor_output)
            state.rate = output_change / _per_sample_mean_abs(x - state.anchor_input).clamp_min(_TINY)
        transformation = v.clone()
        transformation[:, : x.shape[1]] -= x
        state.anchor_input, state.anchor_output = x, v
        state.anchor_scale = _per_sample_mean_abs(v)
        state.transformation = transformation
        state.template, state.dtype = template_of(output), sample.dtype


def apply_easycache(module: torch.nn.Module, config: EasyCacheConfig | None = None) -> EasyCacheConfig:
    """Hook EasyCache onto a denoiser (replacing an earlier EasyCache hook); returns the config used."""
    config = config if config is not None else EasyCacheConfig()
    if not isinstance(config, EasyCacheConfig):
        raise TypeError(f"apply_easycache needs an EasyCacheConfig, not {type(config).__name__}")
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"EasyCache applies to a torch.nn.Module denoiser, not {type(module).__name__}")
    module = compat.unwrap_module(module)
    registry = compat.HookRegistry.check_if_exists_or_initialize(module)
    compat.remove_registered(module, [EASYCACHE_HOOK])
    registry.register_hook(EasyCacheHook(config), EASYCACHE_HOOK)
    registry.invalidate_child_registries_cache()
    return config


def remove_easycache(module: torch.nn.Module) -> bool:
    """Take EasyCache off ``module`` (its forward is then exactly the one it had before); whether it was on."""
    module = compat.unwrap_module(module)
    if compat.hook_on(module, EASYCACHE_HOOK) is None:
        return False
    compat.remove_registered(module, [EASYCACHE_HOOK])
    compat.registry_of(module).invalidate_child_registries_cache()
    return True


def easycache_stats(module: torch.nn.Module) -> dict:
    """What EasyCache did on ``module``: per guidance branch, computed and reused ("skipped") calls of the
    most recent pipeline call (with the pattern, C computed / S reused) and in total, and the computed share."""
    hook = compat.hook_on(compat.unwrap_module(module), EASYCACHE_HOOK)
    if hook is None:
        raise ValueError("EasyCache is not applied to this module")
    return hook.stats.as_dict()
