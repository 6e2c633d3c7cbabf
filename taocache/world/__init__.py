"""The procedural sample world the embedded models are trained on, and its analytic scorer."""

from .scenes import SPLITS, Scene, all_scenes, parse_caption, render, scenes_of, split, vocabulary
from .scorer import Reading, agreement, read_image, read_video

__all__ = [
    "SPLITS",
    "Reading",
    "Scene",
    "agreement",
    "all_scenes",
    "parse_caption",
    "read_image",
    "read_video",
    "render",
    "scenes_of",
    "split",
    "vocabulary",
]
