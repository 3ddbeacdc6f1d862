"""The vocabulary of recovery: failure types, severities, strategies, and the context/result records.

Names and fields follow the spec so that code written against it works unchanged. ``ErrorContext`` is frozen:
every strategy receives the same context; derive a new one with ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

__all__ = [
    "EnhancedFailureType",
    "ErrorSeverity",
    "RecoveryStrategy",
    "ErrorContext",
    "RecoveryResult",
    "BASE_SEVERITY",
    "MODEL_FAILURES",
    "assess_severity",
]


class EnhancedFailureType(Enum):
    """What went wrong, in 17 kinds."""

    MODEL_DOWNLOAD_FAILURE = "model_download_failure"
    MODEL_CORRUPTION_DETECTED = "model_corruption_detected"
    MODEL_VERSION_MISMATCH = "model_version_mismatch"
    MODEL_LOADING_TIMEOUT = "model_loading_timeout"
    MODEL_INTEGRITY_FAILURE = "model_integrity_failure"
    MODEL_COMPATIBILITY_ERROR = "model_compatibility_error"
    VRAM_EXHAUSTION = "vram_exhaustion"
    STORAGE_SPACE_INSUFFICIENT = "storage_space_insufficient"
    NETWORK_CONNECTIVITY_LOSS = "network_connectivity_loss"
    BANDWIDTH_LIMITATION = "bandwidth_limitation"
    HARDWARE_OPTIMIZATION_FAILURE = "hardware_optimization_failure"
    GENERATION_PIPELINE_ERROR = "generation_pipeline_error"
    SYSTEM_RESOURCE_ERROR = "system_resource_error"
    DEPENDENCY_MISSING = "dependency_missing"
    INVALID_PARAMETERS = "invalid_parameters"
    UNSUPPORTED_OPERATION = "unsupported_operation"
    PERMISSION_DENIED = "permission_denied"


class ErrorSeverity(Enum):
    """How much a failure costs the user, lowest first."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class RecoveryStrategy(Enum):
    """The seven ways to recover."""

    IMMEDIATE_RETRY = "immediate_retry"
    INTELLIGENT_FALLBACK = "intelligent_fallback"
    AUTOMATIC_REPAIR = "automatic_repair"
    PARAMETER_ADJUSTMENT = "parameter_adjustment"
    RESOURCE_OPTIMIZATION = "resource_optimization"
    USER_INTERVENTION = "user_intervention"
    GRACEFUL_DEGRADATION = "graceful_degradation"


F = EnhancedFailureType
S = ErrorSeverity

#: Rule 1: the base severity of each failure type (see docs/recovery.md).
BASE_SEVERITY: dict[EnhancedFailureType, ErrorSeverity] = {
    F.INVALID_PARAMETERS: S.LOW,
    F.UNSUPPORTED_OPERATION: S.LOW,
    F.BANDWIDTH_LIMITATION: S.LOW,
    F.HARDWARE_OPTIMIZATION_FAILURE: S.LOW,
    F.MODEL_DOWNLOAD_FAILURE: S.MEDIUM,
    F.NETWORK_CONNECTIVITY_LOSS: S.MEDIUM,
    F.MODEL_LOADING_TIMEOUT: S.MEDIUM,
    F.VRAM_EXHAUSTION: S.MEDIUM,
    F.GENERATION_PIPELINE_ERROR: S.MEDIUM,
    F.DEPENDENCY_MISSING: S.MEDIUM,
    F.MODEL_VERSION_MISMATCH: S.MEDIUM,
    F.MODEL_CORRUPTION_DETECTED: S.MEDIUM,
    F.MODEL_INTEGRITY_FAILURE: S.MEDIUM,
    F.MODEL_COMPATIBILITY_ERROR: S.MEDIUM,
    F.STORAGE_SPACE_INSUFFICIENT: S.HIGH,
    F.PERMISSION_DENIED: S.HIGH,
    F.SYSTEM_RESOURCE_ERROR: S.HIGH,
}

#: Failures of one model, which another model (a fallback) could avoid.
MODEL_FAILURES: frozenset[EnhancedFailureType] = frozenset(
    {
        F.MODEL_DOWNLOAD_FAILURE,
        F.MODEL_CORRUPTION_DETECTED,
        F.MODEL_VERSION_MISMATCH,
        F.MODEL_LOADING_TIMEOUT,
        F.MODEL_INTEGRITY_FAILURE,
        F.MODEL_COMPATIBILITY_ERROR,
    }
)

_ORDER = list(ErrorSeverity)


def assess_severity(
    failure_type: EnhancedFailureType, *, alternatives: int | None = None, previous_failures: int = 0
) -> ErrorSeverity:
    """Severity by the documented rules: base level, +1 when a broken model has no alternative, +1 when the
    same request has already failed three times or more; capped at critical."""
    level = _ORDER.index(BASE_SEVERITY[failure_type])
    if failure_type in MODEL_FAILURES and alternatives == 0:
        level += 1
    if previous_failures >= 3:
        level += 1
    return _ORDER[min(level, len(_ORDER) - 1)]


@dataclass(frozen=True)
class ErrorContext:
    """Everything a strategy needs to know about one failure."""

    failure_type: EnhancedFailureType
    original_error: BaseException
    severity: ErrorSeverity
    model_id: str | None = None
    operation: str | None = None
    user_parameters: dict[str, Any] = field(default_factory=dict)
    system_state: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=datetime.now)
    correlation_id: str | None = None
    previous_attempts: list[str] = field(default_factory=list)
    user_session_id: str | None = None


@dataclass(frozen=True)
class RecoveryResult:
    """What one strategy did. ``system_changes`` may carry ``parameters`` (new request parameters),
    ``model_id`` (another model), ``changes`` (plain "what we changed" lines) and ``degraded`` (bool)."""

    success: bool
    strategy_used: RecoveryStrategy
    recovery_time_seconds: float
    message: str
    user_message: str = ""
    actionable_steps: list[str] = field(default_factory=list)
    alternative_options: list[dict[str, Any]] = field(default_factory=list)
    system_changes: dict[str, Any] = field(default_factory=dict)
    requires_user_action: bool = False
    estimated_resolution_time: timedelta | None = None
    follow_up_required: bool = False
