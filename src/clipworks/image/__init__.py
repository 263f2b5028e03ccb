"""Images in: decoding with errors that name the file, and the preprocessing each model was trained with."""

from .decode import IMAGE_SUFFIXES, ImageError, expand_image_paths, load_image
from .transforms import ImageTransform, image_transform, to_rgb

__all__ = ["IMAGE_SUFFIXES", "ImageError", "ImageTransform", "expand_image_paths", "image_transform", "load_image", "to_rgb"]
