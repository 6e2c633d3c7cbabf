"""TeaCache as a diffusers hook: reuse the block stack's last residual while its input has barely moved.

TeaCache (Liu et al., "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model", 2024) watches
a cheap *indicator* at the entrance of the transformer's block stack, usually the timestep-modulated input of
the first block. Per denoising step it measures the relative L1 change of that indicator against the previous
step, maps it through a polynomial fitted per model (``numpy.polyval``) to an estimate of how much the model
output (or the stack residual) changes, and adds the estimate to an accumulator. While the accumulator stays
under ``rel_l1_thresh`` the blocks are not run: the stack's output is rebuilt as its input plus the residual
(stack output minus stack input) of the last computed step. Otherwise the blocks run and the accumulator
starts again from zero.

How it sits in the model (four hooks, registered in diffusers' ``HookRegistry`` under their own names):

- the root hook on the transformer keeps the step count, notices a new pipeline call, counts computed and
  skipped calls, and (for fitting) reports per-step measurements to ``TeaCacheConfig.recorder``;
- the head hook on the first block computes the indicator and makes the decision;
- every other block passes its input through unchanged on a skipped step;
- the stack-output hook on the module that consumes the stack's output (``norm_final``, else ``norm_out``)
  records the residual on computed steps and substitutes ``input + residual`` on skipped steps. Working at
  that boundary keeps the model's own code between blocks (Latte's reshapes and temporal position embedding)
  out of the residual's way.

State is kept per ``cache_context`` (``"cond"`` / ``"uncond"``), so an output-level hook on the same
transformer composes with it. Within one call every sample has its own accumulator and the stack is skipped
only when all of them are under the threshold, so one sample (or the conditional half of a batched
classifier-free-guidance call) never decides for the others. Decisions run outside compiled graphs.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.hooks.hooks import BaseState, CacheContext, StateManager
from diffusers.utils.torch_utils import unwrap_module

logger = logging.getLogger(__name__)

ROOT_HOOK = "teacache_root"
HEAD_HOOK = "teacache_head_block"
BLOCK_HOOK = "teacache_block"
STACK_OUTPUT_HOOK = "teacache_stack_output"
HOOK_NAMES = (ROOT_HOOK, HEAD_HOOK, BLOCK_HOOK, STACK_OUTPUT_HOOK)

#: Indicators the hook can watch; see docs/teacache.md for what each one is on each model.
INDICATORS = ("auto", "modulated_input", "timestep_conditioning", "time_embedding", "block_input")

#: Format tag and version of the coefficient files written by ``taocache fit-teacache``.
COEFFICIENT_FORMAT = "taocache.teacache-coefficients"
COEFFICIENT_VERSION = 1
#: Fitted coefficient files that ship with the project; looked up by model fingerprint when none are given.
COEFFICIENTS_DIR = Path(__file__).resolve().parents[2] / "pipelines" / "coefficients"

_STACK_OUTPUT_MODULES = ("norm_final", "norm_out")  # the first that the stack output enters


# ------------------------------------------------------------------------------------------ model identity


def config_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the transformer's class and public config: equal for models of identical shape."""
    model = unwrap_module(model)
    config = getattr(model, "config", None)
    public = {k: v for k, v in dict(config or {}).items() if not k.startswith("_")}
    text = json.dumps({"class": type(model).__name__, "config": public}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ModelMatch:
    """Which transformer a set of coefficients belongs to; ``apply_teacache`` refuses any other.

    Args:
        transformer_class: class name of the transformer (``type(model).__name__``).
        config: config entries the transformer must have (published presets name the architecture this way).
        fingerprint: ``config_fingerprint`` of the transformer the coefficients were fitted on.
        source: where the coefficients come from (a preset name or a file), quoted in errors.
    """

    transformer_class: str
    config: dict = field(default_factory=dict)
    fingerprint: str | None = None
    source: str = ""

    def mismatch(self, model: torch.nn.Module) -> str | None:
        """Why ``model`` is not the model these coefficients belong to, or None when it is."""
        model = unwrap_module(model)
        name = type(model).__name__
        if name != self.transformer_class:
            return f"they belong to a {self.transformer_class}, the model is a {name}"
        config = dict(getattr(model, "config", None) or {})
        for key, value in self.config.items():
            if config.get(key) != value:
                return f"they need {key}={value!r}, the model has {key}={config.get(key)!r}"
        if self.fingerprint is not None and config_fingerprint(model) != self.fingerprint:
            return (
                f"they were fitted on a model with config fingerprint {self.fingerprint}, "
                f"the model's is {config_fingerprint(model)}"
            )
        return None


# ---------------------------------------------------------------------------------------- published presets

# Rescaling polynomials published by the TeaCache authors (github.com/ali-vilab/TeaCache), highest power
# first, each with the indicator it was fitted on and the warm-up it was published with.
_WAN_1_3B = {"num_layers": 30, "num_attention_heads": 12, "attention_head_dim": 128, "image_dim": None}
_WAN_14B = {"num_layers": 40, "num_attention_heads": 40, "attention_head_dim": 128, "image_dim": None}
PUBLISHED_PRESETS: dict[str, dict] = {
    # TeaCache4Wan2.1/teacache_generate.py, t2v-1.3B without use_ret_steps: the indicator is the time
    # embedding before its projection (`e`), the first step and the last step are computed.
    "wan2.1-t2v-1.3b": {
        "transformer_class": "WanTransformer3DModel",
        "config": _WAN_1_3B,
        "indicator": "time_embedding",
        "warmup_steps": 1,
        "coefficients": [2.39676752e03, -1.31110545e03, 2.01331979e02, -8.29855975e00, 1.37887774e-01],
    },
    # Same file, t2v-1.3B with use_ret_steps: the indicator is the projected timestep conditioning the
    # blocks receive (`e0`), the first 5 steps are computed.
    "wan2.1-t2v-1.3b-ret": {
        "transformer_class": "WanTransformer3DModel",
        "config": _WAN_1_3B,
        "indicator": "timestep_conditioning",
        "warmup_steps": 5,
        "coefficients": [-5.21862437e04, 9.23041404e03, -5.28275948e02, 1.36987616e01, -4.99875664e-02],
    },
    # Same file, t2v-14B without use_ret_steps.
    "wan2.1-t2v-14b": {
        "transformer_class": "WanTransformer3DModel",
        "config": _WAN_14B,
        "indicator": "time_embedding",
        "warmup_steps": 1,
        "coefficients": [-5784.54975374, 5449.50911966, -1811.16591783, 256.27178429, -13.02252404],
    },
    # eval/teacache/experiments/latte.py (VideoSys harness): modulated input of the first spatial block.
    "latte-1": {
        "transformer_class": "LatteTransformer3DModel",
        "config": {"num_layers": 28, "num_attention_heads": 16, "attention_head_dim": 72},
        "indicator": "modulated_input",
        "warmup_steps": 1,
        "coefficients": [-2.46434137e03, 3.08044764e02, 8.07447667e01, -4.11385132e00, 1.11001402e-01],
    },
    # eval/teacache/experiments/opensora_plan.py (VideoSys harness, v1.1.0): modulated input of the first
    # block of its LatteT2V transformer. That model runs in its own code base; not exercised here.
    "opensora-plan-v1.1.0": {
        "transformer_class": "LatteT2V",
        "config": {},
        "indicator": "modulated_input",
        "warmup_steps": 1,
        "coefficients": [2.05943668e05, -1.48759286e04, 3.06085986e02, 1.31418080e00, 2.39658469e-03],
    },
    # eval/teacache/experiments/cogvideox.py (VideoSys harness): the timestep embedding the blocks receive.
    "cogvideox-2b": {
        "transformer_class": "CogVideoXTransformer3DModel",
        "config": {"num_layers": 30, "num_attention_heads": 30, "use_rotary_positional_embeddings": False},
        "indicator": "timestep_conditioning",
        "warmup_steps": 1,
        "coefficients": [-3.10658903e01, 2.54732368e01, -5.92380459e00, 1.75769064e00, -3.61568434e-03],
    },
    "cogvideox-5b": {
        "transformer_class": "CogVideoXTransformer3DModel",
        "config": {"num_layers": 42, "num_attention_heads": 48, "use_rotary_positional_embeddings": True},
        "indicator": "timestep_conditioning",
        "warmup_steps": 1,
        "coefficients": [-1.53880483e03, 8.43202495e02, -1.34363087e02, 7.97131516e00, -5.23162339e-02],
    },
}


# ------------------------------------------------------------------------------------------------- config


def _check_int(name: str, value, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        accepted = f"an integer >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"TeaCacheConfig.{name}={value!r} is invalid: expected {accepted}")


@dataclass
class TeaCacheConfig:
    """Settings of TeaCache. Invalid values raise ``ValueError`` naming the field and the accepted range.

    Args:
        rel_l1_thresh: budget for the accumulated, rescaled relative L1 change of the indicator; the block
            stack is skipped while every sample's accumulator stays under it. 0 never skips. Typical values
            with fitted coefficients: 0.05 (cautious) to 0.2 (fast). A float >= 0.
        coefficients: rescaling polynomial, highest power first (``numpy.polyval`` order), mapping the
            indicator's relative L1 change to the expected relative L1 change of the model output or of the
            block stack's residual (whichever it was fitted on). None looks for coefficients fitted for this
            exact model in ``pipelines/coefficients/``, then for a published preset of this model, and
            otherwise uses the raw change (``[1, 0]``) with a warning.
        indicator: what is watched at the stack's entrance: ``"modulated_input"`` (first block's
            timestep-modulated, normalised input; Wan, Latte, CogVideoX), ``"timestep_conditioning"`` (the
            timestep conditioning the first block receives), ``"time_embedding"`` (Wan's time embedding before
            its projection), ``"block_input"`` (the first block's hidden states; any transformer), or
            ``"auto"`` (the one the coefficients were fitted on, else ``"modulated_input"`` where the model
            is known, else ``"block_input"``).
        warmup_steps: first denoising steps that are always computed (the first has nothing to reuse).
            None takes the warm-up stored with the coefficients (fitted files and presets carry theirs), else
            1. An integer >= 1 or None.
        final_steps: last denoising steps that are always computed; needs the step count (from the
            pipeline's ``cache_context`` or ``num_inference_steps``). An integer >= 1.
        max_skip_steps: most consecutive skipped steps per guidance branch; None for no limit (as published).
            An integer >= 1 or None.
        num_inference_steps: the number of denoising steps, for pipelines that do not pass it through
            ``cache_context`` (Latte, CogVideoX); without it the final steps cannot be forced. An integer >= 1
            or None.
        model_match: the transformer the coefficients belong to; set by ``from_file`` and ``from_preset`` so
            coefficients are never applied to another model.
        recorder: called after every denoiser call with a ``TeaCacheRecord`` (used to fit coefficients).
    """

    rel_l1_thresh: float = 0.1
    coefficients: Sequence[float] | None = None
    indicator: str = "auto"
    warmup_steps: int | None = None
    final_steps: int = 1
    max_skip_steps: int | None = None
    num_inference_steps: int | None = None
    model_match: ModelMatch | None = None
    recorder: Callable[[TeaCacheRecord], None] | None = None

    def __post_init__(self):
        # numpy and torch scalars are numbers too: keep them as plain Python ones
        if isinstance(self.rel_l1_thresh, numbers.Real) and not isinstance(self.rel_l1_thresh, bool):
            self.rel_l1_thresh = float(self.rel_l1_thresh)
        for name in ("warmup_steps", "final_steps", "max_skip_steps", "num_inference_steps"):
            value = getattr(self, name)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                setattr(self, name, int(value))
        thresh = self.rel_l1_thresh
        if (
            isinstance(thresh, bool)
            or not isinstance(thresh, (int, float))
            or not math.isfinite(thresh)
            or thresh < 0
        ):
            raise ValueError(
                f"TeaCacheConfig.rel_l1_thresh={thresh!r} is invalid: expected a finite float >= 0"
            )
        self.rel_l1_thresh = float(thresh)
        if self.coefficients is not None:
            self.coefficients = _validated_coefficients(self.coefficients, "TeaCacheConfig.coefficients")
        if self.indicator not in INDICATORS:
            raise ValueError(
                f"TeaCacheConfig.indicator={self.indicator!r} is invalid: expected one of {INDICATORS}"
            )
        _check_int("warmup_steps", self.warmup_steps, 1, allow_none=True)
        _check_int("final_steps", self.final_steps, 1)
        _check_int("max_skip_steps", self.max_skip_steps, 1, allow_none=True)
        _check_int("num_inference_steps", self.num_inference_steps, 1, allow_none=True)
        if self.model_match is not None and not isinstance(self.model_match, ModelMatch):
            raise ValueError(
                f"TeaCacheConfig.model_match={self.model_match!r} is invalid: expected a ModelMatch or None"
            )
        if self.recorder is not None and not callable(self.recorder):
            raise ValueError(
                f"TeaCacheConfig.recorder={self.recorder!r} is invalid: expected a callable or None"
            )

    @classmethod
    def from_preset(cls, name: str, **overrides) -> TeaCacheConfig:
        """The published coefficients of ``name`` (see ``PUBLISHED_PRESETS``), bound to that model."""
        if name not in PUBLISHED_PRESETS:
            raise ValueError(f"unknown TeaCache preset {name!r}; known presets: {sorted(PUBLISHED_PRESETS)}")
        preset = PUBLISHED_PRESETS[name]
        match = ModelMatch(preset["transformer_class"], dict(preset["config"]), source=f"preset {name!r}")
        settings = {
            "coefficients": list(preset["coefficients"]),
            "indicator": preset["indicator"],
            "warmup_steps": preset["warmup_steps"],
            "model_match": match,
        }
        return cls(**{**settings, **overrides})

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> TeaCacheConfig:
        """Coefficients fitted by ``taocache fit-teacache`` (JSON), bound to the model they were fitted on."""
        data = read_coefficient_file(path)
        match = ModelMatch(
            data["transformer_class"], fingerprint=data["config_fingerprint"], source=str(path)
        )
        settings = {
            "coefficients": data["coefficients"],
            "indicator": data["indicator"],
            "warmup_steps": data["warmup_steps"],
            "model_match": match,
        }
        return cls(**{**settings, **overrides})


def _validated_coefficients(values, what: str) -> tuple[float, ...]:
    try:
        coefficients = tuple(float(v) for v in values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what}={values!r} is invalid: expected a sequence of numbers ({err})") from None
    if not coefficients or not all(math.isfinite(c) for c in coefficients):
        raise ValueError(f"{what}={values!r} is invalid: expected a non-empty sequence of finite numbers")
    return coefficients


def read_coefficient_file(path: str | Path) -> dict:
    """Read and check a coefficient file; errors name the file and say what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"TeaCache coefficient file {path} does not exist; write one with "
            "`taocache fit-teacache --output PATH`"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"TeaCache coefficient file {path} is not readable JSON: {err}") from None
    if not isinstance(data, dict) or data.get("format") != COEFFICIENT_FORMAT:
        raise ValueError(
            f'{path} is not a TeaCache coefficient file (expected "format": '
            f'"{COEFFICIENT_FORMAT}"); write one with `taocache fit-teacache`'
        )
    if data.get("version") != COEFFICIENT_VERSION:
        raise ValueError(
            f"TeaCache coefficient file {path} has version {data.get('version')!r}; "
            f"this taocache reads version {COEFFICIENT_VERSION}: fit it again"
        )
    missing = [
        k for k in ("transformer_class", "config_fingerprint", "indicator", "coefficients") if k not in data
    ]
    if missing:
        raise ValueError(f"TeaCache coefficient file {path} lacks the field(s) {missing}")
    data["coefficients"] = _validated_coefficients(data["coefficients"], f"{path}: coefficients")
    warmup = data.setdefault("warmup_steps", 1)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
        raise ValueError(f"TeaCache coefficient file {path}: warmup_steps={warmup!r} must be an integer >= 1")
    if data["indicator"] not in INDICATORS[1:]:
        raise ValueError(
            f"TeaCache coefficient file {path}: indicator {data['indicator']!r} is not one of "
            f"{INDICATORS[1:]}"
        )
    return data


# ----------------------------------------------------------------------------------------------- indicators


def _modulated_input(model, block, args: dict, call: dict) -> torch.Tensor:
    """The first block's normalised input after its timestep shift and scale, as the block computes it."""
    hidden = args["hidden_states"]
    name = type(block).__name__
    if name == "WanTransformerBlock":
        temb = args["temb"]
        if temb.ndim == 4:  # per-token conditioning (Wan2.2 TI2V): batch, tokens, 6, dim
            table = block.scale_shift_table.unsqueeze(0) + temb.float()
            shift, scale = table[:, :, 0], table[:, :, 1]
        else:  # batch, 6, dim
            table = block.scale_shift_table + temb.float()
            shift, scale = table[:, 0:1], table[:, 1:2]
        return block.norm1(hidden.float()) * (1 + scale) + shift
    if getattr(block, "norm_type", None) == "ada_norm_single":  # Latte, PixArt, OpenSora-Plan
        table = block.scale_shift_table[None] + args["timestep"].reshape(hidden.shape[0], 6, -1)
        shift, scale = table[:, 0:1], table[:, 1:2]
        return block.norm1(hidden) * (1 + scale) + shift
    if name == "CogVideoXBlock":
        return block.norm1(hidden, args["encoder_hidden_states"], args["temb"])[0]
    raise ValueError(
        f"TeaCache does not know how {name} modulates its input; use indicator='block_input' or "
        "'timestep_conditioning' for this model"
    )


def _timestep_conditioning(model, block, args: dict, call: dict) -> torch.Tensor:
    """The timestep conditioning the first block receives (Wan: the projected ``e0``; Latte: adaLN-single)."""
    for name in ("temb", "timestep"):
        if isinstance(args.get(name), torch.Tensor):
            return args[name]
    raise ValueError(
        f"the first block ({type(block).__name__}) receives no timestep conditioning ('temb' or 'timestep'); "
        "use indicator='block_input'"
    )


def _time_embedding(model, block, args: dict, call: dict) -> torch.Tensor:
    """Wan's time embedding before the projection to the blocks' six modulations (TeaCache4Wan2.1's ``e``)."""
    embedder = getattr(model, "condition_embedder", None)
    timestep = call.get("timestep")
    if embedder is None or not hasattr(embedder, "time_embedder") or not isinstance(timestep, torch.Tensor):
        raise ValueError(
            f"indicator='time_embedding' is only defined for Wan transformers, not "
            f"{type(model).__name__}; use 'modulated_input' or 'block_input'"
        )
    projected = embedder.timesteps_proj(timestep.flatten())
    dtype = next(embedder.time_embedder.parameters()).dtype
    return embedder.time_embedder(projected.to(dtype))


def _block_input(model, block, args: dict, call: dict) -> torch.Tensor:
    """The first block's hidden states: a generic indicator for any transformer (fit coefficients for it)."""
    return args["hidden_states"]


_INDICATOR_FUNCTIONS = {
    "modulated_input": _modulated_input,
    "timestep_conditioning": _timestep_conditioning,
    "time_embedding": _time_embedding,
    "block_input": _block_input,
}
#: Transformers whose first block's modulation ``modulated_input`` knows; others default to ``block_input``.
MODULATED_INPUT_MODELS = ("WanTransformer3DModel", "LatteTransformer3DModel", "CogVideoXTransformer3DModel")


def per_sample_rel_l1(current: torch.Tensor, previous: torch.Tensor, num_samples: int) -> np.ndarray:
    """Relative L1 change ``mean|a - b| / mean|b|`` of each sample (rows are grouped sample-major)."""
    rows = num_samples if current.ndim and current.shape[0] % num_samples == 0 else 1
    a = current.detach().float().reshape(rows, -1)
    b = previous.detach().float().reshape(rows, -1)
    change = (a - b).abs().mean(dim=1) / b.abs().mean(dim=1).clamp_min(1e-12)
    return change.cpu().numpy().astype(np.float64)


# ------------------------------------------------------------------------------------------- state and hooks


@dataclass
class TeaCacheRecord:
    """What the hook measured in one denoiser call (per sample), reported to ``TeaCacheConfig.recorder``."""

    context: str
    step: int
    num_samples: int
    computed: bool
    indicator_change: list[float] | None
    output_change: list[float] | None
    residual_change: list[float] | None


class TeaCacheState(BaseState):
    """Per guidance branch: where the pipeline call is, the accumulator, and the tensors reused on a skip."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.step = -1
        self.step_index = None  # the pipeline's own step index, when its cache_context gives one
        self.timestep = None
        self.num_samples = None
        self.num_steps = None
        self.call_args = {}
        self.decided = False
        self.skip = False
        self.previous_indicator = None
        self.indicator_change = None
        self.accumulated = None
        self.consecutive_skips = 0
        self.stack_input = None
        self.residual = None
        self.residual_change = None
        self.previous_output = None
        self.previous_residual = None
        self.boundary_failed = False


@dataclass
class _Settings:
    """What the hooks share once ``apply_teacache`` has resolved the config against the model."""

    config: TeaCacheConfig
    coefficients: np.ndarray
    indicator_fn: Callable
    model: torch.nn.Module
    counts: dict = field(default_factory=dict)
    warned: set = field(default_factory=set)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            logger.warning(message)


def _bind(signature: inspect.Signature, args, kwargs) -> dict:
    return dict(signature.bind_partial(*args, **kwargs).arguments)


def _forward_signature(module: torch.nn.Module) -> inspect.Signature:
    signature = inspect.signature(type(module).forward)
    return signature.replace(parameters=list(signature.parameters.values())[1:])


def _block_metadata(block: torch.nn.Module) -> TransformerBlockMetadata:
    try:
        return TransformerBlockRegistry.get(type(block))
    except ValueError:  # an unregistered block: assume it takes and returns the hidden states first
        return TransformerBlockMetadata(return_hidden_states_index=0, _cls=type(block))


def _pass_through(metadata: TransformerBlockMetadata, args, kwargs):
    """What a block returns on a skipped step: its inputs, unchanged, in the shape of its usual output."""
    hidden = metadata._get_parameter_from_args_kwargs(metadata.hidden_states_argument_name, args, kwargs)
    if metadata.return_encoder_hidden_states_index is None:
        return hidden
    encoder = metadata._get_parameter_from_args_kwargs(
        metadata.encoder_hidden_states_argument_name, args, kwargs
    )
    output = [None] * (
        max(metadata.return_hidden_states_index, metadata.return_encoder_hidden_states_index) + 1
    )
    output[metadata.return_hidden_states_index] = hidden
    output[metadata.return_encoder_hidden_states_index] = encoder
    return tuple(output)


def _first_tensor(output) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "sample"):
        return output.sample
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


class _SignatureHook(ModelHook):
    """A TeaCache hook that shares the state manager and settings and binds its module's call arguments."""

    def __init__(self, state_manager: StateManager, settings: _Settings):
        super().__init__()
        self.state_manager = state_manager
        self.settings = settings
        self._signature = None

    def initialize_hook(self, module):
        self._signature = _forward_signature(unwrap_module(module))
        return module


class TeaCacheRootHook(_SignatureHook):
    """On the transformer: tracks the step, detects a new pipeline call, counts, and reports records."""

    _is_stateful = True

    def pre_forward(self, module, *args, **kwargs):
        self._begin_call(args, kwargs)
        return args, kwargs

    def post_forward(self, module, output):
        self._end_call(output)
        return output

    @torch.compiler.disable
    def _begin_call(self, args, kwargs) -> None:
        if self.state_manager._context is None:  # pipelines without cache_context (Latte) share one branch
            self.state_manager.set_context(CacheContext("inference"))
        context = self.state_manager.context
        state: TeaCacheState = self.state_manager.get_state()
        bound = _bind(self._signature, args, kwargs)
        hidden = bound.get("hidden_states", args[0] if args else None)
        timestep = bound.get("timestep")
        num_samples = int(hidden.shape[0]) if isinstance(hidden, torch.Tensor) else 1
        t = float(timestep.detach().float().max()) if isinstance(timestep, torch.Tensor) else timestep
        if state.step >= 0 and self._is_new_call(state, context, t, num_samples):
            state.reset()
        state.step = context.step_index if context.step_index is not None else state.step + 1
        state.step_index = context.step_index
        state.timestep = t
        state.num_samples = num_samples
        state.num_steps = context.num_inference_steps or self.settings.config.num_inference_steps
        state.call_args = {"timestep": timestep}
        state.decided = state.skip = False
        state.indicator_change = state.residual_change = None

    @staticmethod
    def _is_new_call(state: TeaCacheState, context: CacheContext, t, num_samples: int) -> bool:
        """Step indices only grow and diffusion timesteps only fall within one pipeline call."""
        if num_samples != state.num_samples:
            return True
        if context.step_index is not None and state.step_index is not None:
            return context.step_index <= state.step_index
        return isinstance(t, (int, float)) and isinstance(state.timestep, (int, float)) and t > state.timestep

    @torch.compiler.disable
    def _end_call(self, output) -> None:
        state: TeaCacheState = self.state_manager.get_state()
        name = self.state_manager.context.name
        if state.decided:
            counts = self.settings.counts.setdefault(name, {"computed": 0, "skipped": 0})
            counts["skipped" if state.skip else "computed"] += 1
        recorder = self.settings.config.recorder
        if recorder is not None:
            result = _first_tensor(output)
            output_change = None
            if (
                result is not None
                and state.previous_output is not None
                and state.previous_output.shape == result.shape
            ):
                output_change = per_sample_rel_l1(result, state.previous_output, state.num_samples).tolist()
            state.previous_output = None if result is None else result.detach().clone()
            recorder(
                TeaCacheRecord(
                    context=name,
                    step=state.step,
                    num_samples=state.num_samples,
                    computed=not state.skip,
                    indicator_change=None
                    if state.indicator_change is None
                    else state.indicator_change.tolist(),
                    output_change=output_change,
                    residual_change=None if state.residual_change is None else state.residual_change.tolist(),
                )
            )
        state.call_args = {}
        state.stack_input = None

    def reset_state(self, module):
        self.state_manager.reset()
        return module


class TeaCacheHeadHook(_SignatureHook):
    """On the first block: measures the indicator, updates the accumulator and decides compute or skip."""

    def __init__(self, state_manager: StateManager, settings: _Settings):
        super().__init__(state_manager, settings)
        self._metadata = None

    def initialize_hook(self, module):
        self._metadata = _block_metadata(unwrap_module(module))
        return super().initialize_hook(module)

    def new_forward(self, module, *args, **kwargs):
        if self._decide(module, args, kwargs):
            return _pass_through(self._metadata, args, kwargs)
        return self.fn_ref.original_forward(*args, **kwargs)

    @torch.compiler.disable
    @torch.no_grad()
    def _decide(self, module, args, kwargs) -> bool:
        if self.state_manager._context is None:  # called outside the transformer's forward
            return False
        state: TeaCacheState = self.state_manager.get_state()
        config = self.settings.config
        bound = _bind(self._signature, args, kwargs)
        bound.setdefault("hidden_states", bound.get(self._metadata.hidden_states_argument_name))
        state.stack_input = bound["hidden_states"]
        indicator = self.settings.indicator_fn(
            self.settings.model, unwrap_module(module), bound, state.call_args
        )
        indicator = indicator.detach().float()
        previous, state.previous_indicator = state.previous_indicator, indicator
        change = None
        if previous is not None and previous.shape == indicator.shape:
            change = per_sample_rel_l1(indicator, previous, state.num_samples or 1)
        state.indicator_change = change

        num_steps = state.num_steps
        if num_steps is None:
            self.settings.warn_once(
                "steps",
                "TeaCache: the pipeline does not pass num_inference_steps through "
                "cache_context; set TeaCacheConfig.num_inference_steps so the final steps "
                "are always computed",
            )
        forced = (
            change is None
            or state.residual is None
            or state.boundary_failed
            or config.rel_l1_thresh == 0
            or state.step < config.warmup_steps
            or (num_steps is not None and state.step >= num_steps - config.final_steps)
        )
        skip = False
        if not forced:
            estimate = np.maximum(np.polyval(self.settings.coefficients, change), 0.0)
            accumulated = (
                estimate
                if state.accumulated is None or state.accumulated.shape != estimate.shape
                else state.accumulated + estimate
            )
            state.accumulated = accumulated
            within_run = config.max_skip_steps is None or state.consecutive_skips < config.max_skip_steps
            skip = bool(accumulated.max() < config.rel_l1_thresh) and within_run
        if skip:
            state.consecutive_skips += 1
        else:
            state.accumulated = None
            state.consecutive_skips = 0
        state.skip = skip
        state.decided = True
        return skip


class TeaCacheBlockHook(ModelHook):
    """On every other block: passes its input through on a skipped step."""

    def __init__(self, state_manager: StateManager):
        super().__init__()
        self.state_manager = state_manager
        self._metadata = None

    def initialize_hook(self, module):
        self._metadata = _block_metadata(unwrap_module(module))
        return module

    def new_forward(self, module, *args, **kwargs):
        if self._skipping():
            return _pass_through(self._metadata, args, kwargs)
        return self.fn_ref.original_forward(*args, **kwargs)

    @torch.compiler.disable
    def _skipping(self) -> bool:
        return self.state_manager._context is not None and self.state_manager.get_state().skip


class TeaCacheStackOutputHook(_SignatureHook):
    """On the module after the stack: keeps the residual on computed steps, adds it back on skipped ones."""

    def new_forward(self, module, *args, **kwargs):
        args, kwargs = self._rebuild(args, kwargs)
        return self.fn_ref.original_forward(*args, **kwargs)

    @torch.compiler.disable
    @torch.no_grad()
    def _rebuild(self, args, kwargs):
        if self.state_manager._context is None:
            return args, kwargs
        state: TeaCacheState = self.state_manager.get_state()
        stack_input, state.stack_input = state.stack_input, None
        if not state.decided or stack_input is None:
            return args, kwargs
        first = next(iter(self._signature.parameters))
        stack_output = args[0] if args else kwargs[first]
        if state.skip:
            rebuilt = (stack_input.to(state.residual.dtype) + state.residual).to(stack_output.dtype)
            return ((rebuilt, *args[1:]), kwargs) if args else ((), {**kwargs, first: rebuilt})
        if stack_output.shape != stack_input.shape:
            state.boundary_failed = True
            self.settings.warn_once(
                "shape",
                (
                    f"TeaCache: the block stack's output {tuple(stack_output.shape)} and input "
                    f"{tuple(stack_input.shape)} differ in shape on this model; caching is off, "
                    "every step is computed"
                ),
            )
            return args, kwargs
        residual = stack_output.detach() - stack_input.detach().to(stack_output.dtype)
        if self.settings.config.recorder is not None:
            if state.previous_residual is not None:
                state.residual_change = per_sample_rel_l1(
                    residual, state.previous_residual, state.num_samples
                )
            state.previous_residual = residual
        state.residual = residual
        return args, kwargs


# --------------------------------------------------------------------------------------------- apply/remove


def _block_stack(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Every repeated block, the one that runs first (the first of the first block list) at the head."""
    blocks = []
    for name, child in model.named_children():
        if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(child, torch.nn.ModuleList):
            blocks.extend((f"{name}.{i}", block) for i, block in enumerate(child))
    return blocks


def _find_coefficients(model: torch.nn.Module) -> TeaCacheConfig | None:
    """Fitted coefficients for this exact model in ``pipelines/coefficients/``, else a matching preset."""
    for path in sorted(COEFFICIENTS_DIR.glob("*.json")):
        try:
            candidate = TeaCacheConfig.from_file(path)
        except (OSError, ValueError) as err:
            logger.warning("skipping %s: %s", path, err)
            continue
        if candidate.model_match.mismatch(model) is None:
            return candidate
    for name in PUBLISHED_PRESETS:
        candidate = TeaCacheConfig.from_preset(name)
        if candidate.model_match.mismatch(model) is None:
            return candidate
    return None


def resolve_config(model: torch.nn.Module, config: TeaCacheConfig) -> TeaCacheConfig:
    """``config`` with coefficients and indicator settled for ``model``; errors if they belong elsewhere."""
    model = unwrap_module(model)
    if config.model_match is not None:
        reason = config.model_match.mismatch(model)
        if reason is not None:
            raise ValueError(
                f"TeaCache coefficients from {config.model_match.source} do not fit this model: "
                f"{reason}. Fit coefficients for it with `taocache fit-teacache`"
            )
    if config.coefficients is None:
        found = _find_coefficients(model)
        if found is not None:
            logger.info("TeaCache: using coefficients from %s", found.model_match.source)
            config = replace(
                config,
                coefficients=found.coefficients,
                indicator=found.indicator if config.indicator == "auto" else config.indicator,
                warmup_steps=found.warmup_steps if config.warmup_steps is None else config.warmup_steps,
                model_match=found.model_match,
            )
        else:
            logger.warning(
                "TeaCache: no fitted coefficients for %s; the threshold applies to the raw change of "
                "the indicator. Fit coefficients with `taocache fit-teacache`",
                type(model).__name__,
            )
            config = replace(config, coefficients=(1.0, 0.0))
    if config.indicator == "auto":
        indicator = "modulated_input" if type(model).__name__ in MODULATED_INPUT_MODELS else "block_input"
        config = replace(config, indicator=indicator)
    if config.warmup_steps is None:
        config = replace(config, warmup_steps=1)
    return config


def apply_teacache(module: torch.nn.Module, config: TeaCacheConfig | None = None) -> TeaCacheConfig:
    """Register TeaCache's hooks on a transformer; returns the config as resolved for this model.

    Example::

        apply_teacache(pipe.transformer, TeaCacheConfig(rel_l1_thresh=0.1))
        video = pipe(prompt).frames[0]
        remove_teacache(pipe.transformer)  # back to the exact original forward
    """
    config = TeaCacheConfig() if config is None else config
    model = unwrap_module(module)
    if HookRegistry.check_if_exists_or_initialize(module).get_hook(ROOT_HOOK) is not None:
        raise ValueError("TeaCache is already applied to this module; call remove_teacache(module) first")
    blocks = _block_stack(model)
    if not blocks:
        raise ValueError(
            f"TeaCache found no block list ({', '.join(_ALL_TRANSFORMER_BLOCK_IDENTIFIERS)}) on "
            f"{type(model).__name__}; it supports diffusers-style transformers"
        )
    boundary = next(
        (
            getattr(model, n)
            for n in _STACK_OUTPUT_MODULES
            if isinstance(getattr(model, n, None), torch.nn.Module)
        ),
        None,
    )
    if boundary is None:
        raise ValueError(
            f"TeaCache found no module after the block stack ({' or '.join(_STACK_OUTPUT_MODULES)}) "
            f"on {type(model).__name__}"
        )
    config = resolve_config(model, config)
    settings = _Settings(
        config,
        np.asarray(config.coefficients, dtype=np.float64),
        _INDICATOR_FUNCTIONS[config.indicator],
        model,
    )
    manager = StateManager(TeaCacheState)
    plan = [
        (module, TeaCacheRootHook(manager, settings), ROOT_HOOK),
        (blocks[0][1], TeaCacheHeadHook(manager, settings), HEAD_HOOK),
    ]
    plan += [(block, TeaCacheBlockHook(manager), BLOCK_HOOK) for _, block in blocks[1:]]
    plan.append((boundary, TeaCacheStackOutputHook(manager, settings), STACK_OUTPUT_HOOK))
    registered = []
    try:
        for target, hook, name in plan:
            HookRegistry.check_if_exists_or_initialize(target).register_hook(hook, name)
            registered.append((target, name))
    except Exception:
        for target, name in reversed(registered):
            target._diffusers_hook.remove_hook(name, recurse=False)
        raise
    finally:
        HookRegistry.check_if_exists_or_initialize(module).invalidate_child_registries_cache()
    logger.debug(
        "TeaCache on %s: indicator %s, %d blocks, threshold %g",
        type(model).__name__,
        config.indicator,
        len(blocks),
        config.rel_l1_thresh,
    )
    return config


def remove_teacache(module: torch.nn.Module) -> None:
    """Remove every TeaCache hook from ``module``; its forward is then the original one again."""
    registry = HookRegistry.check_if_exists_or_initialize(module)
    for name in HOOK_NAMES:
        registry.remove_hook(name, recurse=True)
    registry.invalidate_child_registries_cache()


def teacache_stats(module: torch.nn.Module) -> dict[str, dict[str, int]]:
    """Computed and skipped denoiser calls per guidance branch since TeaCache was applied."""
    hook = HookRegistry.check_if_exists_or_initialize(module).get_hook(ROOT_HOOK)
    if hook is None:
        raise ValueError("TeaCache is not applied to this module")
    return {name: dict(counts) for name, counts in hook.settings.counts.items()}


# ------------------------------------------------------------------------------------- pipelines, stacking

_TRANSFORMER_COMPONENTS = ("transformer", "transformer_2")


def _transformers(target) -> list[torch.nn.Module]:
    from diffusers import DiffusionPipeline

    if isinstance(target, DiffusionPipeline):
        found = [getattr(target, name, None) for name in _TRANSFORMER_COMPONENTS]
        found = [m for m in found if isinstance(m, torch.nn.Module)]
        if not found:
            raise TypeError(
                f"TeaCache caches a transformer's block stack; {type(target).__name__} has no "
                f"{' or '.join(_TRANSFORMER_COMPONENTS)} component"
            )
        return found
    if isinstance(target, torch.nn.Module):
        return [target]
    raise TypeError(
        f"TeaCache applies to a diffusers pipeline or a transformer module, not {type(target).__name__}"
    )


def apply_to_target(target, config: TeaCacheConfig | None = None) -> None:
    """``apply_teacache`` on every transformer of a pipeline (Wan2.2 has two), or on a transformer module."""
    for module in _transformers(target):
        apply_teacache(module, config)


def remove_from_target(target) -> None:
    """``remove_teacache`` on every transformer of a pipeline, or on a transformer module.

    A pipeline without a transformer (a UNet pipeline) cannot carry TeaCache, so there is nothing to remove.
    """
    try:
        modules = _transformers(target)
    except TypeError:
        return
    for module in modules:
        remove_teacache(module)


def stats_of_target(target) -> dict | None:
    """``teacache_stats`` of every transformer of ``target`` that carries TeaCache, by component name."""
    from diffusers import DiffusionPipeline

    if isinstance(target, DiffusionPipeline):
        named = [(name, getattr(target, name, None)) for name in _TRANSFORMER_COMPONENTS]
    else:
        named = [("transformer", target)]
    found = {}
    for name, module in named:
        registry = getattr(unwrap_module(module), "_diffusers_hook", None) if module is not None else None
        if registry is not None and registry.get_hook(ROOT_HOOK) is not None:
            found[name] = teacache_stats(module)
    return found or None


def _make_stackable() -> None:
    """Let ``taocache.enable(pipe, [TeaCacheConfig(...), TaoCacheConfig(...)])`` apply and remove TeaCache."""
    from .api import register_cache

    register_cache(
        TeaCacheConfig, enable_fn=apply_to_target, disable_fn=remove_from_target, stats_fn=stats_of_target
    )


_make_stackable()
