"""open_clip reference models with every tensor made to matter: random weights, and random BatchNorm statistics
and layer scales (fresh ones are identities, which would hide a key mapped to the wrong place). Shared by the
timm-tower tests and ``bench/parity_timm.py``."""

from __future__ import annotations

import torch


def open_clip_model(name: str) -> torch.nn.Module:
    """open_clip's model of config ``name``, random, in eval mode."""
    import open_clip

    cfg = open_clip.get_model_config(name)
    custom = cfg.pop("custom_text", False)
    torch.manual_seed(0)
    model = (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**cfg)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
        for pname, p in model.named_parameters():
            if "layer_scale" in pname or pname.endswith("gamma"):
                p.uniform_(0.05, 0.2)
    return model.eval()
