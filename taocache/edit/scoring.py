"""Scoring an edit without a learned judge: the analytic reading of the result (did the asked change happen,
are colour and shape, the identity, kept, are the attributes not asked to change kept), and its preservation
of the input (PSNR, SSIM, LPIPS over the whole image, and PSNR over the background only)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..metrics import load_lpips, quality_row
from ..world import agreement, read_image
from .cases import EditCase

_LPIPS = None


def lpips_scorer():
    """The LPIPS scorer, loaded once (it reports itself unavailable when its backbone weights are absent)."""
    global _LPIPS
    if _LPIPS is None:
        _LPIPS = load_lpips()
    return _LPIPS


def fidelity(result: np.ndarray, reference: np.ndarray) -> dict:
    """PSNR, SSIM and LPIPS (None when unavailable) of ``result`` against ``reference``."""
    return quality_row(result, reference, lpips_scorer())


def background_psnr(result: np.ndarray, reference: np.ndarray) -> float | None:
    """PSNR over the pixels that are background in both images (the reference's border colour, +-0.25)."""
    border = np.concatenate([reference[0], reference[-1], reference[:, 0], reference[:, -1]])
    colour = np.median(border, axis=0)
    foreground = (np.linalg.norm(reference - colour, axis=-1) > 0.25) | (
        np.linalg.norm(result - colour, axis=-1) > 0.25
    )
    mask = ~foreground
    if not mask.any():
        return None
    mse = float(np.mean((result[mask] - reference[mask]) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def score_edit(case: EditCase, result: np.ndarray, image: np.ndarray) -> dict:
    """Preservation against the input and the analytic reading of the result."""
    reading = read_image(result)
    asked = agreement(case.target, reading)
    changed_attribute = "position" if case.kind == "move" else "size"
    kept_attribute = "size" if case.kind == "move" else "position"
    return {
        **fidelity(result, image),
        "background_psnr": background_psnr(result, image),
        "reading": dataclasses.asdict(reading),
        "changed": bool(asked[changed_attribute]),
        "identity": bool(asked["colour"] and asked["shape"]),
        "others_kept": bool(asked[kept_attribute] and asked["background"]),
    }
