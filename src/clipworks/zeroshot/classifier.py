"""Class names × prompt templates → a linear zero-shot classifier (OpenAI's and open_clip's prompt ensembling).

``ZeroShotClassifier`` is the application's: built through an encoder (torch or ONNX: ``encoding.EncoderLike``),
applied to numpy image features, saved to one file with the identity of its model so that 1,000 classes are
encoded once and never paired with another model's images. All numpy: it runs without torch. The trainer's in-loop
version, ``build_classifier`` (a torch ``[D, C]`` tensor from a model and tokenizer), is in ``accuracy.py``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError, MissingFileError, UsageError
from ..fileio import atomic_file
from ..modelref import ModelRef
from ..progress import Progress
from .templates import TEMPLATE_SETS, check_templates, load_templates

if TYPE_CHECKING:
    from ..encoding import EncoderLike as Encoder

FORMAT = "clipworks.zeroshot-classifier"
FORMAT_VERSION = 1
_PROMPTS_PER_CHUNK = 4096


def __getattr__(name: str) -> Any:
    """The trainer's torch helpers moved to ``accuracy.py``; importing them from here still works."""
    if name in ("build_classifier", "eval_mode", "model_device"):
        from . import accuracy

        return getattr(accuracy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """Class names from a text file, one per line (in class-id order); blank lines and ``#`` comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"class names file {path}: no such file")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    return check_class_names([ln for ln in lines if ln and not ln.startswith("#")], where=str(path))


def check_class_names(class_names: Sequence[str], where: str = "labels") -> tuple[str, ...]:
    """The class names as a tuple, or a ``UsageError`` for an empty list, a blank name, or duplicates (named)."""
    if isinstance(class_names, str):
        raise UsageError(f"{where}: a list of class names, not one string ({class_names[:40]!r})")
    names = tuple(class_names)
    if not names or names == ("",):
        raise UsageError(f"{where}: no class names; zero-shot classification needs at least one")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise UsageError(f"{where}: class name {i + 1} is {type(name).__name__} {name!r}, not a string")
        if not name.strip():
            raise UsageError(f"{where}: class name {i + 1} is blank")
    seen: dict[str, int] = {}
    dupes: list[str] = []
    for name in names:
        key = name.strip()
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 2:
            dupes.append(key)
    if dupes:
        listed = ", ".join(f"{d!r} ×{seen[d]}" for d in dupes[:10]) + (f" and {len(dupes) - 10} more" if len(dupes) > 10 else "")
        raise UsageError(f"{where}: duplicate class names {listed}: each class needs one name")
    return names


def resolve_templates(spec: str | Path | Sequence[str]) -> tuple[str, ...]:
    """``load_templates`` plus one convenience: a single string with ``{}`` that is not a file is one template."""
    if isinstance(spec, str) and spec not in TEMPLATE_SETS and not Path(spec).is_file():
        if "{}" not in spec:
            raise UsageError(f"templates {spec!r} is not a built-in set ({', '.join(TEMPLATE_SETS)}), a file, nor a "
                             "template with '{}' where the class name goes")
        return check_templates([spec])
    return load_templates(spec)


@dataclass(frozen=True, eq=False)
class ZeroShotClassifier:
    """A zero-shot classifier: one L2-normalised text embedding per class (a prompt ensemble), with the scale,
    bias and identity of the model that made it, so it can be saved and applied to that model's image features
    without encoding any text again.

    ``weights`` is ``float32 [C, D]`` (rows are classes; ``build_classifier``'s ``[D, C]`` tensor transposed).
    ``logit_scale`` is the multiplier on cosines, ``exp`` of the model's ``logit_scale`` parameter, as
    ``Clip.logits`` applies it; ``logit_bias`` is set for SigLIP-style models, whose probabilities are sigmoids.
    """

    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    weights: np.ndarray
    model_ref: ModelRef
    logit_scale: float
    logit_bias: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", check_class_names(self.class_names))
        object.__setattr__(self, "templates", check_templates(self.templates))
        weights = np.ascontiguousarray(self.weights, dtype=np.float32)
        want = (len(self.class_names), self.model_ref.embed_dim)
        if weights.shape != want:
            raise UsageError(f"classifier weights are {list(weights.shape)}, expected [classes, embed_dim] = {list(want)}")
        object.__setattr__(self, "weights", weights)

    @property
    def uses_sigmoid(self) -> bool:
        """SigLIP-style: each label gets its own sigmoid probability; they do not sum to 1."""
        return self.logit_bias is not None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def embed_dim(self) -> int:
        return self.weights.shape[1]

    @classmethod
    def build(cls, encoder: Encoder, class_names: Sequence[str], templates: str | Path | Sequence[str] = "simple",
              progress: Progress | None = None) -> ZeroShotClassifier:
        """Encode every ``template.format(name)`` with ``encoder`` and ensemble per class: normalise each prompt's
        embedding, average over the templates, renormalise (one template: its normalised embedding).

        ``templates`` is a built-in set name (``simple``, ``openai-imagenet``, ``fashion-mnist``), a file with one
        template per line, one template string with ``{}``, or a list. ``progress`` counts prompts encoded.
        """
        names = check_class_names(class_names)
        temps = resolve_templates(templates)
        per_chunk = max(1, _PROMPTS_PER_CHUNK // len(temps))  # bounded memory: 1,000 classes × 80 templates is 80k prompts
        rows = []
        for start in range(0, len(names), per_chunk):
            chunk = names[start : start + per_chunk]
            prompts = [t.format(name) for name in chunk for t in temps]
            per_prompt = encoder.encode_text(prompts, progress=progress).reshape(len(chunk), len(temps), -1)
            rows.append(_normalize(per_prompt.mean(axis=1)))
        return cls(names, temps, np.concatenate(rows), encoder.ref, encoder.logit_scale, encoder.logit_bias)

    # -- applying -------------------------------------------------------------------------------------------------

    def logits(self, image_features: np.ndarray) -> np.ndarray:
        """``float32 [N, C]``: ``logit_scale · cos + logit_bias``, as ``Clip.logits`` scores the same features."""
        feats = self._features(image_features)
        out = self.logit_scale * (feats @ self.weights.T.astype(np.float64))
        if self.logit_bias is not None:
            out += self.logit_bias
        return out.astype(np.float32)

    def predict(self, image_features: np.ndarray) -> np.ndarray:
        """``float32 [N, C]`` probabilities of L2-normalised image features: a softmax over the classes (CLIP), or a
        sigmoid per class (SigLIP, ``logit_bias``), as ``Clip.probabilities`` computes them."""
        feats = self._features(image_features)
        logits = self.logit_scale * (feats @ self.weights.T.astype(np.float64))
        if self.logit_bias is not None:
            return (0.5 * (1.0 + np.tanh(0.5 * (logits + self.logit_bias)))).astype(np.float32)  # a stable sigmoid
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def topk(self, image_features: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, indices)``, each ``[N, min(k, C)]``, best first (ties: the earlier class), like
        ``torch.topk``; ``class_names[i]`` names index ``i``."""
        if k < 1:
            raise UsageError(f"k must be at least 1, got {k}")
        probs = self.predict(image_features)
        k = min(k, self.num_classes)
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(probs, order, axis=1), order

    def check_encoder(self, encoder: Encoder, where: str = "classifier") -> None:
        """Refuse to pair this classifier with another model's image features, naming both models."""
        if not self.model_ref.same_weights(encoder.ref):
            why = "; random weights match no saved classifier" if self.model_ref.is_random or encoder.ref.is_random else ""
            raise UsageError(f"{where} was built with {self.model_ref.describe()}, not with the model given, "
                             f"{encoder.ref.describe()}{why}; rebuild it with this model")

    def _features(self, image_features: np.ndarray) -> np.ndarray:
        feats = np.asarray(image_features)
        if feats.ndim != 2 or feats.shape[1] != self.embed_dim:
            raise UsageError(f"image features must be [N, {self.embed_dim}] for this classifier "
                             f"({self.model_ref.describe()}), got {list(feats.shape)}")
        return feats.astype(np.float64)

    # -- files ----------------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write one ``.safetensors`` file (``weights`` plus a JSON header: names, templates, model, scale, bias,
        format version), atomically: an interrupted save leaves any earlier file intact."""
        from safetensors.numpy import save_file

        path = Path(path)
        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "class_names": list(self.class_names),
                  "templates": list(self.templates), "model": self.model_ref.to_dict(),
                  "logit_scale": self.logit_scale, "logit_bias": self.logit_bias}
        with atomic_file(path) as tmp:
            save_file({"weights": self.weights}, str(tmp), metadata={"clipworks": json.dumps(header)})
        return path

    @classmethod
    def load(cls, path: str | Path, encoder: Encoder | None = None) -> ZeroShotClassifier:
        """Read a saved classifier; with ``encoder``, refuse one built by another model (naming both)."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"classifier {path}: no such file")
        try:
            with safe_open(str(path), framework="np") as f:
                metadata = f.metadata() or {}
                tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
        except (SafetensorError, OSError, ValueError) as e:
            raise ConfigError(f"{path} is not a saved classifier (not a safetensors file: {e})") from e
        try:
            header = json.loads(metadata["clipworks"])
            if header.get("format") != FORMAT:
                raise KeyError("format")
        except (KeyError, json.JSONDecodeError, AttributeError) as e:
            raise ConfigError(f"{path} is a safetensors file but not a clipworks zero-shot classifier") from e
        version = header.get("format_version")
        if version != FORMAT_VERSION:
            newer = isinstance(version, int) and version > FORMAT_VERSION
            raise ConfigError(f"{path}: classifier format version {version!r}"
                              + (" is newer than this clipworks reads" if newer else " is unknown")
                              + f" (it reads version {FORMAT_VERSION})" + ("; upgrade clipworks" if newer else ""))
        if set(tensors) != {"weights"}:
            raise ConfigError(f"{path}: expected one tensor 'weights', found {sorted(tensors)}")
        try:
            clf = cls(tuple(header["class_names"]), tuple(header["templates"]), tensors["weights"],
                      ModelRef.from_dict(header["model"], where=f"{path} model record"), float(header["logit_scale"]),
                      None if header.get("logit_bias") is None else float(header["logit_bias"]))
        except (KeyError, TypeError) as e:
            raise ConfigError(f"{path}: classifier header lacks or garbles {e}") from e
        except UsageError as e:
            raise ConfigError(f"{path}: {e}") from e
        if encoder is not None:
            clf.check_encoder(encoder, where=f"classifier {path}")
        return clf


def _normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
