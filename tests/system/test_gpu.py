"""GPU evidence at an out-of-memory: read with the real torch and NVML APIs (which answer "nothing" on this CPU
machine), and the cause named from the figures."""

from __future__ import annotations

import pickle

from components.system.gpu import cuda_memory_evidence, oom_cause, other_processes_bytes
from recovery import EnhancedErrorRecovery
from recovery.errors import OutOfMemoryError
from recovery.messages import api_error

GiB = 2**30


def test_without_cuda_the_evidence_is_empty_not_an_error() -> None:
    import torch

    assert torch.cuda.is_available() or cuda_memory_evidence() == {}


def test_without_an_nvml_driver_other_processes_are_unknown() -> None:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        assert other_processes_bytes() is None
    else:  # pragma: no cover - a machine with an NVIDIA driver
        pynvml.nvmlShutdown()
        assert isinstance(other_processes_bytes(), int)


def test_another_process_holding_much_of_the_card_is_the_cause() -> None:
    reason, sentence = oom_cause({"gpu_total_bytes": 80 * GiB, "gpu_other_processes_bytes": 44 * GiB}) or ("", "")
    assert reason == "other_processes" and sentence.startswith("other processes hold 44")


def test_reserved_but_unused_blocks_are_fragmentation() -> None:
    evidence = {"gpu_total_bytes": 24 * GiB, "gpu_allocated_bytes": 10 * GiB, "gpu_reserved_unused_bytes": 6 * GiB}
    assert (oom_cause(evidence) or ("",))[0] == "fragmentation"


def test_a_plainly_too_big_request_names_no_other_cause() -> None:
    evidence = {"gpu_total_bytes": 24 * GiB, "gpu_allocated_bytes": 23 * GiB, "gpu_reserved_unused_bytes": GiB // 2}
    assert oom_cause({**evidence, "gpu_other_processes_bytes": 0}) is None


def test_the_cause_crosses_the_process_boundary_and_reaches_the_user_message() -> None:
    error = OutOfMemoryError(
        "out of memory during denoise: other processes hold 44.0 GiB of 80.0 GiB GPU memory",
        phase="denoise",
        device="cuda",
        gpu_total_bytes=80 * GiB,
        gpu_other_processes_bytes=44 * GiB,
        reason="other_processes",
        cause="other processes hold 44.0 GiB of 80.0 GiB GPU memory",
    )
    again = pickle.loads(pickle.dumps(error))
    assert again.gpu_other_processes_bytes == 44 * GiB and again.reason == "other_processes"
    message = api_error(EnhancedErrorRecovery().categorize(again))["error"]["user_message"]
    assert message.startswith("Another program is using the graphics card's memory")
    assert "other processes hold 44" in message
