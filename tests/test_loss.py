"""Losses: dense equals open_clip, tiled equals dense (values and every gradient), multi-positive semantics,
bounded memory, and errors that name the bad shapes."""

from __future__ import annotations

import math

import open_clip.loss as oc
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from clipworks.loss import ClipLoss, SigLipLoss

LOSSES = {"clip": ClipLoss, "siglip": SigLipLoss}
pytestmark = pytest.mark.usefixtures("one_thread")



def features(batch: int, dim: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Normalised image/text features (correlated, so positives matter), a scale and a bias, all requiring grad."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    y = x + 2.0 * torch.randn(batch, dim, generator=g, dtype=torch.float64)
    x, y = (F.normalize(t, dim=-1).to(dtype).requires_grad_() for t in (x, y))
    scale = torch.tensor(14.3, dtype=dtype, requires_grad=True)
    bias = torch.tensor(-2.5, dtype=dtype, requires_grad=True)
    return x, y, scale, bias


def value_and_grads(fn, x, y, scale, bias, *extra, weight: float = 1.0) -> list[torch.Tensor]:
    for t in (x, y, scale, bias):
        t.grad = None
    loss = fn(x, y, scale, bias, *extra)
    (weight * loss).backward()
    return [loss.detach()] + [t.grad if t.grad is not None else torch.zeros_like(t) for t in (x, y, scale, bias)]


def assert_all_close(got: list[torch.Tensor], want: list[torch.Tensor], rtol: float) -> None:
    """Each tensor within ``rtol`` of the other relative to its largest entry (gradients have near-zero entries).
    The floors cover quantities that are zero in exact arithmetic (a one-pair softmax, the bias in a softmax)
    and losses, which are O(1)."""
    names = ["loss", "d/dimage", "d/dtext", "d/dscale", "d/dbias"]
    for name, a, b in zip(names, got, want):
        scale = max(b.abs().max().item(), 1.0 if name in ("loss", "d/dbias") else 1e-3)
        err = (a.double() - b.double()).abs().max().item() / scale
        assert err <= rtol, f"{name}: relative error {err:.2e} > {rtol:.0e}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dense_clip_loss_equals_open_clip(dtype: torch.dtype) -> None:
    x, y, scale, bias = features(19, 12, dtype)
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    for b in (None, bias):
        args = () if b is None else (b,)
        want = value_and_grads(lambda x, y, s, _b: oc.ClipLoss()(x, y, s, *args), x, y, scale, bias)
        got = value_and_grads(lambda x, y, s, _b: ClipLoss()(x, y, s, *args), x, y, scale, bias)
        assert_all_close(got, want, rtol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dense_siglip_loss_equals_open_clip(dtype: torch.dtype) -> None:
    x, y, scale, bias = features(19, 12, dtype)
    want = value_and_grads(oc.SigLipLoss(), x, y, scale, bias)
    got = value_and_grads(SigLipLoss(), x, y, scale, bias)
    assert_all_close(got, want, 1e-12 if dtype == torch.float64 else 1e-6)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch,tile", [(1, 4), (2, 4), (7, 3), (33, 8), (33, 64), (50, 16)])
@pytest.mark.parametrize("grouped", [False, True])
def test_tiled_equals_dense(kind: str, dtype: torch.dtype, batch: int, tile: int, grouped: bool) -> None:
    x, y, scale, bias = features(batch, 24, dtype, seed=batch)
    ids = (torch.arange(batch) * 7 % max(1, batch // 3)) if grouped else None
    dense, tiled = LOSSES[kind](), LOSSES[kind](tile_size=tile)
    # A weight other than 1 checks that backward scales the gradients computed in forward.
    want = value_and_grads(dense, x, y, scale, bias, ids, weight=0.37)
    got = value_and_grads(tiled, x, y, scale, bias, ids, weight=0.37)
    assert_all_close(got, want, 1e-12 if dtype == torch.float64 else 1e-5)


def test_tiled_clip_loss_without_bias_equals_dense() -> None:
    x, y, scale, bias = features(29, 16, torch.float32)
    ids = torch.arange(29) % 4
    want = value_and_grads(lambda x, y, s, _b, ids: ClipLoss()(x, y, s, group_ids=ids), x, y, scale, bias, ids)
    got = value_and_grads(lambda x, y, s, _b, ids: ClipLoss(6)(x, y, s, group_ids=ids), x, y, scale, bias, ids)
    assert_all_close(got, want, 1e-5)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_tiled_gradients_only_where_asked(kind: str) -> None:
    x, y, scale, bias = features(20, 8)
    x.requires_grad_(False)
    scale.requires_grad_(False)
    loss = LOSSES[kind](tile_size=6)(x, y, scale, bias)
    loss.backward()
    assert x.grad is None and scale.grad is None and y.grad is not None and bias.grad is not None
    with torch.no_grad():
        assert not LOSSES[kind](tile_size=6)(x, y, scale, bias).requires_grad


@pytest.mark.parametrize("kind", ["clip", "siglip"])
@pytest.mark.parametrize("tile", [None, 5])
def test_distinct_group_ids_reduce_to_plain_loss(kind: str, tile: int | None) -> None:
    x, y, scale, bias = features(17, 8)
    fn = LOSSES[kind](tile_size=tile)
    plain = value_and_grads(fn, x, y, scale, bias)
    for ids in (torch.arange(17), torch.randperm(17, generator=torch.Generator().manual_seed(1)) * 5 - 3):
        assert_all_close(value_and_grads(fn, x, y, scale, bias, ids), plain, 1e-14)
    assert torch.equal(fn(x, y, scale, bias, torch.arange(17)), fn(x, y, scale, bias))


def reference_multi_positive(x, y, scale, bias, ids, kind: str) -> torch.Tensor:
    """The multi-positive losses spelled out pair by pair."""
    n = len(ids)
    logits = [[scale * x[i].dot(y[j]) + bias for j in range(n)] for i in range(n)]
    if kind == "siglip":
        pairs = [(i, j) for i in range(n) for j in range(n)]
        return sum(-F.logsigmoid((1 if ids[i] == ids[j] else -1) * logits[i][j]) for i, j in pairs) / n
    rows = cols = 0.0
    for i in range(n):
        positives = [j for j in range(n) if ids[j] == ids[i]]
        row = torch.stack(logits[i])
        col = torch.stack([logits[j][i] for j in range(n)])
        rows = rows + torch.logsumexp(row, 0) - sum(row[j] for j in positives) / len(positives)
        cols = cols + torch.logsumexp(col, 0) - sum(col[j] for j in positives) / len(positives)
    return (rows + cols) / (2 * n)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
@pytest.mark.parametrize("tile", [None, 2, 4])
def test_multi_positive_semantics(kind: str, tile: int | None) -> None:
    x, y, scale, bias = features(6, 5)
    ids = torch.tensor([3, 1, 3, 0, 1, 3])
    want = value_and_grads(lambda *a: reference_multi_positive(*a, ids.tolist(), kind), x, y, scale, bias)
    got = value_and_grads(LOSSES[kind](tile_size=tile), x, y, scale, bias, ids)
    assert_all_close(got, want, 1e-12)
    # Positives of a row now include its same-group pairs: the loss differs from the plain one.
    assert not torch.allclose(got[0], LOSSES[kind](tile_size=tile)(x, y, scale, bias))


@pytest.mark.parametrize("kind", ["clip", "siglip"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_are_computed_in_float32(kind: str, dtype: torch.dtype) -> None:
    x, y, scale, bias = features(21, 16, dtype)
    fn = LOSSES[kind](tile_size=8)
    loss = fn(x, y, scale, bias)
    loss.backward()
    assert loss.dtype == torch.float32 and x.grad.dtype == dtype
    want = LOSSES[kind]()(x.detach().float(), y.detach().float(), scale.detach().float(), bias.detach().float())
    assert torch.allclose(loss, want, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the trainer's autocast must not reach the logits
        x32 = x.detach().float()
        y32 = y.detach().float()
        assert torch.allclose(fn(x32, y32, scale.float(), bias.float()), want, rtol=1e-6)


class LargestOutput(TorchDispatchMode):
    """Records the largest tensor any aten op produces, forward and backward alike."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("kind", ["clip", "siglip"])
@pytest.mark.parametrize("grouped", [False, True])
def test_tiled_never_materialises_the_batch_square(kind: str, grouped: bool) -> None:
    batch, dim, tile = 200, 16, 48
    x, y, scale, bias = features(batch, dim, torch.float32)
    ids = torch.arange(batch) % 10 if grouped else None
    saved: list[int] = []

    def run(fn) -> int:
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            with LargestOutput() as mode:
                loss = fn(x, y, scale, bias, ids)
        with mode:
            loss.backward()
        return mode.largest

    assert run(LOSSES[kind]()) >= batch * batch and max(saved) >= batch * batch  # the probes see dense's matrix
    largest = run(LOSSES[kind](tile_size=tile))
    assert largest <= max(tile * tile, batch * dim), f"an intermediate of {largest} elements"
    assert max(saved) <= batch * dim


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_bad_input_names_the_shapes(kind: str) -> None:
    x, y, scale, bias = features(4, 8)
    fn = LOSSES[kind]()
    with pytest.raises(ValueError, match=r"\(4, 8\) and \(4, 9\)"):
        fn(x, torch.zeros(4, 9), scale, bias)
    with pytest.raises(ValueError, match=r"\(4, 8\) and \(3, 8\)"):
        fn(x, y[:3], scale, bias)
    with pytest.raises(ValueError, match=r"\(4, 8, 1\) and \(4, 8\)"):
        fn(x[..., None], y, scale, bias)
    with pytest.raises(ValueError, match=r"\(0, 8\) and \(0, 8\)"):
        fn(x[:0], y[:0], scale, bias)
    with pytest.raises(ValueError, match=r"floating-point.*torch.int64"):
        fn(x, torch.zeros(4, 8, dtype=torch.long), scale, bias)
    with pytest.raises(ValueError, match=r"logit_scale must be a scalar tensor, got shape \(2,\)"):
        fn(x, y, torch.ones(2), bias)
    with pytest.raises(ValueError, match=r"group_ids must be an integer tensor of shape \(4,\), got \(3,\)"):
        fn(x, y, scale, bias, torch.arange(3))
    with pytest.raises(ValueError, match=r"group_ids .* got \(4,\)"):
        fn(x, y, scale, bias, torch.zeros(4))  # float ids
    with pytest.raises(ValueError, match="tile_size must be a positive int"):
        LOSSES[kind](tile_size=0)


def test_siglip_needs_a_bias() -> None:
    x, y, scale, _ = features(4, 8)
    for call in (lambda: SigLipLoss()(x, y, scale, None), lambda: SigLipLoss(tile_size=2)(x, y, scale)):
        with pytest.raises(ValueError, match="SigLipLoss needs logit_bias"):
            call()


def test_clip_loss_of_perfect_pairs_is_small() -> None:
    """A sanity anchor independent of open_clip: identical, orthogonal pairs at scale 100 cost ~B·e^-100."""
    eye = torch.eye(8, dtype=torch.float64)
    for tile in (None, 3):
        assert ClipLoss(tile_size=tile)(eye, eye, 100.0).item() < 1e-40
        assert math.isclose(ClipLoss(tile_size=tile)(eye, eye, 0.0).item(), math.log(8), rel_tol=1e-12)
