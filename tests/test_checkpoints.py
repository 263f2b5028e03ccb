"""Weights made by open_clip and transformers, saved in their own formats, must give the same embeddings here."""

from __future__ import annotations

import os
import random

import pytest
import torch
from safetensors.torch import save_file

import clipworks
from clipworks import CheckpointError, load_checkpoint, save_pretrained
from clipworks.model.config import get_model_config

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

TOL = 1e-5


def open_clip_model(name: str, quick_gelu: bool) -> torch.nn.Module:
    d = get_model_config(name).to_dict()
    torch.manual_seed(0)
    return open_clip.CLIP(embed_dim=d["embed_dim"], vision_cfg=d["vision_cfg"], text_cfg=d["text_cfg"], quick_gelu=quick_gelu).eval()


def inputs(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    tokens = clipworks.tokenize(["a photo of a cat", "a diagram", "ﬁne &amp; dandy, with a longer caption " * 3])
    return torch.randn(3, 3, size, size), tokens


def max_diff(ref_img, ref_txt, model, x, t) -> float:
    with torch.no_grad():
        return max((ref_img - model.encode_image(x)).abs().max().item(), (ref_txt - model.encode_text(t)).abs().max().item())


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn", "ViT-B-32", "RN50"])
@pytest.mark.parametrize("quick_gelu", [False, True])
def test_open_clip_state_dict_parity(tmp_path, name, quick_gelu):
    ref = open_clip_model(name, quick_gelu)
    x, t = inputs(ref.visual.image_size[0] if isinstance(ref.visual.image_size, tuple) else ref.visual.image_size)
    with torch.no_grad():
        ri, rt = ref.encode_image(x), ref.encode_text(t)
    path = tmp_path / "oc.pt"
    torch.save(ref.state_dict(), path)
    model = load_checkpoint(path, config=name + ("-quickgelu" if quick_gelu else ""))
    assert max_diff(ri, rt, model, x, t) <= TOL
    if name.startswith("tiny"):
        # without a config the architecture is read off the shapes, with OpenAI's QuickGELU
        inferred = load_checkpoint(path)
        assert inferred.config.quick_gelu and inferred.config.vision_cfg == model.config.vision_cfg
        if quick_gelu:
            assert max_diff(ri, rt, inferred, x, t) <= TOL


def test_open_clip_containers(tmp_path):
    ref = open_clip_model("tiny-vit", quick_gelu=False)
    x, t = inputs(32)
    with torch.no_grad():
        ri, rt = ref.encode_image(x), ref.encode_text(t)
    sd = ref.state_dict()
    # a training checkpoint: {"state_dict": ...} with DDP's module. prefix, and the model name that says GELU
    torch.save({"epoch": 3, "name": "tiny-vit", "state_dict": {"module." + k: v for k, v in sd.items()}}, tmp_path / "epoch_3.pt")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "oc.safetensors")
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "open_clip_config.json").write_text(__import__("json").dumps({"model_cfg": get_model_config("tiny-vit").to_dict()}))
    save_file({k: v.contiguous() for k, v in sd.items()}, hub / "open_clip_model.safetensors")
    for path, cfg in [(tmp_path / "epoch_3.pt", None), (tmp_path / "oc.safetensors", "tiny-vit"), (hub, None)]:
        assert max_diff(ri, rt, load_checkpoint(path, config=cfg), x, t) <= TOL, path


def test_openai_torchscript_archive(tmp_path):
    ref = open_clip_model("tiny-vit", quick_gelu=True)
    x, t = inputs(32)
    with torch.no_grad():
        ri, rt = ref.encode_image(x), ref.encode_text(t)
    scripted = torch.jit.script(ref)
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.save(scripted, str(path))
    model = load_checkpoint(path)  # no config: shapes + OpenAI's QuickGELU
    assert max_diff(ri, rt, model, x, t) <= TOL


def hf_model(**vision) -> transformers.CLIPModel:
    torch.manual_seed(0)
    v = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    v.update(vision)
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2),
        vision_config=v, projection_dim=32)
    return transformers.CLIPModel(cfg).eval()


def hf_features(model, x, t):
    with torch.no_grad():
        img, txt = model.get_image_features(pixel_values=x), model.get_text_features(input_ids=t)
    return getattr(img, "pooler_output", img), getattr(txt, "pooler_output", txt)


@pytest.mark.parametrize("size", ["tiny", "ViT-B-32"])
def test_hugging_face_parity_and_round_trip(tmp_path, size):
    if size == "tiny":
        ref = hf_model()
    else:
        torch.manual_seed(0)
        ref = transformers.CLIPModel(transformers.CLIPConfig()).eval()  # transformers' defaults are ViT-B/32
    image_size = ref.config.vision_config.image_size
    x, t = inputs(image_size)
    ri, rt = hf_features(ref, x, t)
    ref.save_pretrained(tmp_path / "hf")
    model = load_checkpoint(tmp_path / "hf")
    assert model.config.quick_gelu
    assert max_diff(ri, rt, model, x, t) <= TOL
    save_pretrained(model, tmp_path / "export", format="hf")
    again = transformers.CLIPModel.from_pretrained(tmp_path / "export").eval()
    ai, at = hf_features(again, x, t)
    assert (ai - ri).abs().max() <= TOL and (at - rt).abs().max() <= TOL
    processor = transformers.CLIPProcessor.from_pretrained(tmp_path / "export")
    assert processor.tokenizer("a photo of a cat")["input_ids"] == t[0][: int(t[0].argmax()) + 1].tolist()


def test_hugging_face_bin_weights_and_token_states(tmp_path):
    ref = hf_model()
    ref.save_pretrained(tmp_path / "hf")
    sd = __import__("safetensors.torch", fromlist=["load_file"]).load_file(tmp_path / "hf" / "model.safetensors")
    os.remove(tmp_path / "hf" / "model.safetensors")
    torch.save(sd, tmp_path / "hf" / "pytorch_model.bin")
    model = load_checkpoint(tmp_path / "hf")
    _, t = inputs(32)
    with torch.no_grad():
        out = ref.text_model(input_ids=t, output_hidden_states=True)
        _, last = model.encode_text(t, return_tokens=True)
        _, penultimate = model.encode_text(t, return_tokens=True, token_layer=-2, token_norm=False)
    assert (out.last_hidden_state - last).abs().max() <= TOL  # what Stable Diffusion 1.x conditions on
    assert (out.hidden_states[-2] - penultimate).abs().max() <= TOL  # SDXL's choice


def test_native_round_trip_is_exact(tmp_path):
    model = clipworks.create_model("tiny-rn")
    save_pretrained(model, tmp_path / "native")
    again = load_checkpoint(tmp_path / "native")
    assert again.config == model.config
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def test_resnet_has_no_hf_form_and_nothing_is_written(tmp_path):
    with pytest.raises(CheckpointError, match="ResNet"):
        save_pretrained(clipworks.create_model("tiny-rn"), tmp_path / "out", format="hf")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"\x80\x02}q\x00(X"] + [random.Random(seed).randbytes(n) for seed in range(4) for n in (16, 4096, 65536)])
def test_unreadable_files_name_the_file(tmp_path, content):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


def test_non_clip_state_dict_is_refused(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, path)
    with pytest.raises(CheckpointError, match="does not look like a CLIP checkpoint"):
        load_checkpoint(path)


def test_shape_mismatch_names_key_and_both_shapes(tmp_path):
    path = tmp_path / "oc.pt"
    torch.save(open_clip_model("tiny-vit", False).state_dict(), path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, config="tiny-rn")
    msg = str(e.value)
    assert "visual." in msg and str(path) in msg


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    sd = open_clip_model("tiny-vit", False).state_dict()
    del sd["visual.ln_post.weight"]
    sd["visual.extra_head.weight"] = torch.zeros(3)
    path = tmp_path / "oc.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, config="tiny-vit")
    assert "visual.ln_post.weight" in str(e.value) and "visual.extra_head.weight" in str(e.value)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("width,head_width", [(1280, 80), (1408, 88), (1664, 104)])
def test_bare_state_dicts_of_h_g_bigg_towers_infer_their_head_width(tmp_path, width, head_width):
    """ViT-H/g/bigG image towers use 80/88/104-wide heads; a bare state dict does not say so, and 64-wide heads
    would load without a shape error and give wrong embeddings."""
    torch.manual_seed(0)
    ref = open_clip.CLIP(embed_dim=32, quick_gelu=True,
                         vision_cfg=dict(image_size=28, layers=1, width=width, head_width=head_width, patch_size=14),
                         text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=1, layers=1)).eval()
    torch.save(ref.state_dict(), tmp_path / "bare.pt")
    model = load_checkpoint(tmp_path / "bare.pt")
    assert model.config.vision_cfg.head_width == head_width
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert (ref.encode_image(x) - model.encode_image(x)).abs().max().item() <= TOL


def test_an_open_clip_training_checkpoint_is_read_with_the_config_it_names(tmp_path):
    ref = open_clip_model("tiny-vit", quick_gelu=False)
    torch.save({"name": "tiny-vit", "state_dict": ref.state_dict()}, tmp_path / "epoch_1.pt")
    assert load_checkpoint(tmp_path / "epoch_1.pt").config == clipworks.load_checkpoint(
        tmp_path / "epoch_1.pt", config="tiny-vit").config
