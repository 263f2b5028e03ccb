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
    micro_batches: Sequence[tuple[torch.Tensor, ...]],
    loss_fn: LossFn,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """Accumulate into ``.grad`` the gradient of ``loss_fn`` over the concatenated micro-batches; return the loss.

    ``model`` may be wrapped in DistributedDataParallel or sharded with FSDP: gradients synchronise once,
    on the last micro-batch. Each micro-batch is the forward's positional arguments (images, tokens[,
    text_index]); the forward returns (image features, text features, scale[, bias]).
    """
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    device = micro_batches[0][0].device
    states, image_cache, text_cache = [], [], []
    with torch.no_grad():
        for batch in micro_batches:
            states.append(_rng_states(device))
            with autocast():
                out = inner(*batch)
            # float32 at least (bf16 autocast outputs), float64 kept: the loss sums B² terms
            image_cache.append(out[0].to(torch.promote_types(out[0].dtype, torch.float32)))
            text_cache.append(out[1].to(torch.promote_types(out[1].dtype, torch.float32)))
    after_pass_one = _rng_states(device)

    # The temperature (and bias) enter the loss as leaves holding the values the forward returned; their
    # gradients go back through the last micro-batch's forward outputs, so DDP and FSDP reduce them with
    # every other gradient.
    params = [inner.logit_scale, inner.logit_bias]  # what out[2:] are functions of (pass one ran without a graph)
    extra_leaves = [t.detach().clone().requires_grad_(p.requires_grad) for t, p in zip(out[2:], params)]
    image_all = torch.cat(image_cache).requires_grad_()
    text_all = torch.cat(text_cache).requires_grad_()
    loss = loss_fn(image_all, text_all, extra_leaves[0], extra_leaves[1] if len(extra_leaves) > 1 else None)
    loss.backward()
    image_grads = image_all.grad.split([len(x) for x in image_cache])
    text_grads = text_all.grad.split([len(x) for x in text_cache])

    last = len(micro_batches) - 1
    for k, batch in enumerate(micro_batches):
        _set_rng_states(states[k], device)
        with _gradient_sync(model, k == last):
            with autocast():
                out = model(*batch)
            # Every output joins the backward (extra ones with zero gradient until the last micro-batch) so
            # DDP sees all parameters used; a locked tower's features (LiT) have no graph and stay out.
            outputs = [out[0], out[1], *out[2:]]
            grads = [image_grads[k].to(out[0].dtype), text_grads[k].to(out[1].dtype)]
            grads += [leaf.grad.to(o.dtype) if k == last and leaf.grad is not None else torch.zeros_like(o)
                      for o, leaf in zip(out[2:], extra_leaves)]
            live = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad]
            if live:
                torch.autograd.backward([o for o, _ in live], [g for _, g in live])
    _set_rng_states(after_pass_one, device)
    return loss.detach()


def _gradient_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Reduce gradients across ranks only when ``sync`` (DDP's ``no_sync``, FSDP2's ``set_requires_gradient_sync``)."""
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    if not sync and hasattr(model, "no_sync"):
        return model.no_sync()
    return contextlib.nullcontext()
