"""The procedural sample world: captioned scenes of one coloured shape.

Every scene is a small, fully specified thing (shape, colour, size, background, and either a position for
still images or a motion direction for videos) that renders deterministically from a seed. Captions are
plain English, and a fixed, seeded split keeps some attribute combinations out of training so that the
embedded models can be judged on captions they never saw.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (0.86, 0.16, 0.14),
    "green": (0.15, 0.72, 0.22),
    "blue": (0.16, 0.32, 0.90),
    "yellow": (0.95, 0.85, 0.12),
}
SIZES = {"small": 7.0, "large": 13.0}  # half-extent in pixels at 64x64
BACKGROUNDS = {"dark": (0.10, 0.10, 0.12), "light": (0.88, 0.88, 0.86)}
POSITIONS = {  # centre as a fraction of the frame (x, y), y pointing down
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
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

#: Seed of the fixed train / held-out split of caption combinations.
SPLIT_SEED = 1234
#: Number of caption combinations held out of training for each kind of scene.
NUM_HELD_OUT = 50


@dataclass(frozen=True)
class Scene:
    """One scene. ``position`` is set for still images, ``direction`` for videos (exactly one of them)."""

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


#: Names of the two sides of :func:`split`, as the evaluation commands take them.
SPLITS = ("held-out", "train")


def split(video: bool) -> tuple[list[Scene], list[Scene]]:
    """The fixed (train, held_out) split of caption combinations."""
    scenes = all_scenes(video)
    order = list(range(len(scenes)))
    random.Random(SPLIT_SEED + int(video)).shuffle(order)
    held = sorted(order[:NUM_HELD_OUT])
    train = sorted(order[NUM_HELD_OUT:])
    return [scenes[i] for i in train], [scenes[i] for i in held]


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


# --------------------------------------------------------------------------------------------------- render

_SUPERSAMPLE = 4


def _shape_mask(shape: str, cx: float, cy: float, half: float, height: int, width: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape centred at (cx, cy) pixels with half-extent ``half``."""
    s = _SUPERSAMPLE
    ys, xs = np.mgrid[0 : height * s, 0 : width * s]
    x = (xs + 0.5) / s - cx
    y = (ys + 0.5) / s - cy
    if shape == "circle":
        inside = x * x + y * y <= half * half
    elif shape == "square":
        inside = (np.abs(x) <= half * 0.9) & (np.abs(y) <= half * 0.9)
    else:  # triangle pointing up, same height and base as the square's box
        h = half * 1.1
        inside = (y <= h) & (y >= -h) & (np.abs(x) <= (y + h) / 2.0)
    return inside.reshape(height, s, width, s).mean(axis=(1, 3))


def _compose(scene: Scene, cx: float, cy: float, height: int, width: int) -> np.ndarray:
    mask = _shape_mask(scene.shape, cx, cy, SIZES[scene.size] * width / 64.0, height, width)[..., None]
    bg = np.asarray(BACKGROUNDS[scene.background], dtype=np.float32)
    fg = np.asarray(COLOURS[scene.colour], dtype=np.float32)
    return (bg * (1.0 - mask) + fg * mask).astype(np.float32)


#: Distance in pixels (at 64x64) a moving shape travels over one clip.
TRAVEL = 24.0


def render(scene: Scene, seed: int = 0, size: int = 64, num_frames: int = 9) -> np.ndarray:
    """Render a scene as float32 RGB in [0, 1]: (H, W, 3) for images, (F, H, W, 3) for videos.

    The seed jitters the placement a little so that one caption has many renderings.
    """
    rng = np.random.default_rng(seed)
    scale = size / 64.0
    jitter = rng.uniform(-3.0, 3.0, size=2) * scale
    if not scene.is_video:
        fx, fy = POSITIONS[scene.position]
        return _compose(scene, fx * size + jitter[0], fy * size + jitter[1], size, size)
    dx, dy = DIRECTIONS[scene.direction]
    travel = TRAVEL * scale
    # Start so that the path is centred in the frame, then jitter across the motion axis.
    cx0 = size / 2 - dx * travel / 2 + jitter[0] * (dx == 0)
    cy0 = size / 2 - dy * travel / 2 + jitter[1] * (dy == 0)
    frames = []
    for f in range(num_frames):
        t = f / max(num_frames - 1, 1)
        frames.append(_compose(scene, cx0 + dx * travel * t, cy0 + dy * travel * t, size, size))
    return np.stack(frames)


def sample_batch(scenes: list[Scene], batch: int, rng: np.random.Generator, **render_kwargs):
    """A random batch of (scene, rendering) pairs drawn from ``scenes``."""
    picks = [scenes[i] for i in rng.integers(0, len(scenes), size=batch)]
    seeds = rng.integers(0, 2**31 - 1, size=batch)
    return picks, np.stack([render(s, int(sd), **render_kwargs) for s, sd in zip(picks, seeds)])
