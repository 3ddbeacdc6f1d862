"""``EnhancedErrorRecovery``: the strategy map, the limits, the breaker, the events, and the run-with-recovery
loop (sync and async) that the video service calls.

Limits, per correlation id: at most ``max_recovery_attempts`` strategies that act, no new strategy after
``recovery_timeout_seconds``, and a hand-over to the user once ``user_intervention_threshold`` tries have failed.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypeVar

from recovery import events
from recovery.breaker import BreakerKey, CircuitBreaker, config_bucket
from recovery.classify import Classifier, Probe, meminfo_probe
from recovery.errors import BadOutputError, GenerationCancelledError
from recovery.messages import guidance_for, scrub
from recovery.metrics import MetricsStore
from recovery.outcome import AttemptInfo, AttemptRecord, Outcome
from recovery.ports import Degrader, ModelStorePort, Notifier, ParameterAdjuster, ResourceFreer
from recovery.settings import EngineLimits
from recovery.strategies.base import Strategy
from recovery.strategies.defaults import StrategyMap, build_strategies, validate_strategy_map
from recovery.strategies.retry import RetryBudget
from recovery.taxonomy import EnhancedFailureType, ErrorContext, RecoveryResult, RecoveryStrategy

__all__ = ["EnhancedErrorRecovery", "AttemptFn", "Validator"]

T = TypeVar("T")
AttemptFn = Callable[[Mapping[str, Any], AttemptInfo], Any]
#: Returns why a value is unusable (a black video, NaN frames), or ``None`` when it is fine.
Validator = Callable[[Any], "str | None"]
log = logging.getLogger("recovery")


@dataclass
class _Track:
    """What the limits count for one correlation id."""

    started_at: float
    failures: int = 0
    recoveries: int = 0
    history: list[str] = field(default_factory=list)


@dataclass
class _Run:
    """The state of one ``run``: what will be tried next and what happened so far."""

    cid: str
    params: dict[str, Any]
    model: str | None
    degraded: bool = False
    ctx: ErrorContext | None = None
    last: RecoveryResult | None = None
    changes: list[str] = field(default_factory=list)
    records: list[AttemptRecord] = field(default_factory=list)
    fixes: list[tuple[BreakerKey, EnhancedFailureType, RecoveryStrategy]] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tried = [self.model] if self.model else []

    def record(
        self, number: int, duration: float, ctx: ErrorContext | None = None, result: RecoveryResult | None = None
    ) -> None:
        error = scrub(f"{type(ctx.original_error).__name__}: {ctx.original_error}") if ctx else None
        self.records.append(
            AttemptRecord(
                number,
                MappingProxyType(dict(self.params)),
                self.model,
                duration,
                ctx.failure_type if ctx else None,
                ctx.severity if ctx else None,
                error,
                result.strategy_used if result else None,
            )
        )

    def apply(self, result: RecoveryResult, bus: events.EventBus) -> None:
        """Take over the strategy's parameters, model and degradation, and announce each."""
        sc = result.system_changes
        lines = [str(line) for line in sc.get("changes", ())]
        self.changes.extend(lines)
        if "parameters" in sc:
            self.params = dict(sc["parameters"])
            bus.emit(
                events.PARAMS_ADJUSTED,
                self.cid,
                strategy=result.strategy_used.value,
                changes=lines,
                parameters=dict(self.params),
            )
        if sc.get("model_id"):
            bus.emit(events.MODEL_SWITCHED, self.cid, old=self.model, new=sc["model_id"])
            self.model = sc["model_id"]
            self.tried.append(self.model)
        if sc.get("degraded"):
            self.degraded = True
            bus.emit(events.DEGRADED, self.cid, strategy=result.strategy_used.value, changes=lines)

    def outcome(self, value: Any = None, error: BaseException | None = None) -> Outcome[Any]:
        return Outcome(
            value,
            self.cid,
            tuple(self.records),
            tuple(self.changes),
            self.degraded,
            MappingProxyType(dict(self.params)),
            self.model,
            error,
            self.ctx if error else None,
            self.last,
        )


class EnhancedErrorRecovery:
    """Classifies failures and recovers from them with ordered strategies, within limits."""

    def __init__(
        self,
        max_recovery_attempts: int = 5,
        recovery_timeout_seconds: float = 300,
        user_intervention_threshold: int = 3,
        strategies: StrategyMap | None = None,
        *,
        store: ModelStorePort | None = None,
        adjuster: ParameterAdjuster | None = None,
        freer: ResourceFreer | None = None,
        degrader: Degrader | None = None,
        notifier: Notifier | None = None,
        strategy_objects: Mapping[RecoveryStrategy, Strategy] | None = None,
        retry_budgets: Mapping[EnhancedFailureType, RetryBudget] | None = None,
        probe: Probe | None = meminfo_probe,
        breaker: CircuitBreaker | None = None,
        bus: events.EventBus | None = None,
        metrics: MetricsStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        bucket: Callable[[Mapping[str, Any]], str] = config_bucket,
    ) -> None:
        self.limits = EngineLimits(max_recovery_attempts, recovery_timeout_seconds, user_intervention_threshold)
        self.strategy_map = validate_strategy_map(strategies)
        self.strategies: dict[RecoveryStrategy, Strategy] = {
            **build_strategies(
                store=store,
                adjuster=adjuster,
                freer=freer,
                degrader=degrader,
                notifier=notifier,
                retry_budgets=retry_budgets,
                sleep=sleep,
                rng=rng,
            ),
            **(strategy_objects or {}),
        }
        self.store = store
        self.classifier = Classifier(probe)
        self.bus = bus or events.EventBus()
        self.breaker = breaker or CircuitBreaker(clock=clock, emit=self.bus.emit)
        if metrics is not None:
            self.bus.subscribe(metrics)
        self._clock = clock
        self._bucket = bucket
        self._tracks: OrderedDict[str, _Track] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def max_recovery_attempts(self) -> int:
        return self.limits.max_recovery_attempts

    @property
    def recovery_timeout_seconds(self) -> float:
        return self.limits.recovery_timeout_seconds

    @property
    def user_intervention_threshold(self) -> int:
        return self.limits.user_intervention_threshold

    # -- the spec's API ---------------------------------------------------------------------------------------

    def categorize(self, error: BaseException, context: Mapping[str, Any] | None = None) -> ErrorContext:
        """Classify ``error`` into an ``ErrorContext`` (see ``Classifier.categorize`` for ``context`` keys)."""
        return self.classifier.categorize(error, context)

    async def categorize_error(self, error: BaseException, context: Mapping[str, Any] | None = None) -> ErrorContext:
        """Async form of ``categorize``."""
        return self.categorize(error, context)

    def handle_failure(self, ctx: ErrorContext, *, hardware_key: str = "cpu") -> RecoveryResult:
        """Recover from one failure: the first strategy that succeeds, else the hand-over to the user.
        Each call counts as one failed try of ``ctx.correlation_id``."""
        cid = ctx.correlation_id or uuid.uuid4().hex[:12]
        track = self._track(cid)
        track.failures += 1
        ctx = replace(ctx, correlation_id=cid, previous_attempts=[*ctx.previous_attempts, *track.history])
        key = BreakerKey(ctx.model_id or "", self._bucket(ctx.user_parameters), hardware_key)
        self.breaker.record_failure(key, ctx.failure_type)
        result = self._recover(ctx, key, track, track.failures)
        if result.success:
            track.history.append(f"{ctx.failure_type.value}:{result.strategy_used.value}")
        return result

    async def handle_enhanced_failure(self, ctx: ErrorContext, *, hardware_key: str = "cpu") -> RecoveryResult:
        """Async form of ``handle_failure`` (strategies run in a thread: they may wait or download)."""
        return await asyncio.to_thread(self.handle_failure, ctx, hardware_key=hardware_key)

    # -- run with recovery ------------------------------------------------------------------------------------

    def run(
        self,
        attempt_fn: AttemptFn,
        parameters: Mapping[str, Any],
        *,
        model_id: str | None = None,
        operation: str = "generate",
        correlation_id: str | None = None,
        hardware_key: str = "cpu",
        validator: Validator | None = None,
        user_session_id: str | None = None,
        allow_fallback: bool = True,
    ) -> Outcome[Any]:
        """Call ``attempt_fn(parameters, info)`` until it succeeds or a limit hands over to the user; between
        tries, strategies may change the parameters, the model, or degrade the request.

        ``allow_fallback=False``: the caller's consent to another model is withheld — no strategy switches the
        model (each failure's ``system_state["fallback_allowed"]`` says so, and the fallback strategy reads it).
        ``GenerationCancelledError`` from an attempt ends the run at once, raised to the caller: a cancellation is
        not a failure, so it is not classified, no strategy runs, and the breaker and metrics never see it."""
        run = _Run(correlation_id or uuid.uuid4().hex[:12], dict(parameters), model_id)
        track = self._track(run.cid)
        for number in itertools.count(1):
            key = BreakerKey(run.model or "", self._bucket(run.params), hardware_key)
            info = AttemptInfo(
                number, run.cid, run.model, run.degraded, tuple(run.changes), run.ctx.failure_type if run.ctx else None
            )
            self.bus.emit(events.ATTEMPT_STARTED, run.cid, attempt=number, model_id=run.model)
            started = self._clock()
            try:
                ok, value = self._try(attempt_fn, run.params, info, validator)
            except GenerationCancelledError:  # the user's choice: told, never classified, recovered or counted
                self.bus.emit(
                    events.ATTEMPT_FINISHED,
                    run.cid,
                    attempt=number,
                    success=False,
                    cancelled=True,
                    duration_s=self._clock() - started,
                )
                raise
            duration = self._clock() - started
            self.bus.emit(events.ATTEMPT_FINISHED, run.cid, attempt=number, success=ok, duration_s=duration)
            if ok:
                return self._succeeded(run, key, number, duration, value)
            track.failures += 1
            alternatives = self._alternatives(run.model)
            run.ctx = ctx = self.categorize(
                value,
                {
                    "model_id": run.model,
                    "operation": operation,
                    "user_parameters": run.params,
                    "correlation_id": run.cid,
                    "previous_attempts": track.history,
                    "user_session_id": user_session_id,
                    "alternatives": alternatives,
                    "system_state": {
                        "attempt": number,
                        "tried_models": list(run.tried),
                        "fallback_allowed": allow_fallback,
                        "alternatives": alternatives,
                    },
                },
            )
            self.bus.emit(
                events.FAILURE_CLASSIFIED,
                run.cid,
                attempt=number,
                failure_type=ctx.failure_type.value,
                severity=ctx.severity.value,
                matched_by=ctx.system_state["matched_by"],
                confidence=ctx.system_state.get("confidence"),
                recognised=ctx.system_state.get("recognised", True),
                signature={
                    k: ctx.system_state[k] for k in ("error_class", "raised_in", "first_line") if k in ctx.system_state
                },
            )
            self.breaker.record_failure(key, ctx.failure_type)
            run.last = result = self._recover(ctx, key, track, number)
            run.record(number, duration, ctx, result)
            if not result.success:
                return run.outcome(error=value)
            run.fixes.append((key, ctx.failure_type, result.strategy_used))
            track.history.append(f"{ctx.failure_type.value}:{result.strategy_used.value}")
            run.apply(result, self.bus)
        raise AssertionError("unreachable")

    async def run_async(self, attempt_fn: AttemptFn, parameters: Mapping[str, Any], **options: Any) -> Outcome[Any]:
        """``run`` for async code: the loop runs in a thread; an ``async def attempt_fn`` runs on this loop."""
        call = attempt_fn
        if inspect.iscoroutinefunction(attempt_fn):
            loop = asyncio.get_running_loop()

            def call(params: Mapping[str, Any], info: AttemptInfo) -> Any:
                return asyncio.run_coroutine_threadsafe(attempt_fn(params, info), loop).result()

        return await asyncio.to_thread(self.run, call, parameters, **options)

    # -- the parts --------------------------------------------------------------------------------------------

    @staticmethod
    def _try(
        attempt_fn: AttemptFn, params: dict[str, Any], info: AttemptInfo, validator: Validator | None
    ) -> tuple[bool, Any]:
        """``(True, value)`` or ``(False, exception)``; a value the validator rejects becomes ``BadOutputError``.
        Cancellation is not a failure: it propagates."""
        try:
            value = attempt_fn(MappingProxyType(dict(params)), info)
            reason = validator(value) if validator is not None else None
            if reason:
                raise BadOutputError(reason, reason=reason, phase="validate")
        except GenerationCancelledError:
            raise
        except Exception as exc:
            return False, exc
        return True, value

    def _succeeded(self, run: _Run, key: BreakerKey, number: int, duration: float, value: Any) -> Outcome[Any]:
        self.breaker.record_success(key)
        for failed_key, failure_type, strategy in run.fixes:
            self.breaker.record_fix(failed_key, failure_type, strategy)
        run.record(number, duration)
        if number > 1:
            self.bus.emit(events.RECOVERED, run.cid, attempts=number, changes=list(run.changes), degraded=run.degraded)
        return run.outcome(value=value)

    def _track(self, cid: str) -> _Track:
        with self._lock:
            track = self._tracks.get(cid)
            if track is None:
                track = self._tracks[cid] = _Track(self._clock())
                while len(self._tracks) > 4096:
                    self._tracks.popitem(last=False)
            return track

    def _alternatives(self, model: str | None) -> int | None:
        if self.store is None or model is None:
            return None
        try:
            return len(self.store.fallback_candidates(model))
        except Exception:
            log.warning("model store could not list fallbacks", exc_info=True)
            return None

    def _recover(self, ctx: ErrorContext, key: BreakerKey, track: _Track, attempt: int) -> RecoveryResult:
        """Strategies in order until one succeeds; a limit or the end of the list hands over to the user."""
        limits = self.limits
        if track.failures >= limits.user_intervention_threshold:
            return self._hand_over(ctx, attempt, track, f"failed {track.failures} times (intervention threshold)")
        order = list(self.breaker.order(key, ctx.failure_type, self.strategy_map[ctx.failure_type]))
        if track.failures >= limits.user_intervention_threshold - 1 and RecoveryStrategy.IMMEDIATE_RETRY in order:
            # The last try before the hand-over: strategies that change something (fallback, repair, degrade) go
            # before a blind retry, which stays as the last resort.
            order.remove(RecoveryStrategy.IMMEDIATE_RETRY)
            order.insert(
                order.index(RecoveryStrategy.USER_INTERVENTION)
                if RecoveryStrategy.USER_INTERVENTION in order
                else len(order),
                RecoveryStrategy.IMMEDIATE_RETRY,
            )
        for kind in order:
            if kind is RecoveryStrategy.USER_INTERVENTION:
                break
            if track.recoveries >= limits.max_recovery_attempts:
                return self._hand_over(ctx, attempt, track, f"{track.recoveries} recovery attempts (limit)")
            if self._clock() - track.started_at >= limits.recovery_timeout_seconds:
                return self._hand_over(ctx, attempt, track, f"recovery timeout of {limits.recovery_timeout_seconds}s")
            result = self._attempt(kind, ctx, attempt, track)
            if result.success:
                return result
        return self._hand_over(ctx, attempt, track, "no strategy could recover")

    def _attempt(
        self, kind: RecoveryStrategy, ctx: ErrorContext, attempt: int, track: _Track, reason: str | None = None
    ) -> RecoveryResult:
        """Run one strategy, timed, with events; a strategy that raises counts as a failed one."""
        strategy = self.strategies[kind]
        self.bus.emit(events.STRATEGY_STARTED, ctx.correlation_id, attempt=attempt, strategy=kind.value)
        started = self._clock()
        try:
            hand_over = getattr(strategy, "hand_over", None)
            result = hand_over(ctx, reason) if reason and hand_over else strategy.recover(ctx)
        except Exception as exc:
            log.warning("strategy %s raised", kind.value, exc_info=True)
            result = RecoveryResult(False, kind, 0.0, f"{kind.value} raised {type(exc).__name__}")
        guidance = guidance_for(ctx.failure_type)
        result = replace(
            result,
            recovery_time_seconds=self._clock() - started,
            user_message=result.user_message or guidance.user_message,
            actionable_steps=result.actionable_steps or list(guidance.actionable_steps),
            estimated_resolution_time=result.estimated_resolution_time or guidance.estimated_resolution_time,
        )
        applicable = result.system_changes.get("applicable", True)
        track.recoveries += bool(applicable) and kind is not RecoveryStrategy.USER_INTERVENTION
        self.bus.emit(
            events.STRATEGY_FINISHED,
            ctx.correlation_id,
            attempt=attempt,
            strategy=kind.value,
            failure_type=ctx.failure_type.value,
            severity=ctx.severity.value,
            success=result.success,
            applicable=applicable,
            duration_s=result.recovery_time_seconds,
            message=result.message,
        )
        return result

    def _hand_over(self, ctx: ErrorContext, attempt: int, track: _Track, reason: str) -> RecoveryResult:
        """The user-intervention result for ``reason``, announced as ``recovery.gave_up``."""
        result = self._attempt(RecoveryStrategy.USER_INTERVENTION, ctx, attempt, track, reason)
        self.bus.emit(
            events.GAVE_UP, ctx.correlation_id, attempt=attempt, reason=reason, failure_type=ctx.failure_type.value
        )
        return result
