"""TrainConfig: one run described as data (big_vision style), read from a JSON/TOML file plus flags.

Every field has a default that trains sensibly; a config file or flag names only what differs.
Unknown keys are an error that names them and lists the known ones, so a typo never trains silently
with the default.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..model import ConfigError


@dataclass
class TrainConfig:
    # what to train
    model: str | None = None                # named config, model-config JSON, or hf-hub:org/repo
    pretrained: str | None = None           # fine-tune from this registry tag of `model` (clipworks pretrained)
    init: str | None = None                 # start from these weights (any format load_checkpoint reads)
    # data
    data: str = ""                          # source spec: CSV/TSV, folder, shards, fashion-mnist, openclipart
    data_split: str = "train"
    csv_img_key: str = "filepath"
    csv_caption_key: str = "title"
    templates: list[str] | None = None      # caption templates for labelled sources (Fashion-MNIST)
    val_data: str | None = None             # held-out split for in-loop zero-shot evaluation
    val_split: str = "test"
    val_samples: int = 2000                 # images per in-loop evaluation (all at the end)
    zeroshot_templates: list[str] | None = None
    workers: int = 0
    train_augment: bool = False             # random resized crop on training images
    # optimisation
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 256
    accum_steps: int = 1                    # GradCache micro-batches per step (exact large-batch loss)
    lr: float = 5e-4
    lr_image: float | None = None           # per-tower overrides of lr
    lr_text: float | None = None
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup: int = 100                       # steps
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float | None = 1.0
    precision: Literal["fp32", "bf16"] = "fp32"
    grad_checkpointing: bool = False
    patch_dropout: float | None = None      # overrides the model config's value
    loss: Literal["clip", "siglip"] = "clip"
    tile_size: int | None = None            # memory-bounded loss tiles; None = dense
    local_loss: bool = False
    multi_positive: Literal["none", "label", "caption"] = "none"
    lock_image: bool = False
    lock_image_unlocked_groups: int = 0
    lock_image_freeze_bn_stats: bool = False
    lock_text: bool = False
    lock_text_unlocked_layers: int = 0
    lock_text_freeze_layer_norm: bool = True
    # run bookkeeping
    out: str = "runs/run"
    seed: int = 0
    device: str = "auto"
    parallel: Literal["ddp", "fsdp"] = "ddp"  # several processes: replicate the model (ddp) or shard it (fsdp)
    save_every: int = 500                   # steps; a final checkpoint is always written
    keep_last: int = 2
    log_every: int = 20
    eval_every: int = 0                     # steps; 0 = only at the end
    resume: str | None = None               # "latest" or a checkpoint directory
    max_bad_steps: int = 5                  # consecutive non-finite steps before rolling back
    rollback_lr_factor: float = 0.5
    progress: bool = True
    tensorboard: bool = True
    reference_max_drop: float | None = None  # fine-tuning: warn when zero-shot top-1 drops more (fraction)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes stored with the run

    def __post_init__(self) -> None:
        checks = [
            (self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}"),
            (self.accum_steps >= 1, f"accum_steps must be ≥ 1, got {self.accum_steps}"),
            (self.batch_size % self.accum_steps == 0,
             f"batch_size ({self.batch_size}) must be divisible by accum_steps ({self.accum_steps})"),
            (self.epochs > 0 or bool(self.max_steps), f"epochs must be > 0, got {self.epochs}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.warmup >= 0, f"warmup must be ≥ 0 steps, got {self.warmup}"),
            (self.keep_last >= 1, f"keep_last must be ≥ 1, got {self.keep_last}"),
            (self.save_every >= 1, f"save_every must be ≥ 1, got {self.save_every}"),
            (self.schedule in ("cosine", "constant"), f"schedule must be 'cosine' or 'constant', got {self.schedule!r}"),
            (self.precision in ("fp32", "bf16"), f"precision must be 'fp32' or 'bf16', got {self.precision!r}"),
            (self.parallel in ("ddp", "fsdp"), f"parallel must be 'ddp' or 'fsdp', got {self.parallel!r}"),
            (self.loss in ("clip", "siglip"), f"loss must be 'clip' or 'siglip', got {self.loss!r}"),
            (self.multi_positive in ("none", "label", "caption"),
             f"multi_positive must be 'none', 'label' or 'caption', got {self.multi_positive!r}"),
            (0 < self.rollback_lr_factor <= 1, f"rollback_lr_factor must be in (0, 1], got {self.rollback_lr_factor}"),
            (self.max_bad_steps >= 1, f"max_bad_steps must be ≥ 1, got {self.max_bad_steps}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "train config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; known keys: {', '.join(sorted(known))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **changes}, where="overrides")


def read_train_config(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a ``.json`` or ``.toml`` run file, validated later by ``TrainConfig.from_dict``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"train config file not found: {path}")
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot parse train config {path}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"train config {path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data
