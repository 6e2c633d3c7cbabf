"""Is it still the same subject on the same background? What an edit must keep that no caption says.

A world scene's caption names the shape, colour family, size and place; the seed picks the rest (the exact
shade, the stripes on the subject, the background's grey and waves). An edit that moves or resizes *this*
subject must keep all of that, and redrawing the caption from another seed does not. Two measures:

- :func:`compare_identity`: the subject's shade (CIELAB distance of its mean colour) and stripes (angle,
  period, contrast) read from the edit against those read from the input, wherever each subject is;
- :func:`background_fidelity`: PSNR and SSIM against the input outside both subjects' regions.

The thresholds of ``kept`` were set on clean renders (the same seed in another layout must pass, with room
for a model's blur) and checked against redraws: :func:`redraw_pass_rate` measures how often a subject of
another seed passes, the chance rate beside which a kept-identity rate is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .scorer import angle_difference, find_subject, read_identity

#: Largest CIELAB distance of the subject's mean colour that still counts as the same shade.
MAX_SHADE_DELTA_E = 6.0
#: Largest difference of the stripe direction (degrees, modulo 180).
MAX_STRIPE_ANGLE = 10.0
#: Largest relative difference of the stripe period (as |log| of the ratio).
MAX_STRIPE_PERIOD_LOG = 0.1
#: The stripes must keep at least this share of their contrast (a washed-out subject lost its pattern).
MIN_STRIPE_CONTRAST_RATIO = 0.5


@dataclass
class IdentityComparison:
    """How the edit's subject differs from the input's, and whether that is within the thresholds."""

    shade_delta_e: float
    stripe_angle_delta: float  # degrees
    stripe_period_log_ratio: float
    stripe_contrast_ratio: float

    @property
    def kept(self) -> bool:
        return (
            self.shade_delta_e <= MAX_SHADE_DELTA_E
            and self.stripe_angle_delta <= MAX_STRIPE_ANGLE
            and abs(self.stripe_period_log_ratio) <= MAX_STRIPE_PERIOD_LOG
            and self.stripe_contrast_ratio >= MIN_STRIPE_CONTRAST_RATIO
        )

    def as_dict(self) -> dict:
        return {
            "shade_delta_e": self.shade_delta_e,
            "stripe_angle_delta": self.stripe_angle_delta,
            "stripe_period_log_ratio": self.stripe_period_log_ratio,
            "stripe_contrast_ratio": self.stripe_contrast_ratio,
            "kept": self.kept,
        }


def _lab(rgb) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(np.clip(np.asarray(rgb, dtype=np.float64), 0, 1)[None, None])[0, 0]


def compare_identity(reference: np.ndarray, result: np.ndarray) -> IdentityComparison | None:
    """The subject of ``result`` against the subject of ``reference`` ((H, W, 3) images in [0, 1]); ``None``
    when either has no subject the scorer accepts (then nothing of it was kept)."""
    before, after = read_identity(reference), read_identity(result)
    if before is None or after is None:
        return None
    return IdentityComparison(
        shade_delta_e=float(np.linalg.norm(_lab(before.shade) - _lab(after.shade))),
        stripe_angle_delta=angle_difference(before.stripe_angle, after.stripe_angle),
        stripe_period_log_ratio=float(math.log(after.stripe_period / before.stripe_period)),
        stripe_contrast_ratio=float(after.stripe_contrast / max(before.stripe_contrast, 1e-6)),
    )


def subject_region(image: np.ndarray, margin: int = 2) -> np.ndarray:
    """The pixels of the subject the scorer finds, widened by ``margin`` pixels (its soft edge included);
    all False when there is none."""
    subject = find_subject(np.asarray(image, dtype=np.float32))
    if subject is None:
        return np.zeros(image.shape[:2], dtype=bool)
    return ndimage.binary_dilation(subject.mask, iterations=margin)


def background_fidelity(reference: np.ndarray, result: np.ndarray, exclude: np.ndarray) -> dict:
    """PSNR (dB) and SSIM of ``result`` against ``reference`` over the pixels not in ``exclude``; ``None``
    values when no pixel is left. SSIM is scikit-image's map (7x7 window) averaged over the pixels whose whole
    window lies outside ``exclude`` (all kept pixels when there are none such)."""
    from skimage.metrics import structural_similarity

    keep = ~np.asarray(exclude, dtype=bool)
    if not keep.any():
        return {"psnr": None, "ssim": None}
    a, b = np.asarray(result, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    mse = float(np.mean((a[keep] - b[keep]) ** 2))
    _, ssim_map = structural_similarity(b, a, channel_axis=-1, data_range=1.0, full=True)
    windows = ndimage.binary_erosion(keep, structure=np.ones((3, 3)), iterations=3, border_value=1)
    return {
        "psnr": math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse),
        "ssim": float(ssim_map.mean(axis=-1)[windows if windows.any() else keep].mean()),
    }


def redraw_pass_rate(scenes, seeds: int = 4, offset: int = 1000) -> float:
    """How often the subject of another seed passes as the same identity: the chance rate of ``kept``.

    For each scene and seed, the render of seed ``s`` is compared with the render of seed ``s + offset`` of
    the same caption.
    """
    from .scenes import render

    passed, total = 0, 0
    for scene in scenes:
        for seed in range(seeds):
            comparison = compare_identity(render(scene, seed), render(scene, seed + offset))
            passed += bool(comparison is not None and comparison.kept)
            total += 1
    return passed / max(total, 1)
