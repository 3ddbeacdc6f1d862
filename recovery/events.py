"""Named recovery events, sent as frozen records to listeners registered through one thread-safe API.

The UI stream, the metrics store, logging and the WebSocket feed are all listeners. A listener that raises is
logged and skipped: observing recovery must never break it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "ATTEMPT_STARTED",
    "ATTEMPT_FINISHED",
    "FAILURE_CLASSIFIED",
    "STRATEGY_STARTED",
    "STRATEGY_FINISHED",
    "PARAMS_ADJUSTED",
    "MODEL_SWITCHED",
    "DEGRADED",
    "RECOVERED",
    "GAVE_UP",
    "BREAKER_OPENED",
    "BREAKER_HALF_OPENED",
    "BREAKER_CLOSED",
    "ALL_EVENTS",
    "RecoveryEvent",
    "Listener",
    "EventBus",
    "logging_listener",
]

ATTEMPT_STARTED = "recovery.attempt_started"
ATTEMPT_FINISHED = "recovery.attempt_finished"
FAILURE_CLASSIFIED = "recovery.failure_classified"
STRATEGY_STARTED = "recovery.strategy_started"
STRATEGY_FINISHED = "recovery.strategy_finished"
PARAMS_ADJUSTED = "recovery.params_adjusted"
MODEL_SWITCHED = "recovery.model_switched"
DEGRADED = "recovery.degraded"
RECOVERED = "recovery.recovered"
GAVE_UP = "recovery.gave_up"
BREAKER_OPENED = "recovery.breaker_opened"
BREAKER_HALF_OPENED = "recovery.breaker_half_opened"
BREAKER_CLOSED = "recovery.breaker_closed"
ALL_EVENTS = frozenset(
    {
        ATTEMPT_STARTED,
        ATTEMPT_FINISHED,
        FAILURE_CLASSIFIED,
        STRATEGY_STARTED,
        STRATEGY_FINISHED,
        PARAMS_ADJUSTED,
        MODEL_SWITCHED,
        DEGRADED,
        RECOVERED,
        GAVE_UP,
        BREAKER_OPENED,
        BREAKER_HALF_OPENED,
        BREAKER_CLOSED,
    }
)

log = logging.getLogger("recovery")


@dataclass(frozen=True)
class RecoveryEvent:
    """One event: its name, the request it belongs to, when (epoch seconds), and read-only data."""

    name: str
    correlation_id: str | None
    timestamp: float
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


Listener = Callable[[RecoveryEvent], None]


class EventBus:
    """Delivers events to listeners, in registration order, from any thread."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._listeners: tuple[Listener, ...] = ()
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Register ``listener``; returns a function that unregisters it."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(item for item in self._listeners if item is not listener)

        return unsubscribe

    def emit(self, name: str, correlation_id: str | None = None, **data: Any) -> RecoveryEvent:
        """Build the frozen record and hand it to every listener."""
        event = RecoveryEvent(name, correlation_id, self._clock(), MappingProxyType(data))
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("recovery event listener %r failed on %s", listener, name)
        return event


def logging_listener(event: RecoveryEvent) -> None:
    """Write every event to the ``recovery`` logger at debug level."""
    log.debug("%s [%s] %s", event.name, event.correlation_id, dict(event.data))
