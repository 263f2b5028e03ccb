"""Class names × prompt templates → a linear zero-shot classifier (OpenAI's and open_clip's prompt ensembling)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..model import Clip
from ..text import Tokenizer


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for the block; a model called mid-training goes back to training."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def build_classifier(
    model: Clip,
    tokenizer: Tokenizer,
    class_names: Sequence[str],
    templates: Sequence[str],
    device: str | torch.device | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """``[embed_dim, C]`` float32 zero-shot weights: per class, the L2-normalised mean of the
    L2-normalised text embeddings of every template — OpenAI's and open_clip's prompt ensembling."""
    if not class_names:
        raise UsageError("build_classifier needs at least one class name")
    if not templates:
        raise UsageError("build_classifier needs at least one template")
    for t in templates:
        if "{}" not in t:
            raise UsageError(f"template {t!r} has no '{{}}' where the class name goes")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else model_device(model)
    prompts = [t.format(name) for name in class_names for t in templates]
    chunks = []
    with eval_mode(model):
        for start in range(0, len(prompts), batch_size):
            tokens = tokenizer(prompts[start : start + batch_size], context_length=model.context_length).to(device)
            chunks.append(model.encode_text(tokens, normalize=True).float())
    per_prompt = torch.cat(chunks).view(len(class_names), len(templates), -1)
    return F.normalize(per_prompt.mean(dim=1), dim=-1).T.contiguous()


