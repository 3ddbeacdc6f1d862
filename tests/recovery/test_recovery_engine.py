"""The run-with-recovery loop and the spec's handle_enhanced_failure: re-runs, limits, hand-over, events."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import recovery
from recovery import EnhancedFailureType as F
from recovery import RecoveryStrategy as R
from recovery import events
from tests.support.spec import SPEC_ERROR_KEYS


def test_reruns_with_adjusted_parameters(make_engine, halver, oom_attempt) -> None:
    """An OOM at 81 frames is recovered by halving until the request fits (81 → 40 → 20 → 10)."""
    outcome = make_engine(adjuster=halver, user_intervention_threshold=10).run(oom_attempt, {"frames": 81})
    assert (outcome.ok, outcome.value, [a.parameters["frames"] for a in outcome.attempts]) == (
        True,
        "video with 10 frames",
        [81, 40, 20, 10],
    )


def test_outcome_lists_every_change(make_engine, halver, oom_attempt) -> None:
    """Every 'what we changed' line of the strategies reaches the outcome, in order."""
    outcome = make_engine(adjuster=halver, user_intervention_threshold=10).run(oom_attempt, {"frames": 81})
    assert outcome.changes == (
        "frames 81 → 40 to fit memory",
        "frames 40 → 20 to fit memory",
        "frames 20 → 10 to fit memory",
    )


def test_attempt_records_carry_failure_and_strategy(make_engine, halver, oom_attempt) -> None:
    """Each failed try records its failure type and the strategy that followed it."""
    outcome = make_engine(adjuster=halver, user_intervention_threshold=10).run(oom_attempt, {"frames": 20})
    first = outcome.attempts[0]
    assert (first.failure_type, first.recovery, outcome.attempts[-1].failure_type) == (
        F.VRAM_EXHAUSTION,
        R.PARAMETER_ADJUSTMENT,
        None,
    )


def test_events_in_order(make_engine, halver, oom_attempt, recorded) -> None:
    """One failed try then one good one emits the documented sequence of events."""
    make_engine(adjuster=halver).run(oom_attempt, {"frames": 20}, correlation_id="c1")
    assert [e.name for e in recorded] == [
        events.ATTEMPT_STARTED,
        events.ATTEMPT_FINISHED,
        events.FAILURE_CLASSIFIED,
        events.STRATEGY_STARTED,
        events.STRATEGY_FINISHED,
        events.PARAMS_ADJUSTED,
        events.ATTEMPT_STARTED,
        events.ATTEMPT_FINISHED,
        events.RECOVERED,
    ]
    assert {e.correlation_id for e in recorded} == {"c1"}


def test_intervention_threshold_hands_over(make_engine, halver, oom_attempt) -> None:
    """After `user_intervention_threshold` failed tries the user is asked, with catalogue guidance."""
    outcome = make_engine(adjuster=halver, user_intervention_threshold=2).run(oom_attempt, {"frames": 81})
    assert (len(outcome.attempts), outcome.ok, outcome.result.strategy_used, outcome.result.requires_user_action) == (
        2,
        False,
        R.USER_INTERVENTION,
        True,
    )
    assert "intervention threshold" in outcome.result.message and outcome.result.actionable_steps


def test_max_recovery_attempts_stops(make_engine, halver, oom_attempt) -> None:
    """No more strategies act once `max_recovery_attempts` have acted for the correlation id."""
    outcome = make_engine(adjuster=halver, max_recovery_attempts=2, user_intervention_threshold=10).run(
        oom_attempt, {"frames": 81}
    )
    assert (len(outcome.attempts), halver.calls, "recovery attempts (limit)" in outcome.result.message) == (3, 2, True)


def test_recovery_timeout_stops(make_engine, clock, halver) -> None:
    """A run that has used up `recovery_timeout_seconds` hands over instead of trying another strategy."""

    def slow_oom(parameters: Mapping[str, Any], info: recovery.AttemptInfo) -> None:
        clock.now += 40
        raise recovery.OutOfMemoryError("oom", phase="denoise")

    outcome = make_engine(adjuster=halver, recovery_timeout_seconds=100, user_intervention_threshold=10).run(
        slow_oom, {"frames": 81}
    )
    assert (len(outcome.attempts), "timeout" in outcome.result.message) == (3, True)


def test_limits_persist_per_correlation_id(make_engine, oom_attempt) -> None:
    """A second run with the same correlation id continues the failure count of the first."""
    engine = make_engine(
        user_intervention_threshold=2,
        strategies={F.VRAM_EXHAUSTION: [R.IMMEDIATE_RETRY]},
        retry_budgets={F.VRAM_EXHAUSTION: recovery.RetryBudget(attempts=9)},
    )
    engine.run(oom_attempt, {"frames": 81}, correlation_id="same")
    assert len(engine.run(oom_attempt, {"frames": 81}, correlation_id="same").attempts) == 1


def test_exhausted_strategies_hand_over(make_engine, oom_attempt) -> None:
    """With no port to act, every strategy is not applicable and the user is asked after one try."""
    outcome = make_engine().run(oom_attempt, {"frames": 81})
    assert (len(outcome.attempts), outcome.result.message) == (1, "handed over to the user: no strategy could recover")


def test_validator_rejection_is_a_pipeline_error(make_engine) -> None:
    """A value the validator rejects goes through classification as a generation pipeline error."""
    values = iter(["black", "good"])
    outcome = make_engine().run(
        lambda p, info: next(values), {}, validator=lambda v: "all-black frames" if v == "black" else None
    )
    assert (outcome.value, outcome.attempts[0].failure_type, outcome.attempts[0].recovery) == (
        "good",
        F.GENERATION_PIPELINE_ERROR,
        R.IMMEDIATE_RETRY,
    )


def test_cancellation_propagates(make_engine) -> None:
    """A cancelled generation is not a failure to recover from: it propagates at once."""

    def cancel(parameters: Mapping[str, Any], info: recovery.AttemptInfo) -> None:
        raise recovery.GenerationCancelledError("cancelled", phase="denoise")

    with pytest.raises(recovery.GenerationCancelledError):
        make_engine().run(cancel, {})


def test_cancellation_is_told_but_not_classified_or_recovered(make_engine, recorded, tmp_path: Path) -> None:
    """A cancelled attempt ends with ``attempt_finished`` marked cancelled; nothing is classified, no strategy
    runs, and the metrics store records no attempt and the breaker no failure."""

    def cancel(parameters: Mapping[str, Any], info: recovery.AttemptInfo) -> None:
        raise recovery.GenerationCancelledError("cancelled", phase="decode")

    metrics = recovery.MetricsStore(tmp_path / "metrics.sqlite")
    engine = make_engine(metrics=metrics)
    with pytest.raises(recovery.GenerationCancelledError):
        engine.run(cancel, {"frames": 9}, model_id="m", correlation_id="c1")
    assert [e.name for e in recorded] == [events.ATTEMPT_STARTED, events.ATTEMPT_FINISHED]
    assert recorded[-1].data["cancelled"] is True and recorded[-1].data["success"] is False
    assert metrics.count() == 0
    assert engine.breaker.snapshot() == []
    metrics.close()


class TwoModelStore:
    """A store whose model 'big' is broken beyond repair and whose fallback is 'small'."""

    def verify(self, model_id: str) -> bool:
        return model_id == "small"

    def repair(self, model_id: str) -> bool:
        return False

    def download(self, model_id: str) -> bool:
        return False

    def fallback_candidates(self, model_id: str) -> list[str]:
        return ["big", "small"]


def test_fallback_switches_model_and_marks_degraded(make_engine) -> None:
    """A corrupt model is replaced by the store's next candidate; the outcome says so and is degraded."""

    def load(parameters: Mapping[str, Any], info: recovery.AttemptInfo) -> str:
        if info.model_id == "big":
            raise recovery.CorruptModelError("bad header", model_id="big", files=["x"])
        return info.model_id

    outcome = make_engine(store=TwoModelStore()).run(load, {}, model_id="big")
    assert (outcome.value, outcome.model_id, outcome.degraded, outcome.changes) == (
        "small",
        "small",
        True,
        ("model big → small (model_corruption_detected)",),
    )


def test_fallback_is_withheld_without_the_callers_consent(make_engine) -> None:
    """``run(allow_fallback=False)``: the model is never switched; the run ends on its own model's failure, and the
    failure says the fallback was not allowed while an alternative existed."""

    def load(parameters: Mapping[str, Any], info: recovery.AttemptInfo) -> str:
        if info.model_id == "big":
            raise recovery.CorruptModelError("bad header", model_id="big", files=["x"])
        return info.model_id

    outcome = make_engine(store=TwoModelStore()).run(load, {}, model_id="big", allow_fallback=False)
    assert not outcome.ok and outcome.model_id == "big" and not outcome.degraded
    assert {a.model_id for a in outcome.attempts} == {"big"}
    assert outcome.failure is not None and outcome.failure.system_state["fallback_allowed"] is False
    assert outcome.failure.system_state["alternatives"] == 2


def test_last_try_before_hand_over_prefers_a_fallback_to_a_blind_retry(make_engine) -> None:
    """When the network stays down, retries stop one short of the threshold and the fallback model gets the last
    try (a blind retry stays available after the strategies that change something)."""

    def fetch(parameters: Mapping[str, Any], info: recovery.AttemptInfo) -> str:
        if info.model_id == "big":
            raise recovery.NetworkUnavailableError("refused", endpoint="hub", reason="closed")
        return info.model_id

    outcome = make_engine(store=TwoModelStore(), user_intervention_threshold=3).run(fetch, {}, model_id="big")
    assert outcome.ok and outcome.value == "small" and outcome.degraded
    assert [a.recovery for a in outcome.attempts if a.recovery] == [R.IMMEDIATE_RETRY, R.INTELLIGENT_FALLBACK]


def test_run_records_attempts_in_metrics(make_engine, halver, oom_attempt, tmp_path: Path) -> None:
    """Every strategy that acts during a run becomes one row of the metrics store."""
    store = recovery.MetricsStore(tmp_path / "m.sqlite")
    make_engine(adjuster=halver, metrics=store, user_intervention_threshold=10).run(oom_attempt, {"frames": 81})
    frame = store.success_rate_by_strategy()
    assert frame.set_index("strategy").loc["parameter_adjustment", "attempts"] == 3


def test_run_async_awaits_async_attempts(make_engine, halver) -> None:
    """run_async drives an async attempt function on the caller's loop."""

    async def attempt(parameters: Mapping[str, Any], info: recovery.AttemptInfo) -> int:
        await asyncio.sleep(0)
        if parameters["frames"] > 17:
            raise recovery.OutOfMemoryError("oom")
        return parameters["frames"]

    outcome = asyncio.run(make_engine(adjuster=halver).run_async(attempt, {"frames": 40}))
    assert outcome.value == 10


def test_spec_handle_enhanced_failure(make_engine, halver) -> None:
    """The spec's async categorize_error + handle_enhanced_failure return adjusted parameters."""
    engine = make_engine(adjuster=halver)

    async def flow() -> recovery.RecoveryResult:
        ctx = await engine.categorize_error(recovery.OutOfMemoryError("oom"), {"user_parameters": {"frames": 33}})
        return await engine.handle_enhanced_failure(ctx)

    result = asyncio.run(flow())
    assert (result.success, result.strategy_used, result.system_changes["parameters"]) == (
        True,
        R.PARAMETER_ADJUSTMENT,
        {"frames": 16},
    )


def test_handle_failure_counts_toward_threshold(make_engine) -> None:
    """Repeated handle_failure calls for one correlation id reach the hand-over at the threshold."""
    engine = make_engine(user_intervention_threshold=2)
    ctx = engine.categorize(recovery.NetworkUnavailableError("down"), {"correlation_id": "n"})
    results = [engine.handle_failure(ctx) for _ in range(2)]
    assert [r.strategy_used for r in results] == [R.IMMEDIATE_RETRY, R.USER_INTERVENTION]


def test_notifier_hears_the_hand_over(make_engine, oom_attempt) -> None:
    """The notifier port receives the user-intervention result."""
    heard: list[recovery.RecoveryResult] = []

    class Note:
        def notify(self, ctx: recovery.ErrorContext, result: recovery.RecoveryResult) -> None:
            heard.append(result)

    make_engine(notifier=Note()).run(oom_attempt, {"frames": 81})
    assert [r.requires_user_action for r in heard] == [True]


def test_strategy_that_raises_counts_as_failed(make_engine, oom_attempt) -> None:
    """A port that raises does not crash the engine: the next strategy is tried."""

    class Boom:
        def adjust(self, ctx: recovery.ErrorContext, parameters: Mapping[str, Any]) -> None:
            raise RuntimeError("adjuster bug")

    outcome = make_engine(adjuster=Boom()).run(oom_attempt, {"frames": 81})
    assert outcome.result.strategy_used is R.USER_INTERVENTION


def test_failed_outcome_api_error_shape(make_engine, oom_attempt) -> None:
    """A failed run renders the spec's API error shape."""
    error = make_engine().run(oom_attempt, {"frames": 81}).api_error()["error"]
    assert set(error) == SPEC_ERROR_KEYS
    assert (error["type"], error["recovery_success"]) == ("vram_exhaustion", False)
