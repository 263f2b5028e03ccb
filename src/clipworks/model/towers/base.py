"""What every tower is to the rest of clipworks: a module that embeds a batch, seen as stem → blocks → head.

``Clip``, LiT locking, FSDP sharding, activation checkpointing and the optimizer's decay rules all go through
this interface, never through a tower's class, so a new tower kind is a new file and nothing else changes.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import ConfigError

Part = nn.Module | nn.Parameter


class Tower(nn.Module):
    """``forward(x) -> [B, output_dim]`` is the pure embedding: no data-dependent shapes, no host syncs.

    ``blocks()`` are the repeated units (transformer blocks, ResNet stages): the granularity of LiT's
    ``unlocked`` count, of FSDP shard units and of activation checkpointing. ``head_parts()`` is what comes after the
    last block (final norm, pooling, projection): unlocking any block unlocks it too.
    """

    output_dim: int

    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError

    def head_parts(self) -> list[Part]:
        raise NotImplementedError

    def no_weight_decay(self) -> set[str]:
        """Names (relative to the tower) of parameters exempt from weight decay beyond gains and biases:
        embeddings, class tokens, attention-pool probes."""
        return set()

    def set_patch_dropout(self, prob: float) -> None:
        """Drop this fraction of patch tokens while training (FLIP); towers without patch tokens refuse it."""
        if prob:
            raise ConfigError(f"patch_dropout is not supported by a {type(self).__name__} image tower")

    @property
    def grad_checkpointing(self) -> bool:
        return bool(getattr(self, "_grad_checkpointing", False))

    @grad_checkpointing.setter
    def grad_checkpointing(self, enable: bool) -> None:
        self._grad_checkpointing = enable
        self.set_grad_checkpointing(enable)

    def set_grad_checkpointing(self, enable: bool) -> None:
        """Recompute each block's activations in the backward pass; towers built on ``Transformer`` get it free."""
        for module in self.modules():
            if module is not self and hasattr(module, "grad_checkpointing") and not isinstance(module, Tower):
                module.grad_checkpointing = enable


GROUP = 32  # rows per length group in ``encode_grouped``: big enough that each group's matmuls stay efficient


class TextTower(Tower):
    """A text tower also says how its input may be shortened before the pure forward (``trim``)."""

    def lengths(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """Per row, how many leading columns can change that row's output; None: all of them (no trimming)."""
        return None

    def trim(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` with trailing columns that cannot change the output dropped (none by default).

        A causal tower pooled at the end token ignores what follows it, so a batch of short captions need not
        pay for 77 positions. This reads the batch (a host sync), so it runs in the user-facing and training
        paths, never inside ``forward``.
        """
        lengths = self.lengths(tokens) if tokens.numel() else None
        return tokens if lengths is None else tokens[:, : max(int(lengths.max()), 1)]

    def encode_grouped(self, tokens: torch.Tensor, group: int = GROUP) -> torch.Tensor:
        """``forward`` of a batch with rows of mixed lengths, run as groups of ``group`` rows of similar length, each
        trimmed to its own longest row: a batch of mostly short captions with a few long ones then pays for the
        long ones only in their group (3-10 tokens against 20-40 on real captions). Each row's result is what
        ``forward`` gives it alone, up to float summation order."""
        lengths = self.lengths(tokens) if tokens.shape[0] > group else None
        if lengths is None:
            return self(self.trim(tokens))
        order = lengths.argsort()
        out: torch.Tensor | None = None
        for rows in order.split(group):
            features = self(tokens[rows, : max(int(lengths[rows].max()), 1)])
            if out is None:
                out = features.new_empty((tokens.shape[0], *features.shape[1:]))
            out[rows] = features
        assert out is not None
        return out

    def token_states(self, tokens: torch.Tensor, layer: int = -1, norm: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooled features, per-token hidden states ``[B, L, width]``) for diffusion conditioning."""
        raise NotImplementedError(f"return_tokens needs a text tower with per-token states; {type(self).__name__} "
                                  "returns pooled features only")
