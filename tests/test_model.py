import json
import math

import pytest
import torch

import clipworks
from clipworks import ClipConfig, ConfigError
from clipworks.model.config import get_model_config


def test_unknown_model_name_lists_known_names():
    with pytest.raises(ConfigError) as e:
        get_model_config("ViT-Z-99")
    assert "ViT-B-32" in str(e.value) and "RN50" in str(e.value)


def test_unknown_config_key_is_named_with_the_known_keys():
    data = get_model_config("tiny-vit").to_dict()
    data["vision_cfg"]["patch_sise"] = 8
    with pytest.raises(ConfigError) as e:
        ClipConfig.from_dict(data)
    assert "'patch_sise'" in str(e.value) and "patch_size" in str(e.value)


def test_named_configs_are_the_documented_architectures():
    assert set(clipworks.list_models()) >= {"ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "RN50", "RN101"}
    l336 = get_model_config("ViT-L-14-336")
    assert (l336.vision_cfg.image_size, l336.vision_cfg.patch_size, l336.vision_cfg.width) == (336, 14, 1024)
    assert get_model_config("RN50").vision_cfg.layers == (3, 4, 6, 3)
    assert get_model_config("ViT-B-32-quickgelu").quick_gelu and not get_model_config("ViT-B-32").quick_gelu


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_forward_contract(name):
    model, _, preprocess = clipworks.create_model_and_transforms(name)
    tok = clipworks.get_tokenizer(name)
    size = model.image_size
    images, tokens = torch.randn(3, 3, size, size), tok(["a", "b c", "d e f"])
    img, txt, scale = model(images, tokens)
    assert img.shape == txt.shape == (3, 64)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert math.isclose(model.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    assert math.isclose(scale.item(), 1 / 0.07, rel_tol=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model(images, tokens)[2].item() == 100.0  # clamped in use
    feats, states = model.encode_text(tokens, return_tokens=True)
    assert states.shape == (3, 77, 128) and torch.allclose(feats, model.encode_text(tokens), atol=1e-5)


def test_text_pooling_is_at_end_token_and_causal():
    model = clipworks.create_model("tiny-vit")
    tok = clipworks.get_tokenizer()
    a, b = tok(["a dog"]), tok(["a dog"])
    b[0, 10:] = 5  # junk after the end token must not matter: causal mask, pooled at the end token
    assert torch.allclose(model.encode_text(a), model.encode_text(b), atol=1e-6)


def test_layer_scale_and_patch_dropout():
    cfg = get_model_config("tiny-vit")
    cfg.vision_cfg.ls_init_value = 0.1
    cfg.vision_cfg.patch_dropout = 0.5
    model = clipworks.Clip(cfg)
    assert any(k.endswith("ls_1.gamma") for k in model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    assert torch.equal(model.encode_image(x), model.encode_image(x))
    model.train()
    torch.manual_seed(0)
    assert not torch.allclose(model.encode_image(x), model.eval().encode_image(x))


def test_config_round_trips_through_json():
    cfg = get_model_config("RN50")
    again = ClipConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and cfg.diff(again) == []
    other = get_model_config("RN101")
    assert "vision_cfg.layers" in cfg.diff(other)
