"""``clipworks export onnx``: a model's two towers as ONNX graphs, in the folder format of ``runtime.package``.

Each tower is exported alone — ``pixels float32 [N, 3, S, S] -> embeddings`` (``Clip.encode_image``) and
``input_ids int64 [N, L] -> embeddings`` (the text tower's pure forward, ``L`` any length up to the context length)
— so a search service that only embeds queries loads the text graph only. Embeddings leave the graphs unnormalised,
as ``encode_*(normalize=False)`` returns them; the runtime normalises, and the manifest carries the temperature.

Why the dynamo exporter (``torch.onnx.export(dynamo=True)``, torch.export + onnxscript): it is the one that
translates every tower family clipworks loads. Both exporters give ViT, ModifiedResNet, EVA (rotary tables), SigLIP,
ConvNeXt, MobileCLIP and the Hugging Face towers within 1e-5 of torch, but TorchScript tracing freezes the batch size
inside timm's rotary attention pool (``timm_pool="rot_attn"``): the graph runs at the traced batch and fails at any
other. torch.export records dimensions symbolically (``batch``, ``length`` ≤ context length), so a shape that does
not follow the input is an export error, not a wrong graph. The price is export time (a few seconds per graph for a
tiny model instead of a fraction of one); TorchScript export is also deprecated in torch. After export, the parity
check runs the graphs at batch 1 and 3 and caption lengths from 1 to the context length against torch.

A tower over 2 GiB (ViT-H/g/bigG, EVA-E image towers) does not fit one protobuf: its weights go to ``{kind}.onnx.data``
beside the graph, registered and hashed in the manifest (``Graph.data``). Int8 graphs are made from the fp32 ones
by onnxruntime's dynamic quantization (``quantize.py``).

Written into a temporary folder and moved into place whole (``fileio.atomic_dir``): a failed or interrupted export
leaves no half folder for the runtime to trip on.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import re
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..encoder import Encoder
from ..errors import ClipworksError, UsageError, require
from ..fileio import atomic_dir
from ..model.config import TokenizerConfig
from ..runtime.package import GRAPH_KINDS, Graph, Package, sha256_file

MAX_DIFF = 1e-4  # the parity promise: every exported graph within this of torch, in fp32
PROTOBUF_LIMIT = 2**31 - 2**26  # one ONNX file is one protobuf (2 GiB); above this less some room, weights go beside it
TOKENIZER_DIR = "tokenizer"
MIN_OPSET, MAX_OPSET = 18, 23  # what torch's dynamo exporter writes (it builds at 18 and converts upward)
SAMPLE_CAPTIONS = [
    "a photo of a cat", "a diagram of the solar system", "two dogs playing in the snow at dusk",
    "an astronaut riding a horse on the moon, digital art", "", "A RED ROCKET!",
    "café crème brûlée on a wooden table", "the quick brown fox jumps over the lazy dog " * 12,
]


class ExportError(ClipworksError, ValueError):
    """A model that cannot be exported: a tower kind or an operator the exporter does not translate, a tower too
    large for one ONNX file, or graphs that disagree with torch. The message names the part."""


@dataclass
class ExportResult:
    """What ``export_onnx_report`` wrote: the folder, its manifest, the parity check's largest difference per graph
    (``image``, ``text``; empty without ``check``) and, with ``int8``, the int8 graphs' cosine report."""

    path: Path
    package: Package
    max_diff: dict[str, float] = field(default_factory=dict)
    int8: Any = None  # quantize.Int8Report


def export_onnx(model: str | Path | Encoder, out_dir: str | Path, *, pretrained: str | None = None, int8: bool = False,
                opset: int = 18, force: bool = False, check: bool = True) -> Package:
    """Export ``model`` (a config name, ``hf-hub:`` repo or checkpoint path as ``Encoder.load`` takes it, or a
    loaded ``Encoder``) to ``out_dir``: ``image.onnx``, ``text.onnx``, ``clipworks-onnx.json`` and, for Hugging
    Face tokenizers, ``tokenizer/``. ``int8`` adds dynamically quantized ``image.int8.onnx``/``text.int8.onnx``.
    A non-empty ``out_dir`` is refused unless ``force`` (then it is replaced whole). ``check`` runs the graphs in
    onnxruntime and requires them within 1e-4 of torch. Returns the manifest."""
    return export_onnx_report(model, out_dir, pretrained=pretrained, int8=int8, opset=opset, force=force,
                              check=check).package


def export_onnx_report(model: str | Path | Encoder, out_dir: str | Path, *, pretrained: str | None = None,
                       int8: bool = False, opset: int = 18, force: bool = False, check: bool = True) -> ExportResult:
    """``export_onnx``, returning also the parity figures (what ``clipworks export onnx`` prints)."""
    require_export()
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"opset {opset} is not one the exporter writes ({MIN_OPSET}..{MAX_OPSET})")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file; give a folder to write the exported model to")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not force:
            raise UsageError(f"{out_dir} is a folder that is not empty; give an empty or new folder, or --force to "
                             "replace it")
        cwd = Path.cwd().resolve()
        if out_dir.resolve() in (cwd, *cwd.parents, Path.home().resolve()):  # --force replaces the folder whole
            raise UsageError(f"{out_dir} is the working, home or a parent folder; --force would replace it whole")
    encoder = model if isinstance(model, Encoder) else Encoder.load(str(model), pretrained)
    clip = encoder.model
    if encoder.device.type != "cpu" or encoder.dtype != torch.float32:
        raise UsageError(f"export needs the model in float32 on the cpu, not {encoder.dtype} on {encoder.device}")
    check_exportable(clip)

    with atomic_dir(out_dir) as tmp:
        graphs, diffs = {}, {}
        for kind in GRAPH_KINDS:
            graphs[kind] = export_graph(encoder, kind, tmp, opset)
        if check:
            diffs = check_parity(encoder, tmp)
        tokenizer = _write_tokenizer(encoder, tmp)
        package = Package(
            model=encoder.ref.to_dict(), embed_dim=encoder.embed_dim, context_length=clip.context_length,
            preprocess=preprocess_dict(encoder), tokenizer=tokenizer,
            logit_scale=float(clip.logit_scale.detach().exp()),
            logit_bias=None if clip.logit_bias is None else float(clip.logit_bias.detach()),
            opset=opset, text_trim=trim_is_safe(clip.text), graphs=graphs, exported_with=_versions(int8))
        report = None
        if int8:
            from .quantize import int8_parity, quantize_graphs

            quantize_graphs(tmp, package)
        for g in package.graphs.values():
            g.sha256 = sha256_file(tmp / g.file)
            g.data_sha256 = sha256_file(tmp / g.data) if g.data else None
        package.write(tmp)
        if int8:
            report = int8_parity(tmp, encoder=encoder)
    return ExportResult(out_dir, package, diffs, report)


def require_export() -> None:
    """The ``export`` extra's packages, or an error naming the extra (before a model is loaded for nothing)."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require(module, "export", "exporting to ONNX")


# -- what is exported ----------------------------------------------------------------------------------------------

EXPORTABLE = {"image": ("vit", "resnet", "timm", "hf"), "text": ("transformer", "hf")}


def check_exportable(clip: nn.Module) -> None:
    """Refuse, before any tracing, a tower kind with no export support."""
    for kind, cfg, tower in (("image", clip.config.vision_cfg, clip.visual), ("text", clip.config.text_cfg, clip.text)):
        if cfg.kind not in EXPORTABLE[kind]:
            raise ExportError(f"the {kind} tower kind {cfg.kind!r} ({type(tower).__name__}) has no ONNX export "
                              f"support (exportable {kind} towers: {', '.join(EXPORTABLE[kind])})")



def _describe(clip: nn.Module, kind: str) -> str:
    cfg = clip.config.vision_cfg if kind == "image" else clip.config.text_cfg
    tower = clip.visual if kind == "image" else clip.text
    detail = getattr(cfg, "timm_model_name", None) or getattr(cfg, "hf_model_name", None)
    hf = getattr(tower, "hf_config", None)
    if detail is None and isinstance(hf, dict):
        detail = hf.get("model_type")
    return f"{kind} tower ({cfg.kind}: {type(tower).__name__}{', ' + str(detail) if detail else ''})"


def trim_is_safe(tower: nn.Module) -> bool:
    """Whether a runtime may drop trailing padding columns before the text graph: the causal CLIP tower pooled at
    or before its end token (what ``TextTransformer.trim`` decides) never sees them. Bidirectional towers (SigLIP,
    MobileCLIP) and towers pooled at the last position are changed by padding, so they get their full length; a
    Hugging Face encoder masks padding, but mean pooling over a shorter softmax row still differs in the last bits,
    and nothing is promised beyond what the tower's own ``trim`` gives, so it is left off there too."""
    from ..model.towers.text import TextTransformer

    return isinstance(tower, TextTransformer) and tower.causal and tower.pool_type in ("argmax", "eos", "first")


def export_graph(encoder: Encoder, kind: str, directory: Path, opset: int = 18) -> Graph:
    """Write ``{kind}.onnx`` (``image`` or ``text``) into ``directory``; its manifest entry (sha256 not yet set)."""
    clip = encoder.model
    g = torch.Generator().manual_seed(0)
    batch = torch.export.Dim("batch", min=1)  # examples of batch 2: the exporter specialises a dimension it sees as 1
    if kind == "image":
        tower, name, dynamic = _inference_form(clip.visual), "pixels", {0: batch}
        example = torch.randn(2, 3, clip.image_size, clip.image_size, generator=g)
    else:
        tower, name, example = clip.text, "input_ids", sample_ids(encoder, 2)
        dynamic = {0: batch, 1: torch.export.Dim("length", min=1, max=clip.context_length)}
    path = directory / f"{kind}.onnx"
    external = weight_bytes(tower) > PROTOBUF_LIMIT  # ViT-H/g/bigG, EVA-E image towers: weights beside the graph
    _export(_Graph(tower), example, path, name, dynamic, opset, _describe(clip, kind), external)
    data = path.with_name(path.name + ".data")
    return Graph(kind=kind, precision="fp32", file=path.name, sha256="", input=name,
                 data=data.name if data.is_file() else None)


def weight_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def _inference_form(tower: nn.Module) -> nn.Module:
    """MobileCLIP's MobileOne/FastViT branches fused (``reparameterize``), on a copy: the user's model keeps its
    train-time form; the graph gets the fused one, smaller and faster, equal to float rounding (the parity check
    compares it with the unfused tower)."""
    fusable = hasattr(tower, "reparameterize") and any(
        m is not tower and callable(getattr(m, "reparameterize", None)) for m in tower.modules())
    if not fusable:
        return tower
    fused = copy.deepcopy(tower)
    fused.reparameterize()
    return fused


class _Graph(nn.Module):
    """One tower's pure forward, so the graph holds that tower's weights only."""

    def __init__(self, tower: nn.Module):
        super().__init__()
        self.tower = tower

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tower(x)


def sample_ids(encoder: Encoder, n: int, length: int | None = None) -> torch.Tensor:
    """Token ids of ``n`` sample captions (one long enough to fill the context), cut to ``length`` columns."""
    captions = [SAMPLE_CAPTIONS[(i * 3 + 7) % len(SAMPLE_CAPTIONS)] for i in range(n)]
    ids = encoder.tokenizer(captions).long()
    return ids if length is None else ids[:, :length].contiguous()


def _export(module: nn.Module, example: torch.Tensor, path: Path, name: str, dynamic: dict[int, Any], opset: int,
            part: str, external: bool = False) -> None:
    module.eval()
    chatter = io.StringIO()  # the exporter reports its steps on stdout and its optimizer on the root logger
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(path), input_names=[name], output_names=["embeddings"],
                              dynamic_shapes=({**dynamic},), opset_version=opset, dynamo=True, external_data=external,
                              verbose=False)
    except Exception as e:  # the exporter raises many types; each becomes one naming the part and the operator
        raise ExportError(_export_failure(part, e, opset)) from e
    finally:
        root.setLevel(level)


def _export_failure(part: str, e: Exception, opset: int) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # the exporter colours its messages
    op = re.search(r"OpOverload\(op='([\w.]+)'|No decompositions? registered for[^\w]*([\w.]+)|"
                   r"\b(aten(?:::|\.)\w+)", text)
    if op:
        name = next(g for g in op.groups() if g)
        return f"the {part} uses the operator {name}, which the ONNX exporter cannot translate (opset {opset})"
    summary = text.split("## Exception summary", 1)[-1].strip().splitlines()
    detail = summary[0].strip() if summary else type(e).__name__
    return f"the {part} could not be exported to ONNX: {type(e).__name__}: {detail[:400]}"


# -- parity ----------------------------------------------------------------------------------------------------------

def check_parity(encoder: Encoder, directory: Path, limit: float = MAX_DIFF,
                 kinds: tuple[str, ...] = GRAPH_KINDS) -> dict[str, float]:
    """Run ``image.onnx`` and ``text.onnx`` in onnxruntime at several batch sizes (1 included) and caption lengths
    (1 to the context length) and return the largest |difference| to torch per graph; above ``limit`` is an error
    naming the graph, the input shape and the difference."""
    clip = encoder.model
    size, context = clip.image_size, clip.context_length
    g = torch.Generator().manual_seed(1)
    cases: dict[str, list[torch.Tensor]] = {
        "image": [torch.randn(n, 3, size, size, generator=g) for n in (1, 3)],
        "text": [sample_ids(encoder, n, length) for n, length in
                 ((1, context), (3, context), (1, 1), (2, min(5, context)), (4, max(1, context // 2)))],
    }
    diffs: dict[str, float] = {}
    for kind in kinds:
        inputs, session = cases[kind], session_for(directory / f"{kind}.onnx")
        name = session.get_inputs()[0].name
        worst = 0.0
        for x in inputs:
            with torch.inference_mode():
                ref = clip.encode_image(x) if kind == "image" else clip.encode_text(x)
            try:
                got = session.run(None, {name: x.numpy()})[0]
            except Exception as e:  # onnxruntime's own errors: a shape the exporter froze, an op it cannot run
                raise ExportError(f"{kind}.onnx fails in onnxruntime on input {name} {tuple(x.shape)}: the "
                                  f"{_describe(clip, kind)} did not export faithfully ({str(e).strip()[:300]})") from e
            if got.shape != tuple(ref.shape):
                raise ExportError(f"{kind}.onnx gives shape {got.shape} for input {tuple(x.shape)}, torch {tuple(ref.shape)}")
            diff = float(np.abs(got - ref.numpy()).max()) if got.size else 0.0
            if not diff <= limit:
                raise ExportError(f"{kind}.onnx differs from torch by {diff:.3g} (> {limit:g}) on input "
                                  f"{name} {tuple(x.shape)}: the {_describe(clip, kind)} did not export faithfully")
            worst = max(worst, diff)
        diffs[kind] = worst
    return diffs


def session_for(path: Path, threads: int | None = None) -> Any:
    ort = require("onnxruntime", "export", "running ONNX graphs")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    # this process also runs torch (the parity check, the benches): onnxruntime's threads must not spin after a run
    # and take the cores from the torch call that follows
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# -- the rest of the package -------------------------------------------------------------------------------------

def preprocess_dict(encoder: Encoder) -> dict[str, Any]:
    """The eval transform's fields, resolved: what the runtime's numpy preprocessing reproduces."""
    t = encoder.preprocess
    return {"image_size": t.image_size, "mean": list(t.mean), "std": list(t.std), "interpolation": t.interpolation,
            "resize_mode": t.resize_mode, "fill_color": t.fill_color, "resize_size": t.resize_size}


def tokenizer_dict(encoder: Encoder) -> dict[str, Any]:
    """The tokenizer the encoder built, as a resolved ``TokenizerConfig`` (``hf``: named after ``tokenizer/``)."""
    from ..text import ClipTokenizer

    tok = encoder.tokenizer
    if isinstance(tok, ClipTokenizer):
        return dataclasses.asdict(TokenizerConfig())
    return dataclasses.asdict(TokenizerConfig(type="hf", name=TOKENIZER_DIR, clean=tok.clean,
                                              strip_sep_token=tok.strip_sep_token, normalize=tok.normalize,
                                              padding_side=tok.padding_side))


def _write_tokenizer(encoder: Encoder, directory: Path) -> dict[str, Any]:
    from ..text.hf_dir import TOKENIZER_FILES

    config = tokenizer_dict(encoder)
    if config["type"] == "hf":
        source = Path(encoder.tokenizer.directory)
        # config.json too when the directory has one: some classes take defaults from the model type.
        files = [source / n for n in (*TOKENIZER_FILES, "config.json") if (source / n).is_file()]
        if not any(f.name != "config.json" for f in files):
            raise ExportError(f"the tokenizer directory {source} holds none of {', '.join(TOKENIZER_FILES)}")
        (directory / TOKENIZER_DIR).mkdir()
        for f in files:
            shutil.copyfile(f, directory / TOKENIZER_DIR / f.name)
    return config


def _versions(int8: bool) -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript

    from .. import __version__

    out = {"clipworks": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
           "onnxscript": onnxscript.__version__,
           "exporter": "torch.onnx.export(dynamo=True)"}
    if int8:
        out["quantizer"] = f"onnxruntime.quantization {onnxruntime.__version__}"
    return out
