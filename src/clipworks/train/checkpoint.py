"""Training checkpoints: everything a run needs to continue sample-exactly, written atomically.

A checkpoint is a directory ``RUN/checkpoints/step-000123/`` that is a complete native model directory
(so ``load_checkpoint``, ``--init`` and ``interpolate`` read it directly) plus ``trainer.pt``: optimizer,
step, data position, RNG states, guard counters and the run's config. ``atomic_dir`` makes it appear
whole or not at all, so a SIGKILL mid-write leaves the previous checkpoint as ``latest``.
"""

from __future__ import annotations

import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoints import CheckpointError, load_state, save_pretrained
from ..fileio import atomic_dir
from ..model import Clip, ClipConfig

CHECKPOINT_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class Position:
    """Where training stands: optimizer steps done, and the next batch of which epoch to read."""

    step: int = 0
    epoch: int = 0
    batch: int = 0


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss}
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temp dirs of an interrupted write are ignored)."""
    root = run_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and (p / "trainer.pt").is_file()]
    return [p for _, p in sorted(found)]


def save_training_checkpoint(
    run_dir: Path, model: Clip, model_state: dict[str, torch.Tensor], optimizer_state: dict[str, Any],
    position: Position, extra: dict[str, Any], keep_last: int,
) -> Path:
    """Write ``step-N/`` from full (unsharded) states; ``model`` gives the config and the tokenizer files."""
    target = run_dir / CHECKPOINT_DIR / f"step-{position.step:08d}"
    state = {
        "position": vars(position).copy(),
        "optimizer": optimizer_state,
        "rng": rng_state(),
        **extra,
    }
    with atomic_dir(target) as tmp:
        save_pretrained(model, tmp / "model", state_dict=model_state)  # a nested atomic write inside the outer one
        torch.save(state, tmp / "trainer.pt")
    for old in checkpoint_dirs(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def resolve_resume(resume: str, run_dir: Path) -> Path | None:
    """``latest`` → newest complete checkpoint of the run (None when there is none yet); else a path."""
    if resume == "latest":
        found = checkpoint_dirs(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / "trainer.pt").is_file():
        raise CheckpointError(f"{path} is not a training checkpoint (no trainer.pt); expected RUN/checkpoints/step-N or 'latest'")
    return path


def read_training_checkpoint(path: Path, config: ClipConfig) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The model weights and trainer state of a checkpoint, refusing one of a different model config (naming
    the keys that differ)."""
    saved_cfg, sd, _ = load_state(path / "model")
    differ = saved_cfg.diff(config)
    if differ:
        raise CheckpointError(
            f"cannot resume from {path}: its model config differs from this run's in {', '.join(differ)}"
        )
    try:
        return sd, torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise CheckpointError(f"cannot read {path / 'trainer.pt'}: {e}") from e

