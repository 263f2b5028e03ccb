"""WiSE-FT weight-space ensembling: a straight line between a zero-shot model and its fine-tuned self.

Wortsman et al. (2022): θ = (1-α)·θ_zeroshot + α·θ_finetuned keeps most of the fine-tuned
accuracy while recovering the robustness fine-tuning cost, at no inference cost.
"""

from __future__ import annotations

import copy

import torch

from .errors import UsageError
from .model import Clip


def interpolate(a: Clip, b: Clip, alpha: float) -> Clip:
    """A new model with θ = (1-α)·θ_a + α·θ_b for every floating tensor (α=0 is ``a``, α=1 is ``b``,
    exactly); integer buffers, dtype, device and config come from ``b``. Neither input is changed."""
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"alpha must be in [0, 1] (0 gives the first model, 1 the second), got {alpha}")
    differing = a.config.diff(b.config)
    if differing:
        raise UsageError(f"cannot interpolate models whose configs differ in: {', '.join(differing)}")
    sa = a.state_dict()
    out = copy.deepcopy(b)
    sb = out.state_dict()  # shares storage with ``out``: writing into it writes the model
    if sa.keys() != sb.keys():
        only = sorted(sa.keys() ^ sb.keys())
        raise UsageError(f"cannot interpolate: the models' weights differ in keys {', '.join(only[:10])}")
    with torch.no_grad():
        for key, tb in sb.items():
            if not tb.is_floating_point():
                continue
            ta = sa[key]
            if ta.shape != tb.shape:
                raise UsageError(f"cannot interpolate {key}: shapes {tuple(ta.shape)} and {tuple(tb.shape)}")
            # Mix in at least float32 so bf16/fp16 weights are rounded once, not at every step.
            work = torch.promote_types(tb.dtype, torch.float32)
            mixed = (1.0 - alpha) * ta.to(tb.device, work) + alpha * tb.to(work)
            tb.copy_(mixed)
    return out
