"""The training loop: one ``train(cfg)`` for single-process and torchrun runs, from scratch or fine-tuning.

Everything that can be wrong with a run (config, data, run directory, disk, resume checkpoint) is checked
before the first step, so a mistake costs seconds, not an hour. The loop itself is plain: read a batch,
embed, loss, backward, guard, clip, step; log, evaluate and checkpoint on their schedules.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import zeroshot
from ..checkpoints import load_checkpoint
from ..data import DataError, PairLoader, PairSource, open_source
from ..errors import TrainingError, UsageError
from ..factory import create_model, get_tokenizer
from ..fileio import atomic_file
from ..image.transforms import image_transform
from ..loss import ClipLoss, SigLipLoss
from ..model import Clip, ClipConfig, ConfigError, get_model_config
from ..model.config import load_config_file
from ..pretrained import HF_HUB_PREFIX
from .accumulate import grad_cache_step
from .checkpoint import (
    Position,
    checkpoint_dirs,
    read_training_checkpoint,
    resolve_resume,
    save_training_checkpoint,
    set_rng_state,
)
from .config import TrainConfig
from .distributed import DistEnv, all_reduce_mean, barrier, broadcast_object, cleanup, init_distributed, is_main
from .fsdp import (
    clip_grad_norm,
    full_model_state,
    full_optimizer_state,
    load_model_state,
    load_optimizer_state,
    shard_model,
    sync_replicated_grads,
)
from .metrics import MetricsLogger
from .optim import build_optimizer, lr_factor, set_lr
from .progress import TrainProgress

MIN_FREE_BYTES = 256 * 2**20


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    final_checkpoint: Path | None
    zeroshot: zeroshot.ZeroShotResult | None = None
    skipped_steps: int = 0
    rollbacks: int = 0
    skipped_images: int = 0
    train_seconds: float = 0.0
    samples_per_s: float = 0.0
    warnings: list[str] = field(default_factory=list)


def build_model(cfg: TrainConfig) -> Clip:
    """The model a run starts from: ``init`` weights, ``pretrained`` weights of ``model``, a Hub repo, or a fresh
    model of the named/JSON config. There is no default: a run that names no model is refused."""
    if cfg.init:
        model = load_checkpoint(cfg.init, config=cfg.model)
    elif not cfg.model:
        raise ConfigError("no model to train: set model (a config name such as ViT-B-32, a model-config JSON or "
                          "hf-hub:org/repo; `clipworks info --list`) or init (weights to start from)")
    elif cfg.pretrained or cfg.model.startswith(HF_HUB_PREFIX):
        model = create_model(cfg.model, pretrained=cfg.pretrained)
    else:
        config = load_config_file(cfg.model) if cfg.model.endswith(".json") else get_model_config(cfg.model)
        if cfg.loss == "siglip" and config.init_logit_bias is None:
            # SigLIP's initialisation (Zhai et al. 2023): t = log 10, b = -10.
            config.init_logit_scale, config.init_logit_bias = math.log(10.0), -10.0
        model = Clip(config)
    if cfg.patch_dropout is not None:
        _set_patch_dropout(model, cfg.patch_dropout)
    if cfg.loss == "siglip" and model.logit_bias is None:
        raise ConfigError(f"loss 'siglip' needs a model with logit_bias; {cfg.init or cfg.model} has none "
                          "(set init_logit_bias in the model config)")
    if cfg.lock_image:
        model.lock_image_tower(cfg.lock_image_unlocked_groups, cfg.lock_image_freeze_bn_stats)
    if cfg.lock_text:
        model.lock_text_tower(cfg.lock_text_unlocked_layers, cfg.lock_text_freeze_layer_norm)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def _set_patch_dropout(model: Clip, prob: float) -> None:
    """The run's patch dropout, checked as the model config would check it (so the saved config rebuilds) and
    applied by the tower, which refuses it where it cannot drop patches."""
    vision = dataclasses.replace(model.config.vision_cfg, patch_dropout=prob)  # ConfigError on a bad value
    model.visual.set_patch_dropout(prob)
    model.config = dataclasses.replace(model.config, vision_cfg=vision)


def check_run_dir(run_dir: Path) -> None:
    """Fail now, not at the first checkpoint: the run dir must be creatable, writable and have free space."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"run directory {run_dir} is not writable: {e}") from e
    free = shutil.disk_usage(run_dir).free
    if free < MIN_FREE_BYTES:
        raise UsageError(f"only {free / 2**20:.0f} MiB free under {run_dir}; checkpoints need at least "
                         f"{MIN_FREE_BYTES / 2**20:.0f} MiB")


def open_training_data(cfg: TrainConfig, image_size: int) -> PairSource:
    if not cfg.data:
        raise DataError("no training data given (data=…: a CSV/TSV, image folder, .tar shards, fashion-mnist, openclipart)")
    return open_source(cfg.data, split=cfg.data_split, csv_img_key=cfg.csv_img_key, csv_caption_key=cfg.csv_caption_key,
                       templates=cfg.templates, image_size=image_size)


def open_eval_data(spec: str, split: str, image_size: int) -> PairSource:
    source = open_source(spec, split=split, image_size=image_size)
    if not source.class_names:
        raise DataError(f"{spec}: zero-shot evaluation needs a labelled source with class names (e.g. fashion-mnist:test)")
    return source


def zeroshot_eval(model: Clip, source: PairSource, templates: list[str], limit: int | None, seed: int,
                  device: torch.device, progress: bool = False) -> zeroshot.ZeroShotResult:
    """Zero-shot top-1 on ``limit`` images of ``source`` (a fixed random subset; all of it when None)."""
    tokenizer = get_tokenizer(model.config)
    classifier = zeroshot.build_classifier(model, tokenizer, source.class_names, templates, device=device)
    loader = PairLoader(source, image_transform(model.config.preprocess()), tokenizer, batch_size=500, seed=seed, drop_last=False)
    wanted = len(source) if limit is None else min(limit, len(source))

    def batches():
        seen = 0
        for batch in loader.epoch(0):
            if seen >= wanted or batch.labels is None:
                return
            take = min(len(batch.labels), wanted - seen)
            seen += take
            yield batch.images[:take], batch.labels[:take]

    return zeroshot.evaluate(model, classifier, batches(), device=device, progress=progress)


class _Guard:
    """Skips steps whose loss or gradient is not finite; after ``limit`` in a row asks for a rollback."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row, self.skipped, self.rollbacks, self.lr_scale = limit, 0, 0, 0, 1.0

    def check(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        ok = bool(torch.isfinite(loss)) and bool(torch.isfinite(grad_norm))
        if ok:
            self.in_a_row = 0
        else:
            self.in_a_row += 1
            self.skipped += 1
        return ok

    @property
    def wants_rollback(self) -> bool:
        return self.in_a_row >= self.limit

    def state(self) -> dict[str, Any]:
        return {"in_a_row": self.in_a_row, "skipped": self.skipped, "rollbacks": self.rollbacks, "lr_scale": self.lr_scale}

    def load(self, state: dict[str, Any]) -> None:
        self.in_a_row, self.skipped = state["in_a_row"], state["skipped"]
        self.rollbacks, self.lr_scale = state["rollbacks"], state["lr_scale"]


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def _group_ids(cfg: TrainConfig, labels: torch.Tensor | None, tokens: torch.Tensor, source: str) -> torch.Tensor | None:
    if cfg.multi_positive == "none":
        return None
    if cfg.multi_positive == "label":
        if labels is None:
            raise DataError(f"multi_positive='label' needs a labelled source; {source} has no labels")
        return labels
    return torch.unique(tokens, dim=0, return_inverse=True)[1]  # identical captions are positives


def distinct_captions(model: Clip, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The text-tower input of a batch: its distinct captions, trimmed of padding the tower cannot see, and the
    index that maps each row back (None when all are distinct). Templated captions repeat many times per batch;
    each runs once, and the forward's gather sends every copy's gradient to it."""
    unique, inverse = torch.unique(tokens, dim=0, return_inverse=True)
    if len(unique) == len(tokens):
        return model.text.trim(tokens), None
    return model.text.trim(unique), inverse


def train(cfg: TrainConfig) -> RunResult:
    """Run ``cfg`` to the end (or resume it); returns what happened. Rank 0 writes; all ranks train."""
    env = init_distributed(cfg.device, need_group=cfg.parallel == "fsdp")
    try:
        return _Run(cfg, env).run()
    finally:
        cleanup()


class _Run:
    def __init__(self, cfg: TrainConfig, env: DistEnv):
        self.cfg, self.env, self.main = cfg, env, is_main(env)
        self.run_dir = Path(cfg.out)
        if self.main:
            check_run_dir(self.run_dir)
            earlier = checkpoint_dirs(self.run_dir)
            if earlier and not cfg.resume:
                # A fresh run here would mix with them: keep_last prunes by step number (so its own checkpoints
                # could go first), and rollback or a later 'latest' would pick the other run's weights.
                raise ConfigError(f"run directory {self.run_dir} already holds checkpoints of an earlier run (latest "
                                  f"{earlier[-1].name}); continue it with resume='latest' (--resume latest) or "
                                  "choose another out directory")
        torch.manual_seed(cfg.seed)  # every rank builds the same initial weights
        self.model = build_model(cfg).to(env.device)
        self.model.train()
        self.sharded = cfg.parallel == "fsdp"
        self.source = open_training_data(cfg, self.model.image_size)
        self.val_source = open_eval_data(cfg.val_data, cfg.val_split, self.model.image_size) if cfg.val_data else None
        self.templates = cfg.zeroshot_templates or list(zeroshot.SIMPLE_TEMPLATES)
        self.tokenizer = get_tokenizer(self.model.config)
        transform = image_transform(self.model.config.preprocess(), train=cfg.train_augment)
        self.loader = PairLoader(self.source, transform, self.tokenizer, cfg.batch_size, seed=cfg.seed,
                                 rank=env.rank, world_size=env.world_size, workers=cfg.workers)
        self.total_steps = cfg.max_steps or math.ceil(cfg.epochs * len(self.loader))
        loss_cls = SigLipLoss if cfg.loss == "siglip" else ClipLoss
        self.loss_fn = loss_cls(tile_size=cfg.tile_size, local_loss=cfg.local_loss)
        self.guard = _Guard(cfg.max_bad_steps)
        self.position = Position()
        self.autocast = _autocast(cfg, env.device)
        self.warnings: list[str] = []
        resume = resolve_resume(cfg.resume, self.run_dir) if cfg.resume else None
        state = self._read_checkpoint(resume) if resume is not None else None
        if self.sharded:
            self.ddp: nn.Module = shard_model(self.model, env)  # FSDP2 shards in place: model and wrapper are one
        elif env.world_size > 1:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[env.local_rank] if env.device.type == "cuda" else None)
        else:
            self.ddp = self.model
        self.optimizer = build_optimizer(self.model, cfg)  # after sharding: it steps the shards
        if state is not None:
            self._restore(state)

    @property
    def _evaluates(self) -> bool:
        """Rank 0 evaluates; with a sharded model every rank runs the same evaluation (the forward gathers)."""
        return self.main or self.sharded

    # -- state ---------------------------------------------------------------------------------------
    def _read_checkpoint(self, path: Path) -> dict[str, Any]:
        """Load ``path``'s weights into the model (wrapped or not) and return its trainer state, refusing one whose
        data order this run would not continue."""
        sd, state = read_training_checkpoint(path, self.model.config)
        load_model_state(self.model, sd, f"training checkpoint {path}")
        saved = state.get("train_config", {})
        # The data order is a function of the global batch, so the process count may change if it stays.
        saved_global = saved.get("batch_size", self.cfg.batch_size) * state.get("world_size", 1)
        run_global = self.cfg.batch_size * self.env.world_size
        if saved_global != run_global or saved.get("seed") not in (None, self.cfg.seed):
            raise ConfigError(f"cannot resume from {path}: its global batch/seed ({saved_global}, {saved.get('seed')}) "
                              f"differ from this run's ({run_global}, {self.cfg.seed}); the data order would not continue")
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        base_lrs = [g["base_lr"] for g in self.optimizer.param_groups]
        load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        for group, base_lr in zip(self.optimizer.param_groups, base_lrs):
            group["base_lr"] = base_lr  # this run's lr settings win over the checkpoint's
        self.position = Position(**state["position"])
        self.guard.load(state["guard"])
        self.loader.skipped_total = state.get("skipped_images", 0)  # the run's count, not this process's
        set_rng_state(state["rng"])

    def _save(self) -> Path | None:
        path = None
        if self.main or self.sharded:  # gathering a sharded model's full state takes every rank
            model_state = full_model_state(self.model)
            optimizer_state = full_optimizer_state(self.model, self.optimizer)
        if self.main:
            extra = {"guard": self.guard.state(), "train_config": self.cfg.to_dict(), "world_size": self.env.world_size,
                     "skipped_images": self.loader.skipped_total}
            path = save_training_checkpoint(self.run_dir, self.model, model_state, optimizer_state, self.position,
                                            extra, self.cfg.keep_last)
        barrier(self.env)
        return path

    def _rollback(self) -> None:
        """Too many non-finite steps in a row: back to the last checkpoint's weights, at a lower learning rate."""
        found = resolve_resume("latest", self.run_dir)
        if found is None:
            raise TrainingError(f"{self.guard.in_a_row} non-finite steps in a row and no checkpoint to roll back to")
        state = self._read_checkpoint(found)
        load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        self.guard.rollbacks += 1
        self.guard.in_a_row = 0
        self.guard.lr_scale *= self.cfg.rollback_lr_factor
        self.warnings.append(f"step {self.position.step}: rolled back to {found.name}, lr × {self.guard.lr_scale:g}")

    # -- one optimisation step ---------------------------------------------------------------------------
    def _step(self, images: torch.Tensor, tokens: torch.Tensor, group_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        set_lr(self.optimizer, lr_factor(self.position.step, self.total_steps, cfg.warmup, cfg.schedule) * self.guard.lr_scale)
        self.optimizer.zero_grad(set_to_none=True)
        if cfg.accum_steps == 1:
            with self.autocast():
                out = self.ddp(images, *distinct_captions(self.model, tokens))
            bias = out[3] if len(out) > 3 else None
            loss = self.loss_fn(out[0].float(), out[1].float(), out[2], bias, group_ids)
            loss.backward()
        else:
            micro = [(img, *distinct_captions(self.model, txt))
                     for img, txt in zip(images.chunk(cfg.accum_steps), tokens.chunk(cfg.accum_steps))]

            def loss_of(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
                return self.loss_fn(img, txt, scale, bias, group_ids)

            loss = grad_cache_step(self.ddp, micro, loss_of, self.autocast)
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = cfg.grad_clip if cfg.grad_clip else float("inf")
        if self.sharded:
            sync_replicated_grads(self.model)
            grad_norm = clip_grad_norm(params, max_norm)
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if self.guard.check(loss.detach(), grad_norm):
            self.optimizer.step()
        else:
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), grad_norm

    # -- the run -----------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        cfg, env = self.cfg, self.env
        before = None
        if self._evaluates and cfg.init and self.val_source is not None and cfg.reference_max_drop is not None and self.position.step == 0:
            before = zeroshot_eval(self.model, self.val_source, self.templates, None, cfg.seed, env.device)
        if self.main:
            (self.run_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        # Decided on rank 0 for all: every rank must enter _save's barrier, or none.
        first = self.position.step == 0 and not checkpoint_dirs(self.run_dir) if self.main else None
        if broadcast_object(first, env):
            self._save()  # the guard's rollback target before any step
        logger = MetricsLogger(self.run_dir, tensorboard=cfg.tensorboard, purge_step=self.position.step or None) if self.main else None
        progress = TrainProgress(self.total_steps, self.position.step, enabled=self.main and cfg.progress)
        last_saved: Path | None = None
        samples, t_start = 0, time.perf_counter()
        window = {"loss": 0.0, "n": 0, "wait": 0.0, "t0": time.perf_counter(), "samples": 0}
        with progress:
            while self.position.step < self.total_steps:
                batches = self.loader.epoch(self.position.epoch, self.position.batch)
                t_wait = time.perf_counter()
                for batch in batches:
                    window["wait"] += time.perf_counter() - t_wait
                    if len(batch.images) == 0:
                        self.position.batch += 1
                        t_wait = time.perf_counter()
                        continue
                    images = batch.images.to(env.device, non_blocking=True)
                    tokens = batch.tokens.to(env.device, non_blocking=True)
                    ids = _group_ids(cfg, batch.labels, batch.tokens, self.source.description)
                    loss, grad_norm = self._step(images, tokens, ids.to(env.device) if ids is not None else None)
                    self.position.step += 1
                    self.position.batch += 1
                    n = len(batch.images) * env.world_size
                    samples += n
                    window["samples"] += n
                    if torch.isfinite(loss):
                        window["loss"] += float(loss)
                        window["n"] += 1
                    if self.guard.wants_rollback:
                        self._rollback()
                    step = self.position.step
                    if step % cfg.log_every == 0 or step == self.total_steps:
                        self._log(logger, progress, window, grad_norm)
                    if cfg.eval_every and step % cfg.eval_every == 0 and step < self.total_steps and self.val_source is not None:
                        self._eval(logger, cfg.val_samples)
                    if step % cfg.save_every == 0 and step < self.total_steps:
                        last_saved = self._save()
                    if step >= self.total_steps:
                        break
                    t_wait = time.perf_counter()
                else:
                    self.position.epoch += 1
                    self.position.batch = 0
        train_seconds = time.perf_counter() - t_start
        last_saved = self._save()
        result = RunResult(self.run_dir, self.position.step, last_saved, skipped_steps=self.guard.skipped,
                           rollbacks=self.guard.rollbacks, skipped_images=self.loader.skipped_total,
                           train_seconds=train_seconds, samples_per_s=samples / max(train_seconds, 1e-9),
                           warnings=self.warnings)
        if self.val_source is not None:
            result.zeroshot = self._eval(logger, None)  # every rank enters: the evaluation ends in a barrier
            if before is not None and result.zeroshot is not None and cfg.reference_max_drop is not None:
                message = zeroshot.check_regression(before, result.zeroshot, cfg.reference_max_drop)
                if message:
                    warnings.warn(message, stacklevel=2)
                    result.warnings.append(message)
        if logger is not None:
            logger.close()
        if self.main:
            self._write_summary(result)
        return result

    def _log(self, logger: MetricsLogger | None, progress: TrainProgress, window: dict, grad_norm: torch.Tensor) -> None:
        elapsed = max(time.perf_counter() - window["t0"], 1e-9)
        # a window of skipped (non-finite) steps only has no loss: NaN, logged as null, never a fake 0
        mean = window["loss"] / window["n"] if window["n"] else math.nan
        loss = all_reduce_mean(torch.tensor(mean), self.env).item()
        values = {
            "loss": loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            "logit_scale": float(self.model.logit_scale.detach().exp()),
            "samples_per_s": window["samples"] / elapsed,
            "data_wait_pct": 100.0 * window["wait"] / elapsed,
            "grad_norm": float(grad_norm),
            "epoch": self.position.epoch + self.position.batch / len(self.loader),
            "skipped_steps": self.guard.skipped,
            "skipped_images": self.loader.skipped_total,
        }
        if self.model.logit_bias is not None:
            values["logit_bias"] = float(self.model.logit_bias.detach())
        if logger is not None:
            logger.log(self.position.step, values)
        progress.update(self.position.step, values)
        window.update(loss=0.0, n=0, wait=0.0, t0=time.perf_counter(), samples=0)

    def _eval(self, logger: MetricsLogger | None, limit: int | None) -> zeroshot.ZeroShotResult | None:
        result = None
        if self._evaluates and self.val_source is not None:
            was_training = self.model.training
            result = zeroshot_eval(self.model, self.val_source, self.templates, limit, self.cfg.seed, self.env.device)
            self.model.train(was_training)
            values = {"zeroshot_top1": result.top1}
            if result.top5 is not None:
                values["zeroshot_top5"] = result.top5
            if logger is not None:
                logger.log(self.position.step, values, split="eval")
            if not self.main:
                result = None
        barrier(self.env)
        return result

    def _write_summary(self, result: RunResult) -> None:
        summary: dict[str, Any] = {
            "steps": result.steps, "train_seconds": result.train_seconds, "samples_per_s": result.samples_per_s,
            "skipped_steps": result.skipped_steps, "rollbacks": result.rollbacks, "skipped_images": result.skipped_images,
            "final_checkpoint": str(result.final_checkpoint) if result.final_checkpoint else None,
            "warnings": result.warnings,
        }
        if result.zeroshot is not None:
            summary["zeroshot_top1"] = result.zeroshot.top1
            summary["zeroshot_top5"] = result.zeroshot.top5
            summary["zeroshot_n"] = result.zeroshot.n
        with atomic_file(self.run_dir / "summary.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2))


__all__ = ["RunResult", "build_model", "check_run_dir", "train", "zeroshot_eval", "ClipConfig"]
