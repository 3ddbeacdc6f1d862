"""Circuit breaker keyed by (model, configuration bucket, hardware).

After ``failure_threshold`` consecutive failures of one kind at one key the breaker opens: the engine then skips
blind retries and tries first the strategy that fixed this failure at this key before. After
``cooldown_seconds`` it goes half-open: the next attempt is a probe; success closes it, failure reopens it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from recovery import events
from recovery.taxonomy import EnhancedFailureType, RecoveryStrategy

__all__ = ["BreakerKey", "BreakerState", "BreakerStatus", "CircuitBreaker", "config_bucket"]


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerKey:
    """What a breaker protects: one model, one class of settings, one piece of hardware."""

    model_id: str
    config_bucket: str
    hardware: str


@dataclass(frozen=True)
class BreakerStatus:
    """A visible snapshot of one key's breaker."""

    key: BreakerKey
    state: BreakerState
    failure_type: EnhancedFailureType | None
    consecutive_failures: int
    known_fixes: Mapping[EnhancedFailureType, RecoveryStrategy]


@dataclass
class _Entry:
    state: BreakerState = BreakerState.CLOSED
    failures: Counter[EnhancedFailureType] = field(default_factory=Counter)
    open_type: EnhancedFailureType | None = None
    opened_at: float = 0.0
    fixes: dict[EnhancedFailureType, RecoveryStrategy] = field(default_factory=dict)


def config_bucket(parameters: Mapping[str, Any], ignore: frozenset[str] = frozenset({"seed"})) -> str:
    """A stable bucket name from the numeric settings of a request (text, seeds and objects do not count)."""
    items = (f"{k}={v}" for k, v in sorted(parameters.items()) if isinstance(v, (int, float)) and k not in ignore)
    return ",".join(items)


class CircuitBreaker:
    """Per-key breakers; thread-safe; state changes are sent as events through ``emit``."""

    def __init__(
        self,
        failure_threshold: int = 3,
        cooldown_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[..., Any] | None = None,
    ) -> None:
        if failure_threshold < 1 or cooldown_seconds < 0:
            raise ValueError(f"bad breaker settings ({failure_threshold=}, {cooldown_seconds=})")
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._emit = emit or (lambda *args, **kwargs: None)
        self._entries: dict[BreakerKey, _Entry] = {}
        self._lock = threading.Lock()

    def state(self, key: BreakerKey) -> BreakerState:
        """The key's state, moving open → half-open once the cooldown has passed."""
        with self._lock:
            entry = self._entries.setdefault(key, _Entry())
            if entry.state is BreakerState.OPEN and self._clock() - entry.opened_at >= self.cooldown_seconds:
                entry.state = BreakerState.HALF_OPEN
                self._emit(events.BREAKER_HALF_OPENED, key=key)
            return entry.state

    def record_failure(self, key: BreakerKey, failure_type: EnhancedFailureType) -> None:
        """Count a failed attempt; open on the threshold, or at once when a half-open probe fails."""
        current = self.state(key)
        with self._lock:
            entry = self._entries[key]
            entry.failures[failure_type] += 1
            tripped = entry.failures[failure_type] >= self.failure_threshold
            if current is BreakerState.HALF_OPEN or (current is BreakerState.CLOSED and tripped):
                entry.state, entry.open_type, entry.opened_at = BreakerState.OPEN, failure_type, self._clock()
                self._emit(events.BREAKER_OPENED, key=key, failure_type=failure_type.value)

    def record_success(self, key: BreakerKey) -> None:
        """A successful attempt at ``key`` closes its breaker and clears the failure counts."""
        current = self.state(key)
        with self._lock:
            entry = self._entries[key]
            entry.failures.clear()
            if current is not BreakerState.CLOSED:
                entry.state, entry.open_type = BreakerState.CLOSED, None
                self._emit(events.BREAKER_CLOSED, key=key)

    def record_fix(self, key: BreakerKey, failure_type: EnhancedFailureType, strategy: RecoveryStrategy) -> None:
        """Remember that ``strategy`` recovered ``failure_type`` at ``key``."""
        with self._lock:
            self._entries.setdefault(key, _Entry()).fixes[failure_type] = strategy

    def order(
        self, key: BreakerKey, failure_type: EnhancedFailureType, strategies: Sequence[RecoveryStrategy]
    ) -> list[RecoveryStrategy]:
        """``strategies`` as the breaker allows them: when open, no blind retry and the known fix first."""
        if self.state(key) is not BreakerState.OPEN:
            return list(strategies)
        fix = self._entries[key].fixes.get(failure_type)
        rest = [s for s in strategies if s is not RecoveryStrategy.IMMEDIATE_RETRY and s is not fix]
        return ([fix] if fix is not None else []) + rest

    def snapshot(self) -> list[BreakerStatus]:
        """The state of every key seen so far."""
        return [
            BreakerStatus(key, self.state(key), entry.open_type, sum(entry.failures.values()), dict(entry.fixes))
            for key, entry in list(self._entries.items())
        ]
