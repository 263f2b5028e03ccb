"""``OnnxEncoder``: an exported folder run by onnxruntime — the ``Encoder`` interface without torch.

It reads the folder's manifest (``package.py``), opens the two graphs, and embeds the way ``Encoder`` does: the
same eval transform (``preprocess.py``, bit-identical), the same tokenizer (ids computed in numpy), the same
normalisation, scale and bias. Its ``ref`` is the exported weights' ``ModelRef``, so an index or a classifier made
with the torch model of those weights accepts it, and one made with any other model refuses it.

What is refused at load, with the reason: a missing or altered graph (its sha256), another format version, an
opset newer than the installed onnxruntime runs, and graphs whose tensor names or sizes disagree with the manifest
(embedding size, image size, context length) — a folder from another model, or edited by hand.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cpu import threads as cpu_threads
from ..encoding import ImageEmbeddings, embed_files
from ..errors import ClipworksError, MissingDependencyError, UsageError, require
from ..image.decode import to_rgb
from ..modelref import ModelRef
from ..progress import Progress
from .package import MANIFEST, PRECISIONS, Graph, Package, PackageError, sha256_file
from .preprocess import Preprocess

if TYPE_CHECKING:
    from PIL import Image

    from ..text import Tokenizer

TOKENIZER_DIR = "tokenizer"


class OnnxEncoder:
    """Normalised float32 embeddings of texts, PIL images and image files from an exported folder.

    ``OnnxEncoder.load("exported/", precision="int8", threads=2)``, or ``clipworks.load_encoder(folder,
    backend="onnx")``. Offers what ``Encoder`` offers the applications (``encoding.EncoderLike``).
    """

    backend = "onnx"

    def __init__(self, folder: Path, package: Package, sessions: dict[str, Any], preprocess: Preprocess,
                 tokenizer: Tokenizer, precision: str = "fp32", batch_size: int = 64,
                 text_batch_size: int = 256) -> None:
        self.folder = folder
        self.package = package
        self.precision = precision
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.text_batch_size = text_batch_size
        self._sessions = sessions
        self._graphs = {kind: package.graph(kind, precision) for kind in sessions}
        self._ref = ModelRef.from_dict(package.model, where=f"{folder / MANIFEST} model")
        self._pad_id = int(getattr(tokenizer, "pad_token_id", 0) or 0)
        # one all-padding column is kept past the last caption token unless the end token cannot be the pad id
        self._spare_column = 0 if package.tokenizer.get("type", "clip") == "clip" else 1

    # -- loading -----------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path, precision: str = "fp32", threads: int | None = None,
             providers: Sequence[str] | None = None, batch_size: int = 64) -> OnnxEncoder:
        """Open an exported folder. ``precision``: ``fp32`` or ``int8`` (the folder's quantized graphs);
        ``threads``: onnxruntime's intra-op threads (default: ``cpu.set_threads``'s count if one was set, else
        onnxruntime's, one per physical core); ``providers``:
        onnxruntime execution providers (default the CPU's)."""
        ort = require("onnxruntime", "runtime", "the ONNX backend (--backend onnx)")
        if precision not in PRECISIONS:
            raise UsageError(f"precision {precision!r}: the onnx backend runs {' or '.join(PRECISIONS)}")
        if threads is None:
            threads = cpu_threads()  # the count `--threads` / cpu.set_threads chose for every engine, if any
        if threads is not None and threads < 1:
            raise UsageError(f"threads must be at least 1, got {threads}")
        folder = Path(folder)
        package = Package.read(folder, verify=False)  # the graphs loaded are checked below, not every one listed
        manifest = folder / MANIFEST
        _check_opset(package, ort, manifest)
        if package.model.get("embed_dim") != package.embed_dim:
            raise PackageError(f"{manifest}: embed_dim {package.embed_dim} but the model record says "
                               f"{package.model.get('embed_dim')!r}")
        preprocess = Preprocess.from_dict(package.preprocess, where=f"{manifest}: preprocess")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        providers = list(providers) if providers else ["CPUExecutionProvider"]
        sessions = {}
        for kind in ("image", "text"):
            graph = package.graph(kind, precision)
            files = [(graph.file, graph.sha256)] + ([(graph.data, graph.data_sha256)] if graph.data else [])
            for name, digest in files:
                if not (folder / name).is_file():
                    raise PackageError(f"{folder / name}: missing from the exported folder; export the model again")
                if sha256_file(folder / name) != digest:
                    raise PackageError(f"{folder / name}: its sha256 does not match the manifest (altered or "
                                       "truncated); export the model again")
            sessions[kind] = _session(ort, folder / graph.file, options, providers)
            _check_graph(sessions[kind], graph, package, preprocess, folder / graph.file)
        tokenizer = _tokenizer(folder, package, manifest)
        return cls(folder, package, sessions, preprocess, tokenizer, precision, batch_size)

    # -- what Encoder offers --------------------------------------------------------------------------------------
    @property
    def ref(self) -> ModelRef:
        return self._ref

    @property
    def embed_dim(self) -> int:
        return self.package.embed_dim

    @property
    def context_length(self) -> int:
        return self.package.context_length

    @property
    def uses_sigmoid(self) -> bool:
        return self.package.logit_bias is not None

    @property
    def logit_scale(self) -> float:
        return float(self.package.logit_scale)

    @property
    def logit_bias(self) -> float | None:
        return None if self.package.logit_bias is None else float(self.package.logit_bias)

    @property
    def model_config(self) -> None:
        """The model's config is not part of an exported folder (the graphs are the model)."""
        return None

    @property
    def device(self) -> str:
        provider = self._sessions["image"].get_providers()[0]
        return "cpu" if provider == "CPUExecutionProvider" else provider.removesuffix("ExecutionProvider").lower()

    def encode_text(self, texts: Sequence[str], progress: Progress | None = None, normalize: bool = True) -> np.ndarray:
        """``float32 [len(texts), embed_dim]``, L2-normalised (unless ``normalize=False``)."""
        if isinstance(texts, str):
            raise UsageError("encode_text takes a list of texts, not one string")
        ids = self.tokenizer.encode_np(list(texts), self.context_length)
        out = np.zeros((len(ids), self.embed_dim), dtype=np.float32)
        # Batches of similar lengths, when padding columns can be dropped: one long caption then widens only its
        # own batch, not every batch it happens to fall in (real captions: most short, a few long).
        order = np.argsort(self._lengths(ids), kind="stable") if self.package.text_trim else np.arange(len(ids))
        for start in range(0, len(ids), self.text_batch_size):
            rows = order[start : start + self.text_batch_size]
            out[rows] = self._run("text", self.trim(ids[rows]), normalize)
            if progress:
                progress(len(rows))
        return out

    def _lengths(self, ids: np.ndarray) -> np.ndarray:
        """Per row, the column after its last non-padding token."""
        used = ids != self._pad_id
        return np.where(used.any(axis=1), ids.shape[1] - np.argmax(used[:, ::-1], axis=1), 0)

    def trim(self, ids: np.ndarray) -> np.ndarray:
        """Drop trailing columns that are padding in every row, when the text tower cannot see them (``text_trim``,
        decided at export as ``TextTower.trim`` decides): most captions are far shorter than the context length.
        One padding column stays when the pad id may also be the end token the tower pools at."""
        if not self.package.text_trim or ids.shape[0] == 0:
            return ids
        keep = min(ids.shape[1], max(int(self._lengths(ids).max()), 1) + self._spare_column)
        return ids[:, :keep]

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``float32 [len(images), embed_dim]``, L2-normalised, of decoded PIL images (any mode)."""
        chunks = [np.zeros((0, self.embed_dim), dtype=np.float32)]
        for start in range(0, len(images), self.batch_size):
            chunks.append(self.encode_pixels([self.pixels(im) for im in images[start : start + self.batch_size]]))
        return np.concatenate(chunks)

    def pixels(self, image: Image.Image) -> np.ndarray:
        """One image as the model's input, ``float32 [3, S, S]`` (the eval transform)."""
        return self.preprocess(to_rgb(image))

    def encode_pixels(self, pixels: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """``encode_images`` of already-preprocessed images (``pixels()`` each, or a stacked batch), in one call."""
        x = pixels if isinstance(pixels, np.ndarray) else np.stack([np.asarray(p) for p in pixels])
        if x.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self._run("image", x, True)

    def encode_files(self, paths: Sequence[Path], strict: bool = False, workers: int = 2,
                     progress: Progress | None = None, batch_size: int | None = None,
                     normalize: bool = True) -> ImageEmbeddings:
        """Embeddings of image files; unreadable ones are skipped and listed in ``failures`` (``strict`` raises).
        ``batch_size`` overrides the encoder's for this call."""
        return embed_files([Path(p) for p in paths], self.preprocess,
                           lambda batch: self._run("image", np.stack(batch), normalize), self.embed_dim,
                           batch_size or self.batch_size, strict, workers, progress)

    def logits(self, image_features: np.ndarray, text_features: np.ndarray) -> np.ndarray:
        """``[images, texts]`` logits of normalised features with the model's own scale (and bias), in float32 as
        ``Clip.logits`` computes them."""
        img = np.asarray(image_features, dtype=np.float32)
        txt = np.asarray(text_features, dtype=np.float32)
        out = (np.float32(self.package.logit_scale) * img) @ txt.T
        if self.package.logit_bias is not None:
            out = out + np.float32(self.package.logit_bias)
        return out.astype(np.float32, copy=False)

    def probabilities(self, image_features: np.ndarray, text_features: np.ndarray) -> np.ndarray:
        """Zero-shot probabilities: softmax over the texts (CLIP), or a sigmoid per text (SigLIP)."""
        logits = self.logits(image_features, text_features)
        if self.uses_sigmoid:
            return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)

    def _run(self, kind: str, x: np.ndarray, normalize: bool) -> np.ndarray:
        graph = self._graphs[kind]
        dtype = np.float32 if kind == "image" else np.int64
        (out,) = self._sessions[kind].run([graph.output], {graph.input: np.ascontiguousarray(x, dtype=dtype)})
        out = np.asarray(out, dtype=np.float32)
        if normalize:
            out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), np.float32(1e-12))
        return out

    def __repr__(self) -> str:
        return f"OnnxEncoder({str(self.folder)!r}, precision={self.precision!r}, model={self.ref.describe()!r})"


# -- checks at load ------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def max_opset(ort: Any) -> int | None:
    """The newest ``ai.onnx`` opset the installed onnxruntime knows (None when its build does not list schemas)."""
    try:
        schemas = ort.capi.onnxruntime_pybind11_state.get_all_operator_schema()
    except (AttributeError, RuntimeError):
        return None
    versions = [s.since_version for s in schemas if s.domain in ("", "ai.onnx")]
    return max(versions) if versions else None


def _check_opset(package: Package, ort: Any, manifest: Path) -> None:
    newest = max_opset(ort)
    if not isinstance(package.opset, int) or package.opset < 1:
        raise PackageError(f"{manifest}: opset {package.opset!r} is not an ONNX opset number")
    if newest is not None and package.opset > newest:
        raise PackageError(f"{manifest}: the graphs use ONNX opset {package.opset}, newer than onnxruntime "
                           f"{ort.__version__} runs (up to opset {newest}); upgrade onnxruntime or export again with "
                           f"--opset {newest}")


def _session(ort: Any, path: Path, options: Any, providers: list[str]) -> Any:
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # noqa: BLE001 (onnxruntime's own exception types live in a private module)
        raise PackageError(f"{path}: onnxruntime {ort.__version__} cannot load this graph: {e}") from None


def _dims(shape: Sequence[Any]) -> list[int | None]:
    """A graph tensor's shape with symbolic (dynamic) dimensions as None."""
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def _check_graph(session: Any, graph: Graph, package: Package, preprocess: Preprocess, path: Path) -> None:
    """The graph's single input and output must be the manifest's names, types and sizes."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    where = f"{path} ({graph.kind} graph)"
    names = [i.name for i in inputs]
    if names != [graph.input]:
        raise PackageError(f"{where}: inputs {names}, the manifest says [{graph.input!r}]")
    if graph.output not in [o.name for o in outputs]:
        raise PackageError(f"{where}: outputs {[o.name for o in outputs]} lack the manifest's {graph.output!r}")
    want_type = "tensor(float)" if graph.kind == "image" else "tensor(int64)"
    if inputs[0].type != want_type:
        raise PackageError(f"{where}: input {graph.input!r} is {inputs[0].type}, expected {want_type}")
    shape = _dims(inputs[0].shape)
    if graph.kind == "image":
        size = preprocess.image_size
        if len(shape) != 4 or shape[1] not in (None, 3) or any(d not in (None, size) for d in shape[2:]):
            raise PackageError(f"{where}: input {graph.input!r} has shape {inputs[0].shape}, but the manifest's "
                               f"preprocessing makes [N, 3, {size}, {size}] — a graph of another model or image size")
    else:
        if len(shape) != 2 or shape[1] not in (None, package.context_length):
            raise PackageError(f"{where}: input {graph.input!r} has shape {inputs[0].shape}, expected [N, L] with L "
                               f"dynamic or the context length {package.context_length}")
        if shape[1] is not None and package.text_trim:
            raise PackageError(f"{where}: text_trim is set but the graph's caption length is fixed at {shape[1]}")
    out = next(o for o in outputs if o.name == graph.output)
    out_shape = _dims(out.shape)
    if len(out_shape) != 2 or out_shape[1] not in (None, package.embed_dim):
        raise PackageError(f"{where}: output {graph.output!r} has shape {out.shape}, but the manifest's embed_dim is "
                           f"{package.embed_dim} — a graph of another model")
    # Dynamic sizes say nothing until run: one input of the largest size the manifest promises (a full-length
    # caption, a whole image) must run and give one embed_dim row.
    if graph.kind == "image":
        probe = np.zeros((1, 3, preprocess.image_size, preprocess.image_size), dtype=np.float32)
        what = f"a {preprocess.image_size}×{preprocess.image_size} image"
    else:
        probe = np.zeros((1, package.context_length), dtype=np.int64)
        what = f"a caption of the context length {package.context_length}"
    try:
        (got,) = session.run([graph.output], {graph.input: probe})
    except Exception as e:  # noqa: BLE001 (onnxruntime's own exception types live in a private module)
        raise PackageError(f"{where}: the graph cannot embed {what}, as the manifest says it can ({e})") from None
    if np.shape(got) != (1, package.embed_dim):
        raise PackageError(f"{where}: one input gives embeddings of shape {list(np.shape(got))}, but the manifest's "
                           f"embed_dim is {package.embed_dim} — a graph of another model")


def _tokenizer(folder: Path, package: Package, manifest: Path) -> Tokenizer:
    """The model's tokenizer from the manifest's resolved settings (``hf``: the files in ``tokenizer/``)."""
    from ..model.config import TokenizerConfig
    from ..text import build_tokenizer

    settings = dict(package.tokenizer)
    try:
        if settings.get("type") == "hf":
            name = str(settings.get("name") or TOKENIZER_DIR)
            directory = folder / name
            if Path(name).name != name or not directory.is_dir():
                raise PackageError(f"{manifest}: tokenizer.name {name!r}: the folder has no such tokenizer subfolder")
            settings["name"] = str(directory)
        return build_tokenizer(TokenizerConfig(**settings), package.context_length)
    except TypeError as e:
        raise PackageError(f"{manifest}: tokenizer: {e}") from None
    except ClipworksError as e:
        if isinstance(e, (PackageError, MissingDependencyError)):
            raise
        raise PackageError(f"{manifest}: tokenizer: {e}") from None
