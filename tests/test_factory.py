"""The open_clip/transformers-shaped API: names, transforms, tokenizers from configs alone, from_pretrained."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import clipworks
from clipworks import CheckpointError, ConfigError, PretrainedError
from clipworks.cli import app
from clipworks.image.transforms import ImageTransform

runner = CliRunner()


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("factory") / "tiny"
    torch.manual_seed(0)
    clipworks.create_model("tiny-vit").save_pretrained(directory)
    return directory


def test_create_model_and_transforms_returns_open_clips_triple() -> None:
    model, train, val = clipworks.create_model_and_transforms("tiny-vit")
    assert isinstance(train, ImageTransform) and train.train and isinstance(val, ImageTransform) and not val.train
    assert val.image_size == model.image_size == 32 and not model.training
    image = Image.new("RGB", (50, 40), (200, 10, 10))
    assert val(image).shape == train(image).shape == (3, 32, 32)
    model, preprocess = clipworks.create_model_from_pretrained("tiny-vit")
    assert preprocess.image_size == 32


def test_names_spelled_with_a_slash_and_precision() -> None:
    a = clipworks.create_model("ViT-B/32", precision="bf16")
    assert a.config.vision_cfg.patch_size == 32 and next(a.parameters()).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="precision"):
        clipworks.create_model("tiny-vit", precision="fp8")  # type: ignore[arg-type]


def test_unknown_pretrained_tag_lists_the_models_tags() -> None:
    with pytest.raises(PretrainedError) as e:
        clipworks.create_model("ViT-B-32", pretrained="laion9b_nope")
    assert "laion9b_nope" in str(e.value) and "openai" in str(e.value) and "laion2b_s34b_b79k" in str(e.value)
    with pytest.raises(PretrainedError, match="no pretrained weights are registered for model 'tiny-vit'"):
        clipworks.create_model("tiny-vit", pretrained="openai")
    assert ("ViT-B-32", "laion2b_s34b_b79k") in clipworks.list_pretrained()
    assert "ViT-B-32:openai" in clipworks.list_pretrained(as_str=True)
    assert "openai" in clipworks.list_pretrained_tags_by_model("ViT-B/32")


def test_pretrained_path_is_read_into_the_named_config(native: Path) -> None:
    file = native.parent / "tiny.pt"
    torch.save(clipworks.load_checkpoint(native).state_dict(), file)
    a = clipworks.create_model("tiny-vit", pretrained=str(file))
    b = clipworks.create_model(str(native))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a.encode_image(x), b.encode_image(x))
    with pytest.raises(ConfigError, match="already names its weights"):
        clipworks.create_model(str(native), pretrained="openai")


def test_from_pretrained_and_save_pretrained_round_trip(native: Path, tmp_path: Path) -> None:
    model = clipworks.Clip.from_pretrained(native)
    model.save_pretrained(tmp_path / "again")
    again = clipworks.Clip.from_pretrained(str(tmp_path / "again"))
    tokens = clipworks.tokenize(["a dog on a skateboard"])
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), again.encode_text(tokens))
    model.save_pretrained(tmp_path / "hf", format="hf")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "clip"


def test_config_only_reads_do_not_touch_the_weights(native: Path, tmp_path: Path) -> None:
    """get_tokenizer(path) and `clipworks info PATH` answer from the config: they work with no weights file."""
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((native / "config.json").read_text())
    tokenizer = clipworks.get_tokenizer(str(bare))
    assert tokenizer(["a cat"]).shape == (1, 77)
    r = runner.invoke(app, ["info", str(bare)])
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["format"] == "native" and info["vision_tower"] == "vit" and info["parameters"] > 0
    assert info["preprocess"]["size"] == 32 and info["tokenizer"]["type"] == "clip"
    with pytest.raises(CheckpointError, match="no weights file"):
        clipworks.load_checkpoint(bare)


def test_tokenizers_and_transforms_pickle() -> None:
    """Spawned data-loader workers, process pools and Ray actors receive them pickled."""
    tokenizer = clipworks.get_tokenizer("tiny-vit")
    tokenizer(["warm the cache"])
    again = pickle.loads(pickle.dumps(tokenizer))
    assert torch.equal(again(["a cat", "ﬁne &amp; dandy"]), tokenizer(["a cat", "ﬁne &amp; dandy"]))
    _, _, val = clipworks.create_model_and_transforms("tiny-vit")
    assert pickle.loads(pickle.dumps(val)).image_size == 32


def test_pretrained_cli_lists_the_registry() -> None:
    r = runner.invoke(app, ["pretrained", "ViT-B/32"])
    assert r.exit_code == 0 and "laion2b_s34b_b79k" in r.stdout and "laion/CLIP-ViT-B-32" in r.stdout
    r = runner.invoke(app, ["pretrained", "tiny-vit"])
    assert r.exit_code == 1 and "no pretrained weights" in r.stderr


def test_only_project_errors_are_one_line_user_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A genuine bug (here a TypeError inside the library) keeps its traceback instead of becoming a red line."""
    import clipworks.cli.models as models

    def broken(*args: object, **kwargs: object) -> None:
        raise TypeError("a bug")

    monkeypatch.setattr(models, "describe", broken)
    r = runner.invoke(app, ["info", "tiny-vit"])
    assert r.exit_code != 0 and isinstance(r.exception, TypeError)
