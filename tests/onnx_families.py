"""One tiny model per tower family clipworks loads, as an ``Encoder``: what the ONNX export tests and
``bench/onnx_parity.py`` export. Random weights (BatchNorm statistics randomised too, so they are not the identity);
the shapes are each family's, scaled down. Hugging Face text towers get a small WordPiece tokenizer made here.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from clipworks import Clip, ClipConfig
from clipworks.encoder import Encoder, ModelRef
from clipworks.factory import model_config
from clipworks.image.transforms import image_transform
from clipworks.model.config import TextConfig, TokenizerConfig
from clipworks.text import build_tokenizer

WORDS = ["a", "photo", "of", "cat", "dog", "the", "moon", "rocket", "red", "on", "an", "astronaut", "coffee", "cup",
         "diagram", "solar", "system", "two", "dogs", "playing", "in", "snow", "at", "dusk", "riding", "horse"]
SIGLIP = {
    "embed_dim": 32, "init_logit_bias": -10,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "layers": 2, "width": 32, "head_width": 8, "class_token": False,
                   "no_ln_pre": True, "patch_bias": True, "pool_type": "map", "proj_type": "none",
                   "act_kwargs": {"approximate": "tanh"}, "norm_kwargs": {"eps": 1e-6}},
    "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 4, "layers": 2, "no_causal_mask": True,
                 "pool_type": "last", "proj_bias": True, "act_kwargs": {"approximate": "tanh"},
                 "norm_kwargs": {"eps": 1e-6}},
}
EVA_VISION = {"image_size": 32, "patch_size": 8, "layers": 2, "width": 64, "head_width": 16, "mlp_ratio": 8 / 3,
              "no_ln_pre": True, "norm_kwargs": {"eps": 1e-6}, "scale_attn_inner": True, "scale_fc": True,
              "patch_bias": True, "k_bias": False, "mlp_type": "swiglu", "rope": True, "rope_ref_size": 16,
              "proj_bias": True}
SMALL_TEXT = {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
HF_TEXT = {  # transformers configs of a 2-layer, 32-wide encoder
    "bert": {"model_type": "bert", "vocab_size": 40, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 4, "intermediate_size": 37, "max_position_embeddings": 40, "pad_token_id": 0},
    "xlm-roberta": {"model_type": "xlm-roberta", "vocab_size": 40, "hidden_size": 32, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "intermediate_size": 37, "max_position_embeddings": 40,
                    "pad_token_id": 1, "type_vocab_size": 1},
}
ALIGN_VISION = {"image_size": 64, "width_coefficient": 0.25, "depth_coefficient": 0.25, "hidden_dim": 64,
                "kernel_sizes": [3, 3, 5], "in_channels": [32, 16, 24], "out_channels": [16, 24, 64],
                "strides": [1, 2, 2], "num_block_repeats": [1, 2, 2], "expand_ratios": [1, 6, 6],
                "depthwise_padding": []}


def bert_tokenizer_dir(directory: Path) -> Path:
    """A WordPiece tokenizer (31 ids) saved by transformers: the tokenizer of the tiny Hugging Face text towers."""
    import transformers

    if not (directory / "tokenizer_config.json").is_file():
        directory.mkdir(parents=True, exist_ok=True)
        vocab = directory / "vocab.txt"
        vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
        transformers.BertTokenizer(vocab_file=str(vocab), model_max_length=64).save_pretrained(directory)
    return directory


def randomize_batchnorm(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if m.weight is not None:
                    m.weight.copy_(1 + torch.randn(m.num_features, generator=g) * 0.1)
                    m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def encoder_of(name: str, clip: Clip, tokenizer_dir: Path | None = None) -> Encoder:
    clip = clip.eval()
    randomize_batchnorm(clip)
    cfg = clip.config
    tok_cfg = cfg.tokenizer_cfg if tokenizer_dir is None else TokenizerConfig(type="hf", name=str(tokenizer_dir))
    tokenizer = build_tokenizer(tok_cfg, cfg.text_cfg.context_length)
    return Encoder(clip, image_transform(cfg.preprocess()), tokenizer, ModelRef(name, None, f"random:{name}",
                                                                                  cfg.embed_dim))


def _clip(data: dict) -> Clip:
    torch.manual_seed(0)
    return Clip(ClipConfig.from_dict(copy.deepcopy(data)))


def _hf_text(kind: str, tok: Path) -> Clip:
    base = model_config("tiny-vit")
    text = TextConfig(hf_model_name=str(tok), hf_config=HF_TEXT[kind], hf_model_pretrained=False, context_length=16,
                      hf_pooler_type="mean")
    torch.manual_seed(0)
    return Clip(dataclasses.replace(base, text_cfg=text, tokenizer_cfg=TokenizerConfig(type="hf", name=str(tok))))


def _timm(vision: dict, **text: object) -> Clip:
    return _clip({"embed_dim": 32, "vision_cfg": vision, "text_cfg": {**SMALL_TEXT, **text}})


def _align(tok: Path) -> Clip:
    import transformers

    import clipworks

    directory = tok.parent / "align"
    if not (directory / "config.json").is_file():
        torch.manual_seed(0)
        config = transformers.AlignConfig(text_config={**HF_TEXT["bert"], "max_position_embeddings": 80},
                                          vision_config=ALIGN_VISION, projection_dim=16, temperature_init_value=0.5)
        transformers.AlignModel(config).save_pretrained(directory)
    return clipworks.load_checkpoint(directory)


def families(root: Path) -> dict[str, Callable[[], Encoder]]:
    """name -> a builder of that family's tiny encoder; ``root`` holds the tokenizer and ALIGN directories."""
    tok = root / "bert-tokenizer"

    def hf(build: Callable[[Path], Clip], name: str) -> Callable[[], Encoder]:
        return lambda: encoder_of(name, build(bert_tokenizer_dir(tok)), tok)

    return {
        "clip-vit": lambda: encoder_of("clip-vit", _clip(model_config("tiny-vit").to_dict())),
        "clip-resnet": lambda: encoder_of("clip-resnet", _clip(model_config("tiny-rn").to_dict())),
        "siglip": hf(lambda t: _clip(SIGLIP), "siglip"),
        "eva-rope": lambda: encoder_of("eva-rope", _clip({"embed_dim": 24, "vision_cfg": EVA_VISION,
                                                          "text_cfg": SMALL_TEXT})),
        "timm-convnext": lambda: encoder_of("timm-convnext", _timm(
            {"image_size": 64, "timm_model_name": "test_convnext", "timm_pool": "", "timm_proj": "linear"})),
        "timm-attnpool": lambda: encoder_of("timm-attnpool", _timm(
            {"image_size": 64, "timm_model_name": "resnet10t", "timm_pool": "rot_attn", "timm_proj": ""})),
        "mobileclip": lambda: encoder_of("mobileclip", _timm(
            {"image_size": 64, "timm_model_name": "fastvit_mci0", "timm_pool": "avg", "timm_proj": None},
            no_causal_mask=True)),
        "hf-bert": hf(lambda t: _hf_text("bert", t), "hf-bert"),
        "hf-xlm-roberta": hf(lambda t: _hf_text("xlm-roberta", t), "hf-xlm-roberta"),
        "align-efficientnet": hf(_align, "align-efficientnet"),
    }
