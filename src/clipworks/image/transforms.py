"""Image preprocessing: PIL image → normalised float tensor, numerically identical to open_clip's.

Written on PIL and torch alone (no torchvision at run time). The eval path repeats open_clip's
``Resize → CenterCrop → convert('RGB') → ToTensor → Normalize`` step for step, in the same order and float32
arithmetic, so outputs match open_clip's bit for bit on RGB photos, for each of its resize modes: ``shortest``
(shorter side to size, centre crop), ``squash`` (both sides to size: SigLIP) and ``longest`` (longer side to
size, padded with ``fill_color``), with bicubic, bilinear or nearest resampling. The geometry is ``resize.py``'s,
which the torch-free runtime shares.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ..model.config import PreprocessConfig
from .decode import HIGH_DEPTH_MODES, load_image, to_rgb
from .resize import _RESAMPLE, _center_crop, _fill_value, _resize_longest, _resize_shorter, resize_crop

__all__ = ["ImageTransform", "_center_crop", "_fill_value", "_resize_longest", "_resize_shorter", "image_transform",
           "resize_crop", "splitmix64", "to_rgb"]

_REDUCING_GAP = 3.0  # PIL's advice for "indistinguishable from fair resampling in most cases"


@functools.lru_cache(maxsize=16)
def _normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """float32 [3, 256]: ``(v / 255 - mean[c]) / std[c]`` for every 8-bit ``v``, in torch float32 as torchvision."""
    v = torch.arange(256, dtype=torch.float32).div(255)[None, :]
    m = torch.tensor(mean, dtype=torch.float32)[:, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None]
    table = v.sub(m).div(s).numpy()
    table.setflags(write=False)
    return table

@dataclass
class ImageTransform:
    """Callable PIL image → ``float32[3, size, size]``; ``train=True`` adds a random resized crop."""

    image_size: int = 224
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0
    resize_size: int | None = None  # resize to this, then the centre image_size crop (None: image_size)
    train: bool = False
    scale: tuple[float, float] = (0.9, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rng: random.Random = field(default_factory=random.Random, repr=False)
    # Opt-in approximation for speed: JPEG draft decoding (``load``) and PIL's ``reducing_gap`` resize (a box
    # reduction by an integer factor before the bicubic pass). Not open_clip's pixels; bench/preprocess_speed.py
    # reports the speed and the largest difference on real photos.
    fast: bool = False

    def __call__(self, image: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        """``rng`` overrides the transform's own stream for this call, so a loader can seed each sample."""
        return self.normalize(self.crop(image, rng))

    def crop(self, image: Image.Image, rng: random.Random | None = None) -> Image.Image:
        """The geometric part of the transform: the RGB ``image_size`` square that ``normalize`` turns into the
        tensor. Pure PIL (which releases the GIL), so decode workers can run it and hand back 8-bit pixels."""
        if image.mode in HIGH_DEPTH_MODES:
            image = to_rgb(image)
        if self.train:
            image = self._random_resized_crop(image, rng or self.rng)
        else:
            image = resize_crop(image, self.image_size, self.resize_size, self.resize_mode, self.interpolation,
                                self.fill_color, _REDUCING_GAP if self.fast else None)
        return to_rgb(image)

    @property
    def draft_size(self) -> tuple[int, int]:
        """What ``load`` asks JPEG draft decoding for: twice the resize target on both sides, so the bicubic pass
        after it still downsamples (and antialiases) by at least 2."""
        r = 2 * (self.resize_size or self.image_size)
        return r, r

    def load(self, path: str | Path) -> Image.Image:
        """Decode a file for this transform: in full, or with ``fast`` at the JPEG draft size."""
        return load_image(path, self.draft_size if self.fast and not self.train else None)

    @property
    def batchable(self) -> bool:
        """Whether ``tensor_batch`` reproduces this transform (bicubic, shortest or squash); loaders of
        array-backed data fall back to the per-image PIL path otherwise."""
        return self.interpolation == "bicubic" and self.resize_mode in ("shortest", "squash")

    def normalize(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        """RGB uint8 pixels (a PIL image or ``[H, W, 3]`` array) → float32 ``[3, H, W]``, ``(v / 255 - mean) / std``.

        One table lookup per pixel: each output is a function of (channel, 8-bit value) alone, so a 3×256 table
        computed with torchvision's own float32 steps (``ToTensor``'s ``div(255)``, then ``Normalize``'s ``sub`` and
        ``div``) gives its exact numbers, in one pass instead of four."""
        a = np.asarray(image, dtype=np.uint8)
        table = _normalize_table(tuple(self.mean), tuple(self.std))
        return torch.from_numpy(np.stack([table[c][a[..., c]] for c in range(3)]))

    def _random_resized_crop(self, image: Image.Image, rng: random.Random) -> Image.Image:
        """torchvision's RandomResizedCrop sampling: 10 tries at a random area and aspect, else a centre crop."""
        w, h = image.size
        area = w * h
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                top = rng.randint(0, h - ch)
                left = rng.randint(0, w - cw)
                break
        else:
            cw, ch = self._fallback_crop(w, h)
            top, left = (h - ch) // 2, (w - cw) // 2
        image = image.crop((left, top, left + cw, top + ch))
        return image.resize((self.image_size, self.image_size), _RESAMPLE[self.interpolation])

    def _fallback_crop(self, w: int, h: int) -> tuple[int, int]:
        """(width, height) of the centre crop used when 10 random tries miss: the whole image, ratio-clamped."""
        in_ratio = w / h
        if in_ratio < self.ratio[0]:
            return w, int(round(w / self.ratio[0]))
        if in_ratio > self.ratio[1]:
            return int(round(h * self.ratio[1])), h
        return w, h

    def tensor_batch(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | np.ndarray | None = None,
    ) -> torch.Tensor:
        """uint8 ``[B, C, H, W]`` or ``[B, H, W]`` (C = 1 or 3, one size per batch) → float32 ``[B, 3, S, S]``.

        The batched twin of ``__call__`` for array-backed datasets, where a per-image PIL round trip would
        cost more than the training step. Resizing uses PIL's own antialiased bicubic weights as two
        matrix products (horizontal pass, round to uint8, vertical pass, round), so it tracks the PIL
        path to within one grey level; an image already at S×S is not resampled and matches it exactly.
        With ``train=True`` each sample gets its own random resized crop (torchvision's sampling rule):
        its random numbers come from ``seeds`` (one integer per sample, counter-based, so a sample's crop
        does not depend on its batch-mates) or else from ``generator``.
        """
        if images.dtype != torch.uint8 or images.dim() not in (3, 4):
            raise ValueError(f"tensor_batch takes uint8 [B,H,W] or [B,C,H,W], got {images.dtype} {list(images.shape)}")
        if not self.batchable:
            raise ValueError(f"tensor_batch resamples bicubic with resize_mode 'shortest' or 'squash'; this transform "
                             f"asks for {self.interpolation} / {self.resize_mode}: use the PIL path (__call__)")
        x = images[:, None] if images.dim() == 3 else images
        if x.shape[1] not in (1, 3):
            raise ValueError(f"tensor_batch takes 1 or 3 channels, got {x.shape[1]} in {list(images.shape)}")
        b, _, h, w = x.shape
        x = x.float()
        if self.train and b:
            if seeds is not None:
                u = _seeded_uniforms(seeds, _CROP_DRAWS)
                if u.shape[0] != b:
                    raise ValueError(f"tensor_batch got {u.shape[0]} seeds for {b} images")
            else:
                u = torch.rand(b, _CROP_DRAWS, generator=generator, dtype=torch.float64).numpy()
            top, left, ch, cw = self._crop_boxes(u, h, w)
            x = _resample(x, _bicubic_matrix(h, self.image_size, top, ch), _bicubic_matrix(w, self.image_size, left, cw))
        elif not self.train:
            x = self._resize_center_crop(x)
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return x.div_(255).sub(mean).div_(std)

    def _resize_center_crop(self, x: torch.Tensor) -> torch.Tensor:
        """The eval path on a batch: shorter side to R (``resize_size``, else S; skipped when already R), then the
        centre S×S; or with ``squash`` both sides to R, then the centre S×S."""
        s = self.image_size
        r = self.resize_size or s
        h, w = x.shape[-2:]
        zero = np.zeros(1, dtype=np.int64)
        if self.resize_mode == "squash":
            if (h, w) != (r, r):
                x = _resample(x, _bicubic_matrix(h, r, zero, zero + h), _bicubic_matrix(w, r, zero, zero + w))
                h, w = r, r
        elif min(h, w) != r:
            short, long = min(h, w), max(h, w)
            new_long = int(r * long / short)
            new_h, new_w = (new_long, r) if w <= h else (r, new_long)
            x = _resample(x, _bicubic_matrix(h, new_h, zero, zero + h), _bicubic_matrix(w, new_w, zero, zero + w))
            h, w = new_h, new_w
        top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
        return x[..., top:top + s, left:left + s]

    def _crop_boxes(self, u: np.ndarray, h: int, w: int) -> tuple[np.ndarray, ...]:
        """(top, left, height, width) int64 [B] from uniforms ``u`` [B, 22]: the PIL path's rule, vectorised."""
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        target = h * w * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, :10])
        aspect = np.exp(log_lo + (log_hi - log_lo) * u[:, 10:20])
        cw, ch = np.round(np.sqrt(target * aspect)), np.round(np.sqrt(target / aspect))
        ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
        first = ok.argmax(1)[:, None]  # the first try that fits, as the loop takes it
        found = ok.any(1)
        fw, fh = self._fallback_crop(w, h)
        cw = np.where(found, np.take_along_axis(cw, first, 1)[:, 0], fw).astype(np.int64)
        ch = np.where(found, np.take_along_axis(ch, first, 1)[:, 0], fh).astype(np.int64)
        top = np.where(found, np.floor(u[:, 20] * (h - ch + 1)), (h - ch) // 2).astype(np.int64)
        left = np.where(found, np.floor(u[:, 21] * (w - cw + 1)), (w - cw) // 2).astype(np.int64)
        return top, left, ch, cw


_CROP_DRAWS = 22  # 10 tries × (area, aspect) + (top, left)
_GOLDEN = 0x9E3779B97F4A7C15


def splitmix64(x: np.ndarray | Sequence[int]) -> np.ndarray:
    """SplitMix64 (state += golden ratio, then mix) on uint64: a cheap, well-mixed, vectorised hash.

    Counter-based seeding with it makes per-sample randomness a pure function of (seed, sample).
    """
    z = np.atleast_1d(np.asarray(x)).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _seeded_uniforms(seeds: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """float64 [B, n] in [0, 1): the first n outputs of a SplitMix64 stream started at each seed."""
    s = np.atleast_1d(np.asarray(seeds)).astype(np.uint64)
    with np.errstate(over="ignore"):
        states = s[:, None] + np.arange(n, dtype=np.uint64)[None, :] * np.uint64(_GOLDEN)
    return (splitmix64(states.ravel()) >> np.uint64(11)).astype(np.float64).reshape(len(s), n) / 2.0**53


def _bicubic_matrix(in_size: int, out_size: int, start: np.ndarray, length: np.ndarray) -> torch.Tensor:
    """[B, out_size, in_size] float32 resize weights, one matrix per (start, length) window of the input.

    Crops repeat within a batch (a few starts × a few lengths), so each distinct window is built once.
    """
    windows, which = np.unique(start * (in_size + 1) + length, return_inverse=True)
    table = torch.stack([_window_weights(in_size, out_size, *divmod(int(k), in_size + 1)) for k in windows])
    return table.index_select(0, torch.from_numpy(which.reshape(-1)))


@functools.lru_cache(maxsize=4096)
def _window_weights(in_size: int, out_size: int, start: int, length: int) -> torch.Tensor:
    """[out_size, in_size] float32: PIL's antialiased bicubic (a = -0.5) weights, in double precision as
    PIL computes them, for resizing input pixels ``start .. start+length`` onto ``out_size``; 0 elsewhere."""
    scale = length / out_size
    center = start + (np.arange(out_size)[:, None] + 0.5) * scale
    pos = np.arange(in_size)[None, :]
    d = np.abs((pos + 0.5 - center) / max(scale, 1.0))
    a = -0.5
    weight = np.where(d < 1, ((a + 2) * d - (a + 3)) * d * d + 1, np.where(d < 2, (((d - 5) * d + 8) * d - 4) * a, 0.0))
    weight *= (pos >= start) & (pos < start + length)
    return torch.from_numpy(weight / weight.sum(1, keepdims=True)).float()


def _resample(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Separable resize of [B, C, H, W] by row [B, S, H] and column [B, S', W] weights: horizontal pass first,
    rounding to uint8 levels after each pass, as PIL does; each pass is one ``bmm`` over all channels."""
    b, c, h, w = x.shape
    rows, cols = rows.expand(b, -1, -1), cols.expand(b, -1, -1)  # eval shares one matrix across the batch
    x = torch.bmm(x.reshape(b, c * h, w), cols.transpose(1, 2)).add_(0.5).floor_().clamp_(0, 255)  # [B, C*H, S']
    x = x.view(b, c, h, -1).transpose(1, 2).reshape(b, h, -1)  # [B, H, C*S'] (a view when C == 1)
    x = torch.bmm(rows, x).add_(0.5).floor_().clamp_(0, 255)  # [B, S, C*S']
    return x.view(b, rows.shape[1], c, -1).transpose(1, 2)


def image_transform(
    image_size: int | PreprocessConfig,
    train: bool = False,
    seed: int | None = None,
    **overrides: object,
) -> ImageTransform:
    """The transform of a model's ``preprocess_cfg`` (or of OpenAI's defaults at ``image_size``);
    ``overrides`` replace single fields (``mean=…``, ``resize_mode=…``)."""
    if isinstance(image_size, PreprocessConfig):
        cfg = image_size
        if cfg.size is None:
            raise ValueError("preprocess_cfg.size is not set; use ClipConfig.preprocess(), which fills in the tower's size")
        fields = dict(image_size=cfg.size, mean=cfg.mean, std=cfg.std, interpolation=cfg.interpolation,
                      resize_mode=cfg.resize_mode, fill_color=cfg.fill_color, resize_size=cfg.resize_size)
    else:
        fields = dict(image_size=image_size)
    fields.update(overrides)
    return ImageTransform(**fields, train=train, rng=random.Random(seed))  # type: ignore[arg-type]
