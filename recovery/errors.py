"""Kintsugi's own exceptions: one hierarchy, one file.

Each class declares its data (``model_id``, ``phase``, ``bytes_requested`` ...) as keyword arguments of its
``__init__`` and attributes (as huggingface_hub's errors do), inherits from the matching built-in so that generic
``except`` clauses still work, and pickles, because errors raised inside the worker process must cross the process
boundary intact (``data`` holds the fields that are set; unpickling calls ``__init__`` with them). The classifier
(``recovery.classify``) maps each class to a failure type with ``isinstance``; message text is never needed for our
own errors.
"""

from __future__ import annotations

import inspect
from typing import Any

#: What a user reads when a request ended because they stopped it: nothing went wrong, nothing to do.
CANCELLED_USER_MESSAGE = "You stopped this generation."

__all__ = [
    "KintsugiError",
    "InvalidParameterError",
    "UnsupportedOperationError",
    "OutOfMemoryError",
    "WorkerCrashedError",
    "WorkerStartError",
    "GenerationCancelledError",
    "ModelLoadTimeoutError",
    "CorruptModelError",
    "IntegrityError",
    "BadOutputError",
    "DependencyMissingError",
    "GenerationFailedError",
    "RequestExistsError",
    "RequestCancelledError",
    "CANCELLED_USER_MESSAGE",
    "ModelDownloadError",
    "NetworkUnavailableError",
    "SlowDownloadError",
    "StorageFullError",
    "ModelAccessError",
    "ModelVersionError",
    "ModelCompatibilityError",
    "HardwareOptimizationError",
]


def _rebuild(cls: type[KintsugiError], message: str, data: dict[str, Any]) -> KintsugiError:
    return cls(message, **data)


_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(cls: type[KintsugiError]) -> tuple[str, ...]:
    """The data a class declares: the keyword-only parameters of its ``__init__`` (read once per class)."""
    if cls not in _FIELDS:
        parameters = inspect.signature(cls.__init__).parameters.values()
        _FIELDS[cls] = tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)
    return _FIELDS[cls]


class KintsugiError(Exception):
    """Base class: a human-readable ``message``; subclasses declare their data as keyword-only arguments."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    @property
    def data(self) -> dict[str, Any]:
        """The declared fields that are set (not ``None``), by name."""
        values = {name: getattr(self, name) for name in _fields(type(self))}
        return {name: value for name, value in values.items() if value is not None}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.data))

    def __str__(self) -> str:
        return self.message


class InvalidParameterError(KintsugiError, ValueError):
    """A request parameter is out of range or malformed."""

    def __init__(
        self, message: str = "", *, parameter: str | None = None, value: Any = None, constraint: str | None = None
    ) -> None:
        super().__init__(message)
        self.parameter, self.value, self.constraint = parameter, value, constraint


class UnsupportedOperationError(KintsugiError, ValueError):
    """The request is valid but this model/device cannot do it."""

    def __init__(self, message: str = "", *, operation: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.operation, self.reason = operation, reason


class OutOfMemoryError(KintsugiError, MemoryError):
    """The allocator refused memory: in ``phase`` (load/denoise/decode/export), on ``device`` (cpu/cuda), under
    ``memory_cap`` (bytes, or None without a cap), after ``steps_completed`` steps, with the denoised latents kept
    (``latents_kept``) so that a decode can be retried alone. On a GPU, what the device looked like from the
    process that ran out: free/total bytes, the caching allocator's reserved-but-unused bytes, what other processes
    held, and the likely ``reason`` (``other_processes``, ``fragmentation``) with its ``cause`` in words."""

    def __init__(
        self,
        message: str = "",
        *,
        phase: str | None = None,
        bytes_requested: int | None = None,
        device: str | None = None,
        memory_cap: int | None = None,
        steps_completed: int | None = None,
        latents_kept: bool = False,
        gpu_free_bytes: int | None = None,
        gpu_total_bytes: int | None = None,
        gpu_reserved_unused_bytes: int | None = None,
        gpu_other_processes_bytes: int | None = None,
        reason: str | None = None,
        cause: str | None = None,
    ) -> None:
        super().__init__(message)
        self.phase, self.bytes_requested, self.device = phase, bytes_requested, device
        self.memory_cap, self.steps_completed, self.latents_kept = memory_cap, steps_completed, latents_kept
        self.gpu_free_bytes, self.gpu_total_bytes = gpu_free_bytes, gpu_total_bytes
        self.gpu_reserved_unused_bytes = gpu_reserved_unused_bytes
        self.gpu_other_processes_bytes = gpu_other_processes_bytes
        self.reason, self.cause = reason, cause


class WorkerCrashedError(KintsugiError, RuntimeError):
    """The worker process died (killed by a signal, segfault, host OOM killer); ``crashed_in`` is the
    ``module.function`` its Python stack was in when a fault handler could tell."""

    def __init__(
        self,
        message: str = "",
        *,
        exitcode: int | None = None,
        signal_name: str | None = None,
        phase: str | None = None,
        crashed_in: str | None = None,
    ) -> None:
        super().__init__(message)
        self.exitcode, self.signal_name, self.phase, self.crashed_in = exitcode, signal_name, phase, crashed_in


class WorkerStartError(KintsugiError, RuntimeError):
    """A fresh worker process did not come up."""

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class GenerationCancelledError(KintsugiError, RuntimeError):
    """The caller cancelled the request."""

    def __init__(self, message: str = "", *, phase: str | None = None, steps_completed: int | None = None) -> None:
        super().__init__(message)
        self.phase, self.steps_completed = phase, steps_completed


class ModelLoadTimeoutError(KintsugiError, TimeoutError):
    """Loading a model took longer than allowed; the worker was restarted."""

    def __init__(self, message: str = "", *, model_id: str | None = None, timeout_s: float | None = None) -> None:
        super().__init__(message)
        self.model_id, self.timeout_s = model_id, timeout_s


class CorruptModelError(KintsugiError, ValueError):
    """Model files exist but are damaged (truncated, bad header, wrong hash)."""

    def __init__(self, message: str = "", *, model_id: str | None = None, files: list[str] | None = None) -> None:
        super().__init__(message)
        self.model_id, self.files = model_id, files


class IntegrityError(CorruptModelError):
    """A file's content does not match its recorded hash."""

    def __init__(
        self,
        message: str = "",
        *,
        model_id: str | None = None,
        files: list[str] | None = None,
        expected: str | None = None,
        actual: str | None = None,
    ) -> None:
        super().__init__(message, model_id=model_id, files=files)
        self.expected, self.actual = expected, actual


class BadOutputError(KintsugiError, RuntimeError):
    """Generation finished but the output is unusable (NaN/inf latents, all-black frames)."""

    def __init__(self, message: str = "", *, reason: str | None = None, phase: str | None = None) -> None:
        super().__init__(message)
        self.reason, self.phase = reason, phase


class DependencyMissingError(KintsugiError, ImportError):
    """An optional package is not installed; ``install`` is the exact pip command."""

    def __init__(self, message: str = "", *, package: str | None = None, install: str | None = None) -> None:
        super().__init__(message)
        self.package, self.install = package, install


class ModelDownloadError(KintsugiError, OSError):
    """Fetching model files failed (server error, dropped transfer)."""

    def __init__(
        self,
        message: str = "",
        *,
        model_id: str | None = None,
        files: list[str] | None = None,
        status: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.model_id, self.files, self.status, self.retryable = model_id, files, status, retryable


class NetworkUnavailableError(KintsugiError, ConnectionError):
    """The model source cannot be reached at all (offline, refused, DNS)."""

    def __init__(self, message: str = "", *, endpoint: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.endpoint, self.reason = endpoint, reason


class SlowDownloadError(KintsugiError, TimeoutError):
    """A transfer is too slow to finish in time (throttled, stalled)."""

    def __init__(
        self,
        message: str = "",
        *,
        model_id: str | None = None,
        bytes_per_second: float | None = None,
        bytes_remaining: int | None = None,
    ) -> None:
        super().__init__(message)
        self.model_id, self.bytes_per_second, self.bytes_remaining = model_id, bytes_per_second, bytes_remaining


class StorageFullError(KintsugiError, OSError):
    """Not enough free disk space for the model or output; ``plan`` is the clean-up that would make room."""

    def __init__(
        self,
        message: str = "",
        *,
        path: str | None = None,
        bytes_needed: int | None = None,
        bytes_free: int | None = None,
        plan: Any = None,
    ) -> None:
        super().__init__(message)
        self.path, self.bytes_needed, self.bytes_free, self.plan = path, bytes_needed, bytes_free, plan


class ModelAccessError(KintsugiError, PermissionError):
    """The model or its cache cannot be accessed (gated repo, missing token, read-only cache); ``steps`` say how
    to get access."""

    def __init__(
        self,
        message: str = "",
        *,
        model_id: str | None = None,
        reason: str | None = None,
        steps: tuple[str, ...] | list[str] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.model_id, self.reason, self.steps, self.retryable = model_id, reason, steps, retryable


class ModelVersionError(KintsugiError, ValueError):
    """The model asks for a revision or library version we do not have."""

    def __init__(
        self, message: str = "", *, model_id: str | None = None, expected: str | None = None, found: str | None = None
    ) -> None:
        super().__init__(message)
        self.model_id, self.expected, self.found = model_id, expected, found


class ModelCompatibilityError(KintsugiError, ValueError):
    """The model does not fit the task or the installed pipeline (wrong class, shapes)."""

    def __init__(self, message: str = "", *, model_id: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.model_id, self.reason = model_id, reason


class HardwareOptimizationError(KintsugiError, RuntimeError):
    """An optimisation failed to apply on this device (dtype, compile, attention kernel), in ``phase`` after
    ``steps_completed`` steps."""

    def __init__(
        self,
        message: str = "",
        *,
        optimization: str | None = None,
        reason: str | None = None,
        phase: str | None = None,
        steps_completed: int | None = None,
    ) -> None:
        super().__init__(message)
        self.optimization, self.reason, self.phase, self.steps_completed = optimization, reason, phase, steps_completed


class GenerationFailedError(KintsugiError, RuntimeError):
    """A run ended without a result after recovery did what it could. ``report``: the spec's API error shape,
    scrubbed."""

    def __init__(
        self,
        message: str = "",
        *,
        report: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        attempts: int | None = None,
    ) -> None:
        super().__init__(message)
        self.report: dict[str, Any] = report or {}
        self.correlation_id, self.attempts = correlation_id, attempts


class RequestExistsError(GenerationFailedError):
    """A request came with a correlation id that is already taken: it was not run again. ``report`` says where
    its status is; ``status`` is the existing request's."""

    def __init__(
        self,
        message: str = "",
        *,
        report: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        attempts: int | None = None,
        status: str | None = None,
    ) -> None:
        super().__init__(message, report=report, correlation_id=correlation_id, attempts=attempts)
        self.status = status


class RequestCancelledError(GenerationFailedError):
    """The user stopped the request (Stop, Esc, ``DELETE /api/v1/requests/{id}``): it ends without a video, but
    nothing went wrong, so nothing is retried, recovered or counted as a failure. ``phase`` is where it stopped
    (``queued`` when it never started a job), ``steps_completed`` the denoising steps it had run. ``report`` is the
    spec's error shape with type ``cancelled`` and no steps to take."""

    def __init__(
        self,
        message: str = "",
        *,
        report: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        attempts: int | None = None,
        phase: str | None = None,
        steps_completed: int | None = None,
    ) -> None:
        message = message or f"cancelled by the user during {phase or 'the request'}"
        super().__init__(
            message, report=report or _cancelled_report(message), correlation_id=correlation_id, attempts=attempts
        )
        self.phase, self.steps_completed = phase, steps_completed


def _cancelled_report(message: str) -> dict[str, Any]:
    """The API error shape of a cancelled request (a choice, not a failure: no severity above low, no steps)."""
    return {
        "error": {
            "type": "cancelled",
            "severity": "low",
            "message": message,
            "user_message": CANCELLED_USER_MESSAGE,
            "recovery_attempted": False,
            "recovery_success": False,
            "actionable_steps": [],
            "estimated_resolution_time": None,
        }
    }
