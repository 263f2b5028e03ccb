"""Read tensors from any file a CLIP checkpoint comes in: safetensors, torch pickles, TorchScript archives."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from .errors import CheckpointError

# Entries of OpenAI's TorchScript archives that are metadata, not weights.
_OPENAI_JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size")


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in zf.namelist())


def read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata) from one file; metadata holds e.g. open_clip's ``name`` when the file has it."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory without a config.json; expected a checkpoint file or model directory")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    meta: dict[str, Any] = {}
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path)), meta
        if is_torchscript(path):
            with warnings.catch_warnings():  # torch deprecates TorchScript; OpenAI's weights still ship as it
                warnings.simplefilter("ignore", FutureWarning)
                sd = torch.jit.load(str(path), map_location="cpu").state_dict()
            meta["torchscript"] = True
            return {k: v for k, v in sd.items() if k not in _OPENAI_JIT_EXTRAS}, meta
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:  # arbitrary bytes make the unpickler raise almost anything (IndexError, KeyError, …)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: not a safetensors, torch or TorchScript file ({first})") from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        meta.update({k: v for k, v in obj.items() if k in ("name", "epoch", "step") and isinstance(v, (str, int))})
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict of tensors (found {type(obj).__name__})")
    return {k.removeprefix("module."): v for k, v in obj.items()}, meta
