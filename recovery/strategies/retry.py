"""Immediate retry: the same request again after an exponential, fully jittered backoff, within a budget per
failure type."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from recovery.backoff import exponential_delay, full_jitter
from recovery.settings import is_testing
from recovery.strategies.base import attempts_of, changed, not_applicable
from recovery.taxonomy import EnhancedFailureType, ErrorContext, RecoveryResult, RecoveryStrategy

__all__ = ["RetryBudget", "DEFAULT_BUDGETS", "ImmediateRetry"]

F = EnhancedFailureType


@dataclass(frozen=True)
class RetryBudget:
    """How many retries one failure type gets, and the backoff's base and cap in seconds."""

    attempts: int = 1
    base_delay: float = 0.5
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 0 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError(f"bad retry budget {self}")


DEFAULT_BUDGETS: Mapping[EnhancedFailureType, RetryBudget] = {
    F.MODEL_DOWNLOAD_FAILURE: RetryBudget(4, 2.0, 60.0),
    F.NETWORK_CONNECTIVITY_LOSS: RetryBudget(4, 2.0, 60.0),
    F.BANDWIDTH_LIMITATION: RetryBudget(3, 5.0, 120.0),
    F.MODEL_LOADING_TIMEOUT: RetryBudget(2, 1.0, 10.0),
    F.SYSTEM_RESOURCE_ERROR: RetryBudget(2, 0.5, 5.0),
    F.GENERATION_PIPELINE_ERROR: RetryBudget(2, 0.0, 1.0),
}


@dataclass(frozen=True)
class ImmediateRetry:
    """Say "run it again" while the failure type's budget lasts; sleeps the backoff first."""

    kind: ClassVar[RecoveryStrategy] = RecoveryStrategy.IMMEDIATE_RETRY
    budgets: Mapping[EnhancedFailureType, RetryBudget] = field(default_factory=lambda: dict(DEFAULT_BUDGETS))
    default_budget: RetryBudget = RetryBudget()
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, budget: RetryBudget, retry_number: int) -> float:
        """Full jitter: uniform between 0 and the exponential cap for this retry (0 under ``set_testing``)."""
        if is_testing():
            return 0.0
        return full_jitter(exponential_delay(retry_number, budget.base_delay, max_s=budget.max_delay), self.rng)

    def recover(self, ctx: ErrorContext) -> RecoveryResult:
        if not ctx.system_state.get("retryable", True):
            return not_applicable(self.kind, "this failure does not go away by itself")
        budget = self.budgets.get(ctx.failure_type, self.default_budget)
        used = attempts_of(ctx, self.kind)
        if used >= budget.attempts:
            return not_applicable(self.kind, f"retry budget of {budget.attempts} spent")
        wait = self.delay(budget, used + 1)
        if wait > 0:
            self.sleep(wait)
        return changed(self.kind, f"retry {used + 1}/{budget.attempts} after {wait:.2f}s")
