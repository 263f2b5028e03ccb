"""timm image towers (MobileCLIP / MobileCLIP 2, OpenCLIP's ConvNeXt): open_clip's weights and preprocessing give
open_clip's embeddings here, and the tower trains, locks, checkpoints and shards like every other."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import photo
from open_clip_refs import open_clip_model
from safetensors.torch import save_file

import clipworks
from clipworks import CheckpointError, ConfigError, load_checkpoint
from clipworks.errors import MissingDependencyError
from clipworks.model import Clip
from clipworks.model.config import VisionConfig, get_model_config, list_models
from clipworks.model.towers.timm_vision import TimmVisionTower
from clipworks.train.config import TrainConfig
from clipworks.train.fsdp import shard_units
from clipworks.train.optim import param_groups

open_clip = pytest.importorskip("open_clip")
timm = pytest.importorskip("timm")

TOL = 1e-5
CAPTIONS = ["a photo of an astronaut", "a cup of coffee", "a diagram of a rocket engine, with a longer caption " * 2]
# Every named config that is a timm tower: all of open_clip's MobileCLIP and ConvNeXt configs.
NAMED = ["MobileCLIP-S1", "MobileCLIP-S2", "MobileCLIP-B", "MobileCLIP2-S0", "MobileCLIP2-S2", "MobileCLIP2-S3",
         "MobileCLIP2-S4", "MobileCLIP2-B", "MobileCLIP2-L-14", "convnext_tiny", "convnext_small", "convnext_base",
         "convnext_base_w", "convnext_base_w_320", "convnext_large", "convnext_large_d", "convnext_large_d_320",
         "convnext_xlarge", "convnext_xxlarge", "convnext_xxlarge_320"]


def save_hub_dir(model: torch.nn.Module, name: str, directory: Path, preprocess: dict) -> Path:
    """open_clip's hub layout: open_clip_config.json {model_cfg, preprocess_cfg} + open_clip_model.safetensors."""
    directory.mkdir()
    (directory / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": open_clip.get_model_config(name), "preprocess_cfg": preprocess}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, directory / "open_clip_model.safetensors")
    return directory


def pretrained_preprocess(name: str, tag: str | None) -> dict:
    """The preprocessing open_clip gives ``name`` with weights ``tag`` (its defaults for a config without weights)."""
    pcfg = open_clip.get_pretrained_cfg(name, tag) if tag else {}
    defaults = {"mean": open_clip.OPENAI_DATASET_MEAN, "std": open_clip.OPENAI_DATASET_STD,
                "interpolation": "bicubic", "resize_mode": "shortest"}
    return {k: tuple(pcfg[k]) if isinstance(pcfg.get(k), (list, tuple)) else pcfg.get(k, v) for k, v in defaults.items()}


class Reference:
    """An open_clip model saved as a hub directory, with its embeddings of two photos and three captions."""

    def __init__(self, name: str, tag: str | None, root: Path):
        self.name = name
        ref = open_clip_model(name)
        preprocess = pretrained_preprocess(name, tag)
        self.hub = save_hub_dir(ref, name, root / "hub", preprocess)
        self.bare = self.hub / "open_clip_model.safetensors"  # also a bare state dict, read with config=NAME
        _, _, self.preprocess = open_clip.create_model_and_transforms("local-dir:" + str(self.hub), load_weights=False)
        self.images = torch.stack([self.preprocess(photo(n)) for n in ("astronaut", "coffee")])
        self.tokens = open_clip.get_tokenizer(name)(CAPTIONS)
        with torch.no_grad():
            self.image_features, self.text_features = ref.encode_image(self.images), ref.encode_text(self.tokens)

    def max_diff(self, model: Clip) -> tuple[float, float]:
        """Max abs differences of image and text embeddings, relative to the reference's largest value when above 1."""
        with torch.no_grad():
            img, txt = model.encode_image(self.images), model.encode_text(self.tokens)
        return (float((img - self.image_features).abs().max() / self.image_features.abs().max().clamp(min=1)),
                float((txt - self.text_features).abs().max() / self.text_features.abs().max().clamp(min=1)))


@pytest.fixture(scope="module")
def mobileclip(tmp_path_factory, one_thread) -> Reference:
    return Reference("MobileCLIP2-S0", "dfndr2b", tmp_path_factory.mktemp("mobileclip"))


@pytest.fixture(scope="module")
def convnext(tmp_path_factory, one_thread) -> Reference:
    return Reference("convnext_tiny", None, tmp_path_factory.mktemp("convnext"))  # open_clip's smallest ConvNeXt


def _loaded(ref: Reference) -> tuple[Clip, object]:
    """The hub directory through ``create_model_and_transforms``: (model, eval preprocessing)."""
    model, _, preprocess = clipworks.create_model_and_transforms(str(ref.hub))
    return model, preprocess


@pytest.fixture(scope="module")
def mobileclip_loaded(mobileclip: Reference) -> tuple[Clip, object]:
    return _loaded(mobileclip)


@pytest.fixture(scope="module")
def convnext_loaded(convnext: Reference) -> tuple[Clip, object]:
    return _loaded(convnext)


@pytest.fixture(scope="module")
def mobileclip_model(mobileclip_loaded: tuple[Clip, object]) -> Clip:
    return mobileclip_loaded[0]  # tests that change it work on a copy


# -- parity with open_clip ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["mobileclip", "convnext"])
def test_open_clip_hub_dir_and_bare_state_dict_give_open_clips_embeddings_and_preprocessing(family: str, request) -> None:
    ref: Reference = request.getfixturevalue(family)
    assert torch.equal(clipworks.get_tokenizer(ref.name)(CAPTIONS), ref.tokens)
    model, preprocess = request.getfixturevalue(family + "_loaded")  # create_model_and_transforms(hub dir)
    assert model.config.vision_cfg.kind == "timm"
    image = photo("astronaut")
    assert torch.equal(preprocess(image), ref.preprocess(image))  # the hub directory's preprocess_cfg
    assert max(ref.max_diff(model)) <= TOL
    assert max(ref.max_diff(load_checkpoint(ref.bare, config=ref.name))) <= TOL
    with pytest.raises(CheckpointError, match="config="):  # a timm tower cannot be read off the weights
        load_checkpoint(ref.bare)
    # the named config's preprocessing is what open_clip gives these weights (create_model_and_transforms
    # takes it from the same place, model.config.preprocess())
    named = clipworks.image_transform(clipworks.factory.model_config(ref.name).preprocess())
    assert torch.equal(named(image), ref.preprocess(image))


@pytest.mark.parametrize("name", NAMED)
def test_named_config_preprocessing_is_open_clips_for_its_weights(name: str) -> None:
    ours = get_model_config(name).preprocess()
    tags = open_clip.list_pretrained_tags_by_model(name) or [None]
    for tag in tags:
        want = pretrained_preprocess(name, tag)
        assert (ours.mean, ours.std, ours.interpolation, ours.resize_mode) == (
            want["mean"], want["std"], want["interpolation"], want["resize_mode"]), (name, tag)
    assert ours.size == open_clip.get_model_config(name)["vision_cfg"]["image_size"]


@pytest.mark.parametrize("name", ["EVA01-g-14", "EVA02-E-14"])
def test_open_clips_eva_timm_configs_build_with_its_parameter_count(name: str) -> None:
    from clipworks.checkpoints.open_clip import config_from_open_clip

    cfg = open_clip.get_model_config(name)
    custom = cfg.pop("custom_text", False)
    with torch.device("meta"):
        ref = (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**cfg)
        ours = Clip(config_from_open_clip(open_clip.get_model_config(name), name))
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def test_every_timm_config_is_registered() -> None:
    oc = {n for n in open_clip.list_models() if n.startswith(("MobileCLIP", "convnext_"))}
    assert oc <= set(list_models()) and set(NAMED) == oc


@pytest.mark.parametrize("name", NAMED)
def test_named_config_builds_on_meta_with_open_clips_parameter_count(name: str) -> None:
    cfg = open_clip.get_model_config(name)
    custom = cfg.pop("custom_text", False)
    with torch.device("meta"):
        ref = (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**cfg)
        ours = Clip(get_model_config(name))
    assert ours.visual.output_dim == ours.text.output_dim == cfg["embed_dim"]
    assert {k: v.shape for k, v in ours.visual.state_dict().items()} == {k: v.shape for k, v in ref.visual.state_dict().items()}
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


# -- the tower on its own: open_clip's TimmModel head variants, blocks found generically ------------------------
@pytest.mark.parametrize(("model_name", "pool", "proj", "size"), [
    ("test_convnext", "", "linear", 64),     # ConvNeXt configs: trunk pooling, our linear projection
    ("test_convnext", "avg", "mlp", 64),     # convnext_large_d: an MLP projection
    ("test_vit", "token", None, 160),        # MobileCLIP-B, EVA-E: timm's classifier is the projection
    ("test_vit", "avg", "none", 160),        # the pooled trunk features are the embedding
    ("resnet10t", "abs_attn", "", 64),       # timm's attention pools in open_clip's head.pool
    ("resnet10t", "rot_attn", "", 64),
])
def test_tower_equals_open_clips_timm_model(model_name: str, pool: str, proj: str | None, size: int, one_thread) -> None:
    from open_clip.timm_model import TimmModel

    torch.manual_seed(0)
    ref = TimmModel(model_name, 32, pool=pool, proj=proj, proj_bias=True).eval()
    cfg = VisionConfig(
        image_size=size, timm_model_name=model_name, timm_pool=pool, timm_proj=proj, timm_proj_bias=True)
    ours = TimmVisionTower(cfg, 32).eval()
    ours.load_state_dict(ref.state_dict())  # the same names, no map
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want = ref(x)
        assert ours.output_dim == want.shape[1]
        assert torch.equal(ours(x), want)


@pytest.mark.parametrize(("model_name", "blocks", "head"), [
    ("fastvit_mci0", [f"stages.{i}" for i in range(4)], ["final_conv", "head"]),       # MobileCLIP(2)-S0
    ("fastvit_mci3", [f"stages.{i}" for i in range(5)], ["final_conv", "head"]),       # MobileCLIP2-S3
    ("convnext_tiny", [f"stages.{i}" for i in range(4)], ["head"]),                   # OpenCLIP ConvNeXt
    ("vit_base_mci_224", [f"blocks.{i}" for i in range(12)], ["norm", "head"]),        # MobileCLIP-B
    ("vit_large_patch14_clip_224", [f"blocks.{i}" for i in range(24)], ["norm", "head"]),
    ("eva02_enormous_patch14_clip_224", [f"blocks.{i}" for i in range(64)], ["norm", "head"]),  # EVA02-E
    ("eva_giant_patch14_224", [f"blocks.{i}" for i in range(40)], ["norm", "head"]),   # EVA01-g
])
def test_blocks_and_head_come_from_timms_group_matcher(model_name: str, blocks: list[str], head: list[str]) -> None:
    with torch.device("meta"):
        head_cfg = {"timm_pool": "", "timm_proj": "linear"} if "convnext" in model_name else {
            "timm_pool": "avg" if "fastvit" in model_name else "token", "timm_proj": None}
        tower = TimmVisionTower(VisionConfig(timm_model_name=model_name, **head_cfg), 512)
    names = {id(m): n for n, m in tower.trunk.named_modules()}
    assert [names[id(b)] for b in tower.blocks()] == blocks
    *trunk_head, adapter = tower.head_parts()
    assert [names[id(m)] for m in trunk_head] == head and adapter is tower.head
    # stem, blocks and head partition the trunk: unlocking one block frees exactly it and the head
    from clipworks.model.lock import lock_tower

    lock_tower(tower, unlocked=1)
    trainable = {n.split(".")[1] + "." + n.split(".")[2] for n, p in tower.named_parameters() if p.requires_grad
                 and n.startswith("trunk.") and n.split(".")[1] in ("stages", "blocks")}
    assert trainable == {blocks[-1]}
    assert all(p.requires_grad for m in trunk_head for p in m.parameters())
    assert not any(p.requires_grad for b in tower.blocks()[:-1] for p in b.parameters())


def test_shard_units_and_decay_exemptions_see_the_timm_blocks_and_embeddings() -> None:
    with torch.device("meta"):
        vit = Clip(get_model_config("MobileCLIP2-B"))          # a timm ViT: class token and position embedding
        fastvit = Clip(get_model_config("MobileCLIP2-S0"))     # a timm convnet: stages, BatchNorm
    units = shard_units(vit)
    assert units[:12] == list(vit.visual.trunk.blocks) and units[12:] == list(vit.text.transformer.resblocks)
    assert shard_units(fastvit)[:4] == list(fastvit.visual.trunk.stages)
    groups = {g["weight_decay"] > 0: set(g["names"]) for g in param_groups(vit, TrainConfig()) if g["tower"] == "image"}
    assert {"visual.trunk.cls_token", "visual.trunk.pos_embed", "visual.trunk.blocks.0.norm1.weight"} <= groups[False]
    assert {"visual.trunk.blocks.0.attn.qkv.weight", "visual.trunk.head.weight"} <= groups[True]
    assert vit.visual.no_weight_decay() == {"trunk.cls_token", "trunk.pos_embed"}  # timm's list, resolved to names


# -- training ----------------------------------------------------------------------------------------------------
def _bn_stats(model: Clip) -> dict[str, torch.Tensor]:
    return {n: m.running_mean.clone() for n, m in model.visual.trunk.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}


def test_train_step_with_locked_stages_and_frozen_batchnorm_stats(mobileclip_model: Clip, mobileclip: Reference) -> None:
    model = copy.deepcopy(mobileclip_model)
    model.lock_image_tower(unlocked_groups=1, freeze_bn_stats=True)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = _bn_stats(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    image, text, scale = model(mobileclip.images, mobileclip.tokens[:2])
    logits = scale * image @ text.T
    labels = torch.arange(2)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    loss.backward()
    optimizer.step()

    live = ("visual.trunk.stages.3.", "visual.trunk.final_conv.", "visual.trunk.head.")
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    for name, p in model.visual.named_parameters(prefix="visual"):
        assert p.requires_grad == name.startswith(live), name
        assert name not in changed or name.startswith(live), name  # the locked part does not move
    assert {n for n in changed if n.startswith("visual.")} >= {
        n for n, p in model.named_parameters() if n.startswith(live) and p.ndim > 1 and ".bn." not in n} - {
        n for n, p in model.named_parameters() if n.startswith(live) and p.grad is not None and not p.grad.any()}
    moved = {n for n, v in _bn_stats(model).items() if not torch.equal(v, stats[n])}
    assert moved and all(n.startswith(("stages.3.", "final_conv.")) for n in moved)
    assert any(n.startswith("stages.3.") for n in moved) and any(n.startswith("final_conv.") for n in moved)
    assert not model.visual.trunk.stem[0].conv_kxk[0].bn.training and model.visual.trunk.stages[3].training


def test_grad_checkpointing_recomputes_the_stages_with_the_same_gradients(mobileclip_model: Clip,
                                                                          mobileclip: Reference) -> None:
    model = copy.deepcopy(mobileclip_model).eval()
    calls = []
    model.visual.trunk.stages[1].blocks[0].register_forward_pre_hook(lambda *a: calls.append(1))

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        calls.clear()
        model.encode_image(mobileclip.images).square().sum().backward()
        return {n: p.grad.clone() for n, p in model.visual.named_parameters()}

    plain = grads()
    assert len(calls) == 1
    model.set_grad_checkpointing(True)
    assert all(stage.grad_checkpointing for stage in model.visual.trunk.stages)
    checkpointed = grads()
    assert len(calls) == 2  # the block ran again in the backward pass
    for name, g in plain.items():
        assert torch.allclose(checkpointed[name], g, rtol=1e-4, atol=1e-6), name
    model.set_grad_checkpointing(False)
    assert not any(stage.grad_checkpointing for stage in model.visual.trunk.stages)


def test_reparameterize_fuses_mobileone_branches_and_keeps_the_embeddings(mobileclip_model: Clip,
                                                                          mobileclip: Reference) -> None:
    model = copy.deepcopy(mobileclip_model).eval()
    with torch.no_grad():
        want = model.encode_image(mobileclip.images)
        n_before = len(model.state_dict())
        model.visual.reparameterize()
        got = model.encode_image(mobileclip.images)
    assert len(model.state_dict()) < n_before  # branches and their BatchNorms are gone
    assert any(k.endswith("reparam_conv.weight") for k in model.state_dict())
    assert float((got - want).abs().max() / want.abs().max().clamp(min=1)) <= 1e-4


# -- errors --------------------------------------------------------------------------------------------------------
def test_missing_timm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    with torch.device("meta"), pytest.raises(MissingDependencyError, match=r"clipworks\[timm\]"):
        Clip(get_model_config("MobileCLIP2-S0"))


@pytest.mark.parametrize(("fields", "match"), [
    ({"timm_model_name": "fastvit_mci0", "timm_model_pretrained": True}, "timm_model_pretrained"),
    ({"timm_model_name": "no_such_net"}, "'no_such_net' is not a model"),
    ({"timm_model_name": "vit_large_patch14_clip_224", "image_size": 336}, "image_size is 336.*224x224"),
    ({"timm_model_name": "convnext_tiny", "timm_proj": "conv"}, "timm_proj"),
    ({"timm_model_name": "convnext_tiny", "patch_dropout": 0.5}, "patch_dropout"),
])
def test_bad_timm_configs_are_refused_by_name(fields: dict, match: str) -> None:
    with torch.device("meta"), pytest.raises(ConfigError, match=match):
        TimmVisionTower(VisionConfig(**fields), 512)


def test_native_save_and_load_round_trip_a_timm_tower(tmp_path: Path, one_thread) -> None:
    cfg = clipworks.ClipConfig.from_dict({
        "embed_dim": 32, "vision_cfg": {"image_size": 64, "timm_model_name": "test_convnext", "timm_pool": "",
                                        "timm_proj": "mlp", "timm_proj_bias": True},
        "text_cfg": {"width": 64, "heads": 2, "layers": 2, "no_causal_mask": True},
        "preprocess_cfg": {"mean": 0, "std": 1, "interpolation": "bilinear"}})
    torch.manual_seed(0)
    model = Clip(cfg).eval()
    model.save_pretrained(tmp_path / "m")
    back = Clip.from_pretrained(tmp_path / "m")
    assert back.config.vision_cfg == cfg.vision_cfg and back.config.preprocess_cfg == cfg.preprocess_cfg
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(back.encode_image(x), model.encode_image(x))
