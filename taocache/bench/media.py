"""Small animated GIFs of a result beside the full run, for the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metrics import as_frames

#: The difference panel shows |result - reference| times this gain, so small errors stay visible.
DIFFERENCE_GAIN = 5.0
#: Panels are scaled so that their longer side is this many pixels (nearest neighbour, to keep them crisp).
PANEL_SIZE = 128
#: Colours of the one palette all frames share (no dithering: it would make the files several times larger).
PALETTE_COLOURS = 96


def _panel(frames: np.ndarray) -> np.ndarray:
    height, width = frames.shape[1:3]
    scale = PANEL_SIZE / max(height, width)
    rows = np.minimum((np.arange(round(height * scale)) / scale).astype(int), height - 1)
    cols = np.minimum((np.arange(round(width * scale)) / scale).astype(int), width - 1)
    return frames[:, rows][:, :, cols]


def difference_image(result, reference) -> np.ndarray:
    """|result - reference| x DIFFERENCE_GAIN, clipped to [0, 1]."""
    return np.clip(np.abs(as_frames(result) - as_frames(reference)) * DIFFERENCE_GAIN, 0.0, 1.0)


def _write_gif(path: str | Path, movie: np.ndarray, frame_ms: int) -> Path:
    """(F, H, W, 3) uint8 frames as a looping GIF with one shared palette, written atomically."""
    from PIL import Image

    palette = Image.fromarray(np.concatenate(list(movie), axis=0)).quantize(
        colors=PALETTE_COLOURS, dither=Image.Dither.NONE
    )
    images = [Image.fromarray(frame).quantize(palette=palette, dither=Image.Dither.NONE) for frame in movie]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    images[0].save(
        tmp, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0, optimize=True
    )
    tmp.replace(path)
    return path


def shrunk_gif_copy(source: str | Path, target: str | Path, factor: int = 2) -> Path:
    """A copy of a GIF keeping every ``factor``-th pixel each way (for summaries kept in a repository)."""
    from PIL import Image, ImageSequence

    with Image.open(source) as image:
        frame_ms = image.info.get("duration", 150)
        movie = np.stack(
            [np.asarray(f.convert("RGB"))[::factor, ::factor] for f in ImageSequence.Iterator(image)]
        )
    return _write_gif(target, movie, frame_ms)


def side_by_side_gif(path: str | Path, *videos, gap: int = 4, frame_ms: int = 150) -> Path:
    """Write the videos (each (F, H, W, 3) in [0, 1] or uint8, same shape) next to each other as one GIF."""
    panels = [(_panel(as_frames(v)) * 255 + 0.5).astype(np.uint8) for v in videos]
    spacer = np.full(panels[0].shape[:2] + (gap, 3), 255, np.uint8)
    strip = []
    for i, panel in enumerate(panels):
        strip += [spacer, panel] if i else [panel]
    movie = np.concatenate(strip, axis=2)
    return _write_gif(path, movie, frame_ms)
