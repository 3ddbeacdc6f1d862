"""Classification of real exceptions, the message table row by row, evidence and severity rules."""

from __future__ import annotations

import concurrent.futures
import errno
import importlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import httpx2
import numpy as np
import pytest
import safetensors.torch
import torch
from huggingface_hub import errors as hub_errors
from huggingface_hub.utils import hf_raise_for_status

import recovery
from recovery import MESSAGE_RULES, Classifier, classify_exception
from recovery import EnhancedFailureType as F
from recovery import ErrorSeverity as S

HUB = "https://huggingface.co/api/models/acme/video"


def caught(action: Callable[[], object]) -> BaseException:
    """Run ``action`` and return what it raised."""
    try:
        action()
    except BaseException as exc:
        return exc
    raise AssertionError("expected an exception")


def hub_error(status: int, error_code: str | None = None) -> BaseException:
    """The error the real hub client raises for this response."""
    headers = {"X-Error-Code": error_code} if error_code else {}
    response = httpx2.Response(status, headers=headers, request=httpx2.Request("GET", HUB))
    return caught(lambda: hf_raise_for_status(response))


def truncated_safetensors(tmp_path: Path) -> BaseException:
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(64)}, str(path))
    with open(path, "r+b") as handle:
        handle.truncate(40)
    return caught(lambda: safetensors.torch.load_file(str(path)))


def wrapped_in_oserror(inner: BaseException) -> BaseException:
    """How diffusers reports a loading failure: an OSError raised from the real one."""

    def load() -> None:
        raise OSError("Unable to load weights from checkpoint file") from inner

    return caught(load)


def complex_half_sum() -> None:
    """A dtype this CPU has no kernel for (torch raises NotImplementedError "... not implemented for ...")."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.zeros(4, dtype=torch.complex32).sum()


def write_to_dev_full() -> None:
    with open("/dev/full", "w") as handle:
        handle.write("x")


CASES: dict[str, tuple[Callable[[Path, Callable[[str], str], str], BaseException], F]] = {
    "hub_503": (lambda t, l, c: hub_error(503), F.MODEL_DOWNLOAD_FAILURE),
    "hub_repo_not_found": (lambda t, l, c: hub_error(404, "RepoNotFound"), F.MODEL_DOWNLOAD_FAILURE),
    "httpx2_dropped": (lambda t, l, c: caught(lambda: httpx2.get(l("close"))), F.MODEL_DOWNLOAD_FAILURE),
    "safetensors_truncated": (lambda t, l, c: truncated_safetensors(t), F.MODEL_CORRUPTION_DETECTED),
    "oserror_from_safetensors": (
        lambda t, l, c: wrapped_in_oserror(truncated_safetensors(t)),
        F.MODEL_CORRUPTION_DETECTED,
    ),
    "hub_revision": (lambda t, l, c: hub_error(404, "RevisionNotFound"), F.MODEL_VERSION_MISMATCH),
    "future_timeout": (
        lambda t, l, c: caught(lambda: concurrent.futures.Future().result(timeout=0.001)),
        F.MODEL_LOADING_TIMEOUT,
    ),
    "own_load_timeout": (lambda t, l, c: recovery.ModelLoadTimeoutError("slow", timeout_s=5), F.MODEL_LOADING_TIMEOUT),
    "missing_file": (lambda t, l, c: caught(lambda: open(t / "model_index.json")), F.MODEL_INTEGRITY_FAILURE),
    "own_integrity": (lambda t, l, c: recovery.IntegrityError("hash", files=["a"]), F.MODEL_INTEGRITY_FAILURE),
    "hub_entry": (lambda t, l, c: hub_error(404, "EntryNotFound"), F.MODEL_DOWNLOAD_FAILURE),
    "torch_shapes": (
        lambda t, l, c: caught(
            lambda: torch.nn.Linear(2, 2).load_state_dict({"weight": torch.zeros(3, 3), "bias": torch.zeros(2)})
        ),
        F.MODEL_COMPATIBILITY_ERROR,
    ),
    "cpu_allocator": (lambda t, l, c: caught(lambda: torch.empty(2**60, dtype=torch.uint8)), F.VRAM_EXHAUSTION),
    "torch_cuda_oom": (lambda t, l, c: torch.OutOfMemoryError("CUDA out of memory."), F.VRAM_EXHAUSTION),
    "numpy_memory": (lambda t, l, c: caught(lambda: np.empty(2**60, dtype=np.uint8)), F.VRAM_EXHAUSTION),
    "own_oom": (lambda t, l, c: recovery.OutOfMemoryError("oom", phase="decode"), F.VRAM_EXHAUSTION),
    "dev_full": (lambda t, l, c: caught(write_to_dev_full), F.STORAGE_SPACE_INSUFFICIENT),
    "edquot": (lambda t, l, c: OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), F.STORAGE_SPACE_INSUFFICIENT),
    "httpx2_refused": (lambda t, l, c: caught(lambda: httpx2.get(c)), F.NETWORK_CONNECTIVITY_LOSS),
    "httpx_refused": (lambda t, l, c: caught(lambda: httpx.get(c)), F.NETWORK_CONNECTIVITY_LOSS),
    "hub_offline": (lambda t, l, c: hub_errors.OfflineModeIsEnabled("offline"), F.NETWORK_CONNECTIVITY_LOSS),
    "hub_429": (lambda t, l, c: hub_error(429), F.BANDWIDTH_LIMITATION),
    "httpx2_stalled": (lambda t, l, c: caught(lambda: httpx2.get(l("stall"), timeout=0.2)), F.BANDWIDTH_LIMITATION),
    "half_kernel": (lambda t, l, c: caught(complex_half_sum), F.HARDWARE_OPTIMIZATION_FAILURE),
    "own_bad_output": (
        lambda t, l, c: recovery.BadOutputError("NaN latents", reason="nan"),
        F.GENERATION_PIPELINE_ERROR,
    ),
    "worker_killed": (
        lambda t, l, c: recovery.WorkerCrashedError("killed", exitcode=-9, signal_name="SIGKILL"),
        F.SYSTEM_RESOURCE_ERROR,
    ),
    "emfile": (lambda t, l, c: OSError(errno.EMFILE, os.strerror(errno.EMFILE)), F.SYSTEM_RESOURCE_ERROR),
    "missing_module": (
        lambda t, l, c: caught(lambda: importlib.import_module("kintsugi_no_such_module")),
        F.DEPENDENCY_MISSING,
    ),
    "invalid_parameter": (
        lambda t, l, c: recovery.InvalidParameterError(
            "`num_frames` must be 4k+1 (got 16)", parameter="num_frames", value=16, constraint="4k+1"
        ),
        F.INVALID_PARAMETERS,
    ),
    "cuda_on_cpu_build": (lambda t, l, c: caught(lambda: torch.zeros(1).cuda()), F.UNSUPPORTED_OPERATION),
    "not_implemented": (lambda t, l, c: NotImplementedError("image-to-video"), F.UNSUPPORTED_OPERATION),
    "hub_gated": (lambda t, l, c: hub_error(403, "GatedRepo"), F.PERMISSION_DENIED),
    "sysfs_write": (lambda t, l, c: caught(lambda: open("/sys/kernel/notes", "w")), F.PERMISSION_DENIED),
    "erofs": (lambda t, l, c: OSError(errno.EROFS, os.strerror(errno.EROFS)), F.PERMISSION_DENIED),
}


@pytest.mark.parametrize("case", list(CASES))
def test_real_exception_is_classified(case: str, tmp_path: Path, loopback, closed_port_url: str) -> None:
    """Each real exception of a library (or of our worker) maps to the documented failure type."""
    build, expected = CASES[case]
    assert classify_exception(build(tmp_path, loopback, closed_port_url)).failure_type is expected


def test_every_failure_type_has_a_real_case() -> None:
    """The cases above cover all 17 failure types."""
    assert {expected for _, expected in CASES.values()} == set(F)


def test_gated_is_checked_before_not_found() -> None:
    """GatedRepoError subclasses RepositoryNotFoundError but means permission, not a missing repo."""
    error = hub_error(403, "GatedRepo")
    assert isinstance(error, hub_errors.RepositoryNotFoundError)
    assert classify_exception(error).failure_type is F.PERMISSION_DENIED


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (404, False), (429, True), (401, False)])
def test_http_status_sets_retryable(status: int, retryable: bool) -> None:
    """Server errors and rate limits are worth retrying, other client errors are not."""
    assert classify_exception(hub_error(status)).evidence["retryable"] is retryable


ROW_SAMPLES = {
    "cpu_allocator": "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried",
    "out_of_memory": "HIP out of memory. Tried to allocate 20.00 MiB",
    "onednn_allocation": "could not create a primitive",
    "allocator_assert": 'NVML_SUCCESS == r INTERNAL ASSERT FAILED at "../c10/cuda/CUDACachingAllocator.cpp":830',
    "poisoned_device": "an illegal memory access was encountered",
    "killed": "Killed",
    "open_files": "[Errno 24] Too many open files",
    "disk_full": "write failed: No space left on device",
    "permission": "cannot write cache: Permission denied",
    "gated": "Access to model black-forest-labs/FLUX.1-dev is restricted. You must have access to it",
    "bad_weights": "Error while deserializing header: invalid header length",
    "truncated_file": "Consistency check failed: file should be of size 2000 but has size 1000 (model.safetensors).",
    "hash_mismatch": "sha256 mismatch for diffusion_pytorch_model.safetensors",
    "dropped_transfer": "('Connection broken: IncompleteRead(0 bytes read, 1024 more expected)', IncompleteRead(0))",
    "not_on_hub": "foo/bar is not a local folder and is not a valid model identifier listed on 'https://huggingface.co/models'",
    "library_version": "This pipeline requires diffusers>=0.50",
    "size_limit": "view size is not compatible with input tensor's size and stride",
    "weight_shapes": "size mismatch for proj.weight: copying a param with shape",
    "missing_model_file": "Error no file named diffusion_pytorch_model.bin found in directory /models/vae.",
    "kernel_or_compile": "BackendCompilerFailed: backend='inductor' raised",
    "dtype_device": "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!",
    "cuda_only": "Torch not compiled with CUDA enabled",
    "invalid_value": "`height` and `width` have to be divisible by 16 but are 100 and 100.",
    "bad_output": "decoded frames contain NaN values",
    "rate_limited": "429 Too Many Requests",
    "network": "Temporary failure in name resolution",
    "timed_out": "the operation timed out",
    "missing_module": "No module named 'imageio_ffmpeg'",
    "broken_extension": "operator torchvision::nms does not exist",
    "old_driver": "The NVIDIA driver on your system is too old (found version 11040).",
    "missing_package": "name 'ftfy' is not defined",
}


def test_every_message_row_has_a_sample() -> None:
    """Every row of the message table is exercised below, and no sample is stale."""
    assert set(ROW_SAMPLES) == {row.name for row in MESSAGE_RULES}


@pytest.mark.parametrize("row", MESSAGE_RULES, ids=lambda row: row.name)
def test_message_row_matches_its_sample(row: recovery.MessageRule) -> None:
    """A plain RuntimeError with the row's text is classified by exactly that row."""
    found = classify_exception(RuntimeError(ROW_SAMPLES[row.name]))
    assert (found.failure_type, found.matched_by) == (row.failure_type, f"message:{row.name}")


def test_typed_rules_win_over_message_text() -> None:
    """Our typed error is classified by its class even when its text would match another row."""
    found = classify_exception(recovery.StorageFullError("Permission denied while writing", path="x"))
    assert found.failure_type is F.STORAGE_SPACE_INSUFFICIENT


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no text")


@pytest.mark.parametrize("error", [KeyError("tokenizer"), _Unprintable(), Exception()])
def test_unknown_error_gets_safe_generic_classification(error: BaseException) -> None:
    """Errors nobody recognises become a generic pipeline error, never a crash."""
    found = classify_exception(error)
    assert (found.failure_type, found.matched_by) == (F.GENERATION_PIPELINE_ERROR, "fallback")


def test_chain_cycle_terminates() -> None:
    """A cause chain that loops back on itself is walked once."""
    first, second = ValueError("a"), ValueError("b")
    first.__cause__, second.__cause__ = second, first
    assert len(recovery.error_chain(first)) == 2


def test_injected_probe_evidence_lands_in_system_state() -> None:
    """The probe's numbers are part of the context's evidence."""
    ctx = Classifier(lambda: {"memory_free": 5, "device": "cuda:0"}).categorize(MemoryError())
    assert (ctx.system_state["memory_free"], ctx.system_state["device"]) == (5, "cuda:0")


def test_failing_probe_does_not_fail_classification() -> None:
    """A probe that raises is reported as ``probe_error`` instead of breaking classification."""

    def broken() -> dict:
        raise RuntimeError("NVML not found")

    assert Classifier(broken).categorize(MemoryError()).system_state["probe_error"] == "RuntimeError"


def test_default_probe_reads_ram() -> None:
    """The default probe reports free and total RAM from /proc/meminfo."""
    state = recovery.meminfo_probe()
    assert 0 < state["memory_free"] <= state["memory_total"]


@pytest.mark.parametrize(
    ("failure_type", "alternatives", "previous", "expected"),
    [
        (F.INVALID_PARAMETERS, None, 0, S.LOW),
        (F.VRAM_EXHAUSTION, None, 0, S.MEDIUM),
        (F.MODEL_CORRUPTION_DETECTED, 2, 0, S.MEDIUM),
        (F.MODEL_CORRUPTION_DETECTED, 0, 0, S.HIGH),
        (F.PERMISSION_DENIED, None, 0, S.HIGH),
        (F.STORAGE_SPACE_INSUFFICIENT, None, 3, S.CRITICAL),
        (F.MODEL_INTEGRITY_FAILURE, 0, 5, S.CRITICAL),
    ],
)
def test_severity_rules(failure_type: F, alternatives: int | None, previous: int, expected: S) -> None:
    """Severity follows the documented rules: base level, only-model bump, repeat bump, capped."""
    assert recovery.assess_severity(failure_type, alternatives=alternatives, previous_failures=previous) is expected


def test_categorize_carries_caller_context() -> None:
    """The caller's model, operation, parameters and ids reach the ErrorContext."""
    ctx = Classifier(None).categorize(
        MemoryError(),
        {
            "model_id": "m",
            "operation": "decode",
            "correlation_id": "c",
            "user_parameters": {"frames": 9},
            "user_session_id": "s",
        },
    )
    assert (ctx.model_id, ctx.operation, ctx.correlation_id, ctx.user_parameters, ctx.user_session_id) == (
        "m",
        "decode",
        "c",
        {"frames": 9},
        "s",
    )


CUDA_HINT = (
    "\nCUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below might be "
    "incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1\nCompile with `TORCH_USE_CUDA_DSA` to enable "
    "device-side assertions.\n"
)
CODE_SAMPLES = {
    "out_of_memory": "CUDA error: out of memory",
    "no_kernel_image": "CUDA error: no kernel image is available for execution on the device",
    "not_supported": "CUDA error: operation not supported",
    "poisoned_context": "CUDA error: an illegal memory access was encountered",
    "driver": "CUDA error: CUDA driver version is insufficient for CUDA runtime version",
    "no_device": "CUDA error: no CUDA-capable device is detected",
}


def test_every_cuda_code_row_has_a_sample() -> None:
    """Every row of the CUDA code table is exercised below."""
    assert set(CODE_SAMPLES) == {name for name, *_ in recovery.classify.CUDA_CODES}


@pytest.mark.parametrize(("name", "text"), CODE_SAMPLES.items())
def test_cuda_code_is_read_from_the_error_not_from_torchs_hint(name: str, text: str) -> None:
    """torch appends a device-side-assert hint to every CUDA error: the code decides, not the hint."""
    expected = next(row[2] for row in recovery.classify.CUDA_CODES if row[0] == name)
    found = classify_exception(RuntimeError(text + CUDA_HINT))
    assert (found.failure_type, found.matched_by) == (expected, f"code:{name}")


def test_accelerator_error_is_typed_by_its_code() -> None:
    """torch.AcceleratorError carries the CUDA error: an out-of-memory is one, a kernel image a failed speed-up."""
    oom = torch.AcceleratorError("CUDA error: out of memory" + CUDA_HINT)
    image = torch.AcceleratorError("CUDA error: no kernel image is available for execution on the device")
    assert classify_exception(oom).failure_type is F.VRAM_EXHAUSTION
    assert classify_exception(image).failure_type is F.HARDWARE_OPTIMIZATION_FAILURE
    assert classify_exception(oom).matched_by == "type:AcceleratorError"


@pytest.mark.parametrize(("code", "expected"), [(-9, F.SYSTEM_RESOURCE_ERROR), (137, F.SYSTEM_RESOURCE_ERROR)])
def test_a_child_killed_by_a_signal_is_a_system_resource_error(code: int, expected: F) -> None:
    """CalledProcessError with SIGKILL (negative code) or a shell's 137 is the host taking the memory back."""
    import subprocess

    found = classify_exception(subprocess.CalledProcessError(code, ["python", "train.py"]))
    assert (found.failure_type, found.evidence["returncode"]) == (expected, code)


def test_a_bare_assert_inside_an_optional_accelerator_is_a_failed_speed_up() -> None:
    """``assert FLASH_ATTN_2_AVAILABLE`` raised in flash_attn's module is told by its module, not its (empty) text."""
    namespace: dict[str, Any] = {"__name__": "flash_attn.flash_attn_interface"}
    exec(compile("def check():\n    assert False\n", "<flash_attn>", "exec"), namespace)
    error = caught(namespace["check"])
    found = classify_exception(error)
    assert (found.failure_type, found.matched_by) == (
        F.HARDWARE_OPTIMIZATION_FAILURE,
        "module:flash_attn.flash_attn_interface",
    )
    assert classify_exception(AssertionError()).recognised is False  # the same assert elsewhere says nothing


def test_a_key_error_on_a_weight_name_is_a_checkpoint_that_does_not_fit() -> None:
    """A KeyError naming a weight means the checkpoint's layout is another model's; one naming 'tokenizer' does not."""
    assert classify_exception(KeyError("blocks.0.attn1.to_q.weight")).failure_type is F.MODEL_COMPATIBILITY_ERROR
    assert classify_exception(KeyError("tokenizer")).recognised is False


def test_an_unrecognised_error_says_so_with_its_signature() -> None:
    """No rule knows it: still a type the engine can act on, but recognised=False, confidence 0 and a signature."""
    found = classify_exception(LookupError("frobnicator exploded\nmore detail"))
    assert (found.failure_type, found.recognised, found.confidence) == (F.GENERATION_PIPELINE_ERROR, False, 0.0)
    assert found.evidence["error_class"] == "builtins.LookupError"
    assert found.evidence["first_line"] == "frobnicator exploded"


def test_every_rule_kind_has_a_confidence_and_typed_rules_are_surest() -> None:
    """Confidence follows what decided: our class 1.0 > a library class > a code > a module > words > broad > none."""
    c = recovery.classify.CONFIDENCE
    assert c["own"] > c["type"] > c["code"] > c["module"] > c["message"] > c["broad"] > c["fallback"] == 0.0
    assert classify_exception(RuntimeError("No space left on device")).confidence == c["message"]
