"""The procedural sample world: captioned scenes of one coloured, textured shape.

A caption names the shape, its colour family, its size, the background (dark or light) and either a position
(still images) or a motion direction (videos), e.g. "a small red circle moves left on a dark background". The
seed decides everything the caption does not name, and all of it can be measured back:

- the layout: where a still shape sits around its named position, and for a video where the path starts and
  how fast the shape moves (motion is relative: a shape that moves left may start anywhere its path fits);
- the subject's identity: the exact shade within the colour family and a striped texture (angle, period,
  phase, contrast) attached to the shape, which moves with it;
- the background's identity: its grey level within dark or light and a faint, colourless wave pattern.

Layout and identity come from separate random streams of the seed, so the same seed renders the same subject
on the same background wherever the caption puts it: the ground truth of an edit that keeps identity.

The caption combinations are split once, by a fixed seed, into three disjoint sets: ``train`` (model training
only), ``tune`` (every choice of every method) and ``test`` (reported figures only).
"""

from __future__ import annotations

import colorsys
import itertools
import random
from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle")
#: Colour families as ranges of hue (degrees), saturation and value; a scene's shade is drawn inside them.
COLOURS = {
    "red": {"hue": (-7.0, 7.0), "saturation": (0.72, 0.9), "value": (0.72, 0.92)},
    "yellow": {"hue": (47.0, 58.0), "saturation": (0.75, 0.92), "value": (0.86, 0.97)},
    "green": {"hue": (115.0, 135.0), "saturation": (0.62, 0.85), "value": (0.62, 0.85)},
    "blue": {"hue": (214.0, 230.0), "saturation": (0.65, 0.88), "value": (0.78, 0.95)},
}
SIZES = {"small": 7.0, "large": 12.0}  # half-extent in pixels at 64x64
#: Grey levels of the two backgrounds; the wave pattern stays inside them, and both are colourless.
BACKGROUNDS = {"dark": (0.08, 0.22), "light": (0.74, 0.9)}
POSITIONS = {  # centre as a fraction of the frame (x, y), y pointing down
    "left": (0.3, 0.5),
    "right": (0.7, 0.5),
    "top": (0.5, 0.3),
    "bottom": (0.5, 0.7),
    "centre": (0.5, 0.5),
}
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}

POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}

#: How far (pixels at 64x64, each axis) a still shape may sit from its named position.
POSITION_JITTER = 4.0
#: The distance (pixels at 64x64) a moving shape travels over one clip is drawn from this range.
TRAVEL = (16.0, 24.0)
#: Stripes on the shape: period (pixels at 64x64) and contrast (relative change of brightness).
STRIPE_PERIOD = (6.0, 10.0)
STRIPE_CONTRAST = (0.12, 0.22)
#: Background waves: period (pixels at 64x64) and amplitude (grey level).
WAVE_PERIOD = (20.0, 40.0)
WAVE_AMPLITUDE = (0.02, 0.05)
#: Pixels (at 64x64) kept free between the shape's box and the frame's edge.
MARGIN = 2.0


@dataclass(frozen=True)
class Scene:
    """One caption. ``position`` is set for still images, ``direction`` for videos (exactly one of them)."""

    shape: str
    colour: str
    size: str
    background: str
    position: str | None = None
    direction: str | None = None

    def __post_init__(self):
        for name, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("colour", self.colour, COLOURS),
            ("size", self.size, SIZES),
            ("background", self.background, BACKGROUNDS),
        ):
            if value not in allowed:
                raise ValueError(f"Scene.{name}={value!r} is not one of {sorted(allowed)}")
        if (self.position is None) == (self.direction is None):
            raise ValueError("A Scene has either a position (image) or a direction (video), not both or neither")
        if self.position is not None and self.position not in POSITIONS:
            raise ValueError(f"Scene.position={self.position!r} is not one of {sorted(POSITIONS)}")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ValueError(f"Scene.direction={self.direction!r} is not one of {sorted(DIRECTIONS)}")

    @property
    def is_video(self) -> bool:
        return self.direction is not None

    @property
    def caption(self) -> str:
        subject = f"a {self.size} {self.colour} {self.shape}"
        if self.is_video:
            return f"{subject} moves {self.direction} on a {self.background} background"
        return f"{subject} {POSITION_PHRASES[self.position]} on a {self.background} background"


def all_scenes(video: bool) -> list[Scene]:
    """Every caption combination of one kind, in a fixed order."""
    places = DIRECTIONS if video else POSITIONS
    scenes = []
    for shape, colour, size, background, place in itertools.product(SHAPES, COLOURS, SIZES, BACKGROUNDS, places):
        kwargs = {"direction": place} if video else {"position": place}
        scenes.append(Scene(shape, colour, size, background, **kwargs))
    return scenes


#: The three splits of caption combinations, in the order they are cut.
SPLITS = ("train", "tune", "test")
#: Seed of the fixed split.
SPLIT_SEED = 2026
#: Caption combinations in the tune and test splits, per kind of scene; train keeps the rest.
SPLIT_SIZES = {"tune": 32, "test": 48}


def split(video: bool) -> dict[str, list[Scene]]:
    """The fixed, disjoint ``{"train", "tune", "test"}`` split of caption combinations (each in a fixed order).

    Every attribute value appears in train; tune and test are drawn from the shuffled rest.
    """
    scenes = all_scenes(video)
    order = list(range(len(scenes)))
    random.Random(SPLIT_SEED + int(video)).shuffle(order)
    test = order[: SPLIT_SIZES["test"]]
    tune = order[SPLIT_SIZES["test"] : SPLIT_SIZES["test"] + SPLIT_SIZES["tune"]]
    train = order[SPLIT_SIZES["test"] + SPLIT_SIZES["tune"] :]
    return {name: [scenes[i] for i in sorted(part)] for name, part in zip(SPLITS, (train, tune, test))}


def scenes_of(split_name: str, video: bool) -> list[Scene]:
    """The caption combinations of one split; a clear error for a name that is not a split."""
    if split_name not in SPLITS:
        raise ValueError(f"split {split_name!r} must be one of {', '.join(SPLITS)}")
    return split(video)[split_name]


def parse_caption(caption: str) -> Scene:
    """Read a caption of the world back into a Scene; raises ValueError if it is not one."""
    for scene in all_scenes(video=True) + all_scenes(video=False):
        if scene.caption == caption.strip().lower():
            return scene
    raise ValueError(f"{caption!r} is not a caption of the sample world (e.g. {all_scenes(False)[0].caption!r})")


def vocabulary() -> list[str]:
    """Every word the captions use, sorted; the embedded models' tokenizers are built from it."""
    words = set()
    for scene in all_scenes(True) + all_scenes(False):
        words.update(scene.caption.split())
    return sorted(words)


# ------------------------------------------------------------------------------------------ what the seed picks


@dataclass(frozen=True)
class Identity:
    """What a caption does not name about the subject and background; fixed by the seed alone."""

    shade: tuple[float, float, float]  # RGB of the subject before its stripes
    stripe_angle: float  # radians in [0, pi): direction across which the brightness varies
    stripe_period: float  # pixels at 64x64
    stripe_phase: float
    stripe_contrast: float
    background_level: float  # grey level
    waves: tuple[tuple[float, float, float, float], ...]  # (angle, period, phase, amplitude) per wave


@dataclass(frozen=True)
class Layout:
    """Where the subject is: its centre in the first frame and its motion per frame, pixels at 64x64."""

    x: float
    y: float
    dx: float = 0.0
    dy: float = 0.0


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def draw_identity(scene: Scene, seed: int) -> Identity:
    """The subject's shade and stripes and the background's level and waves for ``seed``."""
    rng = np.random.default_rng([seed, 1])
    family = COLOURS[scene.colour]
    hue = (_uniform(rng, family["hue"]) % 360.0) / 360.0
    shade = colorsys.hsv_to_rgb(hue, _uniform(rng, family["saturation"]), _uniform(rng, family["value"]))
    waves = tuple(
        (_uniform(rng, (0.0, np.pi)), _uniform(rng, WAVE_PERIOD), _uniform(rng, (0.0, 2 * np.pi)),
         _uniform(rng, WAVE_AMPLITUDE))
        for _ in range(2)
    )
    return Identity(
        shade=tuple(float(c) for c in shade),
        stripe_angle=_uniform(rng, (0.0, np.pi)),
        stripe_period=_uniform(rng, STRIPE_PERIOD),
        stripe_phase=_uniform(rng, (0.0, 2 * np.pi)),
        stripe_contrast=_uniform(rng, STRIPE_CONTRAST),
        background_level=_uniform(rng, BACKGROUNDS[scene.background]),
        waves=waves,
    )


def box_half_extent(scene: Scene) -> float:
    """Half the side of the square box every shape of this size fits in (pixels at 64x64)."""
    return SIZES[scene.size] * 1.1


def draw_layout(scene: Scene, seed: int, num_frames: int = 9) -> Layout:
    """Where the subject sits (still) or starts and how fast it moves (video) for ``seed``."""
    rng = np.random.default_rng([seed, 2])
    reach = box_half_extent(scene) + MARGIN
    if not scene.is_video:
        fx, fy = POSITIONS[scene.position]
        jx, jy = rng.uniform(-POSITION_JITTER, POSITION_JITTER, size=2)
        return Layout(fx * 64 + float(jx), fy * 64 + float(jy))
    ux, uy = DIRECTIONS[scene.direction]
    travel = _uniform(rng, TRAVEL)
    lows = [reach + travel * max(0.0, -u) for u in (ux, uy)]
    highs = [64 - reach - travel * max(0.0, u) for u in (ux, uy)]
    x, y = (float(rng.uniform(lo, hi)) for lo, hi in zip(lows, highs))
    per_frame = travel / max(num_frames - 1, 1)
    return Layout(x, y, ux * per_frame, uy * per_frame)


# --------------------------------------------------------------------------------------------------- render


def shape_distance(shape: str, x: np.ndarray, y: np.ndarray, half: float) -> np.ndarray:
    """Signed distance (negative inside) from points (x, y), relative to the centre, to a shape's outline.

    The square and the triangle (apex up, y pointing down) fill the box of half-side ``1.1 * half`` at most;
    the distance to the nearest edge's line is exact except just outside a corner, which only softens the
    anti-aliasing there.
    """
    if shape == "circle":
        return np.hypot(x, y) - half
    if shape == "square":
        return np.maximum(np.abs(x), np.abs(y)) - 0.9 * half
    h = 1.1 * half  # triangle: apex (0, -h), base corners (+-h, h)
    slant = (2.0 * np.abs(x) - y - h) / np.sqrt(5.0)  # the two slanted edges |x| = (y + h) / 2
    return np.maximum(slant, y - h)


def coverage(shape: str, cx: float, cy: float, half: float, height: int, width: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape centred at (cx, cy) pixels with half-extent ``half``."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    return np.clip(0.5 - shape_distance(shape, xs - cx, ys - cy, half), 0.0, 1.0)


def _background(identity: Identity, height: int, width: int, scale: float) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) / scale
    grey = np.full((height, width), identity.background_level, dtype=np.float32)
    for angle, period, phase, amplitude in identity.waves:
        grey += amplitude * np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period + phase)
    return np.repeat(grey[..., None], 3, axis=-1)


def _subject(identity: Identity, cx: float, cy: float, height: int, width: int, scale: float) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u = ((xs + 0.5 - cx) * np.cos(identity.stripe_angle) + (ys + 0.5 - cy) * np.sin(identity.stripe_angle)) / scale
    brightness = 1.0 + identity.stripe_contrast * np.sin(2 * np.pi * u / identity.stripe_period + identity.stripe_phase)
    return np.asarray(identity.shade, dtype=np.float32) * brightness[..., None]


def compose(scene: Scene, identity: Identity, layout: Layout, size: int = 64, num_frames: int = 9) -> np.ndarray:
    """Render ``scene`` with a given identity and layout (pixels at 64x64, scaled to ``size``)."""
    scale = size / 64.0
    half = SIZES[scene.size] * scale
    background = _background(identity, size, size, scale)
    frames = []
    for f in range(num_frames if scene.is_video else 1):
        cx, cy = (layout.x + layout.dx * f) * scale, (layout.y + layout.dy * f) * scale
        mask = coverage(scene.shape, cx, cy, half, size, size)[..., None]
        subject = _subject(identity, cx, cy, size, size, scale)
        frames.append(np.clip(background * (1.0 - mask) + subject * mask, 0.0, 1.0).astype(np.float32))
    return np.stack(frames) if scene.is_video else frames[0]


def render(scene: Scene, seed: int = 0, size: int = 64, num_frames: int = 9) -> np.ndarray:
    """Render a scene as float32 RGB in [0, 1]: (H, W, 3) for images, (F, H, W, 3) for videos.

    The seed picks the layout and the identity (see the module's docstring); the same seed gives the same
    identity for every caption.
    """
    return compose(scene, draw_identity(scene, seed), draw_layout(scene, seed, num_frames), size, num_frames)


def subject_mask(scene: Scene, seed: int, size: int = 64, num_frames: int = 9) -> np.ndarray:
    """The subject's coverage in [0, 1] as rendered for ``seed``: (H, W), or (F, H, W) for videos."""
    layout, scale = draw_layout(scene, seed, num_frames), size / 64.0
    masks = [
        coverage(scene.shape, (layout.x + layout.dx * f) * scale, (layout.y + layout.dy * f) * scale,
                 SIZES[scene.size] * scale, size, size)
        for f in range(num_frames if scene.is_video else 1)
    ]
    return np.stack(masks) if scene.is_video else masks[0]


def sample_batch(scenes: list[Scene], batch: int, rng: np.random.Generator, **render_kwargs):
    """A random batch of (scene, rendering) pairs drawn from ``scenes``."""
    picks = [scenes[i] for i in rng.integers(0, len(scenes), size=batch)]
    seeds = rng.integers(0, 2**31 - 1, size=batch)
    return picks, np.stack([render(s, int(sd), **render_kwargs) for s, sd in zip(picks, seeds)])
