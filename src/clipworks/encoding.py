"""What the applications embed through, whichever backend runs the model — and nothing that needs torch.

``EncoderLike`` is the interface zero-shot classification, the search index, the CLI and the service rely on:
``Encoder`` (torch, ``encoder.py``) and ``OnnxEncoder`` (onnxruntime, ``runtime/encoder.py``) both provide it, so
those applications work unchanged — and import no torch — with either. ``load_encoder`` picks the backend.
``embed_files`` is the one loop that turns image files into embeddings for both backends (decoding ahead in
threads; unreadable files skipped and listed), so they report failures identically.
"""

from __future__ import annotations

import functools
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .errors import MissingDependencyError, UsageError
from .image.decode import ImageError, load_image
from .progress import Progress

if TYPE_CHECKING:
    from PIL import Image

    from .modelref import ModelRef

BACKENDS = ("torch", "onnx")


@dataclass
class ImageEmbeddings:
    features: np.ndarray  # float32 [N, embed_dim], one row per file in ``paths``
    paths: list[Path]
    failures: list[tuple[Path, str]] = field(default_factory=list)


class EncoderLike(Protocol):
    """A loaded model ready to embed: L2-normalised float32 numpy embeddings, the model's zero-shot scale and bias,
    and the identity of its weights. ``pixels`` is one image as the model's input (a torch tensor or a numpy array,
    whichever the backend takes); ``encode_pixels`` embeds a list (or stacked batch) of those."""

    batch_size: int
    text_batch_size: int

    @property
    def ref(self) -> ModelRef: ...
    @property
    def embed_dim(self) -> int: ...
    @property
    def uses_sigmoid(self) -> bool: ...
    @property
    def logit_scale(self) -> float: ...
    @property
    def logit_bias(self) -> float | None: ...
    @property
    def model_config(self) -> dict[str, Any] | None: ...
    @property
    def preprocess(self) -> Callable[[Image.Image], Any]: ...

    def encode_text(self, texts: Sequence[str], progress: Progress | None = None,
                    normalize: bool = True) -> np.ndarray: ...
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...
    def pixels(self, image: Image.Image) -> Any: ...
    def encode_pixels(self, pixels: Any) -> np.ndarray: ...
    def encode_files(self, paths: Sequence[Path], strict: bool = False, workers: int = 2,
                     progress: Progress | None = None, batch_size: int | None = None,
                     normalize: bool = True) -> ImageEmbeddings: ...
    def logits(self, image_features: np.ndarray, text_features: np.ndarray) -> np.ndarray: ...
    def probabilities(self, image_features: np.ndarray, text_features: np.ndarray) -> np.ndarray: ...


def load_encoder(model: str, pretrained: str | None = None, *, backend: str = "torch", **options: Any) -> EncoderLike:
    """An encoder of ``model`` run by ``backend``.

    ``torch``: ``model``/``pretrained`` as ``create_model_and_transforms`` takes them (a config name with a tag,
    ``hf-hub:org/repo``, a checkpoint); options ``device``, ``precision``, ``cache_dir``, ``batch_size``.
    ``onnx``: ``model`` is a folder made by ``clipworks export onnx`` (it records its own weights, so no
    ``pretrained``); options ``precision`` (``fp32`` or ``int8``), ``threads``, ``providers``, ``batch_size``.
    Only the onnx backend runs without torch installed.
    """
    if backend == "torch":
        return torch_encoder().load(model, pretrained, **options)
    if backend == "onnx":
        if pretrained is not None:
            raise UsageError(f"backend 'onnx' reads an exported folder ({model}); it records its own weights, so "
                             f"--pretrained {pretrained} does not apply")
        from .runtime.encoder import OnnxEncoder

        return OnnxEncoder.load(model, **options)
    raise UsageError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")


def torch_encoder() -> type:
    """The ``Encoder`` class, or a ``MissingDependencyError`` that points a torch-free install at the ONNX backend."""
    try:
        from .encoder import Encoder
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "torch":
            raise
        raise MissingDependencyError("the torch backend needs torch, which is not installed: pip install "
                                     "'clipworks[torch]', or run an "
                                     "exported folder (`clipworks export onnx`) with --backend onnx --model FOLDER "
                                     "(Python: load_encoder(FOLDER, backend='onnx'))") from e
    return Encoder


def _load(transform: Callable, p: Path) -> Image.Image:
    """The file decoded as ``transform`` wants it (``ImageTransform.load``: JPEG draft decoding when ``fast``)."""
    load = getattr(transform, "load", None)
    return load(p) if callable(load) else load_image(p)


def _work(transform: Callable, p: Path) -> Any:
    try:
        return transform(_load(transform, p))
    except ImageError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 (a decoder bug on a hostile file must not end a long run)
        return f"{p} failed to decode: {type(e).__name__}: {e}"


def _crop_work(transform: Any, p: Path) -> np.ndarray | str:
    """A worker process's share: decode, resize and crop to 8-bit pixels (a quarter of the float tensor's bytes to
    send back); the parent normalises."""
    try:
        return np.asarray(transform.crop(_load(transform, p)), dtype=np.uint8)
    except ImageError as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 (as _work: one hostile file must not end a long run)
        return f"{p} failed to decode: {type(e).__name__}: {e}"


def decode_ahead(paths: Sequence[Path], transform: Callable, workers: int,
                 processes: bool = False) -> Iterator[tuple[Path, Any]]:
    """(path, ``transform(image)`` or an error message) in input order; decoding runs ahead in ``workers`` threads
    (PIL releases the GIL while it decodes and resizes), or with ``processes`` in worker processes (for when the
    Python around PIL is what limits: many small images, many cores), at most ``4 × workers`` images ahead so a
    slow model never lets them pile up. ``processes`` needs a transform with ``crop`` and ``normalize``
    (``ImageTransform``); they are started with ``spawn``, so a calling script needs its ``__main__`` guard."""
    ahead = 4 * max(1, workers)
    pool: Executor
    if processes:
        if not (callable(getattr(transform, "crop", None)) and callable(getattr(transform, "normalize", None))):
            raise UsageError("decoding in worker processes needs the torch backend's ImageTransform (its crop runs "
                             "in the workers)")
        pool = ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context("spawn"))
        submit = functools.partial(pool.submit, _crop_work, transform)
        finish: Callable[[Any], Any] = lambda r: r if isinstance(r, str) else transform.normalize(r)
    else:
        pool = ThreadPoolExecutor(max(1, workers))
        submit = functools.partial(pool.submit, _work, transform)
        finish = lambda r: r
    with pool:
        pending: deque[tuple[Path, Future]] = deque()
        for p in paths:
            pending.append((p, submit(p)))
            if len(pending) >= ahead:
                q, fut = pending.popleft()
                yield q, finish(fut.result())
        while pending:
            q, fut = pending.popleft()
            yield q, finish(fut.result())


def embed_files(paths: Sequence[Path], transform: Callable, encode_batch: Callable[[list], np.ndarray], dim: int,
                batch_size: int = 64, strict: bool = False, workers: int = 2,
                progress: Progress | None = None, processes: bool = False) -> ImageEmbeddings:
    """Embed image files: ``transform`` each decoded image, ``encode_batch`` lists of ``batch_size`` results. Bad
    files are skipped and listed in ``failures`` (``strict`` raises ``ImageError`` on the first)."""
    chunks: list[np.ndarray] = [np.zeros((0, dim), dtype=np.float32)]
    kept: list[Path] = []
    failures: list[tuple[Path, str]] = []
    batch: list = []
    for path, item in decode_ahead(paths, transform, workers, processes):
        if isinstance(item, str):
            if strict:
                raise ImageError(item)
            failures.append((path, item))
        else:
            batch.append(item)
            kept.append(path)
            if len(batch) == batch_size:
                chunks.append(encode_batch(batch))
                batch = []
        if progress:
            progress(1)
    if batch:
        chunks.append(encode_batch(batch))
    return ImageEmbeddings(np.concatenate(chunks), kept, failures)
