"""Reading what the user gives: an image file in any format Pillow reads, and the prompts.

An image is brought to what the model expects (RGB, the model's size) with every change logged: transparency
is composited over white, greyscale and palette images are expanded to RGB, and a differently shaped image is
centre-cropped to the model's aspect ratio and resized. The edit is put back at the input's size: resized to
the crop and pasted over it, so a photo of any size and aspect comes back whole, edited where the model saw it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def load_image(path: str | Path) -> PIL.Image.Image:  # noqa: F821
    """The image at ``path`` as RGB; clear errors for a missing, unreadable or non-image file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input image {path} does not exist")
    if not path.is_file():
        raise ValueError(f"input image {path} is not a file")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)  # a photo stored sideways is edited the way it is shown
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path} is too large to read safely ({err}); downscale it first") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(
            f"cannot read {path} as an image ({err}); give a file Pillow can open (PNG, JPEG, WebP, BMP, TIFF, ...)"
        ) from err
    return to_rgb(image, name=str(path))


def to_rgb(image, name: str = "image"):
    """RGB copy of a PIL image: alpha composited over white, greyscale / palette / 16-bit expanded."""
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "RGBa"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        logger.info("%s: %s image composited over white", name, mode)
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            full = 65535.0
        elif image.mode == "F" and array.min() >= 0.0 and array.max() <= 1.0:
            full = 1.0
        elif image.mode == "I" and array.min() >= 0 and array.max() <= 65535:
            full = 65535.0 if array.max() > 255 else 255.0  # 32-bit files mostly hold 16- or 8-bit data
        else:
            full = None
        if full is None:
            low, span = float(array.min()), float(array.max() - array.min()) or 1.0
            logger.warning("%s: %s values outside a known range; stretched from [%g, %g]", name, mode, low, low + span)
            array = (array - low) / span
        else:
            array = array / full
        image = Image.fromarray(np.uint8(np.rint(np.clip(array, 0.0, 1.0) * 255.0)), mode="L")
    logger.info("%s: %s image converted to RGB", name, mode)
    return image.convert("RGB")


def crop_box(size: tuple[int, int], height: int, width: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the largest centred crop of an image of ``size`` (w, h) with the model's
    aspect ratio."""
    w, h = size
    target_ratio = width / height
    if w / h > target_ratio:  # too wide: crop the sides
        new_w = max(1, round(h * target_ratio))
        left = (w - new_w) // 2
        return (left, 0, left + new_w, h)
    new_h = max(1, round(w / target_ratio))  # too tall: crop top and bottom
    top = (h - new_h) // 2
    return (0, top, w, top + new_h)


def restore_to_input(edit: np.ndarray, original) -> np.ndarray:
    """The edit ((H, W, 3) floats at the model's size) at the size of ``original`` (the RGB PIL input): resized
    to the crop :func:`fit_to_model` took and pasted over it; the rest of the input as it was."""
    from PIL import Image

    edit = np.clip(np.asarray(edit, dtype=np.float32), 0.0, 1.0)
    height, width = edit.shape[:2]
    if original.size == (width, height):
        return edit
    left, top, right, bottom = crop_box(original.size, height, width)
    pixels = Image.fromarray(np.uint8(np.rint(edit * 255.0)))
    resized = pixels.resize((right - left, bottom - top), Image.Resampling.LANCZOS)
    restored = np.asarray(original.convert("RGB"), dtype=np.float32) / 255.0
    restored = restored.copy()
    restored[top:bottom, left:right] = np.asarray(resized, dtype=np.float32) / 255.0
    return restored


def fit_to_model(image, height: int, width: int, name: str = "image") -> np.ndarray:
    """(height, width, 3) float32 array in [0, 1]: centre crop to the model's aspect ratio, then resize."""
    from PIL import Image

    w, h = image.size
    if (w, h) != (width, height):
        box = crop_box((w, h), height, width)
        image = image.crop(box).resize((width, height), Image.Resampling.LANCZOS)
        logger.info(
            "%s: %dx%d centre-cropped to %dx%d and resized to %dx%d (the model's size)",
            name,
            w,
            h,
            box[2] - box[0],
            box[3] - box[1],
            width,
            height,
        )
    return np.asarray(image, dtype=np.float32) / 255.0


def check_prompt(name: str, prompt) -> str:
    """``prompt`` stripped; ValueError when it is not a non-empty string."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(
            f"the {name} prompt is empty; describe the {'input image' if name == 'source' else 'wanted result'} "
            'in words, e.g. "a small red circle on the left on a dark background"'
        )
    return prompt.strip()


def model_size(pipe, recipe=None) -> tuple[int, int]:
    """(height, width) the model generates: the recipe's call size, else the UNet's native size."""
    call = getattr(recipe, "call", None) or {}
    scale = getattr(pipe, "vae_scale_factor", 8)
    native = pipe.unet.config.sample_size * scale
    return int(call.get("height", native)), int(call.get("width", native))


def check_model_image(pipe, image: np.ndarray) -> None:
    """Refuse an image a pipeline cannot encode as it is: not (H, W, 3), not a multiple of the VAE's factor,
    or pixels outside [0, 1]."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be an (H, W, 3) RGB array, got shape {image.shape}")
    scale = getattr(pipe, "vae_scale_factor", 8)
    if image.shape[0] % scale or image.shape[1] % scale:
        raise ValueError(
            f"image size {image.shape[1]}x{image.shape[0]} must be a multiple of the VAE's factor {scale}; "
            "bring it to the model's size first (taocache.edit.inputs.fit_to_model)"
        )
    if not np.isfinite(image).all() or image.min() < 0.0 or image.max() > 1.0:
        raise ValueError("image pixels must be finite floats in [0, 1]")
