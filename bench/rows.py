"""One machine-readable line per figure a bench script measures, so ``bench/table.py`` can gather the README's
table from the scripts' own runs (each script still prints its human-readable lines and its ratio last).

    from rows import row
    row("ViT-B/32 image tower, batch 32", "images/s", ours=10.9, peer=10.4, peer_name="open_clip")
prints ``ROW {"what": …, "unit": …, "ours": …, "peer": …, "ratio": …, "machine": …}``.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from typing import Any


@functools.cache
def machine() -> str:
    """The processor (or GPU) and the cores this process may use, as a table row names it."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{name}, {cores} cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f"; GPU {torch.cuda.get_device_name()}"
    except ImportError:
        pass
    return text


def row(what: str, unit: str, ours: float, peer: float | None = None, *, peer_name: str = "open_clip",
        higher_is_better: bool = True, ceiling: float | None = None, note: str = "") -> dict[str, Any]:
    """Print and return one row. ``ratio`` is ours/peer when higher is better (throughput), peer/ours when lower
    is better (latency, memory), so a ratio above 1 always means clipworks is ahead. ``ceiling``: the figure's
    fraction of the machine's ceiling, when the script measured one."""
    ratio = None
    if peer:
        ratio = ours / peer if higher_is_better else peer / ours
    out = {"what": what, "unit": unit, "ours": ours, "peer": peer, "peer_name": peer_name if peer else None,
           "ratio": ratio, "ceiling": ceiling, "note": note, "machine": machine()}
    print("ROW " + json.dumps(out), flush=True)
    return out
