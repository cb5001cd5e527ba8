"""Is there a usable NVIDIA GPU? Answered without importing torch.

Checks, cheapest first: ``CUDA_VISIBLE_DEVICES`` hiding every device, the
driver's ``/proc/driver/nvidia/gpus`` entries, then ``nvidia-smi -L``.
"""

import os
import shutil
import subprocess
from typing import Optional

__all__ = ["is_available", "device_count", "device_names"]

_PROC_GPUS = "/proc/driver/nvidia/gpus"


def _hidden_by_env() -> bool:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return False
    visible = visible.strip()
    # "" hides every device; "-1" and "NoDevFiles" are the common ways to say none.
    return visible == "" or visible.startswith("-1") or visible == "NoDevFiles"


def device_names(timeout: float = 10.0) -> list[str]:
    """The GPU names ``nvidia-smi -L`` lists (empty when it is absent or fails)."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        done = subprocess.run(
            [binary, "-L"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    return [line.strip() for line in lines if line.strip().startswith("GPU ")]


def _proc_count() -> Optional[int]:
    try:
        return len(os.listdir(_PROC_GPUS))
    except OSError:
        return None


def device_count() -> int:
    """How many NVIDIA GPUs this process can see (0 when none)."""
    if _hidden_by_env():
        return 0
    count = _proc_count() or len(device_names())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if count and visible:
        # The driver lists every GPU of the machine; the variable narrows it.
        return min(count, len([d for d in visible.split(",") if d.strip()]))
    return count


def is_available() -> bool:
    """True when at least one NVIDIA GPU is visible (what ``torch.cuda.is_available`` would say
    on a working install, without importing torch)."""
    return device_count() > 0
