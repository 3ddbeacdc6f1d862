"""The hardware probe: real on this CPU machine, stand-ins only for what needs a GPU."""

from __future__ import annotations

import builtins
import sys
import types

import pytest

from components.memory.hardware import HardwareProbe, cpu_kind, hardware_key, memory_verdict, probe_hardware
from recovery import EnhancedErrorRecovery
from recovery.errors import OutOfMemoryError

MiB = 2**20


def _cuda_usable() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_cuda_usable(), reason="checks the CPU-only path for real")
def test_probe_without_nvml_and_cuda_reports_the_cpu() -> None:
    """On a machine without NVIDIA driver and a CPU torch build, the probe says why and reports RAM and cap."""
    import torch  # noqa: F401  (loaded, so the probe asks torch.cuda for real)

    state = probe_hardware(memory_cap=400 * MiB)
    assert state["device"] == "cpu" and hardware_key(state) == cpu_kind() == state["cpu_kind"]
    assert state["nvml"].startswith("unavailable: NVMLError")
    assert state["cuda"] == "unavailable: AssertionError"
    assert state["ram_total_bytes"] > 0 and 0 < state["ram_free_bytes"] <= state["ram_total_bytes"]
    assert state["worker_memory_cap"] == 400 * MiB and state["torch_version"]
    assert "memory cap of 400 MiB" in state["memory_verdict"]


def test_probe_without_the_nvml_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """When nvidia-ml-py is not installed at all, the probe still answers."""
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    state = probe_hardware()
    assert state["nvml"] == "unavailable: ModuleNotFoundError" and "ram_total_bytes" in state


def test_probe_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even when /proc/meminfo cannot be read, the probe returns a dict that says so."""
    real_open = builtins.open

    def failing_open(path, *args, **kwargs):
        if str(path) == "/proc/meminfo":
            raise PermissionError(13, "denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", failing_open)
    state = HardwareProbe()()
    assert state["ram"] == "unavailable: PermissionError" and "device" in state


class _FakeNVML(types.ModuleType):
    """Stand-in for NVML on a GPU (no GPU here): one 24 GiB card, another process holding 10 GiB."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        super().__init__("pynvml")

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54"

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:
        return object()

    def nvmlDeviceGetName(self, handle: object) -> bytes:
        return b"NVIDIA Test 24GB"

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> types.SimpleNamespace:
        return types.SimpleNamespace(total=24 * 2**30, free=12 * 2**30, used=12 * 2**30)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: object) -> list[types.SimpleNamespace]:
        return [types.SimpleNamespace(pid=4242, usedGpuMemory=10 * 2**30)]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: object) -> list:
        raise self.NVMLError("not supported")


def test_probe_names_other_processes_holding_gpu_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """With NVML present, the GPU, its memory, the driver and other processes' memory are evidence."""
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNVML())
    state = probe_hardware()
    assert state["nvml"] == "ok" and state["driver_version"] == "550.54"
    assert state["gpus"][0]["processes"] == [{"pid": 4242, "used_bytes": 10 * 2**30, "this_process": False}]
    assert state["device"] == "cuda" and hardware_key(state) == "cuda:NVIDIA Test 24GB:24GiB"
    assert state["memory_verdict"].startswith("other processes hold 10.0 GiB")


def test_verdict_names_fragmentation() -> None:
    """Memory reserved by the CUDA cache but unused reads as fragmentation, not a true OOM."""
    verdict = memory_verdict({"cuda_reserved_bytes": 8 * 2**30, "cuda_allocated_bytes": 2 * 2**30})
    assert verdict.startswith("fragmentation: 6.0 GiB")


def test_probe_is_the_engines_evidence() -> None:
    """As the engine's probe, every classified failure carries the hardware facts."""
    engine = EnhancedErrorRecovery(probe=HardwareProbe(memory_cap=400 * MiB))
    ctx = engine.categorize(OutOfMemoryError("out of memory during decode", phase="decode", memory_cap=400 * MiB))
    assert ctx.system_state["worker_memory_cap"] == 400 * MiB
    assert "memory_verdict" in ctx.system_state and "nvml" in ctx.system_state


def test_cpu_kind_names_amx_where_the_cpu_has_it() -> None:
    """The CPU's kind follows /proc/cpuinfo: ``cpu:amx`` exactly where the flags list ``amx_bf16``."""
    from recovery.procfs import cpu_flags

    assert cpu_kind() == ("cpu:amx" if "amx_bf16" in cpu_flags() else "cpu")
    assert cpu_flags(), "/proc/cpuinfo lists this CPU's flags"


def test_hardware_key_of_a_gpu_machine_running_on_the_cpu_is_the_cpu() -> None:
    """``device="cpu"`` on a machine with a GPU keys on the CPU, not on the card it does not use."""
    state = {"device": "cuda", "accelerator": "NVIDIA Test", "cuda_total_bytes": 24 * 2**30, "cpu_kind": "cpu"}
    assert hardware_key(state) == "cuda:NVIDIA Test:24GiB" and hardware_key(state, device="cpu") == "cpu"
