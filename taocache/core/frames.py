"""Pixels as every metric and writer takes them: (F, H, W, 3) floats in [0, 1], from an array, a tensor, a
PIL image or a pipeline's output."""

from __future__ import annotations

import numpy as np


def as_frames(pixels) -> np.ndarray:
    """(F, H, W, 3) float64 in [0, 1] from an image or video as numpy (float or uint8), torch or PIL."""
    if hasattr(pixels, "detach"):
        pixels = pixels.detach().cpu().float().numpy()
    array = np.asarray(pixels)
    if array.dtype == np.uint8:
        array = array.astype(np.float64) / 255.0
    array = array.astype(np.float64)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image or an (F, H, W, 3) video, got shape {array.shape}")
    return np.clip(array, 0.0, 1.0)


def frames_of(output) -> np.ndarray:
    """The first sample of a pipeline output (``.frames`` of a video pipeline, ``.images`` of an image one)."""
    for name in ("frames", "images"):
        if hasattr(output, name):
            return as_frames(np.asarray(getattr(output, name)[0]))
    raise ValueError(f"cannot find frames or images in the pipeline output {type(output).__name__}")
