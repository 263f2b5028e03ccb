"""One checkpoint directory → model, preprocessing and tokenizer, with nothing else said: raw captions and real
photos in, the reference family's embeddings out.

Each Hugging Face family is saved as its hub repos hold it — model weights and config, the tokenizer files of its
own kind (vocabularies trained in ``tokenizer_refs``), the image processor — then clipworks reads the directory
alone (``create_model_and_transforms(dir)``, ``get_tokenizer(dir)``) and transformers reads it with its processor.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import tokenizer_refs as refs
import torch
from conftest import photo

import clipworks

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

CAPTIONS = ["a photo of a cat", "An ASTRONAUT on the Moon!", "café crème brûlée &amp; naïve", "", "a_b-c (d) e.",
            "two dogs " * 40, "日本語のキャプション", "  spaces\tand\nnewlines  "]
PHOTOS = ["astronaut", "coffee", "chelsea"]
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
TINY_VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                patch_size=8)


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return refs.build(tmp_path_factory.mktemp("tokenizers"))


def _features(out: object) -> torch.Tensor:
    return out.pooler_output if hasattr(out, "pooler_output") else out  # type: ignore[union-attr]


def _vocab(directory: Path) -> int:
    return len(transformers.AutoTokenizer.from_pretrained(directory))


def _siglip(tokens: Path, directory: Path) -> tuple[object, object]:
    config = transformers.SiglipConfig(
        text_config={**TINY_TEXT, "vocab_size": _vocab(tokens), "max_position_embeddings": 64},
        vision_config=TINY_VIT)
    model = transformers.SiglipModel(config)
    return model, transformers.SiglipImageProcessorPil(size={"height": 32, "width": 32})


def _align(tokens: Path, directory: Path) -> tuple[object, object]:
    config = transformers.AlignConfig(
        text_config={**TINY_TEXT, "vocab_size": _vocab(tokens), "max_position_embeddings": 64},
        vision_config=dict(num_channels=3, image_size=40, width_coefficient=0.25, depth_coefficient=0.25,
                           hidden_dim=64, depthwise_padding=[]), projection_dim=80)  # = the top conv width
    model = transformers.AlignModel(config)
    processor = transformers.EfficientNetImageProcessorPil(
        size={"height": 46, "width": 46}, crop_size={"height": 40, "width": 40}, do_center_crop=True,
        rescale_factor=1 / 127.5, rescale_offset=True, do_normalize=False, include_top=False, resample=2)
    return model, processor


def _metaclip2(tokens: Path, directory: Path) -> tuple[object, object]:
    tok = transformers.AutoTokenizer.from_pretrained(tokens)
    config = transformers.MetaClip2Config(
        text_config={**TINY_TEXT, "vocab_size": len(tok), "max_position_embeddings": 77,
                     "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id},
        vision_config=TINY_VIT, projection_dim=24)
    model = transformers.MetaClip2Model(config)
    processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, processor


# family → (tokenizer directory kind, builder, context length the processor pads to)
FAMILIES = {"siglip": ("siglip", _siglip, 64), "siglip2-fixed": ("gemma", _siglip, 64), "align": ("bert", _align, 64),
            "metaclip2": ("xlmr", _metaclip2, 77)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_directory_alone_gives_the_reference_embeddings(family: str, tokenizer_dirs: dict[str, Path],
                                                        tmp_path: Path) -> None:
    kind, builder, context = FAMILIES[family]
    directory = tmp_path / family
    shutil.copytree(tokenizer_dirs[kind], directory)
    (directory / "config.json").unlink(missing_ok=True)  # the model's config.json replaces the tokenizer stub's
    torch.manual_seed(0)
    reference, image_processor = builder(tokenizer_dirs[kind], directory)
    reference.eval().save_pretrained(directory)
    image_processor.save_pretrained(directory)

    model, _, preprocess = clipworks.create_model_and_transforms(str(directory))
    tokenizer = clipworks.get_tokenizer(str(directory))
    assert model.config.context_length == context

    ref_tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    ids = ref_tokenizer(CAPTIONS, padding="max_length", max_length=context, truncation=True, return_tensors="pt")
    ours = tokenizer(CAPTIONS)
    assert torch.equal(ours, ids.input_ids), family

    images = [photo(name) for name in PHOTOS]
    pixels = image_processor(images, return_tensors="pt").pixel_values
    our_pixels = torch.stack([preprocess(im) for im in images])
    assert (our_pixels - pixels).abs().max().item() <= 1e-5, family

    kwargs = {} if family == "siglip" or family == "siglip2-fixed" else {"attention_mask": ids.attention_mask}
    with torch.no_grad():
        ref_text = _features(reference.get_text_features(input_ids=ids.input_ids, **kwargs))
        ref_image = _features(reference.get_image_features(pixel_values=pixels))
        text = model.encode_text(ours)
        image = model.encode_image(our_pixels)
    assert (text - ref_text).abs().max().item() <= 1e-5, family
    assert (image - ref_image).abs().max().item() <= 1e-5, family
