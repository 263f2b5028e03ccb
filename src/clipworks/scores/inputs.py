"""What every score takes: images as PIL images or as their embeddings, and small JSON/TOML settings files.

Scores accept embeddings so a caller (the CLI after ``encode_files``, the service, an index) embeds each image once
and computes CLIP Score, quality and concept flags from the same vectors.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..errors import ConfigError, MissingFileError, UsageError
from ..fileio import atomic_file

if TYPE_CHECKING:
    from ..encoding import EncoderLike as Encoder

Images = Sequence[Image.Image] | np.ndarray
SETTINGS_SUFFIXES = (".json", ".toml")


def image_features(encoder: Encoder, images: Images) -> np.ndarray:
    """``float32 [N, D]`` L2-normalised: ``images`` embedded, or checked and normalised if they are embeddings."""
    if isinstance(images, np.ndarray):
        if images.ndim != 2 or images.shape[1] != encoder.embed_dim:
            raise UsageError(f"image embeddings must be [N, {encoder.embed_dim}] for {encoder.ref.describe()}, "
                             f"got shape {list(images.shape)}")
        feats = np.asarray(images, dtype=np.float32)
        if not np.isfinite(feats).all():
            raise UsageError("image embeddings contain NaN or infinity")
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        if (norms == 0).any():
            raise UsageError(f"image embedding {int(np.flatnonzero(norms[:, 0] == 0)[0])} is all zeros")
        return feats / norms
    for i, im in enumerate(images):
        if not isinstance(im, Image.Image):
            raise UsageError(f"image {i} is {type(im).__name__}; give PIL images or an [N, D] array of embeddings")
    return encoder.encode_images(list(images))


def check_texts(texts: Sequence[str], what: str) -> list[str]:
    if isinstance(texts, str):
        raise UsageError(f"{what} must be a list of texts, not one string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise UsageError(f"{what} {i} is {type(t).__name__}, expected str")
    return out


def read_settings(path: str | Path, what: str) -> dict[str, Any]:
    """A ``.json`` or ``.toml`` file holding one table; parse errors name the file, line and column."""
    path = Path(path)
    if path.suffix.lower() not in SETTINGS_SUFFIXES:
        raise ConfigError(f"{what} file {path}: expected a .json or .toml file")
    if not path.is_file():
        raise MissingFileError(f"{what} file {path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of {what} names at the top, got a {type(data).__name__}")
    return data


def write_settings(path: str | Path, data: dict[str, dict[str, Any]]) -> None:
    """``data`` (names → tables of strings, string lists and numbers) as ``.json`` or ``.toml``, atomically."""
    path = Path(path)
    if path.suffix.lower() == ".toml":
        text = "".join(f"[{_toml(name)}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in table.items() if v is not None)
                       + "\n" for name, table in data.items())
    elif path.suffix.lower() == ".json":
        text = json.dumps({n: {k: v for k, v in t.items() if v is not None} for n, t in data.items()},
                          indent=2, ensure_ascii=False) + "\n"
    else:
        raise ConfigError(f"{path}: expected a .json or .toml file")
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _toml(value: Any) -> str:
    """A TOML literal: JSON's string escapes are TOML's basic-string escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ConfigError(f"cannot write {value} to TOML")
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise ConfigError(f"cannot write a {type(value).__name__} to TOML")


def number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def text_list(value: Any, where: str, allow_empty: bool = False) -> tuple[str, ...]:
    """A string or a list of non-empty strings."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v.strip() for v in items):
        raise ConfigError(f"{where}: expected a non-empty string or a list of them, got {value!r}")
    if not items and not allow_empty:
        raise ConfigError(f"{where}: is empty")
    return tuple(items)
