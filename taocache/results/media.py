"""Images and videos written whole: side-by-side comparisons as GIF, MP4 or PNG (diffusers' export
utilities), their difference, and smaller copies for summaries kept in a repository."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from ..core.frames import as_frames
from .files import atomic_path

#: The difference panel shows |result - reference| times this gain, so small errors stay visible.
DIFFERENCE_GAIN = 5.0
#: Colours of the one palette all frames of a GIF share (no dithering: it would make the files several times larger).
PALETTE_COLOURS = 96
VIDEO_SUFFIXES = (".gif", ".mp4", ".png")


def difference_image(result, reference) -> np.ndarray:
    """|result - reference| x DIFFERENCE_GAIN, clipped to [0, 1]."""
    return np.clip(np.abs(as_frames(result) - as_frames(reference)) * DIFFERENCE_GAIN, 0.0, 1.0)


def side_by_side(*videos, panel: int = 128, gap: int = 4) -> np.ndarray:
    """(F, H, W, 3) uint8 frames of the videos next to each other, each enlarged (nearest neighbour, so
    pixels stay crisp) until its longer side is ``panel`` pixels, with white gaps between them."""
    panels = [(_enlarged(as_frames(v), panel) * 255 + 0.5).astype(np.uint8) for v in videos]
    spacer = np.full(panels[0].shape[:2] + (gap, 3), 255, np.uint8)
    strip = []
    for i, frames in enumerate(panels):
        strip += [spacer, frames] if i else [frames]
    return np.concatenate(strip, axis=2)


def _enlarged(frames: np.ndarray, size: int) -> np.ndarray:
    height, width = frames.shape[1:3]
    scale = size / max(height, width)
    rows = np.minimum((np.arange(round(height * scale)) / scale).astype(int), height - 1)
    cols = np.minimum((np.arange(round(width * scale)) / scale).astype(int), width - 1)
    return frames[:, rows][:, :, cols]


def check_video_path(path: str | os.PathLike) -> Path:
    """``path`` if :func:`write_video` can write it here (suffix, and for MP4 the encoder); ValueError saying
    what to do otherwise. Call it before the work whose result it will hold."""
    path = Path(path)
    if path.suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"{path} must end in one of {VIDEO_SUFFIXES}")
    if path.suffix == ".mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise ValueError("writing .mp4 needs imageio's ffmpeg plugin (pip install imageio-ffmpeg); or write a .gif")
    return path


def write_video(path: str | os.PathLike, frames, fps: float = 8.0) -> Path:
    """Write (F, H, W, 3) frames (floats in [0, 1] or uint8) as a looping GIF, an MP4, or a PNG of the first
    frame, chosen by the suffix; whole or not at all."""
    from diffusers.utils import export_to_gif, export_to_video
    from PIL import Image

    path = check_video_path(path)
    movie = (as_frames(frames) * 255 + 0.5).astype(np.uint8)
    with atomic_path(path) as temporary:
        if path.suffix == ".png":
            Image.fromarray(movie[0]).save(temporary, format="PNG")
        elif path.suffix == ".gif":
            export_to_gif(_shared_palette(movie), str(temporary), fps=fps)
        else:
            export_to_video(list(movie.astype(np.float32) / 255.0), str(temporary), fps=fps, macro_block_size=1)
    return path


def _shared_palette(movie: np.ndarray) -> list:
    """The frames as palette images sharing one palette of PALETTE_COLOURS colours, undithered."""
    from PIL import Image

    palette = Image.fromarray(np.concatenate(list(movie), axis=0)).quantize(
        colors=PALETTE_COLOURS, dither=Image.Dither.NONE
    )
    return [Image.fromarray(frame).quantize(palette=palette, dither=Image.Dither.NONE) for frame in movie]


def shrunk_gif_copy(source: str | os.PathLike, target: str | os.PathLike, factor: int = 2) -> Path:
    """A copy of a GIF keeping every ``factor``-th pixel each way, at the same frame rate."""
    from PIL import Image, ImageSequence

    with Image.open(source) as image:
        frame_ms = image.info.get("duration", 125) or 125
        movie = np.stack([np.asarray(f.convert("RGB"))[::factor, ::factor] for f in ImageSequence.Iterator(image)])
    return write_video(target, movie, fps=1000.0 / frame_ms)


def write_image(path: str | os.PathLike, image, image_format: str | None = None) -> Path:
    """Write an (H, W, 3) image (floats in [0, 1] or uint8) with Pillow, in ``image_format`` or the one its
    suffix names; whole or not at all."""
    from PIL import Image

    pixels = (as_frames(image)[0] * 255 + 0.5).astype(np.uint8)
    with atomic_path(path) as temporary:
        Image.fromarray(pixels).save(temporary, format=image_format)
    return Path(path)
