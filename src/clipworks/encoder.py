"""A loaded model ready to embed: weights, image transform, tokenizer and device together, plus its identity.

Every application (zero-shot, index and search, evaluation, scores, filters) and the service embed through an
``Encoder``, so a model is loaded once and the backend can change in one place. ``ModelRef`` is what an index
or a saved classifier records about the model that made its vectors, so that vectors from another model are
refused instead of silently compared.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .cpu import apply_threads, inference_dtype
from .embed import ImageEmbeddings, embed_images, embed_texts
from .errors import ConfigError, UsageError
from .image.transforms import ImageTransform, to_rgb
from .model import Clip
from .progress import Progress
from .text import Tokenizer

HF_HUB_PREFIX = "hf-hub:"


@dataclass(frozen=True)
class ModelRef:
    """Which weights made a set of vectors. ``weights`` is the identity compared: ``sha256:<hex>`` of a local
    checkpoint's files, ``pretrained:<model>/<tag>`` for a registry name, ``hf-hub:<repo>`` for a Hub repo,
    ``random:<config sha>`` for untrained weights (which no later load reproduces)."""

    model: str  # as the user gave it; a checkpoint path is made absolute
    pretrained: str | None
    weights: str
    embed_dim: int

    @classmethod
    def of(cls, model: str, pretrained: str | None, clip: Clip) -> ModelRef:
        """The identity of a loaded model."""
        return cls._named(model, pretrained, clip.config.embed_dim, lambda: _config_sha(clip.config.to_dict()))

    @classmethod
    def resolve(cls, model: str, pretrained: str | None = None, cache_dir: str | Path | None = None) -> ModelRef:
        """The identity ``Encoder.load(model, pretrained)`` would have, from the config and file hashes alone —
        so a command can refuse the wrong model before loading (or downloading) its weights."""
        from .factory import model_config

        config = model_config(model, pretrained, cache_dir=cache_dir)
        return cls._named(model, pretrained, config.embed_dim, lambda: _config_sha(config.to_dict()))

    @classmethod
    def _named(cls, model: str, pretrained: str | None, embed_dim: int, config_sha: Callable[[], str]) -> ModelRef:
        if model.startswith(HF_HUB_PREFIX):
            return cls(model, pretrained, model, embed_dim)
        if _is_local(model):
            path = Path(model).resolve()
            return cls(str(path), pretrained, f"sha256:{hash_checkpoint(path)}", embed_dim)
        if pretrained is None:
            return cls(model, None, f"random:{config_sha()}", embed_dim)
        if _is_local(pretrained):
            path = Path(pretrained).resolve()
            return cls(model, str(path), f"sha256:{hash_checkpoint(path)}", embed_dim)
        return cls(model, pretrained, f"pretrained:{model}/{pretrained}", embed_dim)

    @property
    def is_random(self) -> bool:
        return self.weights.startswith("random:")

    def describe(self) -> str:
        """How a user would name it: ``ViT-B-32 --pretrained laion2b_s34b_b79k``, or a path with its hash."""
        name = self.model if self.pretrained is None else f"{self.model} --pretrained {self.pretrained}"
        if self.weights.startswith("sha256:"):
            name += f" (sha256 {self.weights[7:19]}…)"
        elif self.is_random:
            name += " (random weights)"
        return f"{name}, {self.embed_dim}-d"

    def same_weights(self, other: ModelRef) -> bool:
        return self.weights == other.weights and self.embed_dim == other.embed_dim and not self.is_random

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model record") -> ModelRef:
        try:
            return cls(str(data["model"]), data.get("pretrained"), str(data["weights"]), int(data["embed_dim"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{where}: not a model record ({type(e).__name__}: {e})") from e


def _is_local(name: str) -> bool:
    return Path(name).exists()


def _config_sha(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def hash_checkpoint(path: Path) -> str:
    """sha256 over a checkpoint file, or over a checkpoint directory's files (names and bytes, sorted)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class Encoder:
    """Normalised float32 embeddings of texts, PIL images and image files from one model, in eval mode.

    ``Encoder.load("ViT-B-32", "laion2b_s34b_b79k")`` builds one the way ``create_model_and_transforms`` does.
    """

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

    def encode_text(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """``float32 [len(texts), embed_dim]``, L2-normalised."""
        if isinstance(texts, str):
            raise UsageError("encode_text takes a list of texts, not one string")
        with self._computing():
            return embed_texts(self.model, self.tokenizer, list(texts), self.text_batch_size, progress=progress)

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
    def encode_pixels(self, pixels: Sequence[torch.Tensor] | torch.Tensor) -> np.ndarray:
        """``encode_images`` of already-preprocessed images (``pixels()`` each, or a stacked batch), in one call."""
        x = pixels if isinstance(pixels, torch.Tensor) else torch.stack(list(pixels))
        with self._computing():
            feats = self.model.encode_image(x.to(device=self.device, dtype=self.dtype), normalize=True)
        return feats.float().cpu().numpy()

    def encode_files(self, paths: Sequence[Path], strict: bool = False, workers: int = 2,
                     progress: Progress | None = None, batch_size: int | None = None,
                     processes: bool = False) -> ImageEmbeddings:
        """Embeddings of image files; unreadable ones are skipped and listed in ``failures`` (``strict`` raises).
        ``batch_size`` overrides the encoder's for this call; ``processes`` decodes in worker processes."""
        with self._computing():
            return embed_images(self.model, self.preprocess, [Path(p) for p in paths], batch_size or self.batch_size,
                                True, strict, workers, progress, processes)

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
