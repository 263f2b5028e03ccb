"""Contrastive losses: CLIP's softmax (InfoNCE) and SigLIP's sigmoid loss — dense, tiled, multi-positive, distributed.

``tile_size=None`` is the dense form, written like open_clip's and equal to it. ``tile_size=t`` never holds
more than a t×t block of logits (the Inf-CL idea): a custom ``autograd.Function`` sweeps the tiles and,
because the loss is a terminal scalar, accumulates the feature gradients during that same sweep, so
backward only rescales them. The softmax needs two sweeps (logsumexps first, then gradients: 4 tile
matmuls against the dense form's 6 full ones), the sigmoid one (3, as dense). Positive pairs are masked
only inside the tiles that hold one (the diagonal tiles for plain ids), and subtracted element by element
as the dense form does, which keeps float32 results as precise as the dense ones.

Multi-positive (``group_ids``): pairs with equal ids are positives of each other. The softmax target of a
row (or column) is uniform over its positives; the sigmoid label is +1 for every positive pair. Without
ids, sample k has id k (its global index), which is the plain diagonal loss.

Distributed (``torch.distributed`` initialised, world size W > 1): features and ids are all-gathered.
DDP averages parameter gradients over ranks, and no loss rescaling is needed to make them equal the
single-process gradients on the concatenated batch B = W·n:

* ``local_loss=False``: every rank computes the same global loss ℓ on the gathered batch. The all-gather's
  backward sums each slice's gradient over ranks, so rank r gets W·∂ℓ/∂f_r and DDP's 1/W leaves ∂ℓ/∂θ;
  ``logit_scale``/``logit_bias`` see ∂ℓ/∂s on every rank, which averaging keeps.
* ``local_loss=True``: rank r's loss ℓ_r covers its own rows against all columns and Σ_r ℓ_r = W·ℓ, so the
  same two factors cancel; the rank losses average to ℓ.

``gather_with_grad=False`` skips the backward communication. For the global loss it stays exact: every
rank holds the same ∂ℓ/∂f, so the sum over ranks is W times the local slice, which is what it returns.
With ``local_loss=True`` it keeps only this rank's slice (open_clip's semantics; not exact).
Every rank must hold the same number of samples.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

# From bench/loss_memory.py (d=512, B=16384, 2-core CPU): 2048 and 4096 were equally fast within the machine's
# noise (0.40-0.73x open_clip's time), and 2048 peaks at half the memory (4-5% of open_clip's, against 6-9%).
# Smaller tiles mean more, smaller kernels, which a busy machine or a GPU charges for.
DEFAULT_TILE_SIZE = 2048


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# Recent torch names these collectives *_single and deprecates the old names, the only ones in older releases.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class _AllGather(torch.autograd.Function):
    """All-gather along dim 0. Backward hands each rank the gradient of its own slice: summed over ranks
    (a reduce-scatter) when ``reduce_grads``, else this rank's own gradient times ``grad_scale``."""

    @staticmethod
    def forward(ctx, x: Tensor, reduce_grads: bool, grad_scale: float) -> Tensor:  # type: ignore[override]
        rank, world = _world()
        out = x.new_empty((world * x.shape[0], *x.shape[1:]))
        _all_gather_single(out, x.contiguous())
        ctx.rows, ctx.rank, ctx.reduce_grads, ctx.grad_scale = x.shape[0], rank, reduce_grads, grad_scale
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        if ctx.reduce_grads:
            out = grad.new_empty((ctx.rows, *grad.shape[1:]))
            _reduce_scatter_single(out, grad.contiguous())
            return out, None, None
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows] * ctx.grad_scale, None, None


def _gather(x: Tensor, with_grad: bool, local_grad_scale: float) -> Tensor:
    return _AllGather.apply(x, with_grad, local_grad_scale)


def _gather_ids(ids: Tensor) -> Tensor:
    out = ids.new_empty(_world()[1] * ids.shape[0])
    _all_gather_single(out, ids.contiguous())
    return out


def _blocks(n: int, tile: int) -> list[slice]:
    return [slice(i, min(i + tile, n)) for i in range(0, n, tile)]


def _positive_tiles(row_ids: Tensor, col_ids: Tensor, tile: int) -> list[list[bool]]:
    """Which tiles (row block × column block) hold a positive pair, so that masks are built only there:
    the diagonal tiles for plain ids, every tile for a handful of classes."""
    m = len(col_ids)
    n_blocks = -(-m // tile)
    hit = col_ids.new_zeros(n_blocks * tile, dtype=torch.bool)
    per_row_block = []
    for rows in _blocks(len(row_ids), tile):
        hit[:m] = torch.isin(col_ids, row_ids[rows])
        per_row_block.append(hit.view(n_blocks, tile).any(1))
    return torch.stack(per_row_block).tolist()


def _pairs(row_ids: Tensor, col_ids: Tensor, rows: slice, cols: slice) -> tuple[Tensor, Tensor]:
    """Tile coordinates of the positive pairs (equal ids) in the tile ``rows × cols``."""
    return torch.nonzero(row_ids[rows, None] == col_ids[None, cols], as_tuple=True)


def _merge_lse(m: Tensor, s: Tensor, logits: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Fold a tile into a running (max, Σ exp(logit − max)) along ``dim``."""
    new = torch.maximum(m, logits.amax(dim))
    return new, s * (m - new).exp() + (logits - new.unsqueeze(dim)).exp_().sum(dim)


def _target_weights(row_ids: Tensor, col_ids: Tensor, w_row: float, w_col: float, dtype: torch.dtype
                    ) -> tuple[Tensor, Tensor]:
    """(a, b) with the soft targets ``T_ij = [id_i = id_j]·(a_i + b_j)``: a row's target mass w_row spread
    over its positive columns, a column's w_col over its positive rows."""
    _, inverse = torch.unique(torch.cat([row_ids, col_ids]), return_inverse=True)
    rows, cols = inverse[: len(row_ids)], inverse[len(row_ids) :]
    groups = int(inverse.max()) + 1
    per_col_group = torch.bincount(cols, minlength=groups).to(dtype)
    per_row_group = torch.bincount(rows, minlength=groups).to(dtype)
    return w_row / per_col_group[rows], w_col / per_row_group[cols].clamp(min=1)


class _TiledSoftmaxLoss(torch.autograd.Function):
    """``w_row·Σ_rows CE + w_col·Σ_cols CE`` of the logits ``s·x@yᵀ + b`` without a full logits matrix.

    Sweep 1 builds the row and column logsumexps online, and the positive logits where a tile holds
    positives. Sweep 2 (only when gradients are wanted) recomputes each tile, forms ∂loss/∂logits =
    w_row·softmax_rows + w_col·softmax_cols − T and accumulates the gradients at once; ∂/∂s = Σ G_ij x_i·y_j
    = Σ_i x_i·(G y)_i then costs O(N·d). b shifts every logit alike and cancels: its gradient is zero."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, y: Tensor, scale: Tensor, bias: Tensor | None, row_ids: Tensor, col_ids: Tensor,
        tile: int, w_row: float, w_col: float, want_grad: bool,
    ) -> Tensor:
        xs = x * scale
        n, m = x.shape[0], y.shape[0]
        rows, cols = _blocks(n, tile), _blocks(m, tile)
        positive = _positive_tiles(row_ids, col_ids, tile)
        a, b = _target_weights(row_ids, col_ids, w_row, w_col, x.dtype)
        max_rows, sum_rows, pos_rows = x.new_empty(n), x.new_empty(n), x.new_zeros(n)
        max_cols, sum_cols, pos_cols = y.new_full((m,), -math.inf), y.new_zeros(m), y.new_zeros(m)
        for bi, I in enumerate(rows):
            run_max, run_sum = x.new_full((I.stop - I.start,), -math.inf), x.new_zeros(I.stop - I.start)
            for bj, J in enumerate(cols):
                logits = xs[I] @ y[J].T
                run_max, run_sum = _merge_lse(run_max, run_sum, logits, 1)
                if w_col:
                    max_cols[J], sum_cols[J] = _merge_lse(max_cols[J], sum_cols[J], logits, 0)
                if positive[bi][bj]:
                    i, j = _pairs(row_ids, col_ids, I, J)
                    pos_rows.index_add_(0, i + I.start, logits[i, j])
                    pos_cols.index_add_(0, j + J.start, logits[i, j])
            max_rows[I], sum_rows[I] = run_max, run_sum
        # Per row and column first (the log-softmax of the positives), then the sum, as the dense form does.
        value = (w_row * (max_rows + sum_rows.log()) - a * pos_rows).sum()
        if w_col:
            value = value + (w_col * (max_cols + sum_cols.log()) - b * pos_cols).sum()
        if not want_grad:
            return value
        # w·softmax = exp(L − max)·(w / Σ): shifting by the max, a value of the very same tile, keeps the
        # exponent exact near the max; a shift by the whole logsumexp would round it at |L|'s magnitude.
        k_rows, k_cols = w_row / sum_rows, (w_col / sum_cols if w_col else None)
        g_y, gy = torch.zeros_like(x), torch.zeros_like(y)  # G·y and ∂/∂y = Gᵀ·(s·x)
        for bi, I in enumerate(rows):
            for bj, J in enumerate(cols):
                logits = xs[I] @ y[J].T
                g = torch.sub(logits, max_rows[I, None]).exp_().mul_(k_rows[I, None])
                if k_cols is not None:
                    g.addcmul_(logits.sub_(max_cols[None, J]).exp_(), k_cols[None, J])
                if positive[bi][bj]:
                    i, j = _pairs(row_ids, col_ids, I, J)
                    g[i, j] -= a[i + I.start] + b[j + J.start]
                g_y[I].addmm_(g, y[J])
                gy[J].addmm_(g.T, xs[I])
        gs = (g_y * x).sum()
        ctx.save_for_backward(g_y.mul_(scale), gy, gs, None if bias is None else torch.zeros_like(bias))
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        need = ctx.needs_input_grad
        grads = [g * grad if need[k] and g is not None else None for k, g in enumerate(ctx.saved_tensors)]
        return (*grads, None, None, None, None, None, None)


class _TiledSigmoidLoss(torch.autograd.Function):
    """``Σ_ij −log σ(z_ij·(s·x_i·y_j + b))`` (z = +1 on equal ids) in one sweep over tiles, the gradients
    accumulated on the way; label masks only in tiles that hold a positive pair."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, row_ids: Tensor, col_ids: Tensor, tile: int,
        want_grad: bool,
    ) -> Tensor:
        xs = x * scale
        positive = _positive_tiles(row_ids, col_ids, tile)
        row_sums = x.new_zeros(x.shape[0])
        if want_grad:
            g_y, gy, gb_rows = torch.zeros_like(x), torch.zeros_like(y), x.new_zeros(x.shape[0])
        for bi, I in enumerate(_blocks(x.shape[0], tile)):
            for bj, J in enumerate(_blocks(y.shape[0], tile)):
                # −log σ(z·L) = softplus(u) with u = −z·L: u = L off the positives, −L on them.
                u = torch.addmm(bias, xs[I], y[J].T)
                pairs = _pairs(row_ids, col_ids, I, J) if positive[bi][bj] else None
                if pairs is not None:
                    u[pairs] = -u[pairs]
                row_sums[I] += F.softplus(u).sum(1)
                if want_grad:
                    g = u.sigmoid_()  # ∂softplus(u)/∂L = σ(u)·∂u/∂L, and ∂u/∂L = −1 on the positives
                    if pairs is not None:
                        g[pairs] = -g[pairs]
                    gb_rows[I] += g.sum(1)
                    g_y[I].addmm_(g, y[J])
                    gy[J].addmm_(g.T, xs[I])
        if want_grad:
            gs = (g_y * x).sum()
            ctx.save_for_backward(g_y.mul_(scale), gy, gs, gb_rows.sum())
        return row_sums.sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        need = ctx.needs_input_grad
        grads = [g * grad if need[k] else None for k, g in enumerate(ctx.saved_tensors)]
        return (*grads, None, None, None, None)


def _softmax_loss(
    x: Tensor, y: Tensor, scale: Tensor, bias: Tensor | None, row_ids: Tensor, col_ids: Tensor,
    w_row: float, w_col: float, tile: int | None,
) -> Tensor:
    """``w_row·Σ_rows CE + w_col·Σ_cols CE`` of the logits ``s·x@yᵀ + b``, targets uniform over equal ids."""
    if tile is None:
        logits = scale * x @ y.T
        if bias is not None:
            logits = logits + bias
        positive = (row_ids[:, None] == col_ids[None, :]).to(logits.dtype)
        loss = w_row * F.cross_entropy(logits, positive / positive.sum(1, keepdim=True), reduction="sum")
        if w_col:
            targets = (positive / positive.sum(0, keepdim=True)).T
            loss = loss + w_col * F.cross_entropy(logits.T, targets, reduction="sum")
        return loss
    inputs = (x, y, scale) if bias is None else (x, y, scale, bias)
    want_grad = torch.is_grad_enabled() and any(t.requires_grad for t in inputs)
    return _TiledSoftmaxLoss.apply(x, y, scale, bias, row_ids, col_ids, tile, w_row, w_col, want_grad)


def _sigmoid_loss(
    x: Tensor, y: Tensor, scale: Tensor, bias: Tensor, row_ids: Tensor, col_ids: Tensor, norm: int,
    tile: int | None,
) -> Tensor:
    """``Σ_ij −log σ(z_ij·(s·x_i·y_j + b)) / norm`` with z = +1 for equal ids, −1 otherwise."""
    if tile is None:
        logits = scale * x @ y.T + bias
        labels = 2 * (row_ids[:, None] == col_ids[None, :]).to(logits.dtype) - 1
        return -F.logsigmoid(labels * logits).sum() / norm
    want_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, y, scale, bias))
    return _TiledSigmoidLoss.apply(x, y, scale, bias, row_ids, col_ids, tile, want_grad) / norm


def _scalar(value: Tensor | float, name: str, like: Tensor) -> Tensor:
    value = torch.as_tensor(value, device=like.device)
    if value.numel() != 1:
        raise ValueError(f"{name} must be a scalar tensor, got shape {tuple(value.shape)}")
    return value.reshape(()).to(like.dtype)


class _ContrastiveLoss(nn.Module):
    def __init__(self, tile_size: int | None = None, local_loss: bool = False, gather_with_grad: bool = True):
        super().__init__()
        if tile_size is not None and (isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1):
            raise ValueError(f"tile_size must be a positive int or None (dense), got {tile_size!r}")
        self.tile_size = tile_size
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad

    def extra_repr(self) -> str:
        return f"tile_size={self.tile_size}, local_loss={self.local_loss}, gather_with_grad={self.gather_with_grad}"

    def _prepare(
        self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float,
        logit_bias: Tensor | float | None, group_ids: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]:
        """Validate, promote half precision to float32 (the loss sums B² terms), default the ids to the
        global sample index."""
        name = type(self).__name__
        for arg, value in (("image_features", image_features), ("text_features", text_features)):
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise ValueError(f"{name}: {arg} must be a floating-point tensor, got {type(value).__name__}"
                                 + (f" of {value.dtype}" if isinstance(value, Tensor) else ""))
        if image_features.dim() != 2 or image_features.shape != text_features.shape or not len(image_features):
            raise ValueError(
                f"{name}: image_features and text_features must both be [B, d] with the same non-empty shape, "
                f"got {tuple(image_features.shape)} and {tuple(text_features.shape)}"
            )
        dtype = torch.promote_types(image_features.dtype, torch.float32)
        x, y = image_features.to(dtype), text_features.to(dtype)
        scale = _scalar(logit_scale, f"{name}: logit_scale", x)
        bias = None if logit_bias is None else _scalar(logit_bias, f"{name}: logit_bias", x)
        batch = x.shape[0]
        if group_ids is None:
            group_ids = torch.arange(batch, device=x.device) + _world()[0] * batch
        elif (
            not isinstance(group_ids, Tensor)
            or group_ids.is_floating_point()
            or group_ids.is_complex()
            or tuple(group_ids.shape) != (batch,)
        ):
            shape = tuple(group_ids.shape) if isinstance(group_ids, Tensor) else type(group_ids).__name__
            raise ValueError(f"{name}: group_ids must be an integer tensor of shape ({batch},), got {shape}")
        return x, y, scale, bias, group_ids.to(device=x.device, dtype=torch.long)


class ClipLoss(_ContrastiveLoss):
    """CLIP's symmetric InfoNCE: mean of the image→text and text→image cross-entropies.

    ``logit_scale`` is the exponentiated temperature (what ``Clip.forward`` returns). ``logit_bias`` is
    optional and cancels in the softmax; it is accepted so one model can serve both losses."""

    def forward(
        self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float,
        logit_bias: Tensor | float | None = None, group_ids: Tensor | None = None,
    ) -> Tensor:
        x, y, scale, bias, ids = self._prepare(image_features, text_features, logit_scale, logit_bias, group_ids)
        world = _world()[1]
        with torch.autocast(x.device.type, enabled=False):
            if world == 1:
                w = 0.5 / x.shape[0]
                return _softmax_loss(x, y, scale, bias, ids, ids, w, w, self.tile_size)
            all_ids = _gather_ids(ids)
            if not self.local_loss:
                all_x = _gather(x, self.gather_with_grad, float(world))
                all_y = _gather(y, self.gather_with_grad, float(world))
                w = 0.5 / all_x.shape[0]
                return _softmax_loss(all_x, all_y, scale, bias, all_ids, all_ids, w, w, self.tile_size)
            all_x, all_y = _gather(x, self.gather_with_grad, 1.0), _gather(y, self.gather_with_grad, 1.0)
            w = 0.5 / x.shape[0]
            return _softmax_loss(x, all_y, scale, bias, ids, all_ids, w, 0.0, self.tile_size) + _softmax_loss(
                y, all_x, scale, bias, ids, all_ids, w, 0.0, self.tile_size
            )


class SigLipLoss(_ContrastiveLoss):
    """SigLIP's pairwise sigmoid loss, summed over pairs and divided by the batch size.

    Distributed, ``local_loss=True`` (the default here, as in SigLIP): this rank's images against all
    gathered texts, divided by the local batch; the rank losses average to the global loss.
    ``local_loss=False`` computes the global loss on every rank."""

    def __init__(self, tile_size: int | None = None, local_loss: bool = True, gather_with_grad: bool = True):
        super().__init__(tile_size, local_loss, gather_with_grad)

    def forward(
        self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float,
        logit_bias: Tensor | float | None = None, group_ids: Tensor | None = None,
    ) -> Tensor:
        x, y, scale, bias, ids = self._prepare(image_features, text_features, logit_scale, logit_bias, group_ids)
        if bias is None:
            raise ValueError("SigLipLoss needs logit_bias (a scalar tensor; SigLIP initialises it at -10), got None")
        world = _world()[1]
        with torch.autocast(x.device.type, enabled=False):
            if world == 1:
                return _sigmoid_loss(x, y, scale, bias, ids, ids, x.shape[0], self.tile_size)
            all_ids = _gather_ids(ids)
            if self.local_loss:
                all_y = _gather(y, self.gather_with_grad, 1.0)
                return _sigmoid_loss(x, all_y, scale, bias, ids, all_ids, x.shape[0], self.tile_size)
            all_x = _gather(x, self.gather_with_grad, float(world))
            all_y = _gather(y, self.gather_with_grad, float(world))
            return _sigmoid_loss(all_x, all_y, scale, bias, all_ids, all_ids, all_x.shape[0], self.tile_size)
