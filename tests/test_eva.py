"""EVA-02 CLIP: open_clip's models (timm ``Eva`` image towers) load into clipworks' own ViT with the same
embeddings; the rotary embedding equals timm's; an EVA tower trains, locks and checkpoints like any other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import clipworks
from clipworks import ClipConfig, ConfigError
from clipworks.checkpoints import CheckpointError, load_checkpoint, load_state
from clipworks.checkpoints.open_clip import config_from_open_clip
from clipworks.checkpoints.timm_eva import TIMM_MODELS, timm_to_native
from clipworks.factory import count_parameters
from clipworks.model.config import VisionConfig, get_model_config
from clipworks.model.rope import apply_rope, build_rope
from clipworks.model.towers.vit import VisionTransformer

open_clip = pytest.importorskip("open_clip")
timm_eva = pytest.importorskip("timm.models.eva")
from timm.layers.pos_embed_sincos import RotaryEmbeddingCat, apply_rot_embed_cat

NATIVE = ["EVA02-B-16", "EVA02-L-14", "EVA02-L-14-336"]
TIMM_TOWER = ["EVA02-E-14", "EVA02-E-14-plus", "EVA01-g-14", "EVA01-g-14-plus"]
CAPTIONS = ["a photo of a cat", "a diagram", "two dogs playing in the snow at dusk", ""]


def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random init leaves biases at 0 and norms at 1, which would hide a swapped bias or norm: move every tensor."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def eva_hub(tmp_path_factory, one_thread) -> tuple[torch.nn.Module, Path]:
    """open_clip's EVA02-B-16 (random, full size) saved as an open_clip Hub directory, as open_clip writes one."""
    from open_clip.push_to_hf_hub import save_config_for_hf

    torch.manual_seed(0)
    ref = perturb(open_clip.create_model("EVA02-B-16", pretrained_image=False))
    ref.visual.preprocess_cfg = open_clip.get_pretrained_cfg("EVA02-B-16", "merged2b_s8b_b131k")
    ref.visual.image_mean, ref.visual.image_std = ref.visual.preprocess_cfg["mean"], ref.visual.preprocess_cfg["std"]
    hub = tmp_path_factory.mktemp("eva") / "EVA02-B-16"
    hub.mkdir()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(hub / "open_clip_model.safetensors"))
    save_config_for_hf(ref, hub / "open_clip_config.json", open_clip.get_model_config("EVA02-B-16"))
    return ref, hub


def assert_same_embeddings(ref: torch.nn.Module, mine: torch.nn.Module, size: int = 224) -> None:
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    tokens = open_clip.tokenize(CAPTIONS)
    with torch.no_grad():
        image_diff = (ref.encode_image(images) - mine.encode_image(images)).abs().max().item()
        text_diff = (ref.encode_text(tokens) - mine.encode_text(tokens)).abs().max().item()
    assert image_diff <= 1e-5 and text_diff <= 1e-5, (image_diff, text_diff)


@pytest.fixture(scope="module")
def eva_loaded(eva_hub) -> clipworks.Clip:
    return load_checkpoint(eva_hub[1])


def test_open_clip_hub_directory(eva_hub, eva_loaded):
    model = eva_loaded
    assert model.visual.rope is not None and type(model.visual).__name__ == "VisionTransformer"
    assert model.config.diff(get_model_config("EVA02-B-16")) == []  # the named config is what open_clip builds
    assert model.config.preprocess_cfg == get_model_config("EVA02-B-16").preprocess_cfg
    assert_same_embeddings(eva_hub[0], model)


def test_bare_state_dict_needs_and_takes_the_model_name(eva_hub, eva_loaded):
    weights = eva_hub[1] / "open_clip_model.safetensors"
    with pytest.raises(CheckpointError, match="open_clip_model.safetensors"):  # main's message says: pass config=
        load_checkpoint(weights)
    cfg, sd, _ = load_state(weights, config="EVA02-B-16")  # the same weights as the directory gives: same embeddings
    assert cfg.diff(eva_loaded.config) == []
    expected = eva_loaded.state_dict()
    assert sd.keys() == expected.keys() and all(torch.equal(sd[k], expected[k]) for k in sd)


def test_rope_equals_timm():
    g = torch.Generator().manual_seed(0)
    for grid, head_dim in [(14, 64), (16, 64), (24, 64), (5, 16)]:
        theirs = RotaryEmbeddingCat(head_dim, in_pixels=False, feat_shape=[grid, grid], ref_feat_shape=(16, 16))
        ours = build_rope(grid, head_dim, 16)
        assert torch.equal(ours, theirs.get_embed())
        for prefix in (1, 0):
            q = torch.randn(2, 3, prefix + grid * grid, head_dim, generator=g)
            expected = torch.cat([q[:, :, :prefix], apply_rot_embed_cat(q[:, :, prefix:], ours)], dim=2)
            assert torch.equal(apply_rope(q, ours), expected)
    q = torch.randn(1, 2, 26, 16, generator=g).bfloat16()
    rotated = apply_rope(q, build_rope(5, 16, 16))
    assert rotated.dtype == torch.bfloat16 and torch.equal(rotated[:, :, 0], q[:, :, 0])
    with pytest.raises(ConfigError, match="divisible by 4"):
        build_rope(4, 18, 16)


def tiny_eva_trunk_kwargs(qkv_fused: bool) -> dict:
    return {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4, "qkv_fused": qkv_fused,
            "mlp_ratio": 8 / 3, "swiglu_mlp": True, "scale_mlp": True, "scale_attn_inner": True, "use_rot_pos_emb": True,
            "ref_feat_shape": (16, 16), "global_pool": "token", "num_classes": 24}


TINY_EVA_VISION = {"image_size": 32, "patch_size": 8, "layers": 2, "width": 64, "head_width": 16, "mlp_ratio": 8 / 3,
                   "no_ln_pre": True, "norm_kwargs": {"eps": 1e-6}, "scale_attn_inner": True, "scale_fc": True,
                   "patch_bias": True, "k_bias": False, "mlp_type": "swiglu", "rope": True, "rope_ref_size": 16,
                   "proj_bias": True}


@pytest.mark.parametrize("qkv_fused", [False, True])
def test_tiny_timm_eva_trunk_in_fp32_and_bf16(qkv_fused, one_thread):
    """timm's Eva with separate q/k/v (EVA-02 CLIP) or fused qkv + q_bias/v_bias gives our tower's output."""
    torch.manual_seed(0)
    trunk = perturb(timm_eva.Eva(**tiny_eva_trunk_kwargs(qkv_fused)))
    cfg = VisionConfig(**TINY_EVA_VISION)
    ours = VisionTransformer(cfg, 24)
    ours.load_state_dict(timm_to_native(trunk.state_dict(), cfg))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert (trunk(x) - ours(x)).abs().max().item() <= 1e-5
        trunk, ours = trunk.bfloat16(), ours.bfloat16()
        assert ours.rope.dtype == torch.bfloat16  # the table follows the model's dtype, as timm's does
        assert (trunk(x.bfloat16()).float() - ours(x.bfloat16()).float()).abs().max().item() <= 1e-2


def test_unmapped_timm_weights_are_named():
    trunk = timm_eva.Eva(**tiny_eva_trunk_kwargs(False), use_fc_norm=True)  # an fc_norm EVA-02 CLIP does not have
    with pytest.raises(CheckpointError, match="fc_norm.weight"):
        timm_to_native(trunk.state_dict(), VisionConfig(**TINY_EVA_VISION))


def tiny_eva() -> clipworks.Clip:
    torch.manual_seed(0)
    cfg = ClipConfig.from_dict({"embed_dim": 24, "vision_cfg": TINY_EVA_VISION,
                                "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}})
    return clipworks.Clip(cfg)


def clip_loss(model: clipworks.Clip, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    img, txt, scale = model(images, tokens)
    logits = scale * img @ txt.T
    labels = torch.arange(len(images))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(4, 3, 32, 32, generator=g), torch.randint(1, 63, (4, 8), generator=g)


def test_tiny_eva_trains_a_step(one_thread):
    model = tiny_eva().train()
    names = dict(model.visual.named_parameters())
    assert "transformer.resblocks.0.attn.q_bias" in names and "transformer.resblocks.0.attn.in_proj_bias" not in names
    assert "rope" not in model.state_dict() and "visual.rope" not in model.state_dict()  # a constant, not a weight
    images, tokens = batch()
    loss = clip_loss(model, images, tokens)
    loss.backward()
    silent = [n for n, p in model.visual.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert silent == []
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    assert clip_loss(model, images, tokens).item() != loss.item()


def test_tiny_eva_locks_its_image_tower(one_thread):
    model = tiny_eva()
    model.lock_image_tower(1)
    blocks = model.visual.blocks()
    assert len(blocks) == 2
    frozen = lambda m: not any(p.requires_grad for p in m.parameters())
    live = lambda m: all(p.requires_grad for p in m.parameters())
    assert frozen(blocks[0]) and frozen(model.visual.conv1) and not model.visual.positional_embedding.requires_grad
    assert live(blocks[1]) and live(model.visual.ln_post) and live(model.visual.proj)
    images, tokens = batch()
    clip_loss(model.train(), images, tokens).backward()
    assert blocks[0].attn.q_bias.grad is None and blocks[1].attn.q_bias.grad is not None


def test_tiny_eva_grad_checkpointing_gives_the_same_gradients(one_thread):
    images, tokens = batch()
    grads = []
    for checkpointing in (False, True):
        model = tiny_eva().train()
        model.set_grad_checkpointing(checkpointing)
        calls: list[int] = []
        model.visual.blocks()[0].register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        clip_loss(model, images, tokens).backward()
        assert len(calls) == (2 if checkpointing else 1)  # recomputed in the backward pass when checkpointing
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("name", NATIVE + TIMM_TOWER)
def test_named_configs_count_open_clip_parameters(name):
    with torch.device("meta"):
        ref = open_clip.create_model(name, device="meta")
    assert count_parameters(get_model_config(name)) == sum(p.numel() for p in ref.parameters())
    assert config_from_open_clip(open_clip.get_model_config(name), name).diff(get_model_config(name)) == []


def test_named_configs_of_the_timm_tower():
    """EVA-01 and EVA-02-E blocks (post-norm, …) are not ours: those configs name timm's model, as open_clip's do."""
    for name in TIMM_TOWER:
        cfg = get_model_config(name)
        assert cfg.vision_cfg.kind == "timm" and cfg.vision_cfg.timm_model_name not in TIMM_MODELS
        assert cfg.vision_cfg.timm_model_name == open_clip.get_model_config(name)["vision_cfg"]["timm_model_name"]
    # every open_clip EVA config has a clipworks one
    assert {n for n in open_clip.list_models() if n.startswith("EVA")} <= set(clipworks.list_models())


def test_rope_with_patch_dropout_is_refused():
    with pytest.raises(ConfigError, match="patch_dropout with rope"):
        VisionConfig(**{**TINY_EVA_VISION, "patch_dropout": 0.5})
    model_cfg = open_clip.get_model_config("EVA02-B-16")
    model_cfg["vision_cfg"]["patch_dropout"] = 0.5
    with pytest.raises(CheckpointError, match="patch_dropout"):
        config_from_open_clip({"model_cfg": model_cfg}, "open_clip_config.json")


def test_eva_tower_exports_with_a_dynamic_batch(one_thread):
    """The rotary table is a constant and its slicing static: the tower exports with a symbolic batch size."""
    tower = tiny_eva().visual.eval()
    batch_dim = torch.export.Dim("batch")
    program = torch.export.export(tower, (torch.randn(2, 3, 32, 32),), dynamic_shapes=({0: batch_dim},))
    x = torch.randn(5, 3, 32, 32)
    torch.testing.assert_close(program.module()(x), tower(x), rtol=0, atol=1e-6)


def test_trainer_patch_dropout_is_refused_by_a_rope_tower(tmp_path):
    """The run's patch_dropout goes through the tower: a rope tower refuses it before any step, and the ViT of
    another family takes it and records it in a config that still rebuilds."""
    from clipworks.train.config import TrainConfig
    from clipworks.train.loop import build_model

    eva = tmp_path / "eva.json"
    eva.write_text(json.dumps({"embed_dim": 24, "vision_cfg": TINY_EVA_VISION,
                               "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}))
    with pytest.raises(ConfigError, match="patch_dropout with rope"):
        build_model(TrainConfig(model=str(eva), patch_dropout=0.5))
    model = build_model(TrainConfig(model="tiny-vit", patch_dropout=0.5))
    assert model.visual.patch_dropout.prob == 0.5 and model.config.vision_cfg.patch_dropout == 0.5
    assert ClipConfig.from_dict(model.config.to_dict()).vision_cfg.patch_dropout == 0.5
    with pytest.raises(ConfigError, match="patch_dropout"):
        build_model(TrainConfig(model="tiny-vit", patch_dropout=1.5))


def test_an_open_clip_training_checkpoint_names_its_timm_tower_config(tmp_path, eva_hub, eva_loaded):
    """open_clip's trainer saves {"name": model, "state_dict": …}: the name is enough, no config= needed."""
    ref, _ = eva_hub
    torch.save({"epoch": 1, "name": "EVA02-B-16", "state_dict": {"module." + k: v for k, v in ref.state_dict().items()}},
               tmp_path / "epoch_1.pt")
    model = load_checkpoint(tmp_path / "epoch_1.pt")
    assert model.config.diff(eva_loaded.config) == []
    assert_same_embeddings(ref, model)
