"""The procedural sample world the embedded models are trained on, and its analytic scorer."""

from .scenes import Scene, all_scenes, parse_caption, render, split, vocabulary
from .scorer import Reading, agreement, read_image, read_video

__all__ = [
    "Scene", "all_scenes", "parse_caption", "render", "split", "vocabulary",
    "Reading", "agreement", "read_image", "read_video",
]
