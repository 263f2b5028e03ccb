"""Exact gradient accumulation for contrastive losses (GradCache, Gao et al. 2021).

A contrastive loss couples every sample of the batch, so summing per-micro-batch losses is NOT the
large-batch loss. GradCache keeps it exact in three passes: (1) embed every micro-batch without a graph
and cache the features; (2) compute the loss once over all cached features and take its gradient with
respect to them (and to the temperature); (3) re-embed each micro-batch with a graph and back-propagate
the cached feature gradients. Memory is one micro-batch's activations; the result is the full batch's.

Pass 3 replays the RNG state pass 1 started from, so dropout and patch dropout draw the same masks and
the recomputed features are the cached ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _rng_states(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_rng_states(states: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if states[1] is not None:
        torch.cuda.set_rng_state(states[1], device)


def grad_cache_step(
    model: nn.Module,
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """Accumulate into ``.grad`` the gradient of ``loss_fn`` over the concatenated micro-batches; return the loss.

    ``model`` may be wrapped in DistributedDataParallel: gradients synchronise once, on the last
    micro-batch. Its forward returns (image features, text features, scale[, bias]).
    """
    inner = model.module if hasattr(model, "module") else model
    device = inner.logit_scale.device
    states, image_cache, text_cache = [], [], []
    with torch.no_grad():
        for images, tokens in micro_batches:
            states.append(_rng_states(device))
            with autocast():
                out = inner(images, tokens)
            # float32 at least (bf16 autocast outputs), float64 kept: the loss sums B² terms
            image_cache.append(out[0].to(torch.promote_types(out[0].dtype, torch.float32)))
            text_cache.append(out[1].to(torch.promote_types(out[1].dtype, torch.float32)))
    after_pass_one = _rng_states(device)

    # The loss sees the temperature through leaf copies: their gradients are added after pass 3, so the
    # DDP reducer never sees a gradient computed outside one of its forwards.
    scale_leaf = inner.logit_scale.detach().clone().requires_grad_(inner.logit_scale.requires_grad)
    bias_param = inner.logit_bias
    bias_leaf = bias_param.detach().clone().requires_grad_(bias_param.requires_grad) if bias_param is not None else None
    image_all = torch.cat(image_cache).requires_grad_()
    text_all = torch.cat(text_cache).requires_grad_()
    loss = loss_fn(image_all, text_all, scale_leaf.exp().clamp(max=100.0), bias_leaf)
    loss.backward()
    image_grads = image_all.grad.split([len(x) for x in image_cache])
    text_grads = text_all.grad.split([len(x) for x in text_cache])

    last = len(micro_batches) - 1
    for k, (images, tokens) in enumerate(micro_batches):
        _set_rng_states(states[k], device)
        sync = model.no_sync() if (k < last and hasattr(model, "no_sync")) else contextlib.nullcontext()
        with sync:
            with autocast():
                out = model(images, tokens)
            # Every output joins the backward (extra ones with zero gradient) so DDP sees all parameters used;
            # a locked tower's features (LiT) have no graph and stay out.
            outputs = [out[0], out[1], *out[2:]]
            grads = [image_grads[k].to(out[0].dtype), text_grads[k].to(out[1].dtype)]
            grads += [torch.zeros_like(t) for t in out[2:]]
            live = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad]
            if live:
                torch.autograd.backward([o for o, _ in live], [g for _, g in live])
    _set_rng_states(after_pass_one, device)

    for param, leaf in ((inner.logit_scale, scale_leaf), (bias_param, bias_leaf)):
        if param is not None and leaf is not None and leaf.grad is not None:
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(leaf.grad)  # averaged like DDP averages every other gradient
                leaf.grad /= dist.get_world_size()
            param.grad = leaf.grad.clone() if param.grad is None else param.grad + leaf.grad
    return loss.detach()
