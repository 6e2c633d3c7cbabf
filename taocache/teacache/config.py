"""TeaCache's settings: the config a user passes, the transformer a set of coefficients belongs to, the
coefficients the TeaCache authors published, and the coefficient files ``taocache fit-teacache`` writes."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.compat import unwrap_module
from ..core.fingerprint import fingerprint

#: Indicators the hook can watch; see docs/teacache.md for what each one is on each model.
INDICATORS = ("auto", "modulated_input", "timestep_conditioning", "time_embedding", "block_input")

#: Format tag and version of the coefficient files written by ``taocache fit-teacache``.
COEFFICIENT_FORMAT = "taocache.teacache-coefficients"
COEFFICIENT_VERSION = 1


# ------------------------------------------------------------------------------------------ model identity


@dataclass(frozen=True)
class ModelMatch:
    """Which transformer a set of coefficients belongs to; ``apply_teacache`` refuses any other.

    Args:
        transformer_class: class name of the transformer (``type(model).__name__``).
        config: config entries the transformer must have (published presets name the architecture this way).
        fingerprint: ``taocache.core.fingerprint`` of the transformer the coefficients were fitted on.
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
        if self.fingerprint is not None and fingerprint(model) != self.fingerprint:
            return (
                f"they were fitted on a model with config fingerprint {self.fingerprint}, "
                f"the model's is {fingerprint(model)}"
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
            exact model among the shipped and the user's fitted files (``pipelines/coefficients/``, ``~/.cache/taocache/teacache``), then for a published preset of this model, and
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
        recorder: called after every denoiser call with a ``TeaCacheRecord`` (used to fit coefficients); not a
            setting, so never written to a configuration file.

    Example::

        taocache.enable(pipe, [taocache.TeaCacheConfig(rel_l1_thresh=0.1), taocache.TaoCacheConfig()])
        config = TeaCacheConfig.from_file("tiny-t2v-teacache.json", rel_l1_thresh=0.2)   # fitted coefficients
        config = TeaCacheConfig.from_preset("wan2.1-t2v-1.3b")                          # published ones
    """

    rel_l1_thresh: float = 0.1
    coefficients: Sequence[float] | None = None
    indicator: str = "auto"
    warmup_steps: int | None = None
    final_steps: int = 1
    max_skip_steps: int | None = None
    num_inference_steps: int | None = None
    model_match: ModelMatch | None = None
    recorder: Callable[[object], None] | None = None

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
            self.coefficients = validated_coefficients(self.coefficients, "TeaCacheConfig.coefficients")
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


def validated_coefficients(values, what: str) -> tuple[float, ...]:
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
    data["coefficients"] = validated_coefficients(data["coefficients"], f"{path}: coefficients")
    warmup = data.setdefault("warmup_steps", 1)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
        raise ValueError(f"TeaCache coefficient file {path}: warmup_steps={warmup!r} must be an integer >= 1")
    if data["indicator"] not in INDICATORS[1:]:
        raise ValueError(
            f"TeaCache coefficient file {path}: indicator {data['indicator']!r} is not one of "
            f"{INDICATORS[1:]}"
        )
    return data
