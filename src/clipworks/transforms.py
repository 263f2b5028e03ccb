"""Image preprocessing: PIL image → normalised float tensor, numerically identical to open_clip's.

Written on PIL and torch alone (no torchvision at run time). The eval path repeats torchvision's
``Resize(size, BICUBIC) → CenterCrop → convert('RGB') → ToTensor → Normalize`` step for step, in
the same order and float32 arithmetic, so outputs match open_clip's bit for bit on RGB photos.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB. 16-bit and float greyscale are rescaled to 8 bits rather than clipped."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(image, dtype=np.float64)
        lo, hi = (0.0, 65535.0) if image.mode.startswith("I;16") else (float(a.min()), float(a.max()))
        a = np.clip((a - lo) / max(hi - lo, 1e-12) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a).convert("RGB")
    return image.convert("RGB")


def _resize_shorter(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    if short == size:
        return image
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return image.resize((new_w, new_h), Image.Resampling.BICUBIC)


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    if w < size or h < size:  # pad with black, as torchvision does, then crop
        canvas = Image.new(image.mode, (max(w, size), max(h, size)))
        canvas.paste(image, ((max(w, size) - w) // 2, (max(h, size) - h) // 2))
        image, (w, h) = canvas, canvas.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


@dataclass
class ImageTransform:
    """Callable PIL image → ``float32[3, size, size]``; ``train=True`` adds a random resized crop."""

    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    train: bool = False
    scale: tuple[float, float] = (0.9, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            image = to_rgb(image)
        if self.train:
            image = self._random_resized_crop(image)
        else:
            image = _center_crop(_resize_shorter(image, self.image_size), self.image_size)
        return self.normalize(to_rgb(image))

    def normalize(self, image: Image.Image) -> torch.Tensor:
        x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div(255)
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return x.sub_(mean).div_(std)

    def _random_resized_crop(self, image: Image.Image) -> Image.Image:
        """torchvision's RandomResizedCrop sampling: 10 tries at a random area and aspect, else a centre crop."""
        w, h = image.size
        area = w * h
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * self.rng.uniform(*self.scale)
            aspect = math.exp(self.rng.uniform(*log_ratio))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                top = self.rng.randint(0, h - ch)
                left = self.rng.randint(0, w - cw)
                break
        else:
            in_ratio = w / h
            if in_ratio < self.ratio[0]:
                cw, ch = w, int(round(w / self.ratio[0]))
            elif in_ratio > self.ratio[1]:
                ch, cw = h, int(round(h * self.ratio[1]))
            else:
                cw, ch = w, h
            top, left = (h - ch) // 2, (w - cw) // 2
        image = image.crop((left, top, left + cw, top + ch))
        return image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)


def image_transform(image_size: int, train: bool = False, seed: int | None = None) -> ImageTransform:
    return ImageTransform(image_size=image_size, train=train, rng=random.Random(seed))
