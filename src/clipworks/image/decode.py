"""Image files in, PIL images out — with errors that name the file, directory expansion, and any mode to RGB."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ClipworksError

HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # 16-bit and 32-bit greyscale: rescaled, not clipped
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}


class ImageError(ClipworksError, ValueError):
    """An image file is missing, empty, truncated, or not an image."""


def load_image(path: str | Path, draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode the whole file now (PIL is lazy), so a truncated file fails here, naming itself.

    ``draft`` (an approximation, opt-in): a JPEG is decoded by libjpeg's DCT scaling at 1/2, 1/4 or 1/8 of its size,
    the smallest that keeps both sides at least ``draft``: a 12-megapixel photo decodes ~5× faster and the resize
    after it is ~15× cheaper, at the price of pixels that differ slightly from a full decode. Other formats ignore it.
    """
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path} is a directory, not an image file")
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            if draft is not None and image.format in ("JPEG", "MPO"):
                image.draft(None, draft)
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path} cannot be read as an image: {e}") from e
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB. 16-bit and float greyscale are rescaled to 8 bits rather than clipped."""
    if image.mode == "RGB":
        return image
    if image.mode in HIGH_DEPTH_MODES:
        a = np.asarray(image, dtype=np.float64)
        lo, hi = (0.0, 65535.0) if image.mode.startswith("I;16") else (float(a.min()), float(a.max()))
        a = np.clip((a - lo) / max(hi - lo, 1e-12) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a).convert("RGB")
    return image.convert("RGB")


def expand_image_paths(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; directories replaced by the image files under them, sorted for a stable order."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out
