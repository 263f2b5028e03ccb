"""The trainer's zero-shot, in torch: a classifier from a model and its tokenizer (``build_classifier``), the
accuracy of a model on labelled images, and the fine-tuning regression check built on it.

Accuracies are fractions in [0, 1] throughout; messages print them as percentages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..model import Clip
from ..text import Tokenizer
from .classifier import check_class_names
from .templates import check_templates


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
    class_names = check_class_names(class_names)
    templates = check_templates(templates)
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


@dataclass
class ZeroShotResult:
    top1: float
    top5: float | None  # None when there are fewer than 5 classes, where top-5 says nothing
    confusion: torch.Tensor  # int64 [C, C]: rows are true classes, columns predictions
    n: int

    @property
    def per_class_accuracy(self) -> torch.Tensor:
        """Recall per true class; NaN for a class with no examples, rather than a misleading 0."""
        counts = self.confusion.sum(dim=1).double()
        return self.confusion.diag().double() / counts


@contextlib.contextmanager
def _progress(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], show: bool
) -> Iterator[Iterable[tuple[torch.Tensor, torch.Tensor]]]:
    """The batches, with a rich bar on stderr counting them when ``show`` (total known if sized)."""
    if not show:
        yield batches
        return
    from rich.console import Console
    from rich.progress import Progress

    total = len(batches) if isinstance(batches, Sized) else None
    with Progress(console=Console(stderr=True), transient=True) as bar:
        yield bar.track(batches, total=total, description="zero-shot eval")


def evaluate(
    model: Clip,
    classifier: torch.Tensor,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: str | torch.device | None = None,
    progress: bool = False,
) -> ZeroShotResult:
    """Top-1/top-5 and the confusion matrix of ``model``'s images against ``classifier`` (from
    ``build_classifier``); ``device`` is where images go, the model's own device by default."""
    device = torch.device(device) if device is not None else model_device(model)
    dtype = next(model.parameters()).dtype
    num_classes = classifier.shape[1]
    weights = classifier.to(device=device, dtype=torch.float32)
    k = min(5, num_classes)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    hits5 = torch.zeros((), dtype=torch.int64, device=device)
    n = 0
    with eval_mode(model), _progress(batches, progress) as items:
        for images, labels in items:
            bad = labels[(labels < 0) | (labels >= num_classes)]  # checked before the copy: no device sync
            if bad.numel():
                raise ValueError(f"label {int(bad[0])} is outside the classifier's {num_classes} classes (0..{num_classes - 1})")
            labels = labels.to(device=device, dtype=torch.int64)
            features = model.encode_image(images.to(device=device, dtype=dtype), normalize=True).float()
            topk = (features @ weights).topk(k, dim=-1).indices
            confusion += torch.bincount(labels * num_classes + topk[:, 0], minlength=num_classes**2)
            hits5 += (topk == labels[:, None]).any(dim=-1).sum()
            n += labels.numel()
    if n == 0:
        raise ValueError("evaluate got no images: the batches were empty")
    confusion = confusion.view(num_classes, num_classes).cpu()
    return ZeroShotResult(
        top1=int(confusion.diag().sum()) / n,
        top5=int(hits5) / n if num_classes >= 5 else None,
        confusion=confusion,
        n=n,
    )


def check_regression(before: ZeroShotResult, after: ZeroShotResult, max_drop: float) -> str | None:
    """A warning when fine-tuning cost more than ``max_drop`` top-1 (a fraction: 0.01 is one
    percentage point) on the reference set, else None."""
    if not 0.0 <= max_drop <= 1.0:
        raise ValueError(f"max_drop is a fraction of top-1 in [0, 1] (0.01 = one point), got {max_drop}")
    if before.confusion.shape != after.confusion.shape:
        raise ValueError(
            f"before/after results cover different class sets ({before.confusion.shape[0]} vs "
            f"{after.confusion.shape[0]} classes); compare on the same reference set"
        )
    drop = before.top1 - after.top1
    if drop <= max_drop:
        return None
    return (
        f"fine-tuning lost {100 * drop:.2f} points of zero-shot top-1 on the reference set "
        f"({100 * before.top1:.2f}% → {100 * after.top1:.2f}%, {after.n} images), "
        f"more than the {100 * max_drop:.2f} allowed; consider WiSE-FT (clipworks interpolate) or a lower lr"
    )
