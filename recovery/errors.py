"""Kintsugi's own exceptions: one hierarchy, one file.

Each error carries data (``model_id``, ``phase``, ``bytes_requested`` ...) as attributes, inherits from the
matching built-in so that generic ``except`` clauses still work, and pickles, because errors raised inside the
worker process must cross the process boundary intact. The classifier (``recovery.classify``) maps each class to
a failure type with ``isinstance``; message text is never needed for our own errors.
"""

from __future__ import annotations

from typing import Any

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


class KintsugiError(Exception):
    """Base class: a human-readable ``message`` plus named data that survives pickling."""

    def __init__(self, message: str = "", **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = dict(data)
        for key, value in data.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.data))

    def __str__(self) -> str:
        return self.message


class InvalidParameterError(KintsugiError, ValueError):
    """A request parameter is out of range or malformed. Data: ``parameter``, ``value``, ``constraint``."""


class UnsupportedOperationError(KintsugiError, ValueError):
    """The request is valid but this model/device cannot do it. Data: ``operation``, ``reason``."""


class OutOfMemoryError(KintsugiError, MemoryError):
    """The allocator refused memory. Data: ``phase`` (load/denoise/decode/export), ``bytes_requested``,
    ``device`` (cpu/cuda), ``memory_cap`` (bytes or None), ``steps_completed``, ``latents_kept`` (bool)."""


class WorkerCrashedError(KintsugiError, RuntimeError):
    """The worker process died (killed by a signal, segfault, host OOM killer). Data: ``exitcode``,
    ``signal_name``, ``phase``."""


class WorkerStartError(KintsugiError, RuntimeError):
    """A fresh worker process did not come up. Data: ``reason``."""


class GenerationCancelledError(KintsugiError, RuntimeError):
    """The caller cancelled the request. Data: ``phase``, ``steps_completed``."""


class ModelLoadTimeoutError(KintsugiError, TimeoutError):
    """Loading a model took longer than allowed; the worker was restarted. Data: ``model_id``, ``timeout_s``."""


class CorruptModelError(KintsugiError, ValueError):
    """Model files exist but are damaged (truncated, bad header, wrong hash). Data: ``model_id``, ``files``."""


class IntegrityError(CorruptModelError):
    """A file's content does not match its recorded hash. Data: ``model_id``, ``files``, ``expected``,
    ``actual``."""


class BadOutputError(KintsugiError, RuntimeError):
    """Generation finished but the output is unusable (NaN/inf latents, all-black frames). Data: ``reason``,
    ``phase``."""


class DependencyMissingError(KintsugiError, ImportError):
    """An optional package is not installed. Data: ``package``, ``install`` (the exact pip command)."""


class ModelDownloadError(KintsugiError, OSError):
    """Fetching model files failed (server error, dropped transfer). Data: ``model_id``, ``files``, ``status``,
    ``retryable`` (bool)."""


class NetworkUnavailableError(KintsugiError, ConnectionError):
    """The model source cannot be reached at all (offline, refused, DNS). Data: ``endpoint``, ``reason``."""


class SlowDownloadError(KintsugiError, TimeoutError):
    """A transfer is too slow to finish in time (throttled, stalled). Data: ``model_id``,
    ``bytes_per_second``, ``bytes_remaining``."""


class StorageFullError(KintsugiError, OSError):
    """Not enough free disk space for the model or output. Data: ``path``, ``bytes_needed``, ``bytes_free``."""


class ModelAccessError(KintsugiError, PermissionError):
    """The model or its cache cannot be accessed (gated repo, missing token, read-only cache). Data:
    ``model_id``, ``reason``."""


class ModelVersionError(KintsugiError, ValueError):
    """The model asks for a revision or library version we do not have. Data: ``model_id``, ``expected``,
    ``found``."""


class ModelCompatibilityError(KintsugiError, ValueError):
    """The model does not fit the task or the installed pipeline (wrong class, shapes). Data: ``model_id``,
    ``reason``."""


class HardwareOptimizationError(KintsugiError, RuntimeError):
    """An optimisation failed to apply on this device (dtype, compile, attention kernel). Data:
    ``optimization``, ``reason``."""


class GenerationFailedError(KintsugiError, RuntimeError):
    """A run ended without a result after recovery did what it could. Data: ``report`` (the spec's API error
    shape, scrubbed), ``correlation_id``, ``attempts``."""


class RequestExistsError(GenerationFailedError):
    """A request came with a correlation id that is already taken: it was not run again. Data: ``report`` (the
    spec's error shape, saying where its status is), ``correlation_id``, ``status`` (the existing request's)."""
