"""``classify``: images in, top-k labels with probabilities out — the one call behind ``clipworks classify`` and
the service. Unreadable images become predictions carrying an error, never an exception that loses the batch."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import InputTypeError, UsageError
from ..image.decode import ImageError, load_image
from ..progress import Progress
from .classifier import ZeroShotClassifier
from .tta import TTA_MODES, check_tta, encode_views, tta_views

if TYPE_CHECKING:
    from ..encoding import EncoderLike as Encoder

ImageInput = str | Path | Image.Image


@dataclass(frozen=True)
class Prediction:
    """One input image's result: its ``k`` best labels with their probabilities (best first), or ``error``."""

    index: int  # position in the input list
    path: Path | None  # None for an in-memory image
    labels: tuple[str, ...] = ()
    probabilities: tuple[float, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str | None:
        """The top-1 label (None when the image could not be read)."""
        return self.labels[0] if self.labels else None

    @property
    def name(self) -> str:
        """The path as given, or ``<image N>`` for an in-memory image."""
        return str(self.path) if self.path is not None else f"<image {self.index}>"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "path": None if self.path is None else str(self.path)}
        if self.error is not None:
            out["error"] = self.error
        else:
            out["top_k"] = [{"label": n, "probability": p} for n, p in zip(self.labels, self.probabilities)]
        return out


def classify(
    encoder: Encoder,
    images: Sequence[ImageInput],
    labels_or_classifier: Sequence[str] | ZeroShotClassifier,
    templates: str | Path | Sequence[str] | None = None,
    k: int = 5,
    tta: str = "none",
    progress: Progress | None = None,
    workers: int = 2,
) -> list[Prediction]:
    """Zero-shot classify image files and/or PIL images: one ``Prediction`` per input, in input order.

    ``labels_or_classifier`` is a list of class names (a classifier is built with ``templates``, ``simple`` by
    default — see ``ZeroShotClassifier.build``) or a ``ZeroShotClassifier`` made by the same model as
    ``encoder`` (another model's is refused). ``tta`` is ``none``, ``flip``, ``multicrop`` or ``multicrop-flip``
    (``zeroshot.tta``). Probabilities are a softmax over the labels for CLIP-style models and a per-label sigmoid
    for SigLIP-style ones. Directories are not expanded here (``image.decode.expand_image_paths`` does that);
    a file that cannot be read gives a ``Prediction`` with ``error`` set. ``progress`` counts images.
    """
    if isinstance(images, (str, Path, Image.Image)):
        raise InputTypeError("classify takes a list of images (paths or PIL images), not a single one")
    for i, item in enumerate(images):
        if not isinstance(item, (str, Path, Image.Image)):
            raise InputTypeError(f"image {i} is a {type(item).__name__}; give a file path or a PIL image")
    if k < 1:
        raise UsageError(f"k must be at least 1, got {k}")
    check_tta(tta)
    if isinstance(labels_or_classifier, ZeroShotClassifier):
        if templates is not None:
            raise UsageError("templates apply when building a classifier from labels; this classifier was built "
                             f"with its own {len(labels_or_classifier.templates)} template(s)")
        classifier = labels_or_classifier
        classifier.check_encoder(encoder)
    else:
        classifier = ZeroShotClassifier.build(encoder, labels_or_classifier, "simple" if templates is None else templates)

    chunk = max(1, encoder.batch_size // TTA_MODES[tta])
    results: list[Prediction] = []

    def prepare(item: ImageInput) -> np.ndarray | str:
        try:
            image = item if isinstance(item, Image.Image) else load_image(item)
            return tta_views(image, encoder.preprocess, tta)
        except ImageError as e:
            return str(e)
        except Exception as e:  # noqa: BLE001 (a decoder bug on a hostile file must not end a long run)
            return f"{item if not isinstance(item, Image.Image) else 'image'} failed to decode: {type(e).__name__}: {e}"

    starts = range(0, len(images), chunk)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        ahead = [pool.submit(prepare, x) for x in images[:chunk]]
        for start in starts:
            part = images[start : start + chunk]
            prepared = [f.result() for f in ahead]
            ahead = [pool.submit(prepare, x) for x in images[start + chunk : start + 2 * chunk]]  # decode while encoding
            good = [i for i, x in enumerate(prepared) if not isinstance(x, str)]
            features = encode_views(encoder, [prepared[i] for i in good])  # type: ignore[misc]
            probs, idx = classifier.topk(features, k)
            rows = dict(zip(good, range(len(good))))
            for i, item in enumerate(part):
                path = None if isinstance(item, Image.Image) else Path(item)
                if i in rows:
                    r = rows[i]
                    results.append(Prediction(start + i, path, tuple(classifier.class_names[j] for j in idx[r]),
                                              tuple(float(p) for p in probs[r])))
                else:
                    results.append(Prediction(start + i, path, error=str(prepared[i])))
            if progress:
                progress(len(part))
    return results
