"""Frozen image features of a labelled set, batch by batch exactly as the trainer's zero-shot evaluation makes
them, and an optional ``.npz`` cache that remembers which model and data made them."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..encoder import Encoder, ModelRef
from ..errors import UsageError
from ..fileio import atomic_file
from ..progress import Progress
from ..zeroshot.accuracy import eval_mode
from .datasets import LabelledImages

CACHE_FORMAT = 1
TRAINER_EVAL_BATCH = 500  # train.loop.zeroshot_eval's batch: in-memory sets use it, so features match bit for bit


@dataclass
class LabelledFeatures:
    """L2-normalised float32 image features and their labels; images that could not be read are left out and
    listed in ``skipped`` (reason strings naming the file)."""

    features: np.ndarray  # float32 [n, D]
    labels: np.ndarray  # int64 [n]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)


def batch_size_for(encoder: Encoder, dataset: LabelledImages, batch_size: int | None) -> int:
    """``batch_size``, else the trainer's evaluation batch for in-memory pixels and the encoder's for files."""
    if batch_size is None:
        return TRAINER_EVAL_BATCH if dataset.pixels is not None else encoder.batch_size
    return batch_size


def encode_labelled(encoder: Encoder, dataset: LabelledImages, batch_size: int | None = None, workers: int = 2,
                    progress: Progress | None = None) -> LabelledFeatures:
    """Features of every image of ``dataset``. In-memory pixels go through the model in batches with the
    batched transform when it reproduces the model's own — the trainer's path, so at its batch size (the default
    here) the features are bit for bit the trainer's; files are decoded in threads, and unreadable ones are
    skipped. ``batch_size`` None: see ``batch_size_for``."""
    batch_size = batch_size_for(encoder, dataset, batch_size)
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    if dataset.pixels is not None:
        return LabelledFeatures(_encode_pixels(encoder, dataset.pixels, batch_size, progress), dataset.labels.copy())
    assert dataset.paths is not None
    result = encoder.encode_files(dataset.paths, workers=workers, progress=progress, batch_size=batch_size)
    keep = np.zeros(len(dataset.paths), dtype=bool)
    j = 0
    for i, path in enumerate(dataset.paths):  # kept paths are a subsequence of the input, in order
        if j < len(result.paths) and result.paths[j] == path:
            keep[i] = True
            j += 1
    return LabelledFeatures(result.features, dataset.labels[keep], [reason for _, reason in result.failures])


def _encode_pixels(encoder: Encoder, pixels: torch.Tensor, batch_size: int, progress: Progress | None) -> np.ndarray:
    model, transform = encoder.model, encoder.preprocess
    device, dtype = encoder.device, encoder.dtype
    chunks = [np.zeros((0, encoder.embed_dim), dtype=np.float32)]
    with eval_mode(model):
        for start in range(0, len(pixels), batch_size):
            images = pixels[start:start + batch_size]
            if transform.batchable:
                x = transform.tensor_batch(images)
            else:
                arrays = images.numpy() if images.dim() == 3 else images.permute(0, 2, 3, 1).numpy()
                x = torch.stack([transform(Image.fromarray(a.squeeze())) for a in arrays])
            features = model.encode_image(x.to(device=device, dtype=dtype), normalize=True).float()
            chunks.append(features.cpu().numpy())
            if progress:
                progress(len(images))
    return np.concatenate(chunks)


def load_or_encode(cache: str | Path | None, encoder: Encoder, datasets: dict[str, LabelledImages],
                   batch_size: int | None = None, workers: int = 2,
                   progress: Progress | None = None) -> dict[str, LabelledFeatures]:
    """Features of each named dataset (``{"train": …, "test": …}``), read from ``cache`` when it was made by the
    same weights from the same data, else encoded (and written there). A cache made by another model or from
    other data is refused, naming both, rather than overwritten."""
    key = {name: {"name": d.name, "n": len(d), "classes": d.class_names} for name, d in datasets.items()}
    if cache is not None and Path(cache).is_file():
        ref, data, features = _read_cache(Path(cache))
        if not ref.same_weights(encoder.ref):
            raise UsageError(f"features cache {cache} was made by {ref.describe()}, not {encoder.ref.describe()}; "
                             "remove it or name another cache file")
        if data != key:
            raise UsageError(f"features cache {cache} holds features of {_describe(data)}, not {_describe(key)}; "
                             "remove it or name another cache file")
        if progress:
            progress(sum(len(d) for d in datasets.values()))
        return features
    out = {name: encode_labelled(encoder, d, batch_size, workers, progress) for name, d in datasets.items()}
    if cache is not None:
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps({
            "format": CACHE_FORMAT, "model": encoder.ref.to_dict(), "data": key,
            "skipped": {name: f.skipped for name, f in out.items()}}))}
        for name, f in out.items():
            arrays[f"{name}_features"], arrays[f"{name}_labels"] = f.features, f.labels
        with atomic_file(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return out


def _describe(data: dict) -> str:
    return ", ".join(f"{name}={d['name']} ({d['n']} images)" for name, d in data.items())


def _read_cache(path: Path) -> tuple[ModelRef, dict, dict[str, LabelledFeatures]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            version = meta.get("format")
            features = {name: LabelledFeatures(z[f"{name}_features"], z[f"{name}_labels"], meta["skipped"][name])
                        for name in meta["data"]} if version == CACHE_FORMAT else {}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise UsageError(f"features cache {path} cannot be read ({type(e).__name__}: {e}); remove it") from None
    if version != CACHE_FORMAT:
        raise UsageError(f"features cache {path} is format {version!r}, not {CACHE_FORMAT}; remove it")
    return ModelRef.from_dict(meta["model"], where=str(path)), meta["data"], features
