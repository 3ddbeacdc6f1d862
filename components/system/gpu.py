"""What the GPU looked like when memory ran out, read in the process that ran out (the worker), not the app.

An out-of-memory on a GPU has three common causes that call for different answers: the request is too big (lower
the settings), another process holds the memory (close it: lowering our settings may not help), or the caching
allocator holds reserved blocks it cannot reuse (fragmentation: expandable segments, an emptied cache and a retry
help). ``cuda_memory_evidence`` reads free/total from the CUDA runtime and the allocator's reserved-but-unallocated
bytes; ``other_processes_bytes`` asks NVML what other processes hold; ``oom_cause`` names the likely cause.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from recovery.messages import format_bytes

__all__ = ["cuda_memory_evidence", "oom_cause", "other_processes_bytes"]

#: Another process holding more than this share of the card is the likely cause.
OTHERS_SHARE = 0.1
#: Reserved-but-unallocated above this share of the reserved bytes is fragmentation.
FRAGMENTED_SHARE = 0.2


def cuda_memory_evidence(device: int = 0) -> dict[str, int]:
    """Free/total bytes on the device and the caching allocator's allocated/reserved bytes; ``{}`` without CUDA
    (a CPU build, no device, a driver that does not answer)."""
    torch: Any = sys.modules.get("torch")
    if torch is None:
        try:
            import torch
        except ImportError:  # pragma: no cover - torch is a dependency
            return {}
    try:
        if not torch.cuda.is_available():
            return {}
        free, total = torch.cuda.mem_get_info(device)
        allocated, reserved = torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)
    except (AssertionError, RuntimeError):  # AssertionError: a CPU build; RuntimeError: the driver
        return {}
    return {
        "gpu_free_bytes": int(free),
        "gpu_total_bytes": int(total),
        "gpu_allocated_bytes": int(allocated),
        "gpu_reserved_unused_bytes": int(reserved - allocated),
    }


def other_processes_bytes(pid: int | None = None) -> int | None:
    """GPU memory held by processes other than ``pid`` (default: this one), summed over every GPU; ``None`` when
    NVML cannot tell (no driver, no GPU, a container without NVML)."""
    try:
        import pynvml
    except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency
        return None
    me = os.getpid() if pid is None else pid
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        held = 0
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                try:
                    processes = getattr(pynvml, getter)(handle)
                except (pynvml.NVMLError, AttributeError):
                    continue
                held += sum(int(p.usedGpuMemory or 0) for p in processes if int(p.pid) != me)
        return held
    except pynvml.NVMLError:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def oom_cause(evidence: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(reason, sentence)`` for the likely cause in ``evidence`` (the keys of ``cuda_memory_evidence`` plus
    ``gpu_other_processes_bytes``), or ``None`` when nothing points away from "the request is too big"."""
    total = evidence.get("gpu_total_bytes")
    others = evidence.get("gpu_other_processes_bytes") or 0
    if total and others > OTHERS_SHARE * total:
        return "other_processes", f"other processes hold {format_bytes(others)} of {format_bytes(total)} GPU memory"
    unused = evidence.get("gpu_reserved_unused_bytes") or 0
    reserved = unused + (evidence.get("gpu_allocated_bytes") or 0)
    if reserved and unused > FRAGMENTED_SHARE * reserved:
        return "fragmentation", f"fragmentation: {format_bytes(unused)} reserved by the CUDA cache but not in use"
    return None
