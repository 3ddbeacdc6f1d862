"""Circuit breaker: opens after repeated failures, half-opens after the cooldown, closes on success."""

from __future__ import annotations

import recovery
from recovery import BreakerKey, BreakerState, CircuitBreaker
from recovery import EnhancedFailureType as F
from recovery import RecoveryStrategy as R

KEY = BreakerKey("wan", "frames=81", "cpu")
ORDER = [R.IMMEDIATE_RETRY, R.PARAMETER_ADJUSTMENT, R.GRACEFUL_DEGRADATION, R.USER_INTERVENTION]


def tripped(clock, threshold: int = 3) -> CircuitBreaker:
    breaker = CircuitBreaker(failure_threshold=threshold, cooldown_seconds=60, clock=clock)
    for _ in range(threshold):
        breaker.record_failure(KEY, F.VRAM_EXHAUSTION)
    return breaker


def test_opens_after_threshold(clock) -> None:
    """Three failures of one kind at one key open the breaker."""
    assert tripped(clock).state(KEY) is BreakerState.OPEN


def test_stays_closed_below_threshold(clock) -> None:
    """Two failures are not enough to open it."""
    breaker = CircuitBreaker(failure_threshold=3, clock=clock)
    breaker.record_failure(KEY, F.VRAM_EXHAUSTION)
    breaker.record_failure(KEY, F.VRAM_EXHAUSTION)
    assert breaker.state(KEY) is BreakerState.CLOSED


def test_open_breaker_puts_known_fix_first_and_skips_retry(clock) -> None:
    """While open, the strategy that worked before at this key goes first and blind retries are dropped."""
    breaker = tripped(clock)
    breaker.record_fix(KEY, F.VRAM_EXHAUSTION, R.GRACEFUL_DEGRADATION)
    assert breaker.order(KEY, F.VRAM_EXHAUSTION, ORDER) == [
        R.GRACEFUL_DEGRADATION,
        R.PARAMETER_ADJUSTMENT,
        R.USER_INTERVENTION,
    ]


def test_half_opens_after_cooldown(clock) -> None:
    """After the cooldown the breaker lets a probe through."""
    breaker = tripped(clock)
    clock.now += 61
    assert breaker.state(KEY) is BreakerState.HALF_OPEN and breaker.order(KEY, F.VRAM_EXHAUSTION, ORDER) == ORDER


def test_failed_probe_reopens(clock) -> None:
    """A failure while half-open opens the breaker again at once."""
    breaker = tripped(clock)
    clock.now += 61
    breaker.record_failure(KEY, F.VRAM_EXHAUSTION)
    assert breaker.state(KEY) is BreakerState.OPEN


def test_successful_probe_closes(clock) -> None:
    """A success while half-open closes the breaker and clears the count."""
    breaker = tripped(clock)
    clock.now += 61
    breaker.record_success(KEY)
    assert breaker.state(KEY) is BreakerState.CLOSED and breaker.snapshot()[0].consecutive_failures == 0


def test_breaker_transitions_are_events(clock) -> None:
    """Opening, half-opening and closing are announced as events."""
    bus, names = recovery.EventBus(), []
    bus.subscribe(lambda event: names.append(event.name))
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=5, clock=clock, emit=bus.emit)
    breaker.record_failure(KEY, F.VRAM_EXHAUSTION)
    clock.now += 6
    breaker.record_success(KEY)
    assert names == [
        recovery.events.BREAKER_OPENED,
        recovery.events.BREAKER_HALF_OPENED,
        recovery.events.BREAKER_CLOSED,
    ]


def test_engine_learns_fix_and_uses_it_when_open(make_engine, halver, oom_attempt, recorded) -> None:
    """After repeated OOMs at one key the engine skips straight to the adjustment that worked there."""
    engine = make_engine(
        adjuster=halver,
        strategies={F.VRAM_EXHAUSTION: [R.IMMEDIATE_RETRY, R.PARAMETER_ADJUSTMENT]},
        retry_budgets={F.VRAM_EXHAUSTION: recovery.RetryBudget(attempts=1)},
    )
    for _ in range(3):
        engine.run(oom_attempt, {"frames": 20})
    recorded.clear()
    outcome = engine.run(oom_attempt, {"frames": 20})
    strategies = [e.data["strategy"] for e in recorded if e.name == recovery.events.STRATEGY_STARTED]
    assert (strategies, outcome.ok) == (["parameter_adjustment"], True)


def test_config_bucket_ignores_text_and_seed() -> None:
    """Requests that differ only by prompt or seed share a bucket."""
    assert recovery.config_bucket({"frames": 9, "prompt": "a", "seed": 1}) == recovery.config_bucket(
        {"frames": 9, "prompt": "b", "seed": 2}
    )
