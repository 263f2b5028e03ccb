"""Which weights made a set of vectors: ``ModelRef``, recorded by indexes and saved classifiers so that vectors from
another model are refused instead of silently compared. Imports no torch: the ONNX runtime carries the same record
(an exported folder's manifest holds the ``ModelRef`` of the weights it was exported from), which is how an index
built with the torch model accepts the exported model's vectors and refuses any other's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .model import Clip

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
