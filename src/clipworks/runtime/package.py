"""An exported model folder (``clipworks export onnx``): two ONNX graphs plus everything needed to use them.

The folder is complete on its own — a torch-free runtime embeds, classifies and searches from it — so the
manifest carries the *resolved* preprocessing and tokenizer settings (not a model config to re-interpret) and
the identity of the weights (``ModelRef``), which is how an index built with the torch model accepts vectors from
the exported one and refuses another model's. This module imports no torch.

Layout::

    OUT_DIR/
      clipworks-onnx.json   the manifest below
      image.onnx            pixels float32 [N, 3, S, S]     -> embeddings float32 [N, D] (not normalised)
      text.onnx             input_ids int64 [N, L], L <= context_length -> embeddings float32 [N, D]
      image.int8.onnx       (optional) the same graphs, weights dynamically quantized to int8
      text.int8.onnx
      tokenizer/            (hf tokenizers only) the tokenizer files the model ships
      image.onnx.data       (only for a tower over 2 GiB, which one protobuf cannot hold) the graph's weights, which
                            onnxruntime reads from beside the graph file (``Graph.data``)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ClipworksError, MissingFileError

MANIFEST = "clipworks-onnx.json"
FORMAT = "clipworks-onnx"
VERSION = 1
GRAPH_KINDS = ("image", "text")
PRECISIONS = ("fp32", "int8")


class PackageError(ClipworksError, ValueError):
    """An exported folder that cannot be used: missing or altered files, another format version or opset."""


@dataclass
class Graph:
    """One ONNX file: its tower (``image``/``text``), precision, file name, sha256 and tensor names; ``data`` and
    ``data_sha256`` name the external weights file of a graph too large for one file (None otherwise; a session must
    then be opened from the graph's path, not its bytes)."""

    kind: str
    precision: str
    file: str
    sha256: str
    input: str
    output: str = "embeddings"
    data: str | None = None
    data_sha256: str | None = None

    @property
    def key(self) -> str:
        return self.kind if self.precision == "fp32" else f"{self.kind}.{self.precision}"


@dataclass
class Package:
    """The manifest of an exported folder.

    ``model`` is ``ModelRef.to_dict()`` of the exported weights. ``preprocess`` holds the fields of the eval
    ``ImageTransform`` (image_size, mean, std, interpolation, resize_mode, fill_color, resize_size). ``tokenizer``
    is the resolved ``TokenizerConfig`` as a dict (for ``hf`` its ``name`` is ``"tokenizer"``, the subfolder).
    ``text_trim``: the runtime may drop padding columns past the longest caption of a batch before the text
    graph (true only for towers whose output does not depend on them, as ``TextTower.trim`` decides).
    ``logit_scale`` is the multiplier (``exp`` already applied); ``logit_bias`` is None unless SigLIP-style.
    ``opset`` is the ONNX opset the graphs were written with."""

    model: dict[str, Any]
    embed_dim: int
    context_length: int
    preprocess: dict[str, Any]
    tokenizer: dict[str, Any]
    logit_scale: float
    logit_bias: float | None
    opset: int
    text_trim: bool
    graphs: dict[str, Graph] = field(default_factory=dict)
    exported_with: dict[str, str] = field(default_factory=dict)
    format: str = FORMAT
    version: int = VERSION

    def graph(self, kind: str, precision: str = "fp32") -> Graph:
        key = kind if precision == "fp32" else f"{kind}.{precision}"
        if key not in self.graphs:
            have = ", ".join(sorted(self.graphs)) or "none"
            hint = " (export again with --int8)" if precision != "fp32" else ""
            raise PackageError(f"{MANIFEST}: no {precision} {kind} graph in this folder (it has: {have}){hint}")
        return self.graphs[key]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["graphs"] = {k: dataclasses.asdict(g) for k, g in self.graphs.items()}
        return out

    def write(self, directory: str | Path) -> Path:
        """Write the manifest atomically (the graphs are already in ``directory``)."""
        from ..fileio import atomic_file

        path = Path(directory) / MANIFEST
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, directory: str | Path, verify: bool = True) -> Package:
        """The manifest of ``directory``; ``verify`` also checks every graph's sha256 (an altered or truncated
        file is refused, naming it)."""
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            if not directory.exists():
                raise MissingFileError(f"{directory}: no such folder")
            raise PackageError(f"{directory}: not an exported clipworks folder (no {MANIFEST}); make one with "
                               "`clipworks export onnx MODEL OUT_DIR`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise PackageError(f"{path}: unreadable manifest ({e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise PackageError(f"{path}: not a {FORMAT} manifest")
        version = data.get("version")
        if not isinstance(version, int) or not 1 <= version <= VERSION:
            raise PackageError(f"{path}: format version {version!r} is not one this clipworks reads (1..{VERSION}); "
                               "export the model again with this version")
        try:
            graphs = {k: Graph(**g) for k, g in data.pop("graphs", {}).items()}
            package = cls(**data, graphs=graphs)
        except TypeError as e:
            raise PackageError(f"{path}: {e}") from None
        for key, g in package.graphs.items():
            if g.kind not in GRAPH_KINDS or g.precision not in PRECISIONS or g.key != key:
                raise PackageError(f"{path}: graphs.{key}: unknown graph ({g.kind}, {g.precision})")
            file = directory / g.file
            if Path(g.file).name != g.file or not file.is_file():
                raise PackageError(f"{path}: graphs.{key}: {g.file} is missing from the folder")
            if verify and sha256_file(file) != g.sha256:
                raise PackageError(f"{file}: its sha256 does not match the manifest (altered or truncated); "
                                   "export the model again")
            if g.data is not None:
                data = directory / g.data
                if Path(g.data).name != g.data or not data.is_file():
                    raise PackageError(f"{path}: graphs.{key}: its weights file {g.data} is missing from the folder")
                if verify and sha256_file(data) != g.data_sha256:
                    raise PackageError(f"{data}: its sha256 does not match the manifest (altered or truncated); "
                                       "export the model again")
        return package


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
