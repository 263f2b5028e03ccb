"""What a Hugging Face tokenizer directory says, read the way transformers 5 reads it, and what its tokenizer class
does in code that the files do not record.

transformers picks the class from ``tokenizer_config.json`` (``tokenizer_class``) unless the directory's
``config.json`` names a model type whose Hub class it overrides (``siglip2`` → ``Siglip2Tokenizer``, which
lowercases). The class then contributes behaviour of its own: ``SiglipTokenizer`` canonicalises text, Gemma-style
classes pad on the left unless the files say otherwise, each class has a default pad token. ``TokenizerDir`` gathers
all of it; ``tokenizer_config_for_dir`` turns it into the ``TokenizerConfig`` a checkpoint reader records, so a
model saved elsewhere (without the original ``config.json``) still tokenizes the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TokenizerError
from ..model.config import TokenizerConfig

TOKENIZER_JSON = "tokenizer.json"
SENTENCEPIECE_FILES = ("spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
# Every file a Hugging Face tokenizer can be made of: fetched with a model, copied into a saved one.
TOKENIZER_FILES = (TOKENIZER_JSON, "tokenizer_config.json", "special_tokens_map.json", *SENTENCEPIECE_FILES,
                   "vocab.txt", "vocab.json", "merges.txt")
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

# transformers 5 class knowledge: the Hub class a model type overrides, the class of a model type whose files name
# none, classes that pad left by default, each class's default special tokens (used when the files name none), and
# what a class does to text in code.
_MODEL_TYPE_CLASS = {"siglip2": "Siglip2Tokenizer"}
_MODEL_TYPE_DEFAULT = {"siglip": "SiglipTokenizer", "align": "BertTokenizer", "metaclip_2": "XLMRobertaTokenizer",
                       "clip": "CLIPTokenizer", "t5": "T5Tokenizer", "gemma": "GemmaTokenizer"}
_LEFT_PADDING = {"GemmaTokenizer", "Siglip2Tokenizer", "LlamaTokenizer", "CodeLlamaTokenizer", "CohereTokenizer",
                 "XLNetTokenizer"}
_DEFAULTS: dict[str, dict[str, str]] = {
    "SiglipTokenizer": {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"},
    "T5Tokenizer": {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
    "GemmaTokenizer": {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>",
                       "mask_token": "<mask>"},
    "XLMRobertaTokenizer": {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                            "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"},
    "BertTokenizer": {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                      "mask_token": "[MASK]"},
}
_DEFAULTS["Siglip2Tokenizer"] = _DEFAULTS["GemmaTokenizer"]
_DEFAULTS["RobertaTokenizer"] = _DEFAULTS["XLMRobertaTokenizer"]
_NORMALIZE = {"SiglipTokenizer": "siglip", "Siglip2Tokenizer": "lower"}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TokenizerError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise TokenizerError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _content(token: Any) -> str | None:
    """A special token as the files write it: a string or an AddedToken dict."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else None


@dataclass
class AddedToken:
    """A token matched in raw text before the model sees it (transformers' ``AddedToken``)."""

    content: str
    id: int | None = None
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False
    special: bool = True


@dataclass
class TokenizerDir:
    """The tokenizer files of one directory and the settings transformers derives from them."""

    directory: Path
    settings: dict[str, Any] = field(default_factory=dict)  # tokenizer_config.json (+ special_tokens_map.json)
    model_type: str | None = None                            # config.json's, when the directory has one

    @classmethod
    def read(cls, directory: str | Path) -> TokenizerDir:
        directory = Path(directory)
        if not directory.is_dir():
            raise TokenizerError(f"tokenizer directory {directory} does not exist")
        settings = _read_json(directory / "tokenizer_config.json")
        if "added_tokens_decoder" not in settings:
            # transformers reads special_tokens_map.json only then, and lets it override tokenizer_config.json
            for key, value in _read_json(directory / "special_tokens_map.json").items():
                if key in SPECIAL_TOKENS:
                    settings[key] = value
        model_type = _read_json(directory / "config.json").get("model_type")
        return cls(directory, settings, model_type if isinstance(model_type, str) else None)

    @property
    def tokenizer_class(self) -> str | None:
        """The class transformers' AutoTokenizer builds (``Fast`` suffix dropped: one class per family in v5)."""
        if self.model_type in _MODEL_TYPE_CLASS:
            return _MODEL_TYPE_CLASS[self.model_type]
        name = self.settings.get("tokenizer_class")
        if isinstance(name, str):
            return name.removesuffix("Fast")
        return _MODEL_TYPE_DEFAULT.get(self.model_type or "")

    @property
    def tokenizer_json(self) -> Path | None:
        path = self.directory / TOKENIZER_JSON
        return path if path.is_file() else None

    @property
    def sentencepiece_model(self) -> Path | None:
        return next((self.directory / f for f in SENTENCEPIECE_FILES if (self.directory / f).is_file()), None)

    def token(self, name: str) -> str | None:
        """A special token's text (``pad_token``…): the files', else the class's default."""
        value = _content(self.settings.get(name))
        if value is None and name not in self.settings:
            value = _DEFAULTS.get(self.tokenizer_class or "", {}).get(name)
        return value

    def flag(self, name: str) -> bool | None:
        value = self.settings.get(name)
        return value if isinstance(value, bool) else None

    @property
    def padding_side(self) -> str:
        side = self.settings.get("padding_side")
        if side in ("left", "right"):
            return side
        return "left" if self.tokenizer_class in _LEFT_PADDING else "right"

    @property
    def normalize(self) -> str:
        return _NORMALIZE.get(self.tokenizer_class or "", "none")

    def added_tokens(self) -> list[AddedToken]:
        """tokenizer_config.json's ``added_tokens_decoder``, plus the special tokens it leaves out."""
        out: list[AddedToken] = []
        decoder = self.settings.get("added_tokens_decoder")
        if isinstance(decoder, dict):
            for index, token in decoder.items():
                if isinstance(token, dict) and isinstance(token.get("content"), str):
                    out.append(AddedToken(token["content"], int(index), bool(token.get("lstrip")),
                                          bool(token.get("rstrip")), bool(token.get("single_word")),
                                          bool(token.get("special", True))))
        return out

    def describe(self) -> str:
        files = sorted(p.name for p in self.directory.iterdir()) if self.directory.is_dir() else []
        return f"{self.directory} (holds {', '.join(files) or 'nothing'})"


def tokenizer_config_for_dir(directory: str | Path, clean: str = "none", name: str | None = None) -> TokenizerConfig:
    """The ``TokenizerConfig`` a Hugging Face model directory needs, recorded explicitly: what its tokenizer class
    does in code (``normalize``) and its padding side, from ``tokenizer_config.json`` and ``config.json``. ``clean``
    is ``none`` for the Hugging Face processors (they do no open_clip cleaning); ``name`` (a Hub repo id, say)
    replaces the directory as where the files come from. Reading a config never needs the tokenizer files themselves
    (a weights-only directory still has a config); building the tokenizer does, and names what is missing."""
    files = TokenizerDir.read(directory)
    return TokenizerConfig(type="hf", name=name or str(Path(directory)), clean=clean, normalize=files.normalize,
                           padding_side=files.padding_side)
