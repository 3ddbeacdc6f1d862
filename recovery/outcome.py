"""What the run-with-recovery loop hands to each try, records per try, and returns at the end."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from recovery.messages import api_error
from recovery.taxonomy import EnhancedFailureType, ErrorContext, ErrorSeverity, RecoveryResult, RecoveryStrategy

__all__ = ["AttemptInfo", "AttemptRecord", "Outcome"]

T = TypeVar("T")


@dataclass(frozen=True)
class AttemptInfo:
    """Given to ``attempt_fn`` with each try: which try this is and what has been changed so far."""

    number: int
    correlation_id: str
    model_id: str | None
    degraded: bool
    changes: tuple[str, ...]
    previous_failure: EnhancedFailureType | None


@dataclass(frozen=True)
class AttemptRecord:
    """One try: its inputs, how long it took, how it failed (if it did) and which strategy followed."""

    number: int
    parameters: Mapping[str, Any]
    model_id: str | None
    duration_s: float
    failure_type: EnhancedFailureType | None = None
    severity: ErrorSeverity | None = None
    error: str | None = None
    recovery: RecoveryStrategy | None = None


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """The end of a run: the value (or the final error and the hand-over result), every try, every change."""

    value: T | None
    correlation_id: str
    attempts: tuple[AttemptRecord, ...]
    changes: tuple[str, ...]
    degraded: bool
    parameters: Mapping[str, Any]
    model_id: str | None
    error: BaseException | None = None
    failure: ErrorContext | None = None
    result: RecoveryResult | None = None

    @property
    def ok(self) -> bool:
        """Whether a try succeeded."""
        return self.error is None

    @property
    def recovered(self) -> bool:
        """Whether it succeeded after at least one failure."""
        return self.ok and len(self.attempts) > 1

    def unwrap(self) -> T:
        """The value, or the final error raised again."""
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]

    def api_error(self, *, data_dir: str | None = None) -> dict[str, Any] | None:
        """The spec's API error shape for a failed run (``None`` when it succeeded)."""
        if self.ok or self.failure is None:
            return None
        return api_error(self.failure, self.result, data_dir=data_dir)
