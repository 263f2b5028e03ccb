"""ALIGN and MetaCLIP 2 from Hugging Face directories, and open_clip's Hugging Face text towers named by Hub id.

Every reference model is tiny, random and made by the reference library itself (transformers' ``AlignModel`` and
``MetaClip2Model``, open_clip's ``CustomTextCLIP`` with an XLM-R text tower), saved in its own format and read by
clipworks. Hub ids resolve through a temporary Hugging Face cache laid out as huggingface_hub lays it out; nothing
is downloaded (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import clipworks
from clipworks import CheckpointError, Clip, ConfigError
from clipworks.checkpoints import hf_align, load_state, read_config
from clipworks.checkpoints.hf import read_preprocessor
from clipworks.checkpoints.strict import load_strict
from clipworks.errors import PretrainedError
from clipworks.image.transforms import image_transform
from clipworks.model.config import PreprocessConfig, TextConfig, VisionConfig, get_model_config
from clipworks.model.towers.hf_text import HFTextTower
from clipworks.model.towers.hf_vision import HFVisionTower

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

ALIGN_VISION = dict(image_size=64, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=64,
                    kernel_sizes=[3, 3, 5], in_channels=[32, 16, 24], out_channels=[16, 24, 64], strides=[1, 2, 2],
                    num_block_repeats=[1, 2, 2], expand_ratios=[1, 6, 6], depthwise_padding=[])
ALIGN_TEXT = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  max_position_embeddings=80)
WORDS = ["a", "photo", "of", "cat", "dog", "the", "moon", "rocket", "red", "on", "an", "astronaut", "coffee", "cup"]
CAPTIONS = ["a photo of a cat", "the red rocket on the moon", "an astronaut", "a coffee cup", ""]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _randomize_batchnorm(model: torch.nn.Module) -> None:
    """Fresh BatchNorms are the identity in eval mode; random statistics make the parity check mean something."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(1 + torch.randn(m.num_features, generator=g) * 0.1)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _bert_tokenizer(directory: Path) -> object:
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tok = transformers.BertTokenizer(vocab_file=str(vocab), model_max_length=64)
    tok.save_pretrained(directory)
    return tok


@pytest.fixture(scope="module")
def align_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("align")
    torch.manual_seed(0)
    config = transformers.AlignConfig(text_config=ALIGN_TEXT, vision_config=ALIGN_VISION, projection_dim=16,
                                      temperature_init_value=0.5)
    model = transformers.AlignModel(config).eval()
    _randomize_batchnorm(model)
    model.save_pretrained(directory)
    tokenizer = _bert_tokenizer(directory)
    # ALIGN's processor as its conversion script sets it up: squash to 346, crop 289, bilinear, x / 127.5 - 1.
    image_processor = transformers.EfficientNetImageProcessorPil(
        do_center_crop=True, rescale_factor=1 / 127.5, rescale_offset=True, do_normalize=False, include_top=False,
        resample=2)
    transformers.AlignProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def align_pair(align_dir: Path) -> tuple[object, Clip]:
    reference = transformers.AlignModel.from_pretrained(align_dir).eval()
    return reference, clipworks.load_checkpoint(align_dir)


def _align_inputs(model: Clip) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    return torch.randn(3, 3, 64, 64), clipworks.get_tokenizer(model.config)(CAPTIONS)


def test_align_matches_transformers(align_pair: tuple) -> None:
    reference, model = align_pair
    images, tokens = _align_inputs(model)
    mask = (tokens != 0).long()
    with torch.no_grad():
        out = reference(input_ids=tokens, attention_mask=mask, pixel_values=images)
        image = model.encode_image(images)
        text = model.encode_text(tokens)
        torch.testing.assert_close(image, reference.get_image_features(pixel_values=images).pooler_output,
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(text, reference.get_text_features(input_ids=tokens, attention_mask=mask).pooler_output,
                                   atol=1e-5, rtol=0)
        img, txt, scale = model(images, tokens)
        torch.testing.assert_close(scale, 1 / reference.temperature, atol=1e-6, rtol=0)
        torch.testing.assert_close(model.logits(img, txt), out.logits_per_image, atol=1e-5, rtol=0)
    assert image.shape == (3, 16) and text.shape == (len(CAPTIONS), 16)


def test_align_logits_follow_a_temperature_below_one_hundredth(align_dir: Path, tmp_path: Path) -> None:
    """CLIP clamps its training temperature at 100; scoring uses the model's own, as transformers' ALIGN does."""
    shutil.copytree(align_dir, tmp_path / "align")
    reference = transformers.AlignModel.from_pretrained(align_dir).eval()
    with torch.no_grad():
        reference.temperature.fill_(0.004)
    reference.save_pretrained(tmp_path / "align")
    model = clipworks.load_checkpoint(tmp_path / "align")
    images, tokens = _align_inputs(model)
    with torch.no_grad():
        out = reference(input_ids=tokens, attention_mask=(tokens != 0).long(), pixel_values=images)
        img, txt = model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True)
        torch.testing.assert_close(model.logits(img, txt), out.logits_per_image, atol=1e-4, rtol=1e-6)


def test_align_config_tokenizer_and_preprocessing(align_dir: Path, align_pair: tuple, photos: dict) -> None:
    _, model = align_pair
    cfg = model.config
    assert cfg.vision_cfg.kind == "hf" and cfg.vision_cfg.hf_config["model_type"] == "align_vision_model"
    assert (cfg.text_cfg.hf_pooler_type, cfg.text_cfg.hf_proj_type, cfg.text_cfg.hf_proj_bias) == ("cls", "linear", True)
    assert cfg.context_length == 64 and cfg.image_size == 289
    assert "text.transformer.pooler.dense.weight" not in model.state_dict()  # ALIGN pools [CLS] itself
    processor = transformers.AlignProcessor.from_pretrained(align_dir)
    ours = clipworks.get_tokenizer(str(align_dir))(CAPTIONS)
    expected = processor(text=CAPTIONS, return_tensors="pt")["input_ids"]
    assert torch.equal(ours, expected)
    # Preprocessing on real photos: the same pixels as transformers' PIL processor; its default torchvision
    # backend resamples tensors and differs by up to one grey level (1/127.5 here).
    transform = image_transform(cfg.preprocess())
    pil = transformers.EfficientNetImageProcessorPil.from_pretrained(align_dir)
    for name in ("astronaut", "coffee", "chelsea"):
        image = photos[name]
        ours = transform(image)
        torch.testing.assert_close(ours, pil(images=image, return_tensors="pt")["pixel_values"][0], atol=1e-5, rtol=0)
        tv = processor(images=image, return_tensors="pt")["pixel_values"][0]
        assert tv.shape == ours.shape and (tv - ours).abs().max() <= 1 / 127.5 + 1e-6


@pytest.mark.parametrize("settings", [
    dict(),  # the class defaults: squash to 346 without a crop, std applied twice (include_top)
    dict(do_center_crop=True, do_normalize=True, include_top=True, image_mean=[0.4, 0.45, 0.5],
         image_std=[0.2, 0.25, 0.3], resample=3),
    # transformers' PIL processors crop at floor((h - s) / 2), torchvision (and open_clip, and clipworks) at
    # round((h - s) / 2): one pixel apart when h - s is odd and rounds up. 63 of 80 and of 119 agree.
    dict(size={"shortest_edge": 80}, crop_size={"height": 63, "width": 63}, do_center_crop=True, resample=0,
         rescale_offset=True, rescale_factor=1 / 127.5),
])
def test_efficientnet_preprocessing_matches_transformers(tmp_path: Path, settings: dict, photos: dict) -> None:
    processor = transformers.EfficientNetImageProcessorPil(**settings)
    processor.save_pretrained(tmp_path)
    cfg = read_preprocessor(tmp_path, PreprocessConfig())
    transform = image_transform(cfg)
    for name in ("astronaut", "rocket"):
        image = photos[name]
        expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(transform(image), expected, atol=1e-5, rtol=0)


def test_preprocessor_values_we_cannot_express_are_named(tmp_path: Path) -> None:
    path = tmp_path / "preprocessor_config.json"
    for bad, match in [({"size": {"height": 300, "width": 200}}, "not square"), ({"resample": 1}, "resample=1"),
                       ({"do_resize": False}, "do_resize")]:
        path.write_text(json.dumps({"image_processor_type": "EfficientNetImageProcessor", **bad}))
        with pytest.raises(CheckpointError, match=match):
            read_preprocessor(tmp_path, PreprocessConfig())


def test_align_native_round_trip_without_the_source(align_dir: Path, align_pair: tuple, tmp_path: Path) -> None:
    _, model = align_pair
    source = tmp_path / "align"
    shutil.copytree(align_dir, source)
    loaded_from_copy = clipworks.load_checkpoint(source)
    saved = clipworks.save_pretrained(loaded_from_copy, tmp_path / "saved")
    shutil.rmtree(source)
    loaded = clipworks.load_checkpoint(saved)
    assert loaded.config.diff(model.config) == []
    images, tokens = _align_inputs(model)
    assert torch.equal(clipworks.get_tokenizer(str(saved))(CAPTIONS), tokens)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))
        assert torch.equal(loaded.encode_text(tokens), model.encode_text(tokens))


def test_align_directory_without_weights_is_named(align_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "align-no-weights"
    shutil.copytree(align_dir, broken)
    (broken / "model.safetensors").unlink()
    read_config(broken)  # the config alone still reads
    with pytest.raises(CheckpointError, match=f"{broken} has no weights file"):
        clipworks.load_checkpoint(broken)


def test_unsupported_model_type_lists_the_supported_ones(tmp_path: Path) -> None:
    transformers.BertModel(transformers.BertConfig(**{k: v for k, v in ALIGN_TEXT.items()})).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"model_type 'bert' is not supported; clipworks reads align, clip, "
                                              r"metaclip_2"):
        clipworks.load_checkpoint(tmp_path)


def test_align_unexpected_keys_are_named(align_dir: Path) -> None:
    cfg, sd, _ = load_state(align_dir)
    converted = hf_align.to_native({"vision_model.extra_head.weight": torch.zeros(1), "temperature": torch.tensor(0.25)},
                                   cfg)
    assert converted["visual.trunk.extra_head.weight"].shape == (1,)
    torch.testing.assert_close(converted["logit_scale"], torch.tensor(4.0).log())
    sd["visual.trunk.extra_head.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected 1 key.*visual.trunk.extra_head.weight"):
        load_strict(Clip(cfg), sd, "test")


# -- the Hugging Face image tower in training ---------------------------------------------------------------

def _step(model: Clip, seed: int = 0) -> dict[str, torch.Tensor]:
    """One SGD step with weight decay (a stepped parameter moves even at zero gradient); the parameters before."""
    torch.manual_seed(seed)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    images, tokens = torch.randn(4, 3, 64, 64), clipworks.get_tokenizer(model.config)(CAPTIONS[:4])
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, weight_decay=0.1)
    model.train()
    img, txt, scale = model(images, tokens)
    logits = scale * img @ txt.T
    labels = torch.arange(4)
    ((F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2).backward()
    opt.step()
    return before


def _changed(model: Clip, before: dict[str, torch.Tensor], prefix: str) -> set[str]:
    return {n for n, p in model.named_parameters() if n.startswith(prefix) and not torch.equal(p, before[n])}


def test_hf_vision_tower_trains_and_locks(align_pair: tuple) -> None:
    _, fresh = align_pair
    model = copy.deepcopy(fresh)
    blocks = model.visual.blocks()
    assert len(blocks) == 3 and blocks[-1] is model.visual.trunk.encoder.blocks[2]
    before = _step(model)
    assert _changed(model, before, "visual.") == {n for n, _ in model.named_parameters() if n.startswith("visual.")}

    model = copy.deepcopy(fresh)
    model.lock_image_tower(unlocked_groups=0)
    before = _step(model)
    assert _changed(model, before, "visual.") == set() and _changed(model, before, "text.")

    model = copy.deepcopy(fresh)
    model.lock_image_tower(unlocked_groups=1, freeze_bn_stats=True)
    stats = {n: b.clone() for n, b in model.named_buffers() if "running_" in n}
    before = _step(model)  # calls model.train(), which keeps the locked BatchNorms in eval mode
    last = {n for n, _ in model.named_parameters() if n.startswith("visual.trunk.encoder.blocks.2.")}
    assert {n for n, p in model.visual.named_parameters(prefix="visual") if p.requires_grad} == last
    assert _changed(model, before, "visual.") <= last and _changed(model, before, "visual.")
    moved = {n for n, b in model.named_buffers() if n in stats and not torch.equal(b, stats[n])}
    assert moved and all(n.startswith("visual.trunk.encoder.blocks.2.") for n in moved)
    assert not model.visual.trunk.embeddings.batchnorm.training and model.visual.trunk.encoder.blocks[2].training
    with pytest.raises(ValueError, match="0 to 3 blocks"):
        model.lock_image_tower(unlocked_groups=4)


def test_hf_vision_grad_checkpointing_gives_the_same_gradients(align_pair: tuple) -> None:
    _, fresh = align_pair
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    grads, calls = [], []
    for enable in (False, True):
        model = copy.deepcopy(fresh).train()
        model.set_grad_checkpointing(enable)
        model = copy.deepcopy(model)  # a copy keeps checkpointing, on its own blocks
        assert model.visual.grad_checkpointing is enable
        count = [0]

        def hook(*_: object, count: list[int] = count) -> None:
            count[0] += 1

        model.visual.trunk.encoder.blocks[1].depthwise_conv.register_forward_hook(hook)
        torch.manual_seed(0)  # drop-connect is on; checkpointing must replay it
        model.encode_image(images).square().sum().backward()
        grads.append(model.visual.trunk.encoder.blocks[0].depthwise_conv.depthwise_conv.weight.grad)
        calls.append(count[0])
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)
    assert calls == [1, 2]  # recomputed in the backward pass
    model.set_grad_checkpointing(False)
    assert "forward" not in model.visual.trunk.encoder.blocks[0].__dict__


def test_hf_vision_tower_projection_and_bad_configs() -> None:
    config = {"model_type": "align_vision_model", **ALIGN_VISION}
    tower = HFVisionTower(VisionConfig(hf_config=config, hf_proj_type="linear", proj_bias=True), 24)
    assert tower.output_dim == 24 and tower.head_parts() == [tower.proj] and tower.proj.bias is not None
    assert tower(torch.randn(2, 3, 64, 64)).shape == (2, 24)
    with pytest.raises(ConfigError, match="model_type"):
        HFVisionTower(VisionConfig(hf_config={"image_size": 64}), 24)
    with pytest.raises(ConfigError, match="hf_proj_type"):
        VisionConfig(hf_config=config, hf_proj_type="mlp")


# -- MetaCLIP 2 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_metaclip2_matches_transformers(tmp_path: Path, act: str) -> None:
    text = dict(vocab_size=50, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=16, bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_act=act)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8, hidden_act=act)
    torch.manual_seed(0)
    reference = transformers.MetaClip2Model(transformers.MetaClip2Config(
        text_config=text, vision_config=vision, projection_dim=24, logit_scale_init_value=3.0)).eval()
    reference.save_pretrained(tmp_path)
    model = clipworks.load_checkpoint(tmp_path)
    assert (model.config.text_cfg.pool_type, model.config.text_cfg.eos_id) == ("eos", 2)
    assert model.config.quick_gelu is (act == "quick_gelu")
    assert model.config.tokenizer_cfg.type == "hf" and model.config.tokenizer_cfg.name == str(tmp_path.resolve())
    # eos (2) mid-sequence and repeated: the first one is pooled; id 49 (the highest) is where argmax would pool.
    tokens = torch.tensor([[0, 5, 6, 2, 49, 2, 1, 1], [0, 9, 49, 11, 2, 13, 14, 2], [0, 2, 49, 49, 49, 49, 49, 49],
                           [0, 3, 4, 5, 6, 7, 8, 9]])
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = reference(input_ids=tokens, pixel_values=images)
        text_features = model.encode_text(tokens)
        torch.testing.assert_close(text_features, reference.get_text_features(input_ids=tokens).pooler_output,
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(model.encode_image(images),
                                   reference.get_image_features(pixel_values=images).pooler_output, atol=1e-5, rtol=0)
        img, txt, _ = model(images, tokens)
        torch.testing.assert_close(model.logits(img, txt), out.logits_per_image, atol=1e-5, rtol=0)
        # The pure forward, without encode_text's trim, agrees too.
        torch.testing.assert_close(model.text(tokens), text_features, atol=1e-6, rtol=0)


def test_metaclip_named_configs() -> None:
    for name in ("ViT-H-14-worldwide", "ViT-H-14-worldwide-378", "ViT-bigG-14-worldwide", "ViT-bigG-14-worldwide-378"):
        cfg = get_model_config(name)
        assert (cfg.text_cfg.pool_type, cfg.text_cfg.eos_id, cfg.text_cfg.vocab_size) == ("eos", 2, 901629)
        assert (cfg.tokenizer_cfg.type, cfg.tokenizer_cfg.name) == ("hf", "facebook/xlm-v-base")
        assert cfg.preprocess_cfg.resize_mode == ("squash" if name.endswith("-378") else "shortest")
    l14 = get_model_config("ViT-L-14-worldwide-quickgelu")
    assert l14.quick_gelu and l14.text_cfg.eos_id == 1 and l14.tokenizer_cfg.clean == "canonicalize"
    # MetaCLIP 1 is open_clip's CLIP configs with QuickGELU.
    for name, width, layers in (("ViT-H-14", 1280, 32), ("ViT-bigG-14", 1664, 48), ("ViT-g-14", 1408, 40)):
        cfg = get_model_config(name + "-quickgelu")
        assert cfg.quick_gelu and (cfg.vision_cfg.width, cfg.vision_cfg.layers) == (width, layers)
    assert get_model_config("ViT-B-32-256").image_size == 256


# -- open_clip's Hugging Face text towers, named by Hub id ---------------------------------------------------

XLMR = dict(vocab_size=len(WORDS) + 4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=80, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
            eos_token_id=2)


def _xlmr_tokenizer_json() -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return tok.to_str()


@pytest.fixture()
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face cache holding the config.json and tokenizer files (no weights) of ``xlm-roberta-base``."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    repo = cache / "models--xlm-roberta-base"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    transformers.XLMRobertaConfig(**XLMR).save_pretrained(snapshot)
    (snapshot / "tokenizer.json").write_text(_xlmr_tokenizer_json())
    (snapshot / "special_tokens_map.json").write_text(json.dumps({"pad_token": "<pad>", "bos_token": "<s>",
                                                                  "eos_token": "</s>", "unk_token": "<unk>"}))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return snapshot


def _open_clip_xlmr(snapshot: Path, directory: Path) -> object:
    """open_clip's xlm-roberta-base-ViT-B-32 shape with tiny towers, saved as an open_clip hub directory whose
    config names the encoder by its Hub id, as open_clip's own does."""
    open_clip = pytest.importorskip("open_clip")
    vision = dict(image_size=32, layers=2, width=32, head_width=16, patch_size=8)
    text = dict(hf_model_name="xlm-roberta-base", hf_tokenizer_name="xlm-roberta-base", hf_pooler_type="mean_pooler")
    torch.manual_seed(0)
    model = open_clip.CustomTextCLIP(embed_dim=16, vision_cfg=vision,
                                     text_cfg={**text, "hf_model_name": str(snapshot), "hf_model_pretrained": False})
    model.eval()
    from safetensors.torch import save_file

    directory.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / "open_clip_model.safetensors"))
    (directory / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": {"embed_dim": 16, "vision_cfg": vision, "text_cfg": text},
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }))
    return model


def test_open_clip_xlm_roberta_hub_directory_matches_open_clip(hub_cache: Path, tmp_path: Path) -> None:
    reference = _open_clip_xlmr(hub_cache, tmp_path / "oc")
    model = clipworks.load_checkpoint(tmp_path / "oc")  # the cache has no XLM-R weights: none are asked for
    assert model.config.text_cfg.hf_proj_type == "mlp"  # open_clip's default where its config says nothing
    assert model.config.text_cfg.hf_config["model_type"] == "xlm-roberta"
    tokenizer = clipworks.get_tokenizer(str(tmp_path / "oc"))
    tokens = tokenizer(CAPTIONS + ["a photo of the red moon and an unknown word"])
    assert tokens[0, :7].tolist() == [0, 4, 5, 6, 4, 7, 2] and tokens[0, 7:].eq(1).all()  # <s> … </s> <pad>…
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens), reference.encode_text(tokens), atol=1e-5, rtol=0)
        torch.testing.assert_close(model.encode_image(images), reference.encode_image(images), atol=1e-5, rtol=0)

    saved = clipworks.save_pretrained(model, tmp_path / "native")  # self-contained: encoder config embedded
    shutil.rmtree(hub_cache.parent.parent)
    loaded = clipworks.load_checkpoint(saved)
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(tokens), model.encode_text(tokens))


def test_named_hf_text_configs_resolve_their_encoder_through_the_cache(hub_cache: Path) -> None:
    for name, encoder, quick in (("xlm-roberta-base-ViT-B-32", "xlm-roberta-base", False),
                                 ("roberta-ViT-B-32", "roberta-base", True),
                                 ("xlm-roberta-large-ViT-H-14", "xlm-roberta-large", False)):
        cfg = get_model_config(name)
        assert (cfg.text_cfg.hf_model_name, cfg.text_cfg.hf_pooler_type, cfg.text_cfg.hf_proj_type) == (
            encoder, "mean", "mlp")
        assert (cfg.tokenizer_cfg.type, cfg.tokenizer_cfg.name, cfg.quick_gelu) == ("hf", encoder, quick)
    # The named configs embed their encoder's architecture, so they build with nothing downloaded …
    named = HFTextTower(dataclasses.replace(get_model_config("xlm-roberta-base-ViT-B-32").text_cfg,
                                            hf_model_pretrained=False), 512)
    assert named.hf_config["hidden_size"] == 768 and len(named.blocks()) == 12
    # … and a config naming only the Hub id reads the encoder's config.json through the cache.
    text_cfg = dataclasses.replace(get_model_config("xlm-roberta-base-ViT-B-32").text_cfg, hf_config=None)
    tower = HFTextTower(dataclasses.replace(text_cfg, hf_model_pretrained=False), 512)
    assert tower.pad_id == 1 and tower.hf_config["hidden_size"] == 32 and len(tower.blocks()) == 2
    assert tower(torch.tensor([[0, 4, 5, 2, 1, 1]])).shape == (1, 512)
    # Asked for the encoder's own weights, which the cache does not hold: an error naming the repo.
    with pytest.raises(PretrainedError, match="'xlm-roberta-base'.*pretrained weights"):
        HFTextTower(text_cfg, 512)
    with pytest.raises(PretrainedError, match="'roberta-base'"):
        HFTextTower(dataclasses.replace(get_model_config("roberta-ViT-B-32").text_cfg, hf_config=None), 512)


def test_hub_encoder_weights_come_from_the_cache(hub_cache: Path) -> None:
    torch.manual_seed(7)
    encoder = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(**XLMR), add_pooling_layer=False)
    encoder.save_pretrained(hub_cache)
    tower = HFTextTower(TextConfig(hf_model_name="xlm-roberta-base"), 16)
    expected = encoder.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in tower.transformer.state_dict().items())
