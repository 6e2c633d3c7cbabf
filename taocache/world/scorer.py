"""The analytic judge of the sample world: reads a scene back from pixels, with no learned model.

It finds the background from the frame border, the shape as the pixels far from it, and then reads
colour (nearest palette entry of the shape's mean colour), size (area), shape (how much of its bounding box
the shape fills, and where its centroid sits in it), position (centroid) and, for videos, motion (centroid
displacement from the first frame to the last).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scenes import BACKGROUNDS, COLOURS, POSITIONS, SIZES, Scene

# A triangle (apex up) has its centroid a sixth of its height below the middle of its box; a circle fills
# pi/4 of its box and a square all of it. Both cues survive blur and noise better than the fill ratio alone.
_TRIANGLE_OFFSET = 1 / 12
_CIRCLE_SQUARE_FILL = float(np.sqrt(np.pi / 4))
_MIN_PIXELS = 6


@dataclass
class Reading:
    """What the scorer read from an image or a video. ``None`` where nothing could be read."""

    background: str | None
    colour: str | None
    shape: str | None
    size: str | None
    position: str | None = None
    direction: str | None = None
    found: bool = True


def _as_float(pixels: np.ndarray) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255.0
    return pixels.astype(np.float32)


def _nearest(value: np.ndarray, table: dict) -> str:
    return min(table, key=lambda k: float(np.sum((np.asarray(table[k]) - value) ** 2)))


def _foreground(frame: np.ndarray):
    """(background name, background rgb, boolean mask of shape pixels) of one (H, W, 3) frame."""
    border = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
    bg_rgb = np.median(border, axis=0)
    distance = np.sqrt(np.sum((frame - bg_rgb) ** 2, axis=-1))
    return _nearest(bg_rgb, BACKGROUNDS), bg_rgb, distance > 0.25


def read_frame(frame: np.ndarray) -> tuple[Reading, tuple[float, float] | None]:
    """Read one (H, W, 3) frame; also returns the shape's centroid (x, y) as a fraction of the frame."""
    frame = _as_float(frame)
    height, width = frame.shape[:2]
    background, _, mask = _foreground(frame)
    if mask.sum() < _MIN_PIXELS * (height * width) / 4096:
        return Reading(background, None, None, None, found=False), None
    # Drop speckle, then keep the largest blob, so that stray pixels move neither the centroid nor the box.
    mask = _largest_component(_open(mask))
    if not mask.any():
        return Reading(background, None, None, None, found=False), None
    ys, xs = np.nonzero(mask)
    colour = _nearest(frame[mask].mean(axis=0), COLOURS)
    scale = (width / 64.0) ** 2
    area = mask.sum() / scale
    small, large = (_area_of(SIZES["small"]), _area_of(SIZES["large"]))
    size = "small" if area < np.sqrt(small * large) else "large"
    shape = _classify_shape(xs, ys)
    centroid = (float(xs.mean() + 0.5) / width, float(ys.mean() + 0.5) / height)
    position = min(POSITIONS, key=lambda k: np.hypot(POSITIONS[k][0] - centroid[0], POSITIONS[k][1] - centroid[1]))
    return Reading(background, colour, shape, size, position=position), centroid


def _classify_shape(xs: np.ndarray, ys: np.ndarray) -> str:
    top, bottom = ys.min(), ys.max() + 1
    offset = (ys.mean() + 0.5 - (top + bottom) / 2) / (bottom - top)
    if offset > _TRIANGLE_OFFSET:
        return "triangle"
    fill = len(xs) / ((xs.max() - xs.min() + 1) * (bottom - top))
    return "square" if fill > _CIRCLE_SQUARE_FILL else "circle"


def _area_of(half: float) -> float:
    # Mean area over the three shapes of a given half-extent, at 64x64.
    return float(np.mean([np.pi * half**2, (1.8 * half) ** 2, 0.5 * (1.1 * half) * (2.2 * half)]))


def _open(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_opening(mask, structure=np.ones((2, 2), dtype=bool))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = ndimage.sum(mask, labels, index=range(1, count + 1))
    return labels == (1 + int(np.argmax(sizes)))


def read_image(image: np.ndarray) -> Reading:
    """Read a still image, (H, W, 3) float in [0, 1] or uint8."""
    return read_frame(image)[0]


def read_video(video: np.ndarray) -> Reading:
    """Read a video, (F, H, W, 3): attributes by vote over frames, motion from the centroid path."""
    readings, centroids = zip(*(read_frame(f) for f in video))
    found = [r for r in readings if r.found]
    if not found:
        return Reading(readings[0].background, None, None, None, found=False)

    def vote(attr):
        values = [getattr(r, attr) for r in found]
        return max(set(values), key=values.count)

    path = np.array([c for c in centroids if c is not None])
    direction = None
    if len(path) >= 2:
        dx, dy = path[-1] - path[0]
        if max(abs(dx), abs(dy)) > 0.05:  # at least ~3 px at 64x64
            if abs(dx) >= abs(dy):
                direction = "right" if dx > 0 else "left"
            else:
                direction = "down" if dy > 0 else "up"
    return Reading(vote("background"), vote("colour"), vote("shape"), vote("size"), direction=direction)


ATTRIBUTES_IMAGE = ("colour", "shape", "size", "position", "background")
ATTRIBUTES_VIDEO = ("colour", "shape", "size", "direction", "background")


def agreement(scene: Scene, reading: Reading) -> dict[str, bool]:
    """Per attribute, whether the reading matches the scene the caption asked for."""
    names = ATTRIBUTES_VIDEO if scene.is_video else ATTRIBUTES_IMAGE
    return {name: reading.found and getattr(reading, name) == getattr(scene, name) for name in names}
