"""Writing results: images saved atomically and never over an existing file unless asked, and the grid
figure that shows the input, its reconstruction and the edits across a sweep side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..results import check_writable_folder, refuse_overwrite
from ..results.media import write_image

#: Each tile of the grid is shown at least this many pixels wide (small models make 64-pixel images).
GRID_TILE = 128


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def check_writable(path: str | Path, overwrite: bool) -> Path:
    """``path`` as a Path; FileExistsError when it exists and ``overwrite`` is False."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name for the output image")
    refuse_overwrite(path, overwrite)
    _image_format(path)
    check_writable_folder(path)
    return path


def _image_format(path: Path) -> str:
    import io

    from PIL import Image

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unknown image format for {path}; use a suffix such as .png, .jpg or .webp")
    try:  # Pillow reads more formats than it writes, and some cannot hold RGB
        Image.new("RGB", (1, 1)).save(io.BytesIO(), format=fmt)
    except (KeyError, OSError, ValueError) as err:
        raise ValueError(
            f"Pillow cannot write an RGB image as {path.suffix} ({fmt}); use a suffix such as .png, .jpg or .webp"
        ) from err
    return fmt


def save_image(image: np.ndarray, path: str | Path, overwrite: bool = False) -> Path:
    """Save an (H, W, 3) float image in [0, 1]; the format follows the suffix."""
    path = check_writable(path, overwrite)
    return write_image(path, to_uint8(image), _image_format(path))


def grid_path(output: str | Path) -> Path:
    """Where the grid of an edit written to ``output`` goes: ``<stem>_grid.png`` beside it."""
    output = Path(output)
    return output.with_name(f"{output.stem}_grid.png")


def make_grid(input_image, reconstruction, edits, rows: list, columns: list) -> np.ndarray:
    """(H, W, 3) grid: per row (one S), the input, the reconstruction, then one edit per alpha, labelled.

    ``edits[r][c]`` is the edit at ``rows[r]`` (S) and ``columns[c]`` (alpha).
    """
    from PIL import Image, ImageDraw

    height, width = np.asarray(input_image).shape[:2]
    zoom = max(1, -(-GRID_TILE // width))
    tile_w, tile_h, label_h = width * zoom, height * zoom, 14
    cols = 2 + len(columns)
    canvas = Image.new("RGB", (cols * tile_w, len(rows) * (tile_h + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)

    def put(image, r, c, label):
        tile = Image.fromarray(to_uint8(image)).resize((tile_w, tile_h), Image.Resampling.NEAREST)
        y = r * (tile_h + label_h)
        canvas.paste(tile, (c * tile_w, y))
        draw.text((c * tile_w + 2, y + tile_h + 1), label, fill=(0, 0, 0))

    for r, steps_source in enumerate(rows):
        put(input_image, r, 0, "input")
        put(reconstruction, r, 1, "reconstruction")
        for c, alpha in enumerate(columns):
            put(edits[r][c], r, 2 + c, f"S={steps_source} a={alpha:g}")
    return np.asarray(canvas, dtype=np.float32) / 255.0
