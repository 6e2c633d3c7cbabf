"""A denoiser's output, whatever its type: the sample tensor in it, and a new output of the same type.

diffusers denoisers return a tensor, a tuple whose first item is the sample, or an output object with
``.sample``; a cache that predicts the sample must hand back the same type.
"""

from __future__ import annotations

import copy
import dataclasses

import torch


def sample_of(output) -> torch.Tensor | None:
    """The sample tensor of a denoiser output, or None when it has none."""
    if torch.is_tensor(output):
        return output
    if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        return output[0]
    sample = getattr(output, "sample", None)
    return sample if torch.is_tensor(sample) else None


def template_of(output):
    """What an output of this shape needs besides the sample: nothing for a tensor, the rest of a tuple, the
    object itself otherwise."""
    if torch.is_tensor(output):
        return None
    if isinstance(output, (tuple, list)):
        return type(output), tuple(output[1:])
    return output


def shaped_like(template, sample: torch.Tensor):
    """An output like the one ``template`` was taken from, carrying ``sample``."""
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
