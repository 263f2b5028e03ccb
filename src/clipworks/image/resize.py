"""The eval transform's geometry on PIL images — resize, centre crop, pad — shared by the torch ``ImageTransform``
(``transforms.py``) and the torch-free ONNX runtime (``runtime/preprocess.py``), so both cut the same pixels by
construction. Each step repeats torchvision's / open_clip's rule (named in its docstring) call for call.
"""

from __future__ import annotations

from PIL import Image

RESIZE_MODES = ("shortest", "squash", "longest")

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST}


def _resize_shorter(image: Image.Image, size: int, resample: Image.Resampling = Image.Resampling.BICUBIC,
                    gap: float | None = None) -> Image.Image:
    """torchvision's ``Resize(size)``: the shorter side becomes ``size``, the longer keeps the aspect (truncated)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return image
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return image.resize((new_w, new_h), resample, reducing_gap=gap)


def _resize_longest(image: Image.Image, size: int, resample: Image.Resampling, gap: float | None = None) -> Image.Image:
    """open_clip's ``ResizeKeepRatio(size, longest=1)``: the longer side becomes ``size`` (sides rounded)."""
    w, h = image.size
    ratio = max(h / size, w / size)
    new_h, new_w = round(h / ratio), round(w / ratio)
    return image if (new_w, new_h) == (w, h) else image.resize((new_w, new_h), resample, reducing_gap=gap)


def _center_crop(image: Image.Image, size: int, fill: int = 0) -> Image.Image:
    w, h = image.size
    if w < size or h < size:  # pad (black unless told), as torchvision and open_clip do, then crop
        canvas = Image.new(image.mode, (max(w, size), max(h, size)), _fill_value(image.mode, fill))
        canvas.paste(image, ((max(w, size) - w) // 2, (max(h, size) - h) // 2))
        image, (w, h) = canvas, canvas.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def _fill_value(mode: str, fill: int) -> int | tuple[int, ...]:
    bands = len(Image.new(mode, (1, 1)).getbands())
    return fill if bands == 1 else (fill,) * bands


def resize_crop(image: Image.Image, size: int, resize_size: int | None = None, resize_mode: str = "shortest",
                interpolation: str = "bicubic", fill_color: int = 0, reducing_gap: float | None = None) -> Image.Image:
    """The eval geometry: ``shortest`` (shorter side to R, centre S crop), ``squash`` (both sides to R, centre S
    crop) or ``longest`` (longer side to R, padded with ``fill_color`` to S); R is ``resize_size`` or S.
    ``reducing_gap`` (PIL's) is the opt-in approximate path's faster resize; None is the exact one."""
    resample = _RESAMPLE[interpolation]
    resized = resize_size or size
    if resize_mode == "squash":
        image = image if image.size == (resized, resized) else image.resize((resized, resized), resample,
                                                                             reducing_gap=reducing_gap)
        return image if resized == size else _center_crop(image, size)
    if resize_mode == "longest":
        return _center_crop(_resize_longest(image, resized, resample, reducing_gap), size, fill_color)
    return _center_crop(_resize_shorter(image, resized, resample, reducing_gap), size, fill_color)
