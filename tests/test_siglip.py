"""SigLIP and SigLIP 2 (fixed resolution): transformers' SiglipModel directories and open_clip's timm-trunk models
load into our ViT and text transformer with the reference's embeddings; named configs match open_clip's."""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from train_helpers import changed, names

import clipworks
from clipworks import CheckpointError, Clip, ClipConfig
from clipworks.checkpoints import load_state
from clipworks.checkpoints.open_clip import config_from_open_clip
from clipworks.checkpoints.open_clip import to_native as open_clip_to_native
from clipworks.checkpoints.timm_siglip import TIMM_MODELS, owns
from clipworks.image.transforms import image_transform
from clipworks.loss import SigLipLoss
from clipworks.model.config import get_model_config, list_models

transformers = pytest.importorskip("transformers")
open_clip = pytest.importorskip("open_clip")
logging.getLogger().setLevel(logging.ERROR)  # open_clip warns that a random model has no pretrained weights

pytestmark = pytest.mark.usefixtures("one_thread")

OPEN_CLIP_NAMES = sorted(n for n in open_clip.list_models() if "SigLIP" in n and not n.startswith("nllb"))
TINY = {
    "text_config": {"vocab_size": 100, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "max_position_embeddings": 16},
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "image_size": 32, "patch_size": 8},
}


def _pooled(out: object) -> torch.Tensor:
    """transformers 5's get_*_features return output objects; 4.x returned the tensor."""
    return out.pooler_output if hasattr(out, "pooler_output") else out  # type: ignore[union-attr]


def _save_siglip(directory: Path, text: dict | None = None, vision: dict | None = None) -> transformers.SiglipModel:
    torch.manual_seed(0)
    cfg = transformers.SiglipConfig(text_config={**TINY["text_config"], **(text or {})},
                                    vision_config={**TINY["vision_config"], **(vision or {})})
    model = transformers.SiglipModel(cfg).eval()
    with torch.no_grad():  # released SigLIP temperatures exceed CLIP's clamp at 100 (SO400M/14-384: exp 4.72 = 112)
        model.logit_scale.fill_(math.log(112.0))
        model.logit_bias.fill_(-12.5)
    model.save_pretrained(directory)
    size = cfg.vision_config.image_size
    transformers.SiglipImageProcessor(size={"height": size, "width": size}).save_pretrained(directory)
    return model


@pytest.fixture(scope="module")
def hf_siglip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, transformers.SiglipModel]:
    directory = tmp_path_factory.mktemp("siglip")
    return directory, _save_siglip(directory)


# -- Hugging Face SiglipModel --------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["default", "gelu-text-cropped-patches"])
def test_hf_siglip_embeddings_and_sigmoid_probabilities(tmp_path: Path, variant: str) -> None:
    if variant == "default":
        reference = _save_siglip(tmp_path)
    else:  # exact GELU in one tower; 36 px at patch 8 drops a 4-px margin (as SO400M/14 at 384 does)
        reference = _save_siglip(tmp_path, text={"hidden_act": "gelu"}, vision={"image_size": 36})
    size = reference.config.vision_config.image_size
    torch.manual_seed(1)
    images = torch.randn(3, 3, size, size)
    ids = torch.randint(0, 100, (4, 16))
    with torch.no_grad():
        want_image = _pooled(reference.get_image_features(pixel_values=images))
        want_text = _pooled(reference.get_text_features(input_ids=ids))
        want = reference(input_ids=ids, pixel_values=images).logits_per_image
    for model in (clipworks.load_checkpoint(tmp_path), clipworks.create_model(str(tmp_path))):
        with torch.no_grad():
            image, text = model.encode_image(images), model.encode_text(ids)
            fi, ft = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
            logits, probs = model.logits(fi, ft), model.probabilities(fi, ft)
        assert (image - want_image).abs().max() <= 1e-5
        assert (text - want_text).abs().max() <= 1e-5
        assert (logits - want).abs().max() <= 1e-4  # logits are ~100× the cosines
        torch.testing.assert_close(probs, want.sigmoid(), atol=1e-6, rtol=0)
        assert model.temperature() > 100  # not clamped as CLIP's is
        assert model.logit_bias.item() == -12.5


def test_hf_siglip_config_preprocessing_and_tokenizer(hf_siglip: tuple[Path, object]) -> None:
    directory, _ = hf_siglip
    config, fmt = clipworks.checkpoints.read_config(directory)
    assert fmt == "hf"
    v, t = config.vision_cfg, config.text_cfg
    assert (v.class_token, v.no_ln_pre, v.patch_bias, v.pool_type, v.proj_type) == (False, True, True, "map", "none")
    assert v.act_kwargs == t.act_kwargs == {"approximate": "tanh"} and v.norm_kwargs == {"eps": 1e-6}
    assert (t.no_causal_mask, t.pool_type, t.proj_bias, t.context_length) == (True, "last", True, 16)
    pre = config.preprocess()
    assert (pre.size, pre.resize_mode, pre.interpolation, pre.mean, pre.std) == (32, "squash", "bicubic", (0.5,) * 3, (0.5,) * 3)
    assert config.tokenizer_cfg.type == "hf" and Path(config.tokenizer_cfg.name).resolve() == directory.resolve()
    # Without preprocessor_config.json the SigLIP defaults apply, at the tower's size.
    (directory / "preprocessor_config.json").rename(directory / "moved.json")
    try:
        assert clipworks.checkpoints.read_config(directory)[0].preprocess() == pre
    finally:
        (directory / "moved.json").rename(directory / "preprocessor_config.json")


def test_hf_siglip_missing_key_is_named(hf_siglip: tuple[Path, object], tmp_path: Path) -> None:
    directory, _ = hf_siglip
    for name in ("config.json", "preprocessor_config.json"):
        (tmp_path / name).write_text((directory / name).read_text())
    sd = load_file(str(directory / "model.safetensors"))
    del sd["vision_model.head.probe"]
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"lack 1 key\(s\).*vision_model\.head\.probe"):
        clipworks.load_checkpoint(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"text_config": {"hidden_act": "relu"}}, r"text_config\.hidden_act='relu' is not supported"),
    ({"vision_config": {"vision_use_head": False}}, r"vision_use_head=false"),
    ({"vision_config": {"image_size": [32, 48]}}, r"image_size=\[32, 48\] is not square"),
    ({"text_config": {"projection_size": 16}}, r"projection_size \(16\) differs"),
])
def test_hf_siglip_bad_config_is_named(hf_siglip: tuple[Path, object], tmp_path: Path, change: dict, message: str) -> None:
    directory, _ = hf_siglip
    cfg = json.loads((directory / "config.json").read_text())
    for key, value in change.items():
        cfg[key].update(value)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=message) as e:
        clipworks.checkpoints.read_config(tmp_path)
    assert str(tmp_path / "config.json") in str(e.value)


def test_siglip2_naflex_directory_is_refused_by_name(tmp_path: Path) -> None:
    cfg = transformers.Siglip2Config(**TINY)
    cfg.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "siglip2"
    with pytest.raises(CheckpointError, match=r"config\.json: model_type 'siglip2': SigLIP 2 NaFlex .* not supported"):
        clipworks.load_checkpoint(tmp_path)


# -- open_clip: timm trunk + custom text tower ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def open_clip_siglip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """open_clip's full-size ViT-B-16-SigLIP, random, saved as a hub directory; its embeddings of fixed inputs."""
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-SigLIP").eval()
    directory = tmp_path_factory.mktemp("oc_siglip")
    pre = open_clip.get_pretrained_cfg("ViT-B-16-SigLIP", "webli")
    (directory / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": open_clip.get_model_config("ViT-B-16-SigLIP"),
        "preprocess_cfg": {k: pre[k] for k in ("mean", "std", "interpolation", "resize_mode")},
    }))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "open_clip_model.safetensors"))
    images = torch.randn(1, 3, 224, 224)
    ids = torch.randint(1, 32000, (2, 64))
    with torch.no_grad():
        want = model.encode_image(images), model.encode_text(ids)
    return {"dir": directory, "images": images, "ids": ids, "want": want}


def _assert_matches(model: Clip, ref: dict) -> None:
    with torch.no_grad():
        image, text = model.encode_image(ref["images"]), model.encode_text(ref["ids"])
    want_image, want_text = ref["want"]
    assert (image - want_image).abs().max() <= 1e-5
    assert (text - want_text).abs().max() <= 1e-5


def test_open_clip_hub_directory(open_clip_siglip: dict) -> None:
    directory = open_clip_siglip["dir"]
    model = clipworks.create_model(str(directory))
    assert model.config.diff(get_model_config("ViT-B-16-SigLIP")) == []
    assert model.config.preprocess() == get_model_config("ViT-B-16-SigLIP").preprocess()
    _assert_matches(model, open_clip_siglip)


def test_open_clip_bare_state_dict_takes_the_model_name(open_clip_siglip: dict) -> None:
    weights = open_clip_siglip["dir"] / "open_clip_model.safetensors"
    _assert_matches(clipworks.load_checkpoint(weights, config="ViT-B-16-SigLIP"), open_clip_siglip)


def test_open_clip_bare_state_dict_of_a_timm_tower_asks_for_the_config(tmp_path: Path) -> None:
    sd = {"visual.trunk.pos_embed": torch.zeros(1, 4, 8), "text.token_embedding.weight": torch.zeros(10, 8),
          "text.text_projection.weight": torch.zeros(8, 8)}
    save_file(sd, str(tmp_path / "siglip.safetensors"))
    with pytest.raises(CheckpointError, match=r"siglip\.safetensors holds a model with a timm or custom tower.*pass config="):
        clipworks.load_checkpoint(tmp_path / "siglip.safetensors")


def test_preprocessing_equals_open_clip_on_a_photo(photos: dict) -> None:
    image = photos["astronaut"]
    for name in ("ViT-B-16-SigLIP", "ViT-SO400M-14-SigLIP-384"):
        pre = open_clip.get_pretrained_cfg(name, "webli")
        size = open_clip.get_model_config(name)["vision_cfg"]["image_size"]
        theirs = open_clip.image_transform(size, is_train=False, mean=pre["mean"], std=pre["std"],
                                           interpolation=pre["interpolation"], resize_mode=pre["resize_mode"])
        ours = image_transform(get_model_config(name).preprocess())
        assert torch.equal(ours(image), theirs(image))


def test_timm_trunk_keys_we_do_not_know_are_named() -> None:
    cfg = get_model_config("ViT-B-16-SigLIP").vision_cfg
    trunk = {"attn_pool.latent": torch.zeros(1, 1, 768), "attn_pool.q.weight": torch.zeros(768, 768),
             "attn_pool.q.bias": torch.zeros(768), "attn_pool.kv.weight": torch.zeros(1536, 768),
             "attn_pool.kv.bias": torch.zeros(1536), "reg_token": torch.zeros(1, 1, 768)}
    from clipworks.checkpoints.timm_siglip import timm_to_native

    out = timm_to_native(trunk, cfg)
    assert out["attn_pool.in_proj_weight"].shape == (2304, 768) and "trunk.reg_token" in out
    del trunk["attn_pool.kv.bias"]
    with pytest.raises(CheckpointError, match=r"attn_pool\.kv\.bias"):
        timm_to_native(trunk, cfg)


# -- named configs ---------------------------------------------------------------------------------------------------

def test_every_open_clip_siglip_name_has_a_config() -> None:
    assert len(OPEN_CLIP_NAMES) >= 26
    assert set(OPEN_CLIP_NAMES) <= set(list_models())


@pytest.mark.parametrize("name", OPEN_CLIP_NAMES)
def test_named_config_equals_open_clip(name: str) -> None:
    """Same architecture as open_clip's config read through the timm translation, same parameters (names and
    shapes after our key map, hence counts), same activations and norms, and open_clip's preprocessing and
    tokenizer for the released weights."""
    ours = get_model_config(name)
    oc_cfg = open_clip.get_model_config(name)
    assert config_from_open_clip(oc_cfg, name).diff(ours) == []
    assert owns(ours.vision_cfg)
    pre = open_clip.get_pretrained_cfg(name, "webli")
    p = ours.preprocess()
    assert (p.size, p.mean, p.std, p.interpolation, p.resize_mode) == (
        oc_cfg["vision_cfg"]["image_size"], tuple(pre["mean"]), tuple(pre["std"]), pre["interpolation"], pre["resize_mode"])
    t = ours.tokenizer_cfg
    assert (t.type, t.name, t.clean) == ("hf", oc_cfg["text_cfg"]["hf_tokenizer_name"], "canonicalize")

    with torch.device("meta"):  # open_clip's device="meta" alone would initialise on the CPU first
        reference = open_clip.create_model(name, device="meta")
        model = Clip(ours)
    theirs = open_clip_to_native(reference.state_dict(), ours)
    mine = model.state_dict()
    assert {k: tuple(v.shape) for k, v in theirs.items()} == {k: tuple(v.shape) for k, v in mine.items()}
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())

    trunk = reference.visual.trunk
    timm_tanh = type(trunk.blocks[0].mlp.act).__name__ == "GELUTanh"
    assert timm_tanh == (model.visual.transformer.resblocks[0].mlp.act.approximate == "tanh")
    assert timm_tanh == (model.visual.attn_pool.mlp.act.approximate == "tanh")
    assert trunk.norm.eps == trunk.attn_pool.norm.eps == model.visual.ln_post.eps == model.visual.attn_pool.ln.eps
    oc_text_act = reference.text.transformer.resblocks[0].mlp.gelu
    assert getattr(oc_text_act, "approximate", "none") == model.text.transformer.resblocks[0].mlp.act.approximate
    assert reference.text.ln_final.eps == model.text.ln_final.eps == 1e-6


def test_timm_table_covers_open_clip_trunks() -> None:
    trunks = {(open_clip.get_model_config(n).get("vision_cfg") or {}).get("timm_model_name") for n in open_clip.list_models()}
    used = {t for t in trunks if t and "siglip" in t}
    assert used <= set(TIMM_MODELS)


def test_open_clip_config_at_another_size_than_its_trunk_is_refused() -> None:
    cfg = open_clip.get_model_config("ViT-B-16-SigLIP")
    cfg = {**cfg, "vision_cfg": {**cfg["vision_cfg"], "image_size": 256}}
    with pytest.raises(CheckpointError, match="image_size 256 differs from timm's vit_base_patch16_siglip_224"):
        config_from_open_clip(cfg, "ViT-B-16-SigLIP at 256")


# -- training -------------------------------------------------------------------------------------------------------

TINY_NATIVE = {
    "embed_dim": 32, "init_logit_bias": -10,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "layers": 2, "width": 32, "head_width": 8, "class_token": False,
                   "no_ln_pre": True, "patch_bias": True, "pool_type": "map", "proj_type": "none",
                   "act_kwargs": {"approximate": "tanh"}, "norm_kwargs": {"eps": 1e-6}},
    "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 4, "layers": 2, "no_causal_mask": True,
                 "pool_type": "last", "proj_bias": True, "act_kwargs": {"approximate": "tanh"},
                 "norm_kwargs": {"eps": 1e-6}},
}


def _step(model: Clip) -> dict[str, torch.Tensor]:
    torch.manual_seed(2)
    images, ids = torch.randn(4, 3, 32, 32), torch.randint(0, 100, (4, 16))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = SigLipLoss()(*model(images, ids))
    loss.backward()
    opt.step()
    return before




def test_training_step_locking_and_grad_checkpointing() -> None:
    torch.manual_seed(0)
    fresh = Clip(ClipConfig.from_dict(TINY_NATIVE))
    model = copy.deepcopy(fresh)
    before = _step(model)
    assert changed(model, before, "") == names(model, "")  # every parameter learns, logit_bias included

    model = copy.deepcopy(fresh)
    assert len(model.visual.blocks()) == 2 and model.visual.attn_pool in model.visual.head_parts()
    model.lock_image_tower(unlocked_groups=1)
    before = _step(model)
    head = names(model, "visual.ln_post.") | names(model, "visual.attn_pool.")
    assert changed(model, before, "visual.") == names(model, "visual.transformer.resblocks.1.") | head

    model = copy.deepcopy(fresh)
    model.lock_text_tower(unlocked_layers=1)
    before = _step(model)
    head = names(model, "text.ln_final.") | names(model, "text.text_projection.")
    assert changed(model, before, "text.") == names(model, "text.transformer.resblocks.1.") | head
    assert changed(model, before, "visual.") == names(model, "visual.")

    grads = []
    for enable in (False, True):
        model = copy.deepcopy(fresh)
        model.set_grad_checkpointing(enable)
        assert model.visual.grad_checkpointing is enable and model.text.grad_checkpointing is enable
        _step(model)
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-5)


def test_hf_siglip_state_maps_to_every_model_key(hf_siglip: tuple[Path, object]) -> None:
    cfg, sd, fmt = load_state(hf_siglip[0])
    assert fmt == "hf" and set(sd) == set(Clip(cfg).state_dict())
