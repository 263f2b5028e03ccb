"""Test-time augmentation for zero-shot classification: several views of each image, one averaged embedding.

Each view is embedded and L2-normalised, the views are averaged, and the mean is renormalised, the way prompt
ensembling treats templates. The views, for a model whose input is S×S:

- ``none``: the model's own preprocessing (one view).
- ``flip``: that input and its horizontal mirror (the same pixels reversed left to right; 2 views).
- ``multicrop``: the image prepared by the model's own transform (same resize mode and resampling) at a larger
  size R, with R = the transform's ``resize_size`` when it has one, else round(S·8/7) (the classic 256 → 224
  ratio); the five S×S crops of that R×R input: its four corners and its centre (torchvision's ``FiveCrop``;
  5 views).
- ``multicrop-flip``: those five crops and their mirrors (``TenCrop``; 10 views).

Cost grows with the views: ``flip`` embeds twice, ``multicrop`` five times, ``multicrop-flip`` ten times.
Views are numpy arrays whichever backend embeds them (``encoding.EncoderLike.encode_pixels`` takes them), so this
runs without torch with the ONNX encoder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import UsageError
from ..image.decode import to_rgb

if TYPE_CHECKING:
    from ..encoding import EncoderLike as Encoder

Transform = Any  # the model's eval transform: ``image.transforms.ImageTransform`` (torch) or ``runtime.Preprocess``

TTA_MODES: dict[str, int] = {"none": 1, "flip": 2, "multicrop": 5, "multicrop-flip": 10}  # mode → views per image
MULTICROP_RATIO = 8 / 7


def check_tta(mode: str) -> str:
    if mode not in TTA_MODES:
        raise UsageError(f"tta {mode!r} is not one of {', '.join(TTA_MODES)}")
    return mode


def multicrop_size(transform: Transform) -> int:
    """R, the side of the enlarged input the crops are cut from (always larger than the model's input)."""
    size = transform.image_size
    return max(transform.resize_size or 0, round(size * MULTICROP_RATIO), size + 1)


def tta_views(image: Image.Image, transform: Transform, mode: str) -> np.ndarray:
    """``float32 [V, 3, S, S]``: the model inputs for one decoded image under ``mode`` (see the module docstring)."""
    image = to_rgb(image)
    if mode == "none":
        return np.asarray(transform(image))[None]
    if mode == "flip":
        x = np.asarray(transform(image))
        return np.stack([x, x[..., ::-1]])
    size, big = transform.image_size, multicrop_size(transform)
    eval_only = {"train": False} if hasattr(transform, "train") else {}
    enlarged = np.asarray(dataclasses.replace(transform, image_size=big, resize_size=None, **eval_only)(image))
    far = big - size
    mid = round(far / 2.0)  # the centre crop's offset, as resize.py's _center_crop rounds it
    crops = [enlarged[:, top : top + size, left : left + size]
             for top, left in ((0, 0), (0, far), (far, 0), (far, far), (mid, mid))]
    if mode == "multicrop-flip":
        crops += [c[..., ::-1] for c in crops]
    return np.stack(crops)


def encode_views(encoder: Encoder, views: Sequence[np.ndarray]) -> np.ndarray:
    """``float32 [len(views), D]``: per image, the renormalised mean of its views' normalised embeddings."""
    if not views:
        return np.zeros((0, encoder.embed_dim), dtype=np.float32)
    counts = [v.shape[0] for v in views]
    x = np.concatenate(list(views))
    feats = np.concatenate([encoder.encode_pixels(x[i : i + encoder.batch_size])
                            for i in range(0, x.shape[0], encoder.batch_size)])
    if max(counts) == 1:
        return feats  # no augmentation: exactly the encoder's own embeddings
    means = np.stack([part.mean(axis=0) for part in np.split(feats, np.cumsum(counts)[:-1])])
    return (means / np.maximum(np.linalg.norm(means, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def encode_images(encoder: Encoder, images: Sequence[Image.Image], tta: str = "none") -> np.ndarray:
    """``float32 [N, D]`` L2-normalised image embeddings with test-time augmentation ``tta`` (``none`` equals
    ``encoder.encode_images``)."""
    check_tta(tta)
    chunk = max(1, encoder.batch_size // TTA_MODES[tta])
    out = [np.zeros((0, encoder.embed_dim), dtype=np.float32)]
    for start in range(0, len(images), chunk):
        out.append(encode_views(encoder, [tta_views(im, encoder.preprocess, tta) for im in images[start : start + chunk]]))
    return np.concatenate(out)
