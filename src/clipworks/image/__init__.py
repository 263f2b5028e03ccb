"""Images in: decoding with errors that name the file, and the preprocessing each model was trained with.

``ImageTransform``/``image_transform`` (torch tensors out) are imported on first use, so decoding serves the
torch-free ONNX runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .decode import IMAGE_SUFFIXES, ImageError, expand_image_paths, load_image, to_rgb

if TYPE_CHECKING:
    from .transforms import ImageTransform, image_transform


def __getattr__(name: str) -> Any:
    if name in ("ImageTransform", "image_transform"):
        from . import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module 'clipworks.image' has no attribute {name!r}")


__all__ = ["IMAGE_SUFFIXES", "ImageError", "ImageTransform", "expand_image_paths", "image_transform", "load_image", "to_rgb"]
