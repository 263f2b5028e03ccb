"""Pretrained weights by name: the registry, and the Hub download path against a Hub served on 127.0.0.1.

Repos are made in code by the reference libraries (open_clip's CLIP saved in open_clip's hub layout,
transformers' CLIPModel and BertModel via save_pretrained) and served by ``fakehub.FakeHub``; huggingface_hub is
pointed at it (``HF_ENDPOINT``, its import-time constants) with a fresh cache per test.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from pathlib import Path

import pytest
import tokenizer_refs
import torch
from fakehub import FakeHub
from safetensors.torch import save_file
from typer.testing import CliRunner

import clipworks
from clipworks import pretrained
from clipworks.checkpoints import HF_FAMILIES, load_checkpoint
from clipworks.cli import app
from clipworks.errors import ConfigError, PretrainedError
from clipworks.model import Clip
from clipworks.model.config import get_model_config

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")
hf_constants = pytest.importorskip("huggingface_hub.constants")

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = "open_clip_model.safetensors"


# -- repos made by the reference libraries --------------------------------------------------------------------
@pytest.fixture(scope="module")
def local(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("repos")
    d = get_model_config("tiny-vit").to_dict()
    model_cfg = {k: d[k] for k in ("embed_dim", "vision_cfg", "text_cfg")}
    torch.manual_seed(0)
    ref = open_clip.CLIP(**model_cfg).eval()
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    oc_config = json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {"interpolation": "bilinear"}})
    dirs = {name: root / name for name in ("oc", "oc_bin", "hf", "bert", "no_weights", "no_config", "siglip")}
    for p in dirs.values():
        p.mkdir()
    (dirs["oc"] / "open_clip_config.json").write_text(oc_config)
    save_file(sd, dirs["oc"] / WEIGHTS)
    (dirs["oc_bin"] / "open_clip_config.json").write_text(oc_config)
    torch.save(sd, dirs["oc_bin"] / "open_clip_pytorch_model.bin")
    (dirs["no_weights"] / "open_clip_config.json").write_text(oc_config)
    save_file(sd, dirs["no_config"] / WEIGHTS)
    torch.manual_seed(0)
    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
    transformers.CLIPModel(transformers.CLIPConfig(
        text_config=small, vision_config={**small, "image_size": 32, "patch_size": 8}, projection_dim=32,
    )).save_pretrained(dirs["hf"])
    transformers.BertModel(transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=64)).save_pretrained(dirs["bert"])
    # A SiglipModel repo as google/siglip-* hold it: weights, config, image processor, SentencePiece tokenizer.
    spm = tokenizer_refs.train_spm("t5", tokenizer_refs.training_text(1500), vocab_size=300)
    (dirs["siglip"] / "spiece.model").write_bytes(spm)
    transformers.SiglipTokenizer(str(dirs["siglip"] / "spiece.model")).save_pretrained(dirs["siglip"])
    transformers.SiglipModel(transformers.SiglipConfig(
        text_config={**small, "vocab_size": 300, "max_position_embeddings": 64},
        vision_config={**small, "image_size": 32, "patch_size": 8})).save_pretrained(dirs["siglip"])
    transformers.SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(dirs["siglip"])
    return dirs


REPOS = {"test/oc-tiny": "oc", "test/oc-bin": "oc_bin", "test/hf-clip": "hf", "test/bert": "bert",
         "test/no-weights": "no_weights", "test/no-config": "no_config", "test/oc-broken": "oc",
         "test/siglip": "siglip"}


@pytest.fixture(scope="module")
def served(local) -> FakeHub:
    template = FakeHub()
    for repo, name in REPOS.items():
        template.add_repo(repo, local[name])
    return template


@pytest.fixture()
def hub(served, tmp_path, monkeypatch):
    """A started FakeHub serving REPOS, huggingface_hub pointed at it with an empty cache, back-off sleeps off."""
    fake = served.fresh().start()
    cache = tmp_path / "hf-cache"
    for key, value in {"HF_ENDPOINT": fake.url, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0",
                       "HF_HUB_DISABLE_XET": "1"}.items():
        monkeypatch.setenv(key, value)
    # huggingface_hub reads these once, at import
    monkeypatch.setattr(hf_constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
    fake.sleeps = []
    monkeypatch.setattr(time, "sleep", fake.sleeps.append)  # huggingface_hub's retry back-off: counted, not slept
    fake.cache = cache
    yield fake
    fake.stop()


@pytest.fixture()
def registry():
    """The registry as it was before the test, whatever the test registers."""
    reg = pretrained._registry()
    saved = {m: dict(tags) for m, tags in reg.items()}
    yield reg
    reg.clear()
    reg.update(saved)


def go_offline(hub: FakeHub, monkeypatch) -> None:
    hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)


def embeddings(model: Clip) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.randn(2, 3, model.config.vision_cfg.image_size, model.config.vision_cfg.image_size)
    with torch.no_grad():
        return model.encode_image(x), model.encode_text(clipworks.tokenize(["a photo of a cat", "a diagram"]))


def assert_same(a: Clip, b: Clip) -> None:
    for u, v in zip(embeddings(a), embeddings(b)):
        assert torch.equal(u, v)


def cache_holds(cache: Path, repo: str, sha256: str, filename: str) -> list[Path]:
    """Anything in the cache that could pass for the file: its blob, a snapshot entry, a temporary file."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    return [p for p in folder.rglob("*") if p.name in (sha256, filename) or p.name.endswith(".incomplete")]


# -- download → cache → load, online and offline --------------------------------------------------------------
@pytest.mark.parametrize("repo", ["test/oc-tiny", "test/hf-clip"])
def test_hub_repo_loads_like_its_local_files_and_then_offline(hub, local, repo, monkeypatch):
    model = clipworks.create_model("hf-hub:" + repo)
    assert_same(model, load_checkpoint(local[REPOS[repo]]))
    weights = WEIGHTS if repo == "test/oc-tiny" else "model.safetensors"
    assert hub.requested(weights, "HEAD") and any(p.startswith("/cdn/") for _, p in hub.log)  # via the CDN redirect
    go_offline(hub, monkeypatch)
    assert_same(clipworks.create_model("hf-hub:" + repo), model)
    assert clipworks.get_tokenizer("hf-hub:" + repo)("a cat").shape[-1] == model.config.context_length


def test_siglip_repo_brings_its_tokenizer_and_preprocessing(hub, local, monkeypatch):
    """A Hugging Face SigLIP repo: weights, SentencePiece tokenizer and image processor all come down with it."""
    model, _, preprocess = clipworks.create_model_and_transforms("hf-hub:test/siglip")
    tokenizer = clipworks.get_tokenizer("hf-hub:test/siglip")
    reference = transformers.AutoTokenizer.from_pretrained(local["siglip"])
    captions = ["A photo of a CAT!", "two dogs, playing in the snow"]
    expected = reference(captions, padding="max_length", max_length=64, truncation=True, return_tensors="pt").input_ids
    assert torch.equal(tokenizer(captions), expected)
    assert (preprocess.resize_mode, preprocess.mean) == ("squash", (0.5, 0.5, 0.5)) and model.uses_sigmoid
    go_offline(hub, monkeypatch)
    assert torch.equal(clipworks.get_tokenizer("hf-hub:test/siglip")(captions), expected)
    again, x = clipworks.create_model("hf-hub:test/siglip"), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again.encode_text(expected), model.encode_text(expected))
        assert torch.equal(again.encode_image(x), model.encode_image(x))


def test_unreachable_hub_serves_the_cache_without_retrying(hub, local):
    clipworks.create_model("hf-hub:test/oc-tiny")
    hub.stop()  # no HF_HUB_OFFLINE: huggingface_hub finds out by failing to connect
    assert_same(clipworks.create_model("hf-hub:test/oc-tiny"), load_checkpoint(local["oc"]))
    assert hub.sleeps == []  # absent side files are known absent at the cached commit: no back-off per file


def test_offline_hub_without_cache_says_so(hub, monkeypatch):
    go_offline(hub, monkeypatch)
    with pytest.raises(PretrainedError, match=r"test/oc-tiny/open_clip_config.json is not in the Hugging Face cache.*HF_HUB_OFFLINE=1"):
        clipworks.create_model("hf-hub:test/oc-tiny")


def test_fresh_process_offline_error(tmp_path):
    """Nothing else imported first (transformers imports huggingface_hub's submodules): the error is still ours."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path), "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, "-m", "clipworks", "info", "hf-hub:test/oc-tiny"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.startswith("error: test/oc-tiny/open_clip_config.json is not in the Hugging Face"), r.stderr


def test_registry_tag_prefers_safetensors_then_pickle(hub, local, registry):
    clipworks.register_pretrained("tiny-vit", "fake_hub", hub="test/oc-tiny", preprocess={"resize_mode": "squash"})
    pretrained.register_pretrained("tiny-vit", "fake-bin", hub="test/oc-bin")
    model = clipworks.create_model("tiny-vit", pretrained="FAKE-HUB")  # tags ignore case and -/_
    assert_same(model, load_checkpoint(local["oc"]))
    assert model.config.preprocess_cfg.resize_mode == "squash"
    assert hub.requested(WEIGHTS) and not hub.requested("open_clip_pytorch_model.bin")
    assert_same(clipworks.create_model("tiny-vit", pretrained="fake_bin"), model)
    assert hub.requested(WEIGHTS)[-1][1].startswith("/test/oc-bin/")  # the twin was asked for first
    cfg = clipworks.factory.model_config("tiny-vit", "fake_hub")
    assert cfg.preprocess_cfg.resize_mode == "squash" and not hub.requested("open_clip_config.json")


def test_hf_layout_alias_is_the_hub_repo(hub, registry):
    pretrained.register_pretrained("tiny-hf-clip", "test", hub="hf-hub:test/hf-clip", layout="hf")
    assert_same(clipworks.create_model("tiny-hf-clip", pretrained="test"), clipworks.create_model("hf-hub:test/hf-clip"))
    with pytest.raises(ConfigError, match="hf-hub:test/hf-clip"):
        clipworks.create_model("tiny-hf-clip")


# -- what goes wrong is named, and leaves nothing behind ------------------------------------------------------
def test_missing_repo_file_weights_config(hub, registry):
    with pytest.raises(PretrainedError, match=r"repo 'test/nope' not found.*open_clip_config\.json"):
        clipworks.create_model("hf-hub:test/nope")
    pretrained.register_pretrained("tiny-vit", "missing", hub="test/oc-tiny", file="tiny.pt")
    with pytest.raises(PretrainedError, match=r"test/oc-tiny has none of tiny\.pt"):
        clipworks.create_model("tiny-vit", pretrained="missing")
    with pytest.raises(PretrainedError, match=rf"test/no-weights has none of {WEIGHTS}, open_clip_pytorch_model\.bin"):
        clipworks.create_model("hf-hub:test/no-weights")
    with pytest.raises(PretrainedError, match=r"test/no-config has none of open_clip_config\.json, config\.json: not a model"):
        clipworks.create_model("hf-hub:test/no-config")
    with pytest.raises(PretrainedError, match=r"test/oc-tiny: revision 'v9' not found"):
        clipworks.create_model("hf-hub:test/oc-tiny@v9")


def test_another_architecture_is_refused_before_its_weights(hub):
    with pytest.raises(PretrainedError, match=r"hf-hub:test/bert: .*models--test--bert.*config\.json.*'bert' is not supported"):
        clipworks.create_model("hf-hub:test/bert")
    assert not hub.requested("model.safetensors")


@pytest.mark.parametrize("fault", ["short", "drop", "corrupt", "cdn_error"])
def test_broken_download_is_an_error_and_leaves_nothing(hub, local, fault):
    hub.faults[("test/oc-broken", WEIGHTS)] = fault
    expected = {"short": "Consistency check failed", "drop": "connection broke", "corrupt": "checksum",
                "cdn_error": "HTTP 503"}[fault]
    with pytest.raises(PretrainedError, match=rf"test/oc-broken/{WEIGHTS}.*{expected}|{expected}.*test/oc-broken"):
        clipworks.create_model("hf-hub:test/oc-broken")
    sha256 = hashlib.sha256((local["oc"] / WEIGHTS).read_bytes()).hexdigest()
    assert cache_holds(hub.cache, "test/oc-broken", sha256, WEIGHTS) == []
    hub.faults.clear()  # the Hub recovers: the next call downloads afresh
    assert_same(clipworks.create_model("hf-hub:test/oc-broken"), load_checkpoint(local["oc"]))


def test_dropped_connection_resumes(hub, local):
    hub.faults[("test/oc-broken", WEIGHTS)] = "drop_once"
    assert_same(clipworks.create_model("hf-hub:test/oc-broken"), load_checkpoint(local["oc"]))
    ranged = [p for m, p in hub.log if m == "GET" and p.startswith("/cdn/")]
    assert len(ranged) == 2  # the first attempt, and the resumed rest


def test_server_error_without_cache_names_it(hub):
    hub.faults[("test/oc-tiny", "open_clip_config.json")] = "error"
    with pytest.raises(PretrainedError, match=r"test/oc-tiny/open_clip_config\.json is not in the Hugging Face cache.*HTTP 500"):
        clipworks.create_model("hf-hub:test/oc-tiny")


# -- config-only reads fetch no weights ------------------------------------------------------------------------
@pytest.mark.parametrize("repo, fmt", [("test/oc-tiny", "open_clip"), ("test/hf-clip", "hf")])
def test_info_on_hub_repo_downloads_no_weights(hub, repo, fmt):
    r = CliRunner().invoke(app, ["info", "hf-hub:" + repo])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["format"] == fmt and info["parameters"] > 0
    if fmt == "open_clip":
        assert info["preprocess"]["interpolation"] == "bilinear"  # from open_clip_config.json
    assert not any(p.startswith("/cdn/") or p.endswith((".safetensors", ".bin")) for _, p in hub.log), hub.log
    clipworks.get_tokenizer("hf-hub:" + repo)
    assert not any(p.startswith("/cdn/") for _, p in hub.log)


# -- the registry -----------------------------------------------------------------------------------------------
def test_every_registry_entry_builds_without_downloading(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError(f"downloaded {args} {kwargs}")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    pairs = clipworks.list_pretrained()
    assert len(pairs) > 50
    built: set[str] = set()
    for model, tag in pairs:
        entry = pretrained.get_pretrained_cfg(model, tag)
        if entry.layout == "hf":
            assert entry.model_type in HF_FAMILIES, (model, tag)
            continue
        config = entry.apply(get_model_config(model))
        if repr(config) not in built:  # many tags share a config: build each architecture once
            with torch.device("meta"):
                Clip(config.for_checkpoint())  # as create_model builds it: the checkpoint fills every weight
            built.add(repr(config))


def test_registry_json_is_what_the_script_writes():
    spec = importlib.util.spec_from_file_location("registry_tool", ROOT / "tools" / "registry_from_open_clip.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    counts = __import__("collections").Counter()
    entries = tool.open_clip_entries(counts)
    entries.update(tool.hf_entries(counts, set(entries)))
    assert tool.render(entries) == tool.OUT.read_text(), "re-run tools/registry_from_open_clip.py"


def test_names_and_tags_as_open_clip_spells_them():
    entry = pretrained.get_pretrained_cfg("ViT-B/32", "LAION2B-S34B-B79K")
    assert entry.hub == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" and not entry.quick_gelu
    assert pretrained.get_pretrained_cfg("ViT-B-32-quickgelu", "openai").quick_gelu
    assert ("ViT-B-32-quickgelu", "openai") in clipworks.list_pretrained()
    assert "laion2b_s34b_b79k" not in pretrained.list_pretrained_tags_by_model("ViT-B-32-quickgelu")
    with pytest.raises(PretrainedError, match="trained with GELU: use the name ViT-B-32"):
        pretrained.get_pretrained_cfg("ViT-B-32-quickgelu", "laion2b_s34b_b79k")
    with pytest.raises(PretrainedError, match="its tags: openai"):
        pretrained.get_pretrained_cfg("RN50", "nope")
    # the weights' activation and preprocessing are applied to the named config
    config = clipworks.factory.model_config("ViT-L-14", "laion2b_s32b_b82k")
    assert config.preprocess_cfg.mean == (0.5, 0.5, 0.5) and not config.quick_gelu
    assert clipworks.factory.model_config("ViT-B-32", "openai").quick_gelu


def test_register_pretrained_checks_what_it_is_given(registry):
    with pytest.raises(ConfigError, match="unknown model config 'ViT-Q-1'"):
        pretrained.register_pretrained("ViT-Q-1", "x", hub="me/q")
    with pytest.raises(ConfigError, match="not a Hugging Face Hub repo id"):
        pretrained.register_pretrained("tiny-vit", "x", hub="too/many/parts")
    with pytest.raises(ConfigError, match="unknown field.*'colour'"):
        pretrained.register_pretrained("tiny-vit", "x", hub="me/tiny", preprocess={"colour": 1})
    with pytest.raises(ConfigError, match="interpolation"):
        pretrained.register_pretrained("tiny-vit", "x", hub="me/tiny", preprocess={"interpolation": "lanczos9"})
    with pytest.raises(ConfigError, match="quick_gelu=True"):
        pretrained.register_pretrained("tiny-vit-quickgelu", "x", hub="me/tiny")
    pretrained.register_pretrained("tiny-vit", "mine", hub="me/tiny", quick_gelu=True)
    with pytest.raises(ConfigError, match="already registered"):
        pretrained.register_pretrained("tiny-vit", "MINE", hub="me/other")
    assert ("tiny-vit-quickgelu", "mine") in clipworks.list_pretrained()
    assert pretrained.register_pretrained("tiny-vit", "mine", hub="me/other", replace=True).hub == "me/other"
    assert ("tiny-vit-quickgelu", "mine") not in clipworks.list_pretrained()  # the new weights use GELU


def test_cli_lists_the_registry(registry):
    r = CliRunner().invoke(app, ["pretrained", "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == len(clipworks.list_pretrained(quickgelu_aliases=False))
    assert {"model": "ViT-B-32", "tag": "laion2b_s34b_b79k", "hub": "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
            "file": "open_clip_pytorch_model.bin", "layout": "open_clip"}.items() <= next(
        row for row in rows if row["tag"] == "laion2b_s34b_b79k" and row["model"] == "ViT-B-32").items()
    r = CliRunner().invoke(app, ["pretrained", "ViT-B-32-quickgelu"])
    assert r.exit_code == 0 and "openai" in r.stdout and "laion2b_s34b_b79k" not in r.stdout
    r = CliRunner().invoke(app, ["pretrained", "ViT-Q-1"])
    assert r.exit_code == 1 and "ViT-B-32" in r.stderr

