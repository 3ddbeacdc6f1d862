"""Exception → failure type: ``isinstance`` first, the accelerator's own error codes next, one ordered message table
last, and an honest default always.

Order: typed rules over the whole chain (ours, torch, dynamo/inductor, safetensors, the hub, HTTP stacks,
subprocess, errno, an optional accelerator's module in the traceback); then the CUDA/HIP/cuBLAS/cuDNN error code
named in the text (``CUDA_CODES``); then the message table over the whole chain; then broad classes that say little
alone (``NotImplementedError`` → unsupported operation). What none of them recognises is *unrecognised*: still a
generic pipeline error so the engine can act, but with ``recognised=False`` and confidence 0, so the user and the
metrics are told it was not recognised. Every classification names its rule and a confidence.

Library classes (torch, huggingface_hub, safetensors, httpx, httpx2, requests) are looked up in ``sys.modules``
only: an instance of a class can exist only once its module is loaded, so nothing is imported here and every
library stays optional. The cause/context chain is walked outermost first, because loaders wrap the real error.
"""

from __future__ import annotations

import errno
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from recovery import errors
from recovery.procfs import meminfo
from recovery.taxonomy import EnhancedFailureType, ErrorContext, assess_severity

__all__ = [
    "ACCELERATOR_MODULES",
    "CONFIDENCE",
    "CUDA_CODES",
    "Classification",
    "Classifier",
    "MessageRule",
    "MESSAGE_RULES",
    "Probe",
    "classify_exception",
    "error_chain",
    "meminfo_probe",
    "raised_in",
    "signature",
]

F = EnhancedFailureType
Probe = Callable[[], Mapping[str, Any]]
Found = tuple[EnhancedFailureType, dict[str, Any]]


#: How much a rule of each kind is trusted: a class says what happened; an error code nearly so; words may mislead.
CONFIDENCE: Mapping[str, float] = {
    "own": 1.0,
    "type": 0.95,
    "code": 0.9,
    "module": 0.85,
    "message": 0.7,
    "broad": 0.5,
    "fallback": 0.0,
}


@dataclass(frozen=True)
class Classification:
    """The failure type, what decided it (``type:…``, ``code:…``, ``module:…``, ``message:…`` or ``fallback``),
    how sure that rule is, and the evidence."""

    failure_type: EnhancedFailureType
    matched_by: str
    evidence: dict[str, Any] = field(default_factory=dict)
    confidence: float = 1.0

    @property
    def recognised(self) -> bool:
        """False when no rule knew the error: the type is the generic default, not a finding."""
        return self.matched_by != "fallback"


@dataclass(frozen=True)
class MessageRule:
    """One row of the last-resort message table."""

    name: str
    pattern: re.Pattern[str]
    failure_type: EnhancedFailureType


def _row(name: str, pattern: str, failure_type: EnhancedFailureType) -> MessageRule:
    return MessageRule(name, re.compile(pattern, re.IGNORECASE), failure_type)


#: The accelerator's own error codes, as torch quotes them (``CUDA error: <name>``, ``HIP error: <name>``,
#: ``CUBLAS_STATUS_<name>``, ``CUDNN_STATUS_<name>``): the code is read from the text, not the hint lines torch adds
#: to every CUDA error ("Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions"). First match wins.
CUDA_CODES: tuple[tuple[str, re.Pattern[str], EnhancedFailureType, str], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE), failure_type, reason)
    for name, pattern, failure_type, reason in (
        (
            "out_of_memory",
            r"out of memory|CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_ALLOC_FAILED",
            F.VRAM_EXHAUSTION,
            "the device could not allocate memory",
        ),
        (
            "no_kernel_image",
            r"no kernel image is available|invalid device function|ARCH_MISMATCH",
            F.HARDWARE_OPTIMIZATION_FAILURE,
            "this build has no kernels for the GPU's architecture",
        ),
        (
            "not_supported",
            r"operation not supported|CUBLAS_STATUS_NOT_SUPPORTED|CUDNN_STATUS_NOT_SUPPORTED",
            F.HARDWARE_OPTIMIZATION_FAILURE,
            "the GPU or driver does not support the operation or its data type",
        ),
        (
            "poisoned_context",
            r"illegal memory access|device-side assert triggered|unspecified launch failure|"
            r"misaligned address|illegal instruction|launch timed out|EXECUTION_FAILED|INTERNAL_ERROR|MAPPING_ERROR|"
            r"CUDNN_STATUS_BAD_PARAM|uncorrectable ECC",
            F.SYSTEM_RESOURCE_ERROR,
            "the device context is broken: only a fresh process helps",
        ),
        (
            "driver",
            r"driver version is insufficient|forward compatibility was attempted",
            F.DEPENDENCY_MISSING,
            "the GPU driver is older than this build of torch needs",
        ),
        (
            "no_device",
            r"no CUDA-capable device|invalid device ordinal|devices? (are|is) busy or unavailable|"
            r"initialization error",
            F.UNSUPPORTED_OPERATION,
            "no usable GPU for this build and driver",
        ),
    )
)
_ACCELERATOR_TEXT = re.compile(r"(CUDA|HIP|cuda|hip) error|CUBLAS_STATUS_|CUDNN_STATUS_|cudaError|CUDA driver")
_CUDA_HINTS = re.compile(
    r"^(CUDA kernel errors might be|For debugging consider passing|Compile with `TORCH_USE_CUDA_DSA`|"
    r"Device-side assertions were explicitly omitted|Search for `cudaErrorLaunchFailure`).*$",
    re.MULTILINE,
)

#: The only place where words alone decide a failure type; first match wins, every row is tested.
MESSAGE_RULES: tuple[MessageRule, ...] = (
    _row(
        "cpu_allocator",
        r"DefaultCPUAllocator: (can't allocate memory|not enough memory)|can't allocate memory|"
        r"paging file is too small",
        F.VRAM_EXHAUSTION,
    ),
    _row("out_of_memory", r"out of memory|OutOfMemory|\bOOM\b|no available memory", F.VRAM_EXHAUSTION),
    # oneDNN (torch's CPU kernels) fails this way when its workspace allocation is refused under a memory cap
    _row("onednn_allocation", r"could not create a primitive", F.VRAM_EXHAUSTION),
    # the caching allocator's NVML call fails when the driver is starved (expandable segments near the limit)
    _row(
        "allocator_assert",
        r"CUDACachingAllocator\.cpp[\s\S]*INTERNAL ASSERT FAILED|"
        r"INTERNAL ASSERT FAILED[\s\S]*CUDACachingAllocator",
        F.VRAM_EXHAUSTION,
    ),
    _row("poisoned_device", r"illegal memory access|device-side assert triggered", F.SYSTEM_RESOURCE_ERROR),
    _row("killed", r"^\s*Killed\s*$|SIGKILL|signal 9\b|exit (code|status) (137|-9)\b", F.SYSTEM_RESOURCE_ERROR),
    _row("open_files", r"too many open files", F.SYSTEM_RESOURCE_ERROR),
    _row(
        "disk_full",
        r"no space left on device|disk quota exceeded|not enough space on the disk",
        F.STORAGE_SPACE_INSUFFICIENT,
    ),
    _row("permission", r"permission denied|read-only file system|access is denied", F.PERMISSION_DENIED),
    _row(
        "gated",
        r"gated repo|is restricted|must be authenticated|401 Client Error|403 Client Error|"
        r"Unauthorized for url|invalid (user )?token|Access to model",
        F.PERMISSION_DENIED,
    ),
    _row(
        "bad_weights",
        r"deserializing header|invalid header|incomplete metadata|unable to load weights|"
        r"HeaderTooLarge|MetadataIncompleteBuffer|invalid JSON in header|not a valid safetensors|"
        r"PytorchStreamReader failed|failed finding central directory|invalid load key",
        F.MODEL_CORRUPTION_DETECTED,
    ),
    _row(
        "truncated_file",
        r"Consistency check failed|unexpected EOF|expected \d+ more bytes|file (is )?truncated|"
        r"unexpected end of (file|stream)",
        F.MODEL_CORRUPTION_DETECTED,
    ),
    _row(
        "hash_mismatch",
        r"(checksum|hash|sha256)\b.{0,20}?(mismatch|(does|do) not( not)? match)",
        F.MODEL_INTEGRITY_FAILURE,
    ),
    _row(
        "dropped_transfer",
        r"IncompleteRead|Connection broken|Response ended prematurely|ChunkedEncodingError|"
        r"peer closed connection|CAS service error|Data processing error|Timer expired|Reqwest|hf_xet|"
        r"error decoding response body",
        F.MODEL_DOWNLOAD_FAILURE,
    ),
    _row(
        "not_on_hub",
        r"is not a valid model identifier|Repository Not Found|404 Client Error|does not exist on the "
        r"Hub|not found locally and no URL",
        F.MODEL_DOWNLOAD_FAILURE,
    ),
    _row(
        "library_version",
        r"requires (diffusers|transformers|torch|accelerate|peft)\b|newer version of|"
        r"upgrade (diffusers|transformers|torch)",
        F.MODEL_VERSION_MISMATCH,
    ),
    _row("size_limit", r"view size is not compatible", F.UNSUPPORTED_OPERATION),
    _row(
        "weight_shapes",
        r"size mismatch for|shape mismatch|Error\(s\) in loading state_dict|(Unexpected|Missing) "
        r"key\(s\)|(missing|unexpected) keys|cannot be loaded into|does not match the|expected shape|"
        r"\bstate[ _]dict\b",
        F.MODEL_COMPATIBILITY_ERROR,
    ),
    # a model folder without the file a loader looks for: an unfinished or partial download, or another layout
    _row(
        "missing_model_file",
        r"does not appear to have a file named|no file named|Can't load tokenizer|"
        r"Can't load the model|Can't load config|Error no file named",
        F.MODEL_DOWNLOAD_FAILURE,
    ),
    _row(
        "missing_module",
        r"no module named|can't import|cannot import name|Failed to import|is not installed",
        F.DEPENDENCY_MISSING,
    ),
    # a compiled extension built for another torch (torchvision's operators, a GPU decoder it was built without)
    _row(
        "broken_extension",
        r"operator \w+::\w+ does not exist|Could not run '\w+::\w+' with arguments|"
        r"Not compiled with GPU|undefined symbol",
        F.DEPENDENCY_MISSING,
    ),
    _row(
        "kernel_or_compile",
        r"not implemented for '\w+'|BackendCompilerFailed|torch\._dynamo|torch\._inductor|"
        r"xformers|memory_efficient_attention|FlashAttention|flash[_-]attn|sage ?attention|Unsupported CUDA "
        r"architecture|triton|CppCompileError|C\+\+ compiler|cl\.exe|meta tensor|device meta|unable to find an "
        r"engine|CUDA Setup failed|out of resource",
        F.HARDWARE_OPTIMIZATION_FAILURE,
    ),
    _row(
        "dtype_device",
        r"same device|expected scalar type|should be the same|Expected .* but (got|found)|"
        r"found at least two devices|must have the same dtype|not on the expected device",
        F.HARDWARE_OPTIMIZATION_FAILURE,
    ),
    _row("old_driver", r"NVIDIA driver on your system is too old|driver version is insufficient", F.DEPENDENCY_MISSING),
    _row(
        "cuda_only",
        r"not compiled with cuda|no cuda gpus|cuda is not available|Found no NVIDIA driver",
        F.UNSUPPORTED_OPERATION,
    ),
    _row(
        "invalid_value",
        r"divisible by|have to be|has to be|must be (positive|at least|between|greater)|"
        r"size of tensor a \(\d+\) must match the size of tensor b",
        F.INVALID_PARAMETERS,
    ),
    _row("bad_output", r"\bnan\b|\binf\b|all[- ]black|invalid value encountered", F.GENERATION_PIPELINE_ERROR),
    _row("rate_limited", r"too many requests|rate.?limit", F.BANDWIDTH_LIMITATION),
    _row(
        "network",
        r"connection (refused|reset|aborted)|name resolution|network is unreachable|Max retries exceeded|"
        r"Name or service not known|getaddrinfo failed|couldn't connect|Failed to establish a new connection|"
        r"CERTIFICATE_VERIFY_FAILED|SSLError|nodename nor servname|No route to host",
        F.NETWORK_CONNECTIVITY_LOSS,
    ),
    _row("timed_out", r"timed? ?out", F.MODEL_LOADING_TIMEOUT),
    _row(
        "missing_package",
        r"pip install|name '(ftfy|sentencepiece|flash_attn|sageattn|xformers|triton|bnb|"
        r"imageio_ffmpeg)' is not defined|requires the \w+ library",
        F.DEPENDENCY_MISSING,
    ),
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
    accelerator = getattr(torch, "AcceleratorError", None)
    if accelerator is not None and isinstance(exc, accelerator):  # torch >= 2.8 raises CUDA errors as this class
        found = _cuda_code(_text(exc))
        return found or (F.SYSTEM_RESOURCE_ERROR, {"reason": "accelerator error", "retryable": True})
    return _compiler(exc)


def _compiler(exc: BaseException) -> Found | None:
    """dynamo and inductor failures (tracing, code generation, a missing C++ compiler or Triton): the speed-up failed,
    not the model."""
    for module, names in (
        ("torch._dynamo.exc", ("TorchDynamoException",)),
        ("torch._inductor.exc", ("CppCompileError", "InvalidCxxCompiler", "TritonMissing", "GPUTooOldForTriton")),
    ):
        for name in names:
            cls = getattr(sys.modules.get(module), name, None)
            if cls is not None and isinstance(exc, cls):
                return F.HARDWARE_OPTIMIZATION_FAILURE, {"optimization": "compile", "retryable": False}
    return None


def _cuda_code(text: str) -> Found | None:
    """The accelerator's error code named in ``text`` (``CUDA_CODES``), torch's hint lines left out."""
    if not _ACCELERATOR_TEXT.search(text):
        return None
    text = _CUDA_HINTS.sub("", text)
    for name, pattern, failure_type, reason in CUDA_CODES:
        if pattern.search(text):
            return failure_type, {
                "cuda_error": name,
                "reason": reason,
                "retryable": failure_type is not F.HARDWARE_OPTIMIZATION_FAILURE,
            }
    return None


#: Optional accelerators whose own failures (a bare ``assert``, a ``NameError`` for their missing kernel module, a
#: ``RuntimeError`` about the GPU) mean "this speed-up does not work here", told by the module that raised them.
ACCELERATOR_MODULES = (
    "flash_attn",
    "sageattention",
    "xformers",
    "triton",
    "bitsandbytes",
    "apex",
    "torch._inductor",
    "torch._dynamo",
    "spas_sage_attn",
    "sageattn",
    # the attention wrappers that check for them (Wan's own, diffusers' dispatcher)
    "wan.modules.attention",
    "diffusers.models.attention_dispatch",
)


def raised_in(exc: BaseException) -> str | None:
    """The module whose code raised ``exc``: its traceback's innermost frame, or what the worker recorded before the
    traceback was lost crossing the process boundary (``_raised_in``)."""
    recorded = getattr(exc, "_raised_in", None)
    if isinstance(recorded, str):
        return recorded
    tb = exc.__traceback__
    module = None
    while tb is not None:
        module = tb.tb_frame.f_globals.get("__name__", module)
        tb = tb.tb_next
    return module


def _accelerator_module(exc: BaseException) -> Found | None:
    module = raised_in(exc) or ""
    if any(module == name or module.startswith(name + ".") for name in ACCELERATOR_MODULES):
        return F.HARDWARE_OPTIMIZATION_FAILURE, {"module": module, "retryable": False}
    return None


def _subprocess(exc: BaseException) -> Found | None:
    """A child process that died: killed by a signal (SIGKILL: the host's OOM killer, 137 from a shell)."""
    if not isinstance(exc, subprocess.CalledProcessError):
        return None
    code = exc.returncode
    if code < 0 or code in (137, 139):
        return F.SYSTEM_RESOURCE_ERROR, {"returncode": code, "retryable": True}
    return None


def _diffusers(exc: BaseException) -> Found | None:
    cls = getattr(sys.modules.get("diffusers.loaders.single_file_utils"), "SingleFileComponentError", None)
    if cls is not None and isinstance(exc, cls):
        return F.MODEL_COMPATIBILITY_ERROR, {"reason": "single-file checkpoint does not fit", "retryable": False}
    return None


_MODEL_CLASS = re.compile(r"^['\"]?[A-Z]\w*(Model|Pipeline|Transformer\w*|Autoencoder\w*|Config)['\"]?$")
_WEIGHT_NAME = re.compile(
    r"^['\"]?[\w.]+\.(weight|bias|scale|scale_shift_table)['\"]?$|^['\"]?(model|transformer|"
    r"unet|vae|text_encoder|diffusion_model|blocks|layers)\.[\w.]+['\"]?$"
)


def _weight_key(exc: BaseException) -> Found | None:
    """A ``KeyError`` on a weight's name: the checkpoint is laid out for another model or version."""
    key = exc.args[0] if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str) else None
    if key is not None and (_WEIGHT_NAME.match(key) or _MODEL_CLASS.match(key)):
        return F.MODEL_COMPATIBILITY_ERROR, {"key": key, "retryable": False}
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
        ("EntryNotFoundError", F.MODEL_DOWNLOAD_FAILURE, {"reason": "entry_not_found", "retryable": False}),
        ("OfflineModeIsEnabled", F.NETWORK_CONNECTIVITY_LOSS, {"reason": "offline_mode", "retryable": False}),
    )
    for name, failure_type, evidence in rules:
        cls = getattr(hub, name, None)
        if cls is not None and isinstance(exc, cls):
            return failure_type, dict(evidence)
    if isinstance(exc, hub.HfHubHTTPError):
        response = getattr(exc, "response", None)
        if response is None:  # built without one: a hub error, its status unknown
            return F.MODEL_DOWNLOAD_FAILURE, {}
        return _status_type(response.status_code)
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
    return _requests(exc) or _urllib3(exc)


def _urllib3(exc: BaseException) -> Found | None:
    mod = sys.modules.get("urllib3.exceptions")
    if mod is None or not isinstance(exc, mod.HTTPError):
        return None
    if isinstance(exc, (mod.ProtocolError, mod.IncompleteRead)):
        return F.MODEL_DOWNLOAD_FAILURE, {"reason": "connection_dropped", "retryable": True}
    if isinstance(exc, mod.ReadTimeoutError):
        return F.BANDWIDTH_LIMITATION, {"reason": "transfer_timeout"}
    if isinstance(exc, (mod.NewConnectionError, mod.MaxRetryError, mod.NameResolutionError, mod.ConnectTimeoutError)):
        return F.NETWORK_CONNECTIVITY_LOSS, {}
    return None


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


_TYPED: tuple[Callable[[BaseException], Found | None], ...] = (
    _own,
    _torch,
    _safetensors,
    _hub,
    _http,
    _subprocess,
    _diffusers,
    _weight_key,
    _builtin,
)


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
    """Classify one exception; never raises. An error no rule recognises is ``recognised=False`` (confidence 0),
    typed as a generic pipeline error so that the engine can still act, with its signature as evidence."""
    chain = error_chain(exc)
    for link in chain:
        for rule in _TYPED:
            found = rule(link)
            if found is not None:
                kind = "own" if rule is _own else "type"
                return Classification(found[0], f"type:{type(link).__name__}", found[1], CONFIDENCE[kind])
    for link in chain:
        found = _accelerator_module(link)
        if found is not None:
            return Classification(found[0], f"module:{found[1]['module']}", found[1], CONFIDENCE["module"])
    for link in chain:
        found = _cuda_code(_text(link))
        if found is not None:
            return Classification(found[0], f"code:{found[1]['cuda_error']}", found[1], CONFIDENCE["code"])
    for link in chain:
        text = _text(link)
        for row in MESSAGE_RULES:
            if row.pattern.search(text):
                return Classification(row.failure_type, f"message:{row.name}", {}, CONFIDENCE["message"])
    for link in chain:
        if isinstance(link, NotImplementedError):  # broad: torch's missing dtype kernels are rows above
            return Classification(
                F.UNSUPPORTED_OPERATION, "type:NotImplementedError", {"retryable": False}, CONFIDENCE["broad"]
            )
    return Classification(
        F.GENERATION_PIPELINE_ERROR, "fallback", {"unrecognised": True, **signature(exc)}, CONFIDENCE["fallback"]
    )


def signature(exc: BaseException) -> dict[str, str]:
    """What identifies an unrecognised error for the next version to learn: class, module, first line (short)."""
    lines = [line.strip() for line in _text(exc).splitlines() if line.strip()]
    return {
        "error_class": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "raised_in": raised_in(exc) or "",
        "first_line": (lines[0] if lines else "")[:200],
    }


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
            "confidence": found.confidence,
            "recognised": found.recognised,
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
