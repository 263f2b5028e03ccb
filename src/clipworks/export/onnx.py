"""``clipworks export onnx``: a model's two towers as ONNX graphs, in the folder format of ``runtime.package``.

Each tower is exported alone — ``pixels float32 [N, 3, S, S] -> embeddings`` (``Clip.encode_image``) and
``input_ids int64 [N, L] -> embeddings`` (the text tower's pure forward, ``L`` any length up to the context length)
— so a search service that only embeds queries loads the text graph only. Embeddings leave the graphs unnormalised,
as ``encode_*(normalize=False)`` returns them; the runtime normalises, and the manifest carries the temperature.

Why the TorchScript exporter (``torch.onnx.export(dynamo=False)``): both exporters translate every tower family
clipworks loads (CLIP ViT and ModifiedResNet, the causal and bidirectional text towers, timm trunks, Hugging Face
BERT/XLM-R/T5/ALIGN encoders, EVA's rotary tables) within 1e-5 of torch, but the dynamo exporter takes 15-30× longer
(seconds for a tiny model, minutes for ViT-L) and, on transformers' encoders, re-traces their mask builders through
``torch.export``, which breaks more often across transformers releases than tracing does. Tracing's one weakness —
Python control flow on tensor values is frozen — does not apply: the towers' forwards are pure (no data-dependent
shapes; ``TextTower.trim`` lives outside the forward), and the parity check after export runs the graphs at batch 1
and several caption lengths up to the context length, so a frozen shape would be caught, not shipped.

Written into a temporary folder and moved into place whole (``fileio.atomic_dir``): a failed or interrupted export
leaves no half folder for the runtime to trip on.
"""

from __future__ import annotations

import dataclasses
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
from ..runtime.package import Graph, Package, sha256_file

MAX_DIFF = 1e-4  # the parity promise: every exported graph within this of torch, in fp32
PROTOBUF_LIMIT = 2**31 - 2**26  # one ONNX file is one protobuf (2 GiB), less room for the graph itself
TOKENIZER_DIR = "tokenizer"
MIN_OPSET, MAX_OPSET = 14, 20  # 14: the first with the ops the towers need (Trilu, LayerNorm decomposes); 20: the
# newest the TorchScript exporter writes
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
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require(module, "export", "exporting to ONNX")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"opset {opset} is not one the exporter writes ({MIN_OPSET}..{MAX_OPSET})")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not force:
        what = "a file" if not out_dir.is_dir() else "a folder that is not empty"
        raise UsageError(f"{out_dir} is {what}; give an empty or new folder, or --force to replace it")
    encoder = model if isinstance(model, Encoder) else Encoder.load(str(model), pretrained)
    clip = encoder.model
    if encoder.device.type != "cpu" or encoder.dtype != torch.float32:
        raise UsageError(f"export needs the model in float32 on the cpu, not {encoder.dtype} on {encoder.device}")
    check_exportable(clip)

    with atomic_dir(out_dir) as tmp:
        graphs, diffs = {}, {}
        for kind, tower, name, example, dynamic in _graph_specs(encoder):
            path = tmp / f"{kind}.onnx"
            _export(tower, example, path, name, dynamic, opset, _describe(clip, kind))
            graphs[kind] = Graph(kind=kind, precision="fp32", file=path.name, sha256="", input=name)
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
        package.write(tmp)
        if int8:
            report = int8_parity(tmp, encoder=encoder)
    return ExportResult(out_dir, package, diffs, report)


# -- what is exported ----------------------------------------------------------------------------------------------

EXPORTABLE = {"image": ("vit", "resnet", "timm", "hf"), "text": ("transformer", "hf")}


def check_exportable(clip: nn.Module) -> None:
    """Refuse, before any tracing, a tower kind with no export support, or one too large for one ONNX file."""
    for kind, cfg, tower in (("image", clip.config.vision_cfg, clip.visual), ("text", clip.config.text_cfg, clip.text)):
        if cfg.kind not in EXPORTABLE[kind]:
            raise ExportError(f"the {kind} tower kind {cfg.kind!r} ({type(tower).__name__}) has no ONNX export "
                              f"support (exportable {kind} towers: {', '.join(EXPORTABLE[kind])})")
        size = sum(t.numel() * t.element_size() for t in [*tower.parameters(), *tower.buffers()])
        if size > PROTOBUF_LIMIT:
            raise ExportError(f"the {_describe(clip, kind)} holds {size / 2**30:.1f} GiB of weights, more than one "
                              "ONNX file can (2 GiB protobuf limit); towers this large are not exported")


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


def _graph_specs(encoder: Encoder) -> list[tuple[str, nn.Module, str, torch.Tensor, dict[int, str]]]:
    clip = encoder.model
    size = clip.image_size
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, size, size, generator=g)
    ids = sample_ids(encoder, 2)
    return [("image", _Graph(clip.visual), "pixels", pixels, {0: "batch"}),
            ("text", _Graph(clip.text), "input_ids", ids, {0: "batch", 1: "length"})]


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


def _export(module: nn.Module, example: torch.Tensor, path: Path, name: str, dynamic: dict[int, str], opset: int,
            part: str) -> None:
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; the parity check is the real test
        try:
            with torch.no_grad():
                torch.onnx.export(module, (example,), str(path), input_names=[name], output_names=["embeddings"],
                                  dynamic_axes={name: dynamic, "embeddings": {0: "batch"}}, opset_version=opset,
                                  do_constant_folding=True, dynamo=False)
        except Exception as e:  # the exporter raises many types; each becomes one naming the part and the operator
            raise ExportError(_export_failure(part, e, opset)) from e


def _export_failure(part: str, e: Exception, opset: int) -> str:
    text = str(e)
    op = re.search(r"(aten|prim|onnx)::[A-Za-z0-9_.]+|aten\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?", text)
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    if op:
        return f"the {part} uses the operator {op.group(0)}, which the ONNX exporter cannot translate at opset {opset} ({first})"
    return f"the {part} could not be exported to ONNX: {type(e).__name__}: {first}"


# -- parity ----------------------------------------------------------------------------------------------------------

def check_parity(encoder: Encoder, directory: Path, limit: float = MAX_DIFF) -> dict[str, float]:
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
    for kind, inputs in cases.items():
        session = session_for(directory / f"{kind}.onnx")
        name = session.get_inputs()[0].name
        worst = 0.0
        for x in inputs:
            with torch.inference_mode():
                ref = clip.encode_image(x) if kind == "image" else clip.encode_text(x)
            got = session.run(None, {name: x.numpy()})[0]
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

    from .. import __version__

    out = {"clipworks": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
           "exporter": "torch.onnx.export (TorchScript)"}
    if int8:
        out["quantizer"] = f"onnxruntime.quantization {onnxruntime.__version__}"
    return out
