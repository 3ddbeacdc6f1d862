"""Strategy objects, the default map, its validation and customisation."""

from __future__ import annotations

import random

import pytest

import recovery
from recovery import DEFAULT_STRATEGY_MAP
from recovery import EnhancedFailureType as F
from recovery import RecoveryStrategy as R
from recovery.strategies import (
    AutomaticRepair,
    GracefulDegradation,
    ImmediateRetry,
    IntelligentFallback,
    ParameterAdjustment,
    ResourceOptimization,
    RetryBudget,
)


def ctx_for(error: BaseException, **context: object) -> recovery.ErrorContext:
    return recovery.Classifier(None).categorize(error, context)


@pytest.mark.parametrize(
    "strategy",
    [AutomaticRepair(), IntelligentFallback(), ParameterAdjustment(), ResourceOptimization(), GracefulDegradation()],
    ids=lambda s: s.kind.value,
)
def test_strategy_without_port_is_not_applicable(strategy: recovery.Strategy) -> None:
    """A strategy whose port was not given answers 'not applicable' instead of failing."""
    result = strategy.recover(ctx_for(MemoryError(), model_id="m"))
    assert (result.success, result.system_changes["applicable"]) == (False, False)


def test_every_failure_type_has_an_order_ending_with_the_user() -> None:
    """The default map orders strategies for all 17 types and always ends with user intervention."""
    assert set(DEFAULT_STRATEGY_MAP) == set(F)
    assert all(order[-1] is R.USER_INTERVENTION for order in DEFAULT_STRATEGY_MAP.values())


def test_custom_map_overrides_one_type(make_engine) -> None:
    """A custom entry replaces that type's order and leaves the others at their defaults."""
    engine = make_engine(strategies={F.MODEL_DOWNLOAD_FAILURE: [R.INTELLIGENT_FALLBACK, R.IMMEDIATE_RETRY]})
    assert engine.strategy_map[F.MODEL_DOWNLOAD_FAILURE] == (R.INTELLIGENT_FALLBACK, R.IMMEDIATE_RETRY)
    assert engine.strategy_map[F.VRAM_EXHAUSTION] == DEFAULT_STRATEGY_MAP[F.VRAM_EXHAUSTION]


def test_custom_order_is_followed(make_engine, halver, oom_attempt, recorded) -> None:
    """Strategies run in the customised order (degradation before adjustment here)."""

    class Degrade:
        def degrade(self, ctx, parameters):
            return recovery.Adjustment({**parameters, "frames": 9}, ["preview at 9 frames"], label="preview")

    engine = make_engine(
        adjuster=halver,
        degrader=Degrade(),
        strategies={F.VRAM_EXHAUSTION: [R.GRACEFUL_DEGRADATION, R.PARAMETER_ADJUSTMENT]},
    )
    outcome = engine.run(oom_attempt, {"frames": 81})
    assert (outcome.value, outcome.degraded, halver.calls) == ("video with 9 frames", True, 0)


@pytest.mark.parametrize(
    "bad",
    [
        {F.VRAM_EXHAUSTION: []},
        {F.VRAM_EXHAUSTION: ["retry"]},
        {"vram_exhaustion": [R.IMMEDIATE_RETRY]},
        {F.VRAM_EXHAUSTION: [R.IMMEDIATE_RETRY, R.IMMEDIATE_RETRY]},
        {F.VRAM_EXHAUSTION: [R.USER_INTERVENTION, R.IMMEDIATE_RETRY]},
    ],
)
def test_invalid_map_is_refused_when_the_engine_is_built(bad: dict) -> None:
    """Empty orders, unknown names, repeats and a non-final user_intervention are refused up front."""
    with pytest.raises(ValueError):
        recovery.EnhancedErrorRecovery(strategies=bad)


@pytest.mark.parametrize(("retry", "expected_cap"), [(1, 2.0), (2, 4.0), (3, 8.0), (6, 10.0)])
def test_backoff_is_full_jitter_under_an_exponential_cap(retry: int, expected_cap: float) -> None:
    """Delays lie in [0, min(base·2^(n-1), max)] and are spread over that range."""
    strategy = ImmediateRetry(rng=random.Random(7))
    with recovery.set_testing(False):
        delays = [strategy.delay(RetryBudget(9, 2.0, 10.0), retry) for _ in range(200)]
    assert max(delays) <= expected_cap and min(delays) < expected_cap * 0.1 and max(delays) > expected_cap * 0.9


def test_set_testing_turns_backoff_off() -> None:
    """Under set_testing() the retry waits zero seconds."""
    assert ImmediateRetry().delay(RetryBudget(3, 5.0, 60.0), 3) == 0.0


def test_set_testing_restores_the_previous_value_after_a_with_block() -> None:
    """``set_testing`` takes effect at once, and a ``with`` block gives back the value it found (nested too)."""
    assert recovery.is_testing()  # the suite's autouse fixture
    with recovery.set_testing(False):
        assert not recovery.is_testing()
        with recovery.set_testing(True):
            assert recovery.is_testing()
        assert not recovery.is_testing()
    assert recovery.is_testing()


def test_retry_sleeps_through_injected_sleep(clock) -> None:
    """The backoff is slept through the injected sleep, not the real one."""
    with recovery.set_testing(False):
        ImmediateRetry(sleep=clock.sleep, rng=random.Random(1)).recover(ctx_for(recovery.NetworkUnavailableError("x")))
    assert len(clock.slept) == 1 and 0 <= clock.slept[0] <= 2.0


@pytest.mark.parametrize(("failure_type", "attempts"), [(F.NETWORK_CONNECTIVITY_LOSS, 4), (F.VRAM_EXHAUSTION, 1)])
def test_retry_budget_per_failure_type(failure_type: F, attempts: int) -> None:
    """Retry stops being applicable once its failure type's budget is spent."""
    error = recovery.NetworkUnavailableError("x") if failure_type is F.NETWORK_CONNECTIVITY_LOSS else MemoryError()
    used = [f"{failure_type.value}:immediate_retry"] * attempts
    assert ImmediateRetry().recover(ctx_for(error, previous_attempts=used[:-1])).success
    assert not ImmediateRetry().recover(ctx_for(error, previous_attempts=used)).success


def test_retry_skips_errors_that_do_not_go_away() -> None:
    """A gated repo (not retryable) is not retried."""
    result = ImmediateRetry().recover(ctx_for(recovery.ModelAccessError("gated", retryable=False)))
    assert result.system_changes["applicable"] is False


@pytest.mark.parametrize(
    ("failure_type", "error", "verb"),
    [
        (F.MODEL_DOWNLOAD_FAILURE, recovery.ModelDownloadError("503", model_id="m"), "download"),
        (F.MODEL_CORRUPTION_DETECTED, recovery.CorruptModelError("bad", model_id="m"), "repair"),
    ],
)
def test_repair_downloads_or_repairs_then_verifies(failure_type: F, error: BaseException, verb: str) -> None:
    """Transfer failures are downloaded again, damage is repaired; both are verified."""
    calls: list[str] = []

    class Store:
        def verify(self, model_id: str) -> bool:
            calls.append("verify")
            return True

        def repair(self, model_id: str) -> bool:
            calls.append("repair")
            return True

        def download(self, model_id: str) -> bool:
            calls.append("download")
            return True

        def fallback_candidates(self, model_id: str) -> list[str]:
            return []

    assert AutomaticRepair(store=Store()).recover(ctx_for(error, model_id="m")).success and calls == [verb, "verify"]


@pytest.mark.parametrize(
    ("error", "action"), [(recovery.WorkerCrashedError("killed"), "restart"), (MemoryError(), "free")]
)
def test_resource_optimization_restarts_or_frees(error: BaseException, action: str) -> None:
    """A crashed worker is restarted; memory pressure frees memory."""

    class Freer:
        def free_memory(self, ctx):
            return ["free: emptied caches"]

        def restart_worker(self, ctx):
            return ["restart: new worker"]

    result = ResourceOptimization(freer=Freer()).recover(ctx_for(error))
    assert result.system_changes["changes"][0].startswith(action)


def test_first_adjuster_answers_with_the_first_adjuster_that_has_an_answer() -> None:
    """A chain of adjusters, each for its own failures: the first non-empty answer wins, in order."""
    from recovery.ports import Adjustment
    from recovery.strategies import FirstAdjuster

    class Fixed:
        def __init__(self, answer: Adjustment | None) -> None:
            self.answer, self.asked = answer, 0

        def adjust(self, ctx: recovery.ErrorContext, parameters: object) -> Adjustment | None:
            self.asked += 1
            return self.answer

    silent, first, second = Fixed(None), Fixed(Adjustment({"steps": 2}, ("a",))), Fixed(Adjustment({"steps": 1}))
    chain = FirstAdjuster((silent, first, second))
    adjustment = chain.adjust(ctx_for(MemoryError("out of memory")), {"steps": 4})
    assert adjustment is first.answer and (silent.asked, second.asked) == (1, 0)
    assert FirstAdjuster((silent,)).adjust(ctx_for(MemoryError("x")), {}) is None
