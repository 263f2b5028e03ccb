"""How clipworks runs on the CPU: the thread count, and whether bf16 arithmetic is native here.

Threads: ``set_threads(n)`` records ``n`` (``threads()``) and sets torch's intra-op pool (now if torch is loaded, else
when ``Encoder.load`` loads a model), so any other engine the process runs (an onnxruntime session's
``intra_op_num_threads``) uses the same count instead of its own default. This module imports no torch: the
torch-free runtime and CLI use it too.

bf16: a CPU with the bf16 dot-product instructions (x86 ``avx512_bf16`` or ``amx_bf16``, Arm ``bf16``/FEAT_BF16)
runs bf16 matmuls about twice as fast as fp32 (ViT-B/32, avx512_bf16: 1.86×, cosine to fp32 ≥ 0.9999). Without
them torch emulates bf16, slower than fp32 and no more accurate, so ``inference_dtype`` falls back to fp32 with a
warning. Detection reads what the processor reports (``/proc/cpuinfo`` flags, macOS ``sysctl``); it never assumes.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
    import torch

_threads: int | None = None
_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 (AVX-512 BF16, AMX), aarch64 Linux FEAT_BF16


def set_threads(n: int | None) -> None:
    """Use ``n`` intra-op threads (torch now if it is loaded, else ``apply_threads`` at model load; other engines read
    ``threads()``); None leaves the defaults."""
    global _threads
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"threads must be a positive integer, got {n!r}")
    _threads = n
    if "torch" in sys.modules:
        apply_threads()


def apply_threads() -> None:
    """Give torch the recorded thread count (a no-op when none was set)."""
    if _threads is not None:
        import torch

        torch.set_num_threads(_threads)


def threads() -> int | None:
    """The thread count set with ``set_threads`` (None: never set; each engine uses its default)."""
    return _threads


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The processor's feature flags as the OS reports them (``/proc/cpuinfo``'s ``flags`` on x86, ``Features`` on
    Arm, or the text given; macOS: FEAT_BF16 from ``sysctl``); empty when it does not say."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    if not flags and platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out == "1":
            flags.add("bf16")
    return flags


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """Whether this processor has native bf16 dot products (see the module docstring)."""
    return bool(_BF16_FLAGS & cpu_flags())


class PrecisionWarning(UserWarning):
    """A requested precision is not native on this device; another one is used."""


def inference_dtype(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` when the model should keep fp32 weights and compute in
    reduced precision (bf16 on a CPU that has it); None for fp32 or when the device cannot (then a warning)."""
    import torch

    if torch.device(device).type != "cpu" or precision != "bf16":
        return None
    if cpu_supports_bf16():
        return torch.bfloat16
    warnings.warn("bf16 was requested on a CPU without native bf16 instructions (no avx512_bf16, amx_bf16 or Arm bf16 "
                  "in its flags): computing in fp32 instead", PrecisionWarning, stacklevel=3)
    return None
