"""A loaded model ready to embed: weights, image transform, tokenizer and device together, plus its identity.

Every application (zero-shot, index and search, evaluation, scores, filters) and the service embed through an
``Encoder`` — or through ``runtime.OnnxEncoder``, which offers the same interface (``encoding.EncoderLike``)
without torch — so a model is loaded once and the backend can change in one place. ``ModelRef`` (``modelref.py``,
re-exported here) is what an index or a saved classifier records about the model that made its vectors, so that
vectors from another model are refused instead of silently compared.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .cpu import apply_threads, inference_dtype
from .embed import embed_images, embed_texts
from .encoding import ImageEmbeddings
from .errors import UsageError
from .image.decode import to_rgb
from .image.transforms import ImageTransform
from .model import Clip
from .modelref import HF_HUB_PREFIX, ModelRef, _is_local, hash_checkpoint
from .progress import Progress
from .text import Tokenizer

__all__ = ["HF_HUB_PREFIX", "Encoder", "ImageEmbeddings", "ModelRef", "hash_checkpoint"]


class Encoder:
    """Normalised float32 embeddings of texts, PIL images and image files from one model, in eval mode.

    ``Encoder.load("ViT-B-32", "laion2b_s34b_b79k")`` builds one the way ``create_model_and_transforms`` does.
    """

    backend = "torch"

    def __init__(self, model: Clip, preprocess: ImageTransform, tokenizer: Tokenizer,
                 ref: ModelRef | Callable[[], ModelRef], batch_size: int = 64, text_batch_size: int = 256) -> None:
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self._ref = ref
        self.batch_size = batch_size
        self.text_batch_size = text_batch_size
        self.autocast: torch.dtype | None = None  # compute dtype under autocast (bf16 on a CPU that has it)

    @property
    def ref(self) -> ModelRef:
        """The weights' identity, computed on first use: hashing a multi-GB checkpoint is seconds that a command
        which never stores or compares vectors (embed, classify, score) should not pay at start-up."""
        if callable(self._ref):
            self._ref = self._ref()
        return self._ref

    @classmethod
    def load(cls, model: str, pretrained: str | None = None, *, device: str | torch.device = "cpu",
             precision: str = "fp32", cache_dir: str | Path | None = None, batch_size: int = 64) -> Encoder:
        """``precision="bf16"`` on a CPU keeps fp32 weights and computes under bf16 autocast when the processor has
        native bf16 (``cpu.cpu_supports_bf16``); otherwise it warns and computes in fp32. On a GPU it casts the
        weights, as ``create_model`` does."""
        from .factory import create_model_and_transforms, tokenizer_for

        apply_threads()
        autocast = inference_dtype(precision, device)
        if torch.device(device).type == "cpu" and precision == "bf16":
            precision = "fp32"
        clip, _, preprocess = create_model_and_transforms(model, pretrained, device=device, precision=precision,  # type: ignore[arg-type]
                                                          cache_dir=cache_dir)
        if _is_local(model):
            model = str(Path(model).resolve())
        encoder = cls(clip, preprocess, tokenizer_for(clip.config, cache_dir=cache_dir),
                      lambda: ModelRef.of(model, pretrained, clip), batch_size=batch_size)
        encoder.autocast = autocast
        return encoder

    def _computing(self) -> contextlib.AbstractContextManager:
        """The context every model call runs in: bf16 autocast when ``load`` chose it, else nothing."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    @property
    def embed_dim(self) -> int:
        return self.model.config.embed_dim

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def uses_sigmoid(self) -> bool:
        """SigLIP-style (a ``logit_bias``): probabilities are per-label sigmoids, not a softmax over labels."""
        return self.model.uses_sigmoid

    @property
    def logit_scale(self) -> float:
        """The multiplier on cosines, ``exp`` of the model's ``logit_scale`` parameter (what ``logits`` applies)."""
        return float(self.model.logit_scale.detach().exp())

    @property
    def logit_bias(self) -> float | None:
        """SigLIP-style models' bias on the scaled cosines; None for CLIP-style ones."""
        bias = self.model.logit_bias
        return None if bias is None else float(bias.detach())

    @property
    def model_config(self) -> dict[str, Any]:
        return self.model.config.to_dict()

    def encode_text(self, texts: Sequence[str], progress: Progress | None = None, normalize: bool = True) -> np.ndarray:
        """``float32 [len(texts), embed_dim]``, L2-normalised (unless ``normalize=False``)."""
        if isinstance(texts, str):
            raise UsageError("encode_text takes a list of texts, not one string")
        with self._computing():
            return embed_texts(self.model, self.tokenizer, list(texts), self.text_batch_size, normalize,
                               progress=progress)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``float32 [len(images), embed_dim]``, L2-normalised, of decoded PIL images (any mode)."""
        chunks = [np.zeros((0, self.embed_dim), dtype=np.float32)]
        for start in range(0, len(images), self.batch_size):
            chunks.append(self.encode_pixels([self.pixels(im) for im in images[start : start + self.batch_size]]))
        return np.concatenate(chunks)

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """One image as the model's input (the eval transform), so a server can preprocess in its request threads
        while the model runs, and batch only the model call."""
        return self.preprocess(to_rgb(image))

    @torch.inference_mode()
    def encode_pixels(self, pixels: Sequence[torch.Tensor] | torch.Tensor | np.ndarray) -> np.ndarray:
        """``encode_images`` of already-preprocessed images (``pixels()`` each, or a stacked batch — a tensor or a
        float32 numpy array), in one call."""
        if isinstance(pixels, np.ndarray):
            pixels = torch.from_numpy(np.ascontiguousarray(pixels))
        x = pixels if isinstance(pixels, torch.Tensor) else torch.stack([torch.as_tensor(p) for p in pixels])
        with self._computing():
            feats = self.model.encode_image(x.to(device=self.device, dtype=self.dtype), normalize=True)
        return feats.float().cpu().numpy()

    def encode_files(self, paths: Sequence[Path], strict: bool = False, workers: int = 2,
                     progress: Progress | None = None, batch_size: int | None = None,
                     normalize: bool = True, processes: bool = False) -> ImageEmbeddings:
        """Embeddings of image files; unreadable ones are skipped and listed in ``failures`` (``strict`` raises).
        ``batch_size`` overrides the encoder's for this call; ``processes`` decodes in worker processes."""
        with self._computing():
            return embed_images(self.model, self.preprocess, [Path(p) for p in paths], batch_size or self.batch_size,
                                normalize, strict, workers, progress, processes)

    def logits(self, image_features: np.ndarray, text_features: np.ndarray) -> np.ndarray:
        """``[images, texts]`` logits of normalised features with the model's own scale (and bias)."""
        with torch.no_grad():
            out = self.model.logits(self._tensor(image_features), self._tensor(text_features))
        return out.float().cpu().numpy()

    def probabilities(self, image_features: np.ndarray, text_features: np.ndarray) -> np.ndarray:
        """Zero-shot probabilities: softmax over the texts (CLIP) or a sigmoid per text (SigLIP)."""
        with torch.no_grad():
            out = self.model.probabilities(self._tensor(image_features), self._tensor(text_features))
        return out.float().cpu().numpy()

    def _tensor(self, features: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(features, dtype=np.float32), device=self.device)
