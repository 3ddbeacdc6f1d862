"""Exception → failure type: ``isinstance`` first, one ordered message table last, a safe default always.

Order: typed rules over the whole chain; then the message table over the whole chain; then broad classes that
say little alone (``NotImplementedError`` → unsupported operation); then a generic pipeline error.

Library classes (torch, huggingface_hub, safetensors, httpx, httpx2, requests) are looked up in ``sys.modules``
only: an instance of a class can exist only once its module is loaded, so nothing is imported here and every
library stays optional. The cause/context chain is walked outermost first, because loaders wrap the real error.
"""

from __future__ import annotations

import errno
import platform
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from recovery import errors
from recovery.procfs import meminfo
from recovery.taxonomy import EnhancedFailureType, ErrorContext, assess_severity

__all__ = [
    "Classification",
    "Classifier",
    "MessageRule",
    "MESSAGE_RULES",
    "Probe",
    "classify_exception",
    "error_chain",
    "meminfo_probe",
]

F = EnhancedFailureType
Probe = Callable[[], Mapping[str, Any]]
Found = tuple[EnhancedFailureType, dict[str, Any]]


@dataclass(frozen=True)
class Classification:
    """The failure type, what decided it (``type:…``, ``message:…`` or ``fallback``) and the evidence."""

    failure_type: EnhancedFailureType
    matched_by: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MessageRule:
    """One row of the last-resort message table."""

    name: str
    pattern: re.Pattern[str]
    failure_type: EnhancedFailureType


def _row(name: str, pattern: str, failure_type: EnhancedFailureType) -> MessageRule:
    return MessageRule(name, re.compile(pattern, re.IGNORECASE), failure_type)


#: The only place where message text decides a failure type; first match wins, every row is tested.
MESSAGE_RULES: tuple[MessageRule, ...] = (
    _row("cpu_allocator", r"DefaultCPUAllocator: can't allocate memory|can't allocate memory", F.VRAM_EXHAUSTION),
    _row("out_of_memory", r"out of memory", F.VRAM_EXHAUSTION),
    # oneDNN (torch's CPU kernels) fails this way when its workspace allocation is refused under a memory cap
    _row("onednn_allocation", r"could not create a primitive", F.VRAM_EXHAUSTION),
    _row(
        "poisoned_device",
        r"illegal memory access|device-side assert|CUBLAS_STATUS|CUDNN_STATUS",
        F.SYSTEM_RESOURCE_ERROR,
    ),
    _row("open_files", r"too many open files", F.SYSTEM_RESOURCE_ERROR),
    _row("disk_full", r"no space left on device|disk quota exceeded", F.STORAGE_SPACE_INSUFFICIENT),
    _row("permission", r"permission denied|read-only file system", F.PERMISSION_DENIED),
    _row(
        "bad_weights",
        r"deserializing header|invalid header|incomplete metadata|unable to load weights",
        F.MODEL_CORRUPTION_DETECTED,
    ),
    _row("hash_mismatch", r"(checksum|hash|sha256) (mismatch|does not match)", F.MODEL_INTEGRITY_FAILURE),
    _row("library_version", r"requires (diffusers|transformers|torch)|newer version of", F.MODEL_VERSION_MISMATCH),
    _row("size_limit", r"view size is not compatible", F.UNSUPPORTED_OPERATION),
    _row("weight_shapes", r"size mismatch for|shape mismatch", F.MODEL_COMPATIBILITY_ERROR),
    _row(
        "kernel_or_compile",
        r"not implemented for '\w+'|BackendCompilerFailed|torch\._dynamo|xformers",
        F.HARDWARE_OPTIMIZATION_FAILURE,
    ),
    _row("cuda_only", r"not compiled with cuda|no cuda gpus|cuda is not available", F.UNSUPPORTED_OPERATION),
    _row(
        "invalid_value",
        r"divisible by|have to be|has to be|must be (positive|at least|between|greater)",
        F.INVALID_PARAMETERS,
    ),
    _row("bad_output", r"\bnan\b|\binf\b|all[- ]black", F.GENERATION_PIPELINE_ERROR),
    _row("rate_limited", r"too many requests|rate.?limit", F.BANDWIDTH_LIMITATION),
    _row(
        "network",
        r"connection (refused|reset|aborted)|name resolution|network is unreachable",
        F.NETWORK_CONNECTIVITY_LOSS,
    ),
    _row("timed_out", r"timed? ?out", F.MODEL_LOADING_TIMEOUT),
    _row("missing_package", r"no module named|pip install", F.DEPENDENCY_MISSING),
)

_OWN: tuple[tuple[type[errors.KintsugiError], EnhancedFailureType], ...] = (
    (errors.InvalidParameterError, F.INVALID_PARAMETERS),
    (errors.UnsupportedOperationError, F.UNSUPPORTED_OPERATION),
    (errors.OutOfMemoryError, F.VRAM_EXHAUSTION),
    (errors.WorkerCrashedError, F.SYSTEM_RESOURCE_ERROR),
    (errors.WorkerStartError, F.SYSTEM_RESOURCE_ERROR),
    (errors.ModelLoadTimeoutError, F.MODEL_LOADING_TIMEOUT),
    (errors.IntegrityError, F.MODEL_INTEGRITY_FAILURE),
    (errors.CorruptModelError, F.MODEL_CORRUPTION_DETECTED),
    (errors.DependencyMissingError, F.DEPENDENCY_MISSING),
    (errors.ModelDownloadError, F.MODEL_DOWNLOAD_FAILURE),
    (errors.NetworkUnavailableError, F.NETWORK_CONNECTIVITY_LOSS),
    (errors.SlowDownloadError, F.BANDWIDTH_LIMITATION),
    (errors.StorageFullError, F.STORAGE_SPACE_INSUFFICIENT),
    (errors.ModelAccessError, F.PERMISSION_DENIED),
    (errors.ModelVersionError, F.MODEL_VERSION_MISMATCH),
    (errors.ModelCompatibilityError, F.MODEL_COMPATIBILITY_ERROR),
    (errors.HardwareOptimizationError, F.HARDWARE_OPTIMIZATION_FAILURE),
    (errors.BadOutputError, F.GENERATION_PIPELINE_ERROR),
    (errors.GenerationCancelledError, F.GENERATION_PIPELINE_ERROR),
)

_ERRNO: dict[int, EnhancedFailureType] = {
    errno.ENOSPC: F.STORAGE_SPACE_INSUFFICIENT,
    errno.EDQUOT: F.STORAGE_SPACE_INSUFFICIENT,
    errno.EFBIG: F.STORAGE_SPACE_INSUFFICIENT,
    errno.EACCES: F.PERMISSION_DENIED,
    errno.EPERM: F.PERMISSION_DENIED,
    errno.EROFS: F.PERMISSION_DENIED,
    errno.ENOMEM: F.VRAM_EXHAUSTION,
    errno.EMFILE: F.SYSTEM_RESOURCE_ERROR,
    errno.ENFILE: F.SYSTEM_RESOURCE_ERROR,
}


def _status_type(status: int) -> Found:
    """An HTTP status → failure type; 5xx and 429 are worth retrying, other 4xx are not."""
    if status in (401, 403):
        return F.PERMISSION_DENIED, {"http_status": status, "retryable": False}
    if status == 429:
        return F.BANDWIDTH_LIMITATION, {"http_status": status, "retryable": True}
    return F.MODEL_DOWNLOAD_FAILURE, {"http_status": status, "retryable": status >= 500 or status == 408}


def _own(exc: BaseException) -> Found | None:
    for cls, failure_type in _OWN:
        if isinstance(exc, cls):
            data = dict(exc.data)
            data.setdefault("retryable", not isinstance(exc, errors.GenerationCancelledError))
            return failure_type, data
    return None


def _torch(exc: BaseException) -> Found | None:
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return F.VRAM_EXHAUSTION, {"device": "cuda"}
    return None


def _safetensors(exc: BaseException) -> Found | None:
    for module, name in (("safetensors", "SafetensorError"), ("huggingface_hub.errors", "SafetensorsParsingError")):
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return F.MODEL_CORRUPTION_DETECTED, {"retryable": False}
    return None


def _hub(exc: BaseException) -> Found | None:
    hub = sys.modules.get("huggingface_hub.errors")
    if hub is None:
        return None
    no_retry = {"retryable": False}
    rules: tuple[tuple[str, EnhancedFailureType, dict[str, Any]], ...] = (
        ("GatedRepoError", F.PERMISSION_DENIED, {"reason": "gated", "retryable": False}),
        ("DisabledRepoError", F.PERMISSION_DENIED, {"reason": "disabled", "retryable": False}),
        ("RepositoryNotFoundError", F.MODEL_DOWNLOAD_FAILURE, {"reason": "repository_not_found", "retryable": False}),
        ("RevisionNotFoundError", F.MODEL_VERSION_MISMATCH, no_retry),
        ("IncompleteSnapshotError", F.MODEL_INTEGRITY_FAILURE, no_retry),
        ("LocalEntryNotFoundError", F.NETWORK_CONNECTIVITY_LOSS, {"reason": "not_cached"}),
        ("EntryNotFoundError", F.MODEL_COMPATIBILITY_ERROR, no_retry),
        ("OfflineModeIsEnabled", F.NETWORK_CONNECTIVITY_LOSS, {"reason": "offline_mode", "retryable": False}),
    )
    for name, failure_type, evidence in rules:
        cls = getattr(hub, name, None)
        if cls is not None and isinstance(exc, cls):
            return failure_type, dict(evidence)
    if isinstance(exc, hub.HfHubHTTPError):
        return _status_type(exc.response.status_code)
    return None


def _http(exc: BaseException) -> Found | None:
    for name in ("httpx2", "httpx"):
        mod = sys.modules.get(name)
        if mod is None or not isinstance(exc, mod.HTTPError):
            continue
        if isinstance(exc, mod.HTTPStatusError):
            return _status_type(exc.response.status_code)
        if isinstance(exc, mod.ConnectTimeout):
            return F.NETWORK_CONNECTIVITY_LOSS, {"reason": "connect_timeout"}
        if isinstance(exc, mod.TimeoutException):
            return F.BANDWIDTH_LIMITATION, {"reason": "transfer_timeout"}
        if isinstance(exc, (mod.RemoteProtocolError, mod.ReadError, mod.WriteError)):
            return F.MODEL_DOWNLOAD_FAILURE, {"reason": "connection_dropped", "retryable": True}
        return F.NETWORK_CONNECTIVITY_LOSS, {}
    return _requests(exc)


def _requests(exc: BaseException) -> Found | None:
    mod = sys.modules.get("requests.exceptions")
    if mod is None or not isinstance(exc, mod.RequestException):
        return None
    if isinstance(exc, mod.ConnectTimeout):
        return F.NETWORK_CONNECTIVITY_LOSS, {"reason": "connect_timeout"}
    if isinstance(exc, mod.Timeout):
        return F.BANDWIDTH_LIMITATION, {"reason": "transfer_timeout"}
    if isinstance(exc, mod.ChunkedEncodingError):
        return F.MODEL_DOWNLOAD_FAILURE, {"reason": "connection_dropped", "retryable": True}
    if isinstance(exc, mod.HTTPError) and exc.response is not None:
        return _status_type(exc.response.status_code)
    if isinstance(exc, mod.ConnectionError):
        return F.NETWORK_CONNECTIVITY_LOSS, {}
    return None


def _builtin(exc: BaseException) -> Found | None:
    if isinstance(exc, MemoryError):
        return F.VRAM_EXHAUSTION, {}
    if isinstance(exc, ImportError):
        return F.DEPENDENCY_MISSING, {"module": exc.name, "retryable": False}
    if isinstance(exc, OSError) and exc.errno in _ERRNO:
        return _ERRNO[exc.errno], {"errno": errno.errorcode.get(exc.errno, exc.errno)}
    if isinstance(exc, ConnectionError):
        return F.NETWORK_CONNECTIVITY_LOSS, {}
    if isinstance(exc, TimeoutError):
        return F.MODEL_LOADING_TIMEOUT, {}
    if isinstance(exc, FileNotFoundError):
        return F.MODEL_INTEGRITY_FAILURE, {"reason": "file_missing", "retryable": False}
    if isinstance(exc, PermissionError):
        return F.PERMISSION_DENIED, {"retryable": False}
    return None


_TYPED: tuple[Callable[[BaseException], Found | None], ...] = (_own, _torch, _safetensors, _hub, _http, _builtin)


def error_chain(exc: BaseException, limit: int = 16) -> list[BaseException]:
    """``exc`` and the errors behind it (``__cause__``, else ``__context__``), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < limit and not any(current is seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not break classification
        return ""


def classify_exception(exc: BaseException) -> Classification:
    """Classify one exception; never raises (an unknown error becomes a generic pipeline error)."""
    chain = error_chain(exc)
    for link in chain:
        for rule in _TYPED:
            found = rule(link)
            if found is not None:
                return Classification(found[0], f"type:{type(link).__name__}", found[1])
    for link in chain:
        text = _text(link)
        for row in MESSAGE_RULES:
            if row.pattern.search(text):
                return Classification(row.failure_type, f"message:{row.name}", {})
    for link in chain:
        if isinstance(link, NotImplementedError):  # broad: torch's missing dtype kernels are rows above
            return Classification(F.UNSUPPORTED_OPERATION, "type:NotImplementedError", {"retryable": False})
    return Classification(F.GENERATION_PIPELINE_ERROR, "fallback", {"unclassified": True})


def meminfo_probe() -> dict[str, Any]:
    """RAM free/total from ``/proc/meminfo`` plus the versions of the libraries already loaded."""
    state: dict[str, Any] = {"device": "cpu", "python": platform.python_version()}
    memory = meminfo("MemTotal", "MemAvailable")
    for key, name in (("MemTotal", "memory_total"), ("MemAvailable", "memory_free")):
        if key in memory:
            state[name] = memory[key]
    for name in ("torch", "diffusers", "transformers", "huggingface_hub", "safetensors"):
        module: ModuleType | None = sys.modules.get(name)
        if module is not None:
            state[f"{name}_version"] = getattr(module, "__version__", None)
    return state


class Classifier:
    """Builds ``ErrorContext``s: classification, severity rules and evidence from an injectable probe."""

    def __init__(self, probe: Probe | None = meminfo_probe) -> None:
        self.probe = probe

    def evidence(self) -> dict[str, Any]:
        """What the probe reports; a failing probe yields ``probe_error`` instead of an exception."""
        if self.probe is None:
            return {}
        try:
            return dict(self.probe())
        except Exception as exc:  # a probe must never turn one failure into two
            return {"probe_error": type(exc).__name__}

    def categorize(self, error: BaseException, context: Mapping[str, Any] | None = None) -> ErrorContext:
        """Classify ``error`` and wrap it with the caller's ``context`` (model_id, operation, user_parameters,
        correlation_id, previous_attempts, user_session_id, system_state, alternatives)."""
        context = context or {}
        found = classify_exception(error)
        previous = list(context.get("previous_attempts", ()))
        state = {
            **self.evidence(),
            **context.get("system_state", {}),
            **found.evidence,
            "error_type": type(error).__name__,
            "error_chain": [type(link).__name__ for link in error_chain(error)],
            "matched_by": found.matched_by,
        }
        return ErrorContext(
            failure_type=found.failure_type,
            original_error=error,
            severity=assess_severity(
                found.failure_type, alternatives=context.get("alternatives"), previous_failures=len(previous)
            ),
            model_id=context.get("model_id"),
            operation=context.get("operation"),
            user_parameters=dict(context.get("user_parameters", {})),
            system_state=state,
            correlation_id=context.get("correlation_id"),
            previous_attempts=previous,
            user_session_id=context.get("user_session_id"),
        )
