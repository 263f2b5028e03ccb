"""Strict state-dict loading: every key present, none extra, every shape equal — or an error that says which."""

from __future__ import annotations

import torch
from torch import nn

from .errors import CheckpointError

# Buffers some writers save and others don't; they carry no learned information.
_OPTIONAL = ("num_batches_tracked",)


def _listing(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(_OPTIONAL)]
    unexpected = [k for k in state if k not in expected]
    for key, tensor in state.items():
        if key in expected and tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{source}: shape mismatch at {key!r}: checkpoint has {tuple(tensor.shape)}, "
                f"model expects {tuple(expected[key].shape)}"
            )
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_listing(unexpected)}")
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=False)
