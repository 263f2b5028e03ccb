"""The eval image transform in PIL and numpy: bit-identical to ``image.transforms.ImageTransform`` without torch.

The geometry (resize, centre crop, pad) is ``image/resize.py``'s, the very function the torch transform calls; the
normalisation repeats its float32 arithmetic step for step — ``uint8 → float32``, ``/ 255``, ``- mean``, ``/ std``,
each one IEEE-rounded float32 operation, as torch does it — so the arrays equal the tensors bit for bit
(``tests/test_runtime.py`` checks every resize mode, odd sizes and modes).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from PIL import Image

from ..constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ..image.decode import HIGH_DEPTH_MODES, to_rgb
from ..image.resize import _RESAMPLE, RESIZE_MODES, resize_crop
from .package import PackageError


@dataclass(frozen=True)
class Preprocess:
    """Callable PIL image (any mode) → ``float32 [3, image_size, image_size]``, the model's input."""

    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0
    resize_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.resize_mode not in RESIZE_MODES or self.interpolation not in _RESAMPLE:
            raise ValueError(f"preprocess: resize_mode {self.resize_mode!r} / interpolation {self.interpolation!r} "
                             f"not among {RESIZE_MODES} / {tuple(_RESAMPLE)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"preprocess: mean and std need 3 values (std > 0), got {self.mean} and {self.std}")
        self._set("_mean", np.asarray(self.mean, dtype=np.float32)[:, None, None])
        self._set("_std", np.asarray(self.std, dtype=np.float32)[:, None, None])

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "preprocess") -> Preprocess:
        """From a manifest's ``preprocess`` (the fields of the eval ``ImageTransform``); an unknown or bad field is
        a ``PackageError`` naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PackageError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise PackageError(f"{where}: {e}") from None

    def __call__(self, image: Image.Image) -> np.ndarray:
        if image.mode in HIGH_DEPTH_MODES:
            image = to_rgb(image)
        image = resize_crop(image, self.image_size, self.resize_size, self.resize_mode, self.interpolation,
                            self.fill_color)
        return self.normalize(to_rgb(image))

    def normalize(self, image: Image.Image) -> np.ndarray:
        """An RGB image's ``uint8 [H, W, 3]`` as ``float32 [3, H, W]``: ``(x / 255 - mean) / std``."""
        x = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32, order="C")
        x /= np.float32(255)
        x -= self._mean  # type: ignore[attr-defined]
        x /= self._std  # type: ignore[attr-defined]
        return x
