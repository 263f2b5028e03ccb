"""Every family's tokenizer, id-for-id against its references, built offline (``tokenizer_refs``): transformers
called as the family's processor calls it, and open_clip's ``HFTokenizer`` with the clean mode open_clip's configs
use. Also: what a directory's class does in code, pickling (spawned DataLoader workers), bad input, the Hub cache."""

from __future__ import annotations

import dataclasses
import html
import json
import pickle
import re
import shutil
import string
import sys
from pathlib import Path

import ftfy
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
pytest.importorskip("open_clip")

import tokenizer_refs as refs
from caption_corpus import TRICKY

import clipworks
from clipworks import ClipConfig, TokenizerError
from clipworks.errors import InputTypeError
from clipworks.model.config import TokenizerConfig
from clipworks.text import (
    ClipTokenizer,
    HFTokenizer,
    SentencePieceTokenizer,
    TokenizerDir,
    build_tokenizer,
    tokenizer_config_for_dir,
)
from clipworks.text import clean as cleaning

N = 1200  # captions per family here; bench/tokenizers_parity.py runs the full 20k
SPECIAL = ["hi </s> there", "</s>", " </s> ", "a<unk>b", "<pad>", "[SEP] x [CLS]", "<mask>", "<eos>x<bos>", "<s>y</s>",
           "▁", "▁▁a ▁b", "x▁y", "A</s>", "</s></s>", "  <unk>  ", "HELLO World", "x" * 300, "", "a _b_ c", "<unk>" * 3,
           "  lead and trail  ", "tab\there\nnewline", "a\u3000b\u2028c\x85d"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    return refs.build(tmp_path_factory.mktemp("tokenizers"))


@pytest.fixture(scope="module")
def captions() -> list[str]:
    return refs.sample(N)


def differing(expected: torch.Tensor, got: torch.Tensor, texts: list[str]) -> list[str]:
    assert expected.shape == got.shape, (expected.shape, got.shape)
    return [texts[i] for i in (expected != got).any(1).nonzero().flatten().tolist()]


def ours_for_transformers(directory: Path, length: int):
    return build_tokenizer(tokenizer_config_for_dir(directory), length)


def ours_for_open_clip(directory: Path, family: refs.Family):
    """Through open_clip's own config keys, as a user's open_clip config (or a timm hub repo's) is read."""
    kwargs = {"clean": family.clean, **({"strip_sep_token": True} if family.strip_sep_token else {})}
    config = ClipConfig.from_dict({"embed_dim": 32, "text_cfg": {
        "hf_tokenizer_name": str(directory), "tokenizer_kwargs": kwargs, "context_length": family.context_length}})
    return clipworks.get_tokenizer(config)


# ---------------------------------------------------------------- parity with the references

@pytest.mark.parametrize("name", list(refs.FAMILIES))
def test_ids_equal_transformers(dirs, captions, name):
    family = refs.FAMILIES[name]
    ref = refs.transformers_reference(dirs[name], family.context_length)
    ours = ours_for_transformers(dirs[name], family.context_length)
    texts = [t for t in captions if refs._utf8(t)] + SPECIAL
    bad = differing(ref(texts), ours(texts), texts)
    assert not bad, f"{name}: {len(bad)} of {len(texts)} captions differ, e.g. {bad[:3]!r}"


@pytest.mark.parametrize("name", [n for n, f in refs.FAMILIES.items() if f.clean])
def test_ids_equal_open_clip(dirs, captions, name):
    family = refs.FAMILIES[name]
    ref = refs.open_clip_reference(dirs[name], family)
    ours = ours_for_open_clip(dirs[name], family)
    texts = captions + SPECIAL  # lone surrogates included: open_clip's ftfy replaces them
    bad = differing(ref(texts), ours(texts), texts)
    assert not bad, f"{name}: {len(bad)} of {len(texts)} captions differ, e.g. {bad[:3]!r}"


@pytest.mark.parametrize("name", ["siglip", "siglip2"])
def test_open_clip_cleaning_composes_with_the_class_code(dirs, captions, name):
    """open_clip over a Hugging Face SigLIP dir: its canonicalisation, then the class's own (SigLIP) or lowercase."""
    from open_clip.tokenizer import HFTokenizer as OpenClipHF

    ref = OpenClipHF(str(dirs[name]), context_length=64, clean="canonicalize")
    ours = build_tokenizer(TokenizerConfig(type="hf", name=str(dirs[name]), clean="canonicalize"), 64)
    assert not differing(ref(captions), ours(captions), captions)


def test_old_style_tokenizer_json_is_rebuilt_as_transformers_5_does(dirs, tmp_path):
    """Files converted by older transformers collapse spaces with a Replace and prepend ▁ to leading spaces;
    transformers 5 rebuilds T5/XLM-R pipelines in code, and so do we."""
    texts = [t for t in refs.sample(600, seed=5) if refs._utf8(t)] + SPECIAL
    for name in ("t5", "xlmr"):
        old = tmp_path / name
        shutil.copytree(dirs[name], old)
        data = json.loads((old / "tokenizer.json").read_text())
        data["normalizer"] = {"type": "Sequence", "normalizers": [
            data["normalizer"], {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]}
        data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
        (old / "tokenizer.json").write_text(json.dumps(data))
        from tokenizers import Tokenizer

        as_filed = Tokenizer.from_file(str(old / "tokenizer.json")).encode("  two  spaces").ids
        ours = ours_for_transformers(old, 77)
        assert ours.encode("  two  spaces") != as_filed  # the file alone would give other ids
        assert not differing(refs.transformers_reference(old, 77)(texts), ours(texts), texts)


def test_siglip_special_tokens_with_google_flags_and_legacy_files(dirs, tmp_path):
    """google/siglip-* mark </s> and <unk> lstrip/rstrip; older dirs keep specials in special_tokens_map.json."""
    strip, legacy = tmp_path / "strip", tmp_path / "legacy"
    for d in (strip, legacy):
        shutil.copytree(dirs["siglip"], d)
    cfg = json.loads((strip / "tokenizer_config.json").read_text())
    for token in cfg["added_tokens_decoder"].values():
        token["lstrip"] = token["rstrip"] = True
    (strip / "tokenizer_config.json").write_text(json.dumps(cfg))
    del cfg["added_tokens_decoder"]
    (legacy / "tokenizer_config.json").write_text(json.dumps({**cfg, "pad_token": "<unk>"}))
    (legacy / "special_tokens_map.json").write_text(json.dumps({"pad_token": "</s>", "eos_token": "</s>"}))
    for d in (strip, legacy):
        ours = ours_for_transformers(d, 16)
        assert isinstance(ours, SentencePieceTokenizer)
        assert not differing(refs.transformers_reference(d, 16)(SPECIAL), ours(SPECIAL), SPECIAL)
    assert ours.pad_token_id == ours.eos_token_id == 1  # special_tokens_map.json overrides tokenizer_config.json
    spaced, tight = ours_for_transformers(strip, 16)(["a </s> b", "a</s>b"])
    assert torch.equal(spaced, tight)  # lstrip/rstrip eat the spaces around </s>


# ---------------------------------------------------------------- what the class does in code

def test_directory_settings_become_an_explicit_config(dirs):
    expected = {"siglip": ("siglip", "right"), "siglip2": ("lower", "right"), "gemma": ("none", "right"),
                "t5": ("none", "right"), "xlmr": ("none", "right"), "bert": ("none", "right")}
    for name, (normalize, side) in expected.items():
        cfg = tokenizer_config_for_dir(dirs[name])
        assert (cfg.type, cfg.name, cfg.clean, cfg.normalize, cfg.padding_side) == ("hf", str(dirs[name]), "none",
                                                                                      normalize, side), name
    assert TokenizerDir.read(dirs["siglip2"]).tokenizer_class == "Siglip2Tokenizer"  # config.json's model type wins
    assert TokenizerDir.read(dirs["gemma"]).tokenizer_class == "GemmaTokenizer"
    saved = ClipConfig.from_dict(ClipConfig(embed_dim=8, tokenizer_cfg=tokenizer_config_for_dir(dirs["siglip2"])).to_dict())
    assert saved.tokenizer_cfg.normalize == "lower"  # recorded, so a copy without config.json still lowercases


def test_weights_only_directories_still_give_a_config_and_building_names_the_missing_file(tmp_path):
    for model_type, normalize, side, missing in (("siglip", "siglip", "right", "spiece.model"),
                                                  ("siglip2", "lower", "left", "tokenizer.json"),
                                                  ("metaclip_2", "none", "right", "tokenizer.json")):
        d = tmp_path / model_type
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"model_type": model_type}))
        cfg = tokenizer_config_for_dir(d)
        assert (cfg.normalize, cfg.padding_side) == (normalize, side), model_type
        with pytest.raises(TokenizerError, match=missing):
            build_tokenizer(cfg, 16)


def test_siglip2_lowercases_and_gemma_pads_left_without_a_padding_side(dirs, tmp_path):
    text = ["A Photo of a DOG"]
    assert not torch.equal(ours_for_transformers(dirs["siglip2"], 16)(text), ours_for_transformers(dirs["gemma"], 16)(text))
    left = tmp_path / "left"
    shutil.copytree(dirs["gemma"], left)
    cfg = json.loads((left / "tokenizer_config.json").read_text())
    del cfg["padding_side"]
    (left / "tokenizer_config.json").write_text(json.dumps(cfg))
    ours = ours_for_transformers(left, 16)
    assert ours.padding_side == "left"
    got = ours(SPECIAL)
    assert torch.equal(got, refs.transformers_reference(left, 16)(SPECIAL))
    assert got[0, 0] == ours.pad_token_id and got[0, -1] == 1  # pads first, ends with <eos>
    explicit = build_tokenizer(dataclasses.replace(tokenizer_config_for_dir(left), padding_side="right"), 16)
    assert explicit(text)[0, -1] == ours.pad_token_id


@pytest.mark.parametrize("name", list(refs.FAMILIES))
def test_truncation_keeps_the_end_token_and_pads_with_the_pad_id(dirs, name):
    family = refs.FAMILIES[name]
    ours = ours_for_transformers(dirs[name], 8)
    long, short = ours(["word " * 100, "a"])
    tok = refs.transformers_reference(dirs[name], 8).tokenizer
    end = tok.sep_token_id if tok.sep_token_id is not None and name != "t5" else tok.eos_token_id
    assert long.shape == (8,) and int(long[-1]) == end, (name, long.tolist())
    assert int(short[-1]) == tok.pad_token_id
    assert ours(["a b c"], context_length=5).shape == (1, 5)
    assert family.context_length in (64, 77)


@pytest.mark.parametrize("name", list(refs.FAMILIES))
def test_token_count_is_the_untruncated_length(dirs, captions, name):
    tok = refs.transformers_reference(dirs[name], 8).tokenizer
    ours = ours_for_transformers(dirs[name], 8)
    texts = [t for t in captions[:200] if refs._utf8(t)] + ["word " * 100, "a", ""] + SPECIAL
    assert ours.token_count(texts) == [len(ids) for ids in tok(texts, truncation=False).input_ids], name


def test_strip_sep_token_and_clean_modes(dirs):
    cfg = TokenizerConfig(type="hf", name=str(dirs["bert"]), strip_sep_token=True)
    ids = build_tokenizer(cfg, 12)(["a photo"])[0].tolist()
    assert ids[0] == 2 and 3 not in ids  # [CLS] kept, [SEP] written as 0 (open_clip)
    with pytest.raises(TokenizerError, match="sep_token"):
        HFTokenizer(dirs["gemma"], 12, strip_sep_token=True)
    canon = build_tokenizer(TokenizerConfig(type="hf", name=str(dirs["t5"]), clean="canonicalize"), 12)
    plain = build_tokenizer(TokenizerConfig(type="hf", name=str(dirs["t5"]), clean="none"), 12)
    assert torch.equal(canon(["A_photo, of a DOG!"]), plain(["a photo of a dog"]))
    with pytest.raises(TokenizerError, match="unknown clean mode 'tidy'; known: whitespace, lower"):
        HFTokenizer(dirs["t5"], 12, clean="tidy")
    with pytest.raises(TokenizerError, match="padding_side"):
        HFTokenizer(dirs["t5"], 12, padding_side="middle")
    for field, value in (("clean", "tidy"), ("normalize", "upper"), ("padding_side", "middle")):
        with pytest.raises(clipworks.ConfigError, match=f"tokenizer_cfg.{field} must be one of"):
            TokenizerConfig(type="hf", name="x", **{field: value})


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.printable + "&<>_'", max_size=80))
def test_ascii_fast_path_equals_ftfy_in_every_clean_mode(text):
    full = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    from open_clip.tokenizer import canonicalize_text

    assert cleaning.clean_whitespace(text) == " ".join(full.split())
    assert cleaning.clean_lower(text) == " ".join(full.split()).lower()
    assert cleaning.clean_canonicalize(text) == canonicalize_text(full)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_clean_modes_equal_open_clip_on_arbitrary_unicode(text):
    from open_clip.tokenizer import get_clean_fn

    for mode in ("whitespace", "lower", "canonicalize"):
        assert cleaning.clean_fn(mode)(text) == get_clean_fn(mode)(text)


def test_siglip_whitespace_collapse_equals_its_regex():
    """SiglipTokenizer collapses with re.sub(r"\\s+", " ").strip(); we split(): the same set of characters."""
    assert all(bool(re.fullmatch(r"\s", chr(c))) == chr(c).isspace() for c in range(sys.maxunicode + 1))


# ---------------------------------------------------------------- pickling and worker processes

def test_every_tokenizer_pickles_and_works_without_its_directory(dirs, tmp_path):
    texts = SPECIAL + refs.sample(50, seed=9)
    texts = [t for t in texts if refs._utf8(t)]
    for name in ("siglip", "gemma", "xlmr_spm", "bert"):
        moved = tmp_path / name
        shutil.copytree(dirs[name], moved)
        tok = ours_for_transformers(moved, 16)
        expected = tok(texts)
        blob = pickle.dumps(tok)
        shutil.rmtree(moved)
        again = pickle.loads(blob)
        assert type(again) is type(tok) and torch.equal(again(texts), expected), name
    clip = ClipTokenizer(24)
    assert torch.equal(pickle.loads(pickle.dumps(clip))(texts), clip(texts))


def test_pair_loader_with_spawned_workers(dirs, tmp_path):
    """DataLoader workers started with spawn (macOS, Windows, Python 3.14's default) unpickle the tokenizer."""
    from PIL import Image

    from clipworks.data import PairLoader, open_source
    from clipworks.image.transforms import ImageTransform

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"A photo of thing {i}! </s> café")
    tokenizer = ours_for_transformers(dirs["siglip"], 16)
    source, transform = open_source(folder), ImageTransform(8)
    inline = PairLoader(source, transform, tokenizer, batch_size=4, seed=1)
    spawned = PairLoader(source, transform, tokenizer, batch_size=4, seed=1, workers=2, start_method="spawn")
    expected, got = list(inline.epoch(0)), list(spawned.epoch(0))
    assert len(got) == len(expected) == 3
    for a, b in zip(expected, got):
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.images, b.images)
    with pytest.raises(ValueError, match="start_method"):
        PairLoader(source, transform, tokenizer, batch_size=4, workers=2, start_method="teleport")


# ---------------------------------------------------------------- bad input

def test_missing_files_name_the_directory_and_the_files(dirs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer"}))
    with pytest.raises(TokenizerError, match=r"empty \(holds tokenizer_config.json\) has no tokenizer.json"):
        build_tokenizer(TokenizerConfig(type="hf", name=str(empty)), 16)
    with pytest.raises(TokenizerError, match="does not exist"):
        build_tokenizer(TokenizerConfig(type="hf", name=str(tmp_path / "nowhere")), 16)
    siglip = tmp_path / "siglip"
    shutil.copytree(dirs["siglip"], siglip)
    (siglip / "spiece.model").unlink()
    with pytest.raises(TokenizerError, match="spiece.model"):
        build_tokenizer(TokenizerConfig(type="hf", name=str(siglip), normalize="siglip"), 16)
    gemma_spm = tmp_path / "gemma_spm"
    gemma_spm.mkdir()
    shutil.copy(dirs["t5_spm"] / "spiece.model", gemma_spm / "tokenizer.model")
    (gemma_spm / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GemmaTokenizer"}))
    with pytest.raises(TokenizerError, match="not GemmaTokenizer.*save_pretrained"):
        HFTokenizer(gemma_spm, 16)
    broken = tmp_path / "broken"
    shutil.copytree(dirs["t5_spm"], broken)
    (broken / "spiece.model").write_bytes(b"\xff\xff\xff not a model")
    with pytest.raises(TokenizerError, match="not a SentencePiece model"):
        HFTokenizer(broken, 16)
    bad_json = tmp_path / "bad_json"
    shutil.copytree(dirs["bert"], bad_json)
    (bad_json / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="tokenizer_config.json"):
        HFTokenizer(bad_json, 16)


@pytest.mark.parametrize("name", ["siglip", "gemma", "bert"])
def test_bad_texts_are_named_by_index(dirs, name):
    tok = ours_for_transformers(dirs[name], 16)
    for bad, index, kind in ((["ok", 5], 1, "int"), (["ok", "fine", None], 2, "NoneType"), (["a", b"x"], 1, "bytes")):
        with pytest.raises(InputTypeError, match=f"input {index} is {kind}"):
            tok(bad)
    with pytest.raises(InputTypeError, match="bytes"):
        tok(b"raw")
    with pytest.raises(TokenizerError, match=r"input 1 is not valid Unicode: '\\udcff' at position 2"):
        tok(["fine", "ab\udcffcd"])
    with pytest.raises(TokenizerError, match="context_length"):
        tok("x", context_length=1)
    assert tok([]).shape == (0, 16)


def test_tricky_inputs_never_crash_the_open_clip_path(dirs):
    for name in ("t5", "gemma", "xlmr", "bert", "roberta"):
        out = ours_for_open_clip(dirs[name], refs.FAMILIES[name])(TRICKY)
        assert out.shape == (len(TRICKY), refs.FAMILIES[name].context_length)


# ---------------------------------------------------------------- the Hub cache

def _cache_repo(cache: Path, repo: str, files: dict[str, Path | str]) -> None:
    """A repo as huggingface_hub's cache holds it: refs/main → snapshots/<commit>/<files>."""
    root = cache / ("models--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copy(content, snapshot / name)
        else:
            (snapshot / name).write_text(content)


def test_named_config_and_hub_repo_tokenizers_come_from_the_hf_cache(dirs, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    repo = "timm/ViT-B-16-SigLIP"
    model_cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
                 "text_cfg": {"context_length": 64, "vocab_size": 800, "width": 32, "heads": 2, "layers": 1,
                              "hf_tokenizer_name": repo, "tokenizer_kwargs": {"clean": "canonicalize"}}}
    _cache_repo(cache, repo, {"tokenizer.json": dirs["t5"] / "tokenizer.json",
                              "tokenizer_config.json": dirs["t5"] / "tokenizer_config.json",
                              "open_clip_config.json": json.dumps({"model_cfg": model_cfg})})
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "Tiny-SigLIP-test.json").write_text(json.dumps(model_cfg))
    monkeypatch.setattr("clipworks.model.config._config_dir", lambda: configs)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    ref = refs.open_clip_reference(dirs["t5"], refs.FAMILIES["t5"])
    texts = refs.sample(200, seed=3)
    by_name = clipworks.get_tokenizer("Tiny-SigLIP-test", cache_dir=cache)
    by_hub = clipworks.get_tokenizer("hf-hub:" + repo, cache_dir=cache)
    for tok in (by_name, by_hub):
        assert isinstance(tok, HFTokenizer) and tok.context_length == 64 and tok.clean == "canonicalize"
        assert str(tok.directory).startswith(str(cache))
        assert torch.equal(tok(texts), ref(texts))
    with pytest.raises(clipworks.PretrainedError, match="not in the Hugging Face cache|no tokenizer files"):
        clipworks.get_tokenizer(ClipConfig(embed_dim=8, tokenizer_cfg=TokenizerConfig(type="hf", name="org/absent")),
                                cache_dir=cache)
