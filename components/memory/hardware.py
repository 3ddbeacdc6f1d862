"""What the machine has, as evidence at every failure: accelerator, memory, versions, who else holds memory.

``probe_hardware()`` returns a plain dict and never raises: every source (NVML, torch.cuda, ``/proc/meminfo``,
library versions) is optional, and a source that fails leaves a line saying why (``nvml: "unavailable:
NVMLError_LibraryNotFound"``) instead of an exception. ``HardwareProbe(memory_cap=...)`` is the same as a callable
for ``EnhancedErrorRecovery(probe=...)``. The fields let a user tell a true out-of-memory from fragmentation
(CUDA memory reserved by the cache but not allocated) or another process holding the GPU (NVML's process list).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.system.gpu import oom_cause
from recovery.messages import format_bytes
from recovery.procfs import cpu_flags, meminfo

__all__ = ["HardwareProbe", "cpu_kind", "hardware_key", "memory_verdict", "probe_hardware"]

_LIBRARIES = ("torch", "diffusers", "transformers", "huggingface_hub", "accelerate")


def _ram(state: dict[str, Any]) -> None:
    try:
        memory = meminfo("MemTotal", "MemAvailable")
    except (OSError, ValueError, IndexError) as exc:
        state["ram"] = f"unavailable: {type(exc).__name__}"
        return
    if "MemTotal" in memory:
        state["ram_total_bytes"] = memory["MemTotal"]
    if "MemAvailable" in memory:
        state["ram_free_bytes"] = memory["MemAvailable"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml(state: dict[str, Any]) -> None:
    """GPU name, total/free memory, driver, and every process holding GPU memory — from NVML, if present."""
    try:
        import pynvml
    except ImportError as exc:
        state["nvml"] = f"unavailable: {type(exc).__name__}"
        return
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:  # no driver / no GPU: NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded
        state["nvml"] = f"unavailable: {type(exc).__name__}"
        return
    try:
        state["nvml"] = "ok"
        state["driver_version"] = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            processes = []
            for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                try:
                    for proc in getattr(pynvml, getter)(handle):
                        processes.append(
                            {
                                "pid": int(proc.pid),
                                "used_bytes": proc.usedGpuMemory,
                                "this_process": int(proc.pid) == os.getpid(),
                            }
                        )
                except (pynvml.NVMLError, AttributeError):
                    continue
            gpus.append(
                {
                    "index": index,
                    "name": _text(pynvml.nvmlDeviceGetName(handle)),
                    "total_bytes": int(info.total),
                    "free_bytes": int(info.free),
                    "used_bytes": int(info.used),
                    "processes": processes,
                }
            )
        state["gpus"] = gpus
    except pynvml.NVMLError as exc:
        state["nvml"] = f"partial: {type(exc).__name__}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _torch_cuda(state: dict[str, Any]) -> None:
    """Free/total from the CUDA runtime and this process's allocated vs reserved (the fragmentation signal)."""
    torch = sys.modules.get("torch")  # importing torch costs seconds: report only when it is loaded already
    if torch is None:
        state["cuda"] = "unavailable: torch not loaded"
        return
    state["torch_cuda_version"] = getattr(torch.version, "cuda", None)
    try:
        free, total = torch.cuda.mem_get_info()
    except (AssertionError, RuntimeError) as exc:  # AssertionError: a CPU build; RuntimeError: no device/driver
        state["cuda"] = f"unavailable: {type(exc).__name__}"
        return
    state["cuda"] = "ok"
    state["cuda_free_bytes"], state["cuda_total_bytes"] = int(free), int(total)
    state["cuda_device_name"] = torch.cuda.get_device_name()
    state["cuda_allocated_bytes"] = int(torch.cuda.memory_allocated())
    state["cuda_reserved_bytes"] = int(torch.cuda.memory_reserved())


def cpu_kind() -> str:
    """This CPU as the planner tells CPUs apart: ``cpu:amx`` where AMX and AVX-512-BF16 run bf16 convolutions
    (oneDNN then picks other kernels, with other memory: measured here, VAE tiling never lowers the tiny model's
    peak on such a CPU), else ``cpu``."""
    return "cpu:amx" if "amx_bf16" in cpu_flags() else "cpu"


def memory_verdict(state: Mapping[str, Any]) -> str:
    """One line naming the likely cause of an out-of-memory from the probe's numbers (``oom_cause``'s rules)."""
    reserved, allocated = state.get("cuda_reserved_bytes"), state.get("cuda_allocated_bytes")
    others = sum(
        p.get("used_bytes") or 0
        for gpu in state.get("gpus", ())
        for p in gpu.get("processes", ())
        if not p.get("this_process")
    )
    total = state.get("cuda_total_bytes") or next((g["total_bytes"] for g in state.get("gpus", ())), None)
    found = oom_cause(
        {
            "gpu_total_bytes": total,
            "gpu_other_processes_bytes": others,
            "gpu_allocated_bytes": allocated,
            "gpu_reserved_unused_bytes": (reserved - allocated) if reserved and allocated is not None else None,
        }
    )
    if found is not None:
        return found[1]
    if state.get("worker_memory_cap"):
        return f"the request needs more than the worker's memory cap of {format_bytes(state['worker_memory_cap'])}"
    return "the request needs more memory than is free"


def probe_hardware(*, memory_cap: int | None = None) -> dict[str, Any]:
    """Accelerator, memory, versions and other GPU users, as a dict; never raises (a failing part says why)."""
    state: dict[str, Any] = {"python": platform.python_version(), "worker_memory_cap": memory_cap}
    for part in (_ram, _nvml, _torch_cuda):
        try:
            part(state)
        except Exception as exc:  # a probe must never turn one failure into two
            state[f"{part.__name__.strip('_')}_error"] = type(exc).__name__
    for name in _LIBRARIES:
        module = sys.modules.get(name)
        if module is not None:
            state[f"{name}_version"] = getattr(module, "__version__", None)
    gpus = state.get("gpus") or []
    if state.get("cuda") == "ok":
        state["accelerator"] = state["cuda_device_name"]
        state["device"] = "cuda"
    elif gpus:
        state["accelerator"] = gpus[0]["name"]
        state["device"] = "cuda"
    else:
        state["accelerator"] = platform.processor() or platform.machine() or "cpu"
        state["device"] = "cpu"
    state["cpu_count"] = os.cpu_count()
    state["cpu_kind"] = cpu_kind()
    state["memory_verdict"] = memory_verdict(state)
    return state


@dataclass(frozen=True)
class HardwareProbe:
    """``probe_hardware`` as the recovery engine's ``probe`` callable, knowing the worker's cap."""

    memory_cap: int | None = None

    def __call__(self) -> dict[str, Any]:
        return probe_hardware(memory_cap=self.memory_cap)


def hardware_key(state: Mapping[str, Any], *, device: str | None = None) -> str:
    """A short, stable name for the hardware generation runs on (the planner's and the breaker's key): the probe's
    ``cpu_kind`` (``cpu`` or ``cpu:amx``) or ``cuda:<name>:<total GiB>``. ``device``: where it runs, when not where
    the probe would put it (``cpu`` on a machine with a GPU)."""
    if (device or state.get("device")) != "cuda":
        return str(state.get("cpu_kind") or "cpu")
    total = state.get("cuda_total_bytes") or next((g["total_bytes"] for g in state.get("gpus", ())), 0)
    return f"cuda:{state.get('accelerator')}:{round(total / 2**30)}GiB"
