"""Settings of a non-rigid edit, checked once when they are made.

The defaults of :class:`EditConfig` are the published setting (Stable Diffusion 1.4, arXiv 2402.08601): DDIM
50 steps, guidance 7.5, 200-500 Adam steps of text optimisation at lr 1e-3, null-text inversion with 10 inner
steps at lr 1e-2, and injection of the edited text after 20 of the 50 steps, alpha swept over 0-0.5. A model
whose measurements call for other values gets them from :data:`MODEL_DEFAULTS` through
:func:`default_config` (see docs/editing.md for the measurements).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

INVERSIONS = ("null-text", "negative-prompt", "ddim")


@dataclass(frozen=True)
class EditConfig:
    """How an image is inverted and edited.

    Attributes:
        num_steps: DDIM steps of inversion and sampling (1-1000). Inversion and sampling share them.
        guidance_scale: classifier-free guidance scale of the editing pass (1-50).
        steps_source: S, the number of first sampling steps conditioned on the source prompt before the edited
            text is injected (0 to ``num_steps``; ``num_steps`` reproduces the input).
        alpha: weight of the target prompt's embedding in the injected text,
            ``alpha * e_target + (1 - alpha) * e_optimised`` (0-1; 0 keeps the optimised embedding only).
        inversion: how the input is inverted: ``"null-text"`` (optimised per-step null embeddings, exact),
            ``"negative-prompt"`` (the source embedding as null embedding, no optimisation, fast) or ``"ddim"``
            (plain DDIM inversion with the empty prompt as null embedding).
        text_steps: Adam steps of text optimisation (0-100000; 0 leaves the target embedding as it is).
        text_lr: Adam learning rate of text optimisation (greater than 0, at most 1).
        null_inner_steps: Adam steps per sampling step of null-text inversion (0-1000; published 10).
        null_lr: base learning rate of null-text inversion, decayed as ``null_lr * (1 - i / 100)`` over the 50
            published steps (greater than 0, at most 1; published 1e-2).
        null_early_stop: loss below which the inner loop of step i stops, ``null_early_stop + i * 2e-5`` for
            50 steps (0 or more; published 1e-5).
        seed: seed of the timesteps and noise drawn by text optimisation (0 or more).

    Example::

        config = EditConfig(alpha=0.5, steps_source=3)       # or default_config("tiny-t2i"), the measured one
        faster = config.with_values(inversion="negative-prompt")
    """

    num_steps: int = 50
    guidance_scale: float = 7.5
    steps_source: int = 20
    alpha: float = 0.25
    inversion: str = "null-text"
    text_steps: int = 200
    text_lr: float = 1e-3
    null_inner_steps: int = 10
    null_lr: float = 1e-2
    null_early_stop: float = 1e-5
    seed: int = 0

    def __post_init__(self):
        _check_int("num_steps", self.num_steps, 1, 1000)
        _check_range("guidance_scale", self.guidance_scale, 1.0, 50.0)
        _check_int("steps_source", self.steps_source, 0, self.num_steps, "0 to num_steps")
        _check_range("alpha", self.alpha, 0.0, 1.0)
        if self.inversion not in INVERSIONS:
            raise ValueError(
                f"EditConfig.inversion={self.inversion!r} must be one of {', '.join(INVERSIONS)}"
            )
        _check_int("text_steps", self.text_steps, 0, 100_000)
        _check_positive("text_lr", self.text_lr)
        _check_int("null_inner_steps", self.null_inner_steps, 0, 1000)
        _check_positive("null_lr", self.null_lr)
        _check_range("null_early_stop", self.null_early_stop, 0.0, float("inf"), "0 or more")
        _check_int("seed", self.seed, 0, 2**63 - 1, "0 or more")

    def with_values(self, **changes) -> EditConfig:
        """A checked copy with ``changes`` applied (``None`` values are ignored)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown edit setting(s) {unknown}; known: {sorted(known)}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _check_int(name, value, low, high, accepted=None):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"EditConfig.{name}={value!r} must be an integer in {accepted or f'{low}-{high}'}")


def _check_range(name, value, low, high, accepted=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"EditConfig.{name}={value!r} must be a number in {accepted or f'[{low}, {high}]'}")


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(f"EditConfig.{name}={value!r} must be a number greater than 0 and at most 1")


#: Settings by recipe name where the published ones fall short. tiny-t2i: the guidance its recipe draws with
#: (3, chosen on tune captions; docs at samples/README.md), a larger null-text step that reconstructs as well
#: in a third of the time, S and alpha from the model embedded before the world gained its textures.
#: Evaluations choose every method's setting on tune edits with `taocache edit-tune` (docs/editing.md).
MODEL_DEFAULTS: dict[str, dict] = {
    "tiny-t2i": {"null_lr": 5e-2, "null_inner_steps": 30, "guidance_scale": 3.0, "steps_source": 3, "alpha": 0.5},
}


def default_config(model_name: str | None = None) -> EditConfig:
    """The published settings, with the measured overrides of ``model_name`` (a recipe name) if it has any."""
    return EditConfig(**MODEL_DEFAULTS.get(model_name or "", {}))
