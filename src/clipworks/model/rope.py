"""2-D rotary position embedding of patch tokens, as EVA-02 uses it (timm's ``RotaryEmbeddingCat``).

Each head's ``D`` channels are split in half between the two image axes: the first ``D/2`` rotate with the
patch's row, the last ``D/2`` with its column. Within each half, channel pairs ``(2i, 2i+1)`` rotate together
(the interleaved layout) by the angle ``position · 10000^(-i/(D/4))``, ``i < D/4``. Positions are patch indices
rescaled to the grid the model was trained on (``ref_size``): EVA-02 defines its frequencies on a 16×16 grid,
so a 14×14 (B/16 at 224) or 24×24 (L/14 at 336) grid sees positions ``index · 16 / grid``.

The table is a constant of the grid, built once (``build_rope``) and kept by the tower as a buffer;
``apply_rope`` rotates the last ``rope.shape[0]`` tokens and leaves the leading (class) tokens alone.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError

TEMPERATURE = 10000.0

__all__ = ["apply_rope", "build_rope"]


def build_rope(grid: int, head_dim: int, ref_size: int) -> torch.Tensor:
    """``[grid², 2·head_dim]`` in float32: the sines, then the cosines, of each patch's rotation angles, patches
    in row-major order and every angle repeated for the two channels of its pair."""
    if head_dim % 4:
        raise ConfigError(f"a 2-D rotary embedding needs a head width divisible by 4, got {head_dim}")
    bands = head_dim // 4
    freqs = 1.0 / (TEMPERATURE ** (torch.arange(bands, dtype=torch.float32) / bands))
    pos = torch.arange(grid, dtype=torch.float32) / grid * ref_size
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")
    coords = torch.stack([rows, cols], dim=-1).reshape(grid * grid, 2)      # [N, (row, col)]
    angles = (coords.unsqueeze(-1) * freqs).flatten(1)                      # [N, row bands + col bands]
    angles = angles.repeat_interleave(2, dim=-1)                            # one angle per channel pair
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[…, tokens, D]``'s last ``rope.shape[0]`` tokens by ``rope`` ``[n, 2D]``; earlier tokens pass.

    Computed in the wider of the two dtypes and cast back to ``x``'s, as timm does under autocast."""
    n, d = rope.shape[0], x.shape[-1]
    sin, cos = rope[:, :d], rope[:, d:]
    head, tail = x[..., : x.shape[-2] - n, :], x[..., x.shape[-2] - n :, :]
    # (x0, x1, x2, x3, …) → (-x1, x0, -x3, x2, …): each pair turned by 90°
    turned = torch.stack([-tail[..., 1::2], tail[..., 0::2]], dim=-1).reshape(tail.shape)
    return torch.cat([head, (tail * cos + turned * sin).to(x.dtype)], dim=-2)
