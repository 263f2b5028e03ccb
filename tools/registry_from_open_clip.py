"""Write ``src/clipworks/pretrained/registry.json`` from the installed open_clip's pretrained registry.

Dev tool, re-run whenever configs are added (``PYTHONPATH=src python tools/registry_from_open_clip.py``): an
open_clip (model, tag) becomes an entry when ``src/clipworks/configs/<model>.json`` exists (``X-quickgelu`` names
are the QuickGELU tags of ``X``, which clipworks derives; they are not stored twice). Each entry keeps what the
weights need beyond the config: the Hub repo and file, QuickGELU, and the preprocessing fields (mean, std,
interpolation, resize mode) that differ from the config's own. Weights with only a URL (no Hub repo) are skipped
and counted: clipworks downloads through the Hub only.

Hugging Face-layout repos people know by their Hub id (``google/siglip-base-patch16-224``) are listed in
``HF_REPOS`` below; an entry is written for each whose ``model_type`` clipworks reads (``HF_FAMILIES``). Such an
entry is an alias of ``hf-hub:<repo>``: its model name is the repo's name, its tag the organisation.

The output is deterministic for a given open_clip and configs/ (open_clip's order, then HF_REPOS in order), so
re-running it shows real changes as a diff. ``--check`` exits 1 when the file on disk differs.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from clipworks.checkpoints import HF_FAMILIES  # noqa: E402
from clipworks.model.config import QUICKGELU_SUFFIX, get_model_config, list_models  # noqa: E402

OUT = ROOT / "src" / "clipworks" / "pretrained" / "registry.json"
DEFAULT_FILE = "open_clip_pytorch_model.bin"
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")

# (Hub repo, Hugging Face model_type of its config.json). Fixed-resolution SigLIP 2 repos are SiglipModel
# checkpoints (model_type "siglip"); the NaFlex ones (Siglip2Model) are not listed.
HF_REPOS: list[tuple[str, str]] = [
    ("openai/clip-vit-base-patch32", "clip"),
    ("openai/clip-vit-base-patch16", "clip"),
    ("openai/clip-vit-large-patch14", "clip"),
    ("openai/clip-vit-large-patch14-336", "clip"),
    ("facebook/metaclip-b32-400m", "clip"),
    ("facebook/metaclip-b16-400m", "clip"),
    ("facebook/metaclip-l14-400m", "clip"),
    ("facebook/metaclip-b32-fullcc2.5b", "clip"),
    ("facebook/metaclip-b16-fullcc2.5b", "clip"),
    ("facebook/metaclip-l14-fullcc2.5b", "clip"),
    ("facebook/metaclip-h14-fullcc2.5b", "clip"),
    ("facebook/metaclip-2-worldwide-huge-quickgelu", "metaclip_2"),
    ("facebook/metaclip-2-worldwide-huge-378", "metaclip_2"),
    ("facebook/metaclip-2-worldwide-giant", "metaclip_2"),
    ("facebook/metaclip-2-worldwide-giant-378", "metaclip_2"),
    ("kakaobrain/align-base", "align"),
    ("google/siglip-base-patch16-224", "siglip"),
    ("google/siglip-base-patch16-256", "siglip"),
    ("google/siglip-base-patch16-384", "siglip"),
    ("google/siglip-base-patch16-512", "siglip"),
    ("google/siglip-base-patch16-256-multilingual", "siglip"),
    ("google/siglip-large-patch16-256", "siglip"),
    ("google/siglip-large-patch16-384", "siglip"),
    ("google/siglip-so400m-patch14-224", "siglip"),
    ("google/siglip-so400m-patch14-384", "siglip"),
    ("google/siglip-so400m-patch16-256-i18n", "siglip"),
    ("google/siglip2-base-patch16-224", "siglip"),
    ("google/siglip2-base-patch16-256", "siglip"),
    ("google/siglip2-base-patch16-384", "siglip"),
    ("google/siglip2-base-patch16-512", "siglip"),
    ("google/siglip2-base-patch32-256", "siglip"),
    ("google/siglip2-large-patch16-256", "siglip"),
    ("google/siglip2-large-patch16-384", "siglip"),
    ("google/siglip2-large-patch16-512", "siglip"),
    ("google/siglip2-so400m-patch14-224", "siglip"),
    ("google/siglip2-so400m-patch14-384", "siglip"),
    ("google/siglip2-so400m-patch16-256", "siglip"),
    ("google/siglip2-so400m-patch16-384", "siglip"),
    ("google/siglip2-so400m-patch16-512", "siglip"),
    ("google/siglip2-giant-opt-patch16-256", "siglip"),
    ("google/siglip2-giant-opt-patch16-384", "siglip"),
]


def _plain(value):
    return [float(v) for v in value] if isinstance(value, (tuple, list)) else value


def open_clip_entries(counts: collections.Counter) -> dict[str, dict[str, dict]]:
    from open_clip import pretrained as oc

    ours = set(list_models())
    registry = oc._PRETRAINED  # the installed open_clip's table: {model: {tag: cfg}}
    out: dict[str, dict[str, dict]] = {}
    for model, tags in registry.items():
        if model.endswith(QUICKGELU_SUFFIX) and model[: -len(QUICKGELU_SUFFIX)] in registry:
            base = registry[model[: -len(QUICKGELU_SUFFIX)]]
            extra = [t for t in tags if t not in base or not base[t].get("quick_gelu")]
            if not extra:
                counts["quickgelu alias (derived from the base name)"] += len(tags)
                continue
            raise SystemExit(f"{model} has tags {extra} that are not QuickGELU tags of its base model; "
                             "this script needs a rule for them")
        if model not in ours:
            counts["no clipworks config"] += len(tags)
            continue
        config = get_model_config(model)
        defaults = {k: _plain(getattr(config.preprocess_cfg, k)) for k in PREPROCESS_KEYS}
        for tag, cfg in tags.items():
            hf_hub = cfg.get("hf_hub", "")
            if not hf_hub:
                counts["url only (no Hub repo)"] += 1
                continue
            parts = hf_hub.strip("/").split("/", 2)  # org/name/[file]: no file means open_clip's default
            repo, file = "/".join(parts[:2]), (parts[2] if len(parts) > 2 else "")
            entry: dict = {"hub": repo}
            if file and file != DEFAULT_FILE:
                entry["file"] = file
            if cfg.get("quick_gelu") and not config.quick_gelu:
                entry["quick_gelu"] = True
            preprocess = {k: _plain(cfg[k]) for k in PREPROCESS_KEYS if k in cfg and _plain(cfg[k]) != defaults[k]}
            if preprocess:
                entry["preprocess"] = preprocess
            out.setdefault(model, {})[tag] = entry
            counts["written (open_clip layout)"] += 1
    return out


def hf_entries(counts: collections.Counter, taken: set[str]) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for repo, model_type in HF_REPOS:
        org, name = repo.split("/")
        if model_type not in HF_FAMILIES:
            counts[f"hf layout, model_type {model_type!r} not read by clipworks"] += 1
            continue
        if name in taken:
            raise SystemExit(f"{repo}: its name {name!r} is also an open_clip model name")
        out.setdefault(name, {})[org.lower()] = {"hub": repo, "layout": "hf", "model_type": model_type}
        counts["written (hf layout)"] += 1
    return out


def render(registry: dict[str, dict[str, dict]]) -> str:
    """One line per tag, so a re-run's diff shows exactly which weights changed."""
    lines = ["{", '  "_comment": "Generated by tools/registry_from_open_clip.py from open_clip\'s pretrained registry and '
             'the script\'s HF_REPOS; do not edit by hand. model -> tag -> {hub: repo id, file (default '
             f'{DEFAULT_FILE}; its safetensors twin is tried first), quick_gelu, preprocess: PreprocessConfig fields '
             'the weights need} or {hub, layout: hf, model_type}: the repo is a whole Hugging Face model.",']
    models = list(registry.items())
    for i, (model, tags) in enumerate(models):
        lines.append(f"  {json.dumps(model)}: {{")
        for j, (tag, entry) in enumerate(tags.items()):
            comma = "," if j < len(tags) - 1 else ""
            lines.append(f"    {json.dumps(tag)}: {json.dumps(entry)}{comma}")
        lines.append("  }" + ("," if i < len(models) - 1 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def family(model: str, tag: str, entry: dict) -> str:
    """A coarse family name for the summary: the architecture family, else who trained the weights."""
    if entry.get("layout") == "hf":
        kind = {"clip": "MetaCLIP" if entry["hub"].startswith("facebook/") else "OpenAI CLIP",
                "metaclip_2": "MetaCLIP 2", "align": "ALIGN",
                "siglip": "SigLIP 2" if "siglip2" in entry["hub"] else "SigLIP"}.get(entry["model_type"], entry["model_type"])
        return f"{kind} (hf layout)"
    name, tag = model.lower(), tag.lower()
    for key, label in (("siglip2", "SigLIP 2"), ("siglip", "SigLIP"), ("worldwide", "MetaCLIP 2"), ("eva", "EVA-CLIP"),
                       ("mobileclip", "MobileCLIP"), ("convnext", "ConvNeXt"), ("roberta", "HF text tower"),
                       ("nllb", "HF text tower"), ("coca", "CoCa"), ("vitamin", "ViTamin"), ("pe-core", "PE"),
                       ("clipa", "CLIPA")):
        if key in name:
            return label
    for key, label in (("openai", "OpenAI CLIP"), ("metaclip", "MetaCLIP"), ("dfn", "DFN"),
                       ("datacomp", "OpenCLIP DataComp/CommonPool"), ("commonpool", "OpenCLIP DataComp/CommonPool"),
                       ("laion", "OpenCLIP LAION"), ("yfcc", "OpenCLIP YFCC/CC12M"), ("cc12m", "OpenCLIP YFCC/CC12M")):
        if key in tag:
            return label
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the file on disk")
    args = parser.parse_args()
    counts: collections.Counter = collections.Counter({"url only (no Hub repo)": 0})
    registry = open_clip_entries(counts)
    registry.update(hf_entries(counts, set(registry)))
    text = render(registry)
    by_family: collections.Counter = collections.Counter(
        family(m, t, e) for m, tags in registry.items() for t, e in tags.items())
    for what, n in sorted(counts.items()):
        print(f"{n:5d}  {what}")
    print("entries by family: " + ", ".join(f"{k} {v}" for k, v in sorted(by_family.items())))
    if args.check:
        same = OUT.read_text() == text
        print(f"{OUT} is {'up to date' if same else 'STALE: re-run without --check'}")
        raise SystemExit(0 if same else 1)
    OUT.write_text(text)
    print(f"wrote {sum(len(t) for t in registry.values())} entries for {len(registry)} models to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
