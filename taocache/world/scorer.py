"""The analytic judge of the sample world: reads a scene back from pixels, with no learned model.

The world's backgrounds are colourless and its subjects are saturated, so the subject is the largest
connected region of strong chroma. A region counts as a subject only when it could be one: fully inside the
frame, of a plausible area, with a sharp edge (a soft Gaussian blob is refused) and an outline that one of the
three shapes fits closely. Shape is the template that fits best by intersection over union, and only when it
fits well and clearly better than the next: nothing is read by default. Colour is the hue of the subject's
mean colour, size its fitted half-extent, position its box centre. A video is read frame by frame; its
direction needs a steady path of at least ``MIN_TRAVEL`` pixels with no step carrying most of it.

:func:`read_identity` reads what the caption does not say (the subject's shade and stripes) so that an edit's
identity can be checked against its input.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .scenes import COLOURS, POSITIONS, SHAPES, SIZES, STRIPE_PERIOD, Scene, coverage

#: Area of each shape as a multiple of its half-extent squared.
SHAPE_AREA = {"circle": np.pi, "square": 1.8**2, "triangle": 2 * 1.1**2}
#: A pixel belongs to a subject when its chroma (max - min of RGB) is above this.
MIN_CHROMA = 0.2
#: The best-fitting template must overlap the subject at least this much (IoU) ...
MIN_FIT = 0.86
#: ... and beat the second best by this much.
MIN_FIT_MARGIN = 0.04
#: Mean width (pixels) of the band where the chroma falls from 60% to 20% of the subject's: a drawn edge is
#: about one pixel wide, a Gaussian blob's several.
MAX_EDGE_WIDTH = 2.0
#: Least total travel (pixels at 64x64) that counts as motion; the world's shapes travel 16 to 24.
MIN_TRAVEL = 8.0
#: No single frame step may carry more than this share of the travel, nor go back by more than a pixel.
MAX_STEP_SHARE = 0.5
#: Hue (degrees) at the centre of each colour family.
_HUES = {name: (np.mean(family["hue"]) % 360.0) for name, family in COLOURS.items()}
_MIN_SATURATION = 0.3


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


def chroma(frame: np.ndarray) -> np.ndarray:
    return frame.max(axis=-1) - frame.min(axis=-1)


def read_background(frame: np.ndarray) -> str | None:
    """Dark or light from the frame's border; ``None`` if the border is coloured."""
    border = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
    grey = np.median(border, axis=0)
    if grey.max() - grey.min() > 0.1:
        return None
    return "dark" if grey.mean() < 0.5 else "light"


@dataclass
class Subject:
    """The subject region of one frame: its mask, fitted shape, half-extent and box centre (pixels)."""

    mask: np.ndarray
    shape: str
    half: float
    centre: tuple[float, float]


def find_subject(frame: np.ndarray) -> Subject | None:
    """The subject of one (H, W, 3) frame in [0, 1], or ``None`` when no region qualifies."""
    height, width = frame.shape[:2]
    scale = width / 64.0
    c = chroma(frame)
    labels, count = ndimage.label(c > MIN_CHROMA)
    if count == 0:
        return None
    sizes = ndimage.sum(np.ones_like(c), labels, index=range(1, count + 1))
    region = labels == (1 + int(np.argmax(sizes)))
    region = ndimage.binary_fill_holes(region)
    area = region.sum() / scale**2
    smallest = min(SHAPE_AREA.values()) * (0.6 * SIZES["small"]) ** 2
    largest = max(SHAPE_AREA.values()) * (1.4 * SIZES["large"]) ** 2
    if not smallest <= area <= largest:
        return None
    if region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any():
        return None  # cut by the frame: not a whole subject
    # Sharpness: pixels around the region whose chroma is between 20% and 60% of the subject's, per edge pixel.
    level = float(np.median(c[region]))
    near = ndimage.binary_dilation(region, iterations=max(2, round(4 * scale))) & ~ndimage.binary_erosion(
        region, iterations=max(1, round(2 * scale))
    )
    band = near & (c > 0.2 * level) & (c < 0.6 * level)
    edge = region & ~ndimage.binary_erosion(region)
    if band.sum() / max(edge.sum(), 1) > MAX_EDGE_WIDTH * scale:
        return None
    ys, xs = np.nonzero(region)
    centre = ((xs.min() + xs.max() + 1) / 2.0, (ys.min() + ys.max() + 1) / 2.0)
    # Soft overlap of the subject's coverage (its chroma between a noise floor and the subject's, so
    # anti-aliased and striped pixels count in part) with each shape's template of the same area, over
    # half-pixel shifts of the centre.
    floor = MIN_CHROMA / 2
    soft = np.clip((c - floor) / (0.8 * level - floor), 0.0, 1.0) * ndimage.binary_dilation(region, iterations=2)
    fits = {}
    for shape in SHAPES:
        half = float(np.sqrt(soft.sum() / SHAPE_AREA[shape]))
        fits[shape] = max(
            (_soft_iou(coverage(shape, centre[0] + dx, centre[1] + dy, half, height, width), soft), half)
            for dx in (-0.5, 0.0, 0.5)
            for dy in (-0.5, 0.0, 0.5)
        )
    ranked = sorted(fits, key=lambda s: fits[s][0], reverse=True)
    best, runner_up = fits[ranked[0]][0], fits[ranked[1]][0]
    if best < MIN_FIT or best - runner_up < MIN_FIT_MARGIN:
        return None
    return Subject(region, ranked[0], float(fits[ranked[0]][1] / scale), (centre[0] / width, centre[1] / height))


def _soft_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.minimum(a, b).sum() / max(np.maximum(a, b).sum(), 1e-6))


def read_colour(frame: np.ndarray, mask: np.ndarray) -> str | None:
    """The colour family of the subject's mean colour, by hue; ``None`` if it is too grey."""
    hue, saturation, _ = colorsys.rgb_to_hsv(*frame[mask].mean(axis=0))
    if saturation < _MIN_SATURATION:
        return None
    return min(_HUES, key=lambda k: min(abs(hue * 360 - _HUES[k]), 360 - abs(hue * 360 - _HUES[k])))


def read_frame(frame: np.ndarray) -> tuple[Reading, tuple[float, float] | None]:
    """Read one (H, W, 3) frame; also returns the subject's box centre (x, y) as a fraction of the frame."""
    frame = _as_float(frame)
    background = read_background(frame)
    subject = find_subject(frame)
    if subject is None:
        return Reading(background, None, None, None, found=False), None
    size = "small" if subject.half < np.sqrt(SIZES["small"] * SIZES["large"]) else "large"
    cx, cy = subject.centre
    position = min(POSITIONS, key=lambda k: np.hypot(POSITIONS[k][0] - cx, POSITIONS[k][1] - cy))
    reading = Reading(background, read_colour(frame, subject.mask), subject.shape, size, position=position)
    return reading, subject.centre


def read_image(image: np.ndarray) -> Reading:
    """Read a still image, (H, W, 3) float in [0, 1] or uint8."""
    return read_frame(image)[0]


def read_direction(path: np.ndarray, width: int) -> str | None:
    """The direction of a centroid path (F, 2) in fractions of the frame, or ``None`` if it is not a steady
    motion of at least ``MIN_TRAVEL`` pixels."""
    steps = np.diff(path, axis=0) * 64.0  # pixels at 64x64
    total = path[-1] - path[0]
    axis = int(np.argmax(np.abs(total)))
    sign = np.sign(total[axis])
    along = steps[:, axis] * sign
    travel = along.sum()
    if travel < MIN_TRAVEL or along.min() < -1.0 or along.max() > MAX_STEP_SHARE * travel:
        return None
    if abs(total[1 - axis]) * 64.0 > 0.5 * travel:  # mostly diagonal: no one direction
        return None
    if axis == 0:
        return "right" if sign > 0 else "left"
    return "down" if sign > 0 else "up"


def read_video(video: np.ndarray) -> Reading:
    """Read a video, (F, H, W, 3): the subject must be found in every frame; colour, shape and size by a
    two-thirds vote over frames, motion from the path of its box centre."""
    video = _as_float(video)
    readings, centres = zip(*(read_frame(f) for f in video))
    background = _vote([r.background for r in readings])
    if not all(r.found for r in readings):
        return Reading(background, None, None, None, found=False)
    direction = read_direction(np.array(centres), video.shape[2]) if len(video) > 1 else None
    return Reading(background, _vote([r.colour for r in readings]), _vote([r.shape for r in readings]),
                   _vote([r.size for r in readings]), direction=direction)


def _vote(values: list) -> str | None:
    """The value at least two thirds of the frames agree on, else ``None``."""
    best = max(set(values), key=values.count)
    return best if best is not None and values.count(best) * 3 >= 2 * len(values) else None


ATTRIBUTES_IMAGE = ("colour", "shape", "size", "position", "background")
ATTRIBUTES_VIDEO = ("colour", "shape", "size", "direction", "background")


def agreement(scene: Scene, reading: Reading) -> dict[str, bool]:
    """Per attribute, whether the reading matches the scene the caption asked for."""
    names = ATTRIBUTES_VIDEO if scene.is_video else ATTRIBUTES_IMAGE
    return {name: reading.found and getattr(reading, name) == getattr(scene, name) for name in names}


# ------------------------------------------------------------------------------------------------- identity


_ANGLE_GRID, _PERIOD_GRID = np.meshgrid(
    np.deg2rad(np.arange(0.0, 180.0, 3.0)), np.arange(STRIPE_PERIOD[0] * 0.7, STRIPE_PERIOD[1] * 1.3, 0.25)
)
_STRIPE_GRID = (_ANGLE_GRID.ravel(), _PERIOD_GRID.ravel())


@dataclass
class IdentityReading:
    """The subject's uncaptioned details read from pixels: mean shade (RGB) and its stripes."""

    shade: tuple[float, float, float]
    stripe_angle: float  # radians in [0, pi)
    stripe_period: float  # pixels at 64x64
    stripe_contrast: float


def read_identity(frame: np.ndarray, mask: np.ndarray | None = None) -> IdentityReading | None:
    """Shade and stripes of the subject of an (H, W, 3) frame (inside ``mask`` if given, else the subject the
    scorer finds). The stripes are the best fit of one sinusoid of the brightness over a grid of angles and
    periods, as a matched filter: it works on subjects only a stripe or two wide."""
    frame = _as_float(frame)
    if mask is None:
        subject = find_subject(frame)
        if subject is None:
            return None
        mask = subject.mask
    scale = frame.shape[1] / 64.0
    core = ndimage.binary_erosion(mask, iterations=max(1, round(1.5 * scale)))
    if core.sum() < 12:
        core = mask
    ys, xs = np.nonzero(core)
    pixels = frame[core]
    brightness = pixels.max(axis=-1)
    mean = float(brightness.mean())
    residual = brightness / max(mean, 1e-6) - 1.0
    x, y = (xs - xs.mean()) / scale, (ys - ys.mean()) / scale
    # Every (angle, period) candidate at once: a least-squares fit of a sine and a cosine to the residual.
    angles, periods = _STRIPE_GRID
    u = np.cos(angles)[:, None] * x[None] + np.sin(angles)[:, None] * y[None]  # (K, N)
    phase = 2 * np.pi * u / periods[:, None]
    sin, cos = np.sin(phase), np.cos(phase)
    ss, cc, sc = (sin * sin).sum(1), (cos * cos).sum(1), (sin * cos).sum(1)
    sr, cr = sin @ residual, cos @ residual
    det = np.maximum(ss * cc - sc * sc, 1e-9)
    a_sin, a_cos = (cc * sr - sc * cr) / det, (ss * cr - sc * sr) / det
    power = a_sin * sr + a_cos * cr  # the fitted sinusoid's energy
    best = int(np.argmax(power))
    return IdentityReading(tuple(float(v) for v in pixels.mean(axis=0)), float(angles[best]), float(periods[best]),
                           float(np.hypot(a_sin[best], a_cos[best])))


def angle_difference(a: float, b: float) -> float:
    """Difference of two stripe angles (radians, modulo pi), in degrees in [0, 90]."""
    d = abs(a - b) % np.pi
    return float(np.rad2deg(min(d, np.pi - d)))
