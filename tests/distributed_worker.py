"""One rank of tests/test_distributed.py (run under torchrun), and the batch, model and loss variants that the
test rebuilds in a single process for the reference."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import torch
from torch import nn

from clipworks import get_tokenizer
from clipworks.loss import ClipLoss, SigLipLoss
from clipworks.model import Clip, get_model_config
from clipworks.train.distributed import all_reduce_mean, barrier, broadcast_object, cleanup, init_distributed, is_main
from clipworks.train.fsdp import full_value, shard_model, sync_replicated_grads

BATCH = 8
CAPTIONS = ["a red dress", "two black shoes", "a bag", "a red dress on a chair", "a striped shirt", "a sandal",
            "grey trousers", "a small bag"]
GROUPS = torch.tensor([0, 1, 2, 0, 3, 1, 4, 2])  # positives straddle the two ranks' halves

# name -> (loss, uses group ids, compare the rank mean (local losses) rather than rank 0's own loss)
VARIANTS: dict[str, tuple[Callable[[], nn.Module], bool, bool]] = {
    "clip dense": (lambda: ClipLoss(), False, False),
    "clip tiled": (lambda: ClipLoss(tile_size=3), False, False),
    "clip tiled groups": (lambda: ClipLoss(tile_size=3), True, False),
    "clip dense no-grad gather": (lambda: ClipLoss(gather_with_grad=False), False, False),
    "clip local": (lambda: ClipLoss(local_loss=True), False, True),
    "clip local tiled groups": (lambda: ClipLoss(tile_size=3, local_loss=True), True, True),
    "siglip dense": (lambda: SigLipLoss(), False, True),
    "siglip tiled groups": (lambda: SigLipLoss(tile_size=3), True, True),
    "siglip global tiled": (lambda: SigLipLoss(tile_size=3, local_loss=False), False, False),
    "siglip global no-grad gather": (lambda: SigLipLoss(local_loss=False, gather_with_grad=False), True, False),
}


def build_model() -> Clip:
    config = dataclasses.replace(get_model_config("tiny-vit"), init_logit_bias=-10.0)
    torch.manual_seed(0)
    return Clip(config)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    return images, get_tokenizer()(CAPTIONS)


def step(model: nn.Module, loss_fn: nn.Module, images, tokens, ids) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss = loss_fn(*model(images, tokens), group_ids=ids)  # features, scale, bias: the model's outputs as they come
    loss.backward()
    return loss.detach()


def flat_grads(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def main(out_path: str) -> None:
    env = init_distributed("cpu")
    model = build_model()
    ddp = nn.parallel.DistributedDataParallel(model)
    images, tokens = batch()
    rows = slice(env.rank * BATCH // env.world_size, (env.rank + 1) * BATCH // env.world_size)
    results = {}
    for name, (make_loss, grouped, _) in VARIANTS.items():
        ids = GROUPS[rows] if grouped else None
        loss = step(ddp, make_loss(), images[rows], tokens[rows], ids)
        results[name] = {"loss": loss, "mean_loss": all_reduce_mean(loss, env), "grads": flat_grads(model),
                         "scale_grad": model.logit_scale.grad.clone(), "bias_grad": model.logit_bias.grad.clone()}
    # The same steps with the model sharded (FSDP2): gradients gathered whole, replicated ones averaged as the trainer does.
    sharded = shard_model(build_model(), env)
    for name, (make_loss, grouped, _) in VARIANTS.items():
        ids = GROUPS[rows] if grouped else None
        loss = step(sharded, make_loss(), images[rows], tokens[rows], ids)
        sync_replicated_grads(sharded)
        grads = {n: full_value(p.grad) for n, p in sharded.named_parameters()}
        results[f"fsdp {name}"] = {"loss": loss, "mean_loss": all_reduce_mean(loss, env),
                                   "grads": torch.cat([g.reshape(-1) for g in grads.values()]),
                                   "scale_grad": grads["logit_scale"], "bias_grad": grads["logit_bias"]}
    # Every rank receives rank 0's object, so the mean over ranks of what arrived is rank 0's value.
    results["helpers"] = {"world_size": env.world_size, "device": str(env.device),
                          "broadcast": all_reduce_mean(torch.tensor(float(broadcast_object(env.rank, env))), env)}
    barrier(env)
    if is_main(env):
        torch.save(results, out_path)
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
